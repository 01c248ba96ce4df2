//! The one trait every decision backend implements, and the native backend.
//!
//! It lives in the core so that a host that decides natively never builds
//! wasmtime; the component backend implements the same trait in
//! `cedar-edge-runtime`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::bundle::{Bundle, BundleSource, LoadError};
use crate::request::{Request, RequestError, RequestLimits};
use crate::response::Response;

/// A boxed future, so that `dyn Backend` stays possible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call produced no decision. Every case must be treated as a deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum AuthorizeError {
    /// The request itself was rejected by the core.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Request(#[from] RequestError),
    /// The guest ran past the per-call deadline and was interrupted.
    #[error("the decision took longer than the {0:?} deadline")]
    #[diagnostic(code(cedar_edge::timeout))]
    Timeout(Duration),
    /// The guest tried to grow its memory past the cap.
    #[error("the decision needed more than the {limit_bytes}-byte memory cap")]
    #[diagnostic(code(cedar_edge::memory_limit))]
    MemoryLimit {
        /// The cap, in bytes.
        limit_bytes: usize,
    },
    /// The guest trapped for another reason.
    #[error("the policy component trapped: {0}")]
    #[diagnostic(code(cedar_edge::trap))]
    Trap(String),
    /// A fresh instance could not be made.
    #[error("cannot start a policy component instance: {0}")]
    #[diagnostic(code(cedar_edge::instantiate))]
    Instantiate(String),
}

/// Something that decides requests against one loaded bundle.
pub trait Backend: Send + Sync {
    /// The content hash of the loaded bundle.
    fn bundle_id(&self) -> &str;

    /// The stable ids of the bundle's policies, sorted.
    fn policy_ids(&self) -> &[String];

    /// Decides one request, blocking the calling thread.
    fn authorize(&self, request: &Request) -> Result<Response, AuthorizeError>;

    /// Decides several requests in one go, in order.
    fn authorize_batch(&self, requests: &[Request]) -> Vec<Result<Response, AuthorizeError>>;

    /// Decides one request without blocking an async runtime while it waits
    /// for capacity.
    fn authorize_async<'a>(
        &'a self,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Response, AuthorizeError>>;

    /// Decides one request and fails closed: any error is a deny that names
    /// the error, so no caller can mistake a failure for an allow.
    fn decide(&self, request: &Request) -> Response {
        self.authorize(request)
            .unwrap_or_else(|err| Response::denied_by_error(err.to_string(), self.bundle_id()))
    }
}

/// Decides with the core directly: the reference the component is tested
/// against, and a choice for hosts that do not need isolation.
#[derive(Debug, Clone)]
pub struct NativeBackend {
    bundle: Arc<Bundle>,
}

impl NativeBackend {
    /// Decides with a bundle that is already loaded (and shared, for example
    /// with the host's request mapping).
    pub fn new(bundle: Arc<Bundle>) -> Self {
        Self { bundle }
    }

    /// Loads a bundle and decides with it.
    pub fn load(source: &BundleSource, limits: RequestLimits) -> Result<Self, LoadError> {
        Ok(Self::new(Arc::new(Bundle::load(source, limits)?)))
    }

    /// The loaded bundle.
    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }
}

impl Backend for NativeBackend {
    fn bundle_id(&self) -> &str {
        self.bundle.id()
    }

    fn policy_ids(&self) -> &[String] {
        self.bundle.policy_ids()
    }

    fn authorize(&self, request: &Request) -> Result<Response, AuthorizeError> {
        Ok(self.bundle.authorize(request)?)
    }

    fn authorize_batch(&self, requests: &[Request]) -> Vec<Result<Response, AuthorizeError>> {
        requests
            .iter()
            .map(|request| self.authorize(request))
            .collect()
    }

    fn authorize_async<'a>(
        &'a self,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Response, AuthorizeError>> {
        Box::pin(std::future::ready(self.authorize(request)))
    }
}
