//! The core, run in-process with no component in between.

use cedar_edge_engine::{Bundle, BundleSource, Request, RequestLimits, Response};

use crate::backend::{Backend, BoxFuture};
use crate::error::{AuthorizeError, RuntimeError};

/// Decides with the core directly: the reference the component is tested
/// against, and a choice for hosts that do not need isolation.
#[derive(Debug)]
pub struct NativeBackend {
    bundle: Bundle,
}

impl NativeBackend {
    /// Loads a bundle.
    pub fn load(source: &BundleSource, limits: RequestLimits) -> Result<Self, RuntimeError> {
        Ok(Self {
            bundle: Bundle::load(source, limits)?,
        })
    }

    /// The loaded bundle.
    pub fn bundle(&self) -> &Bundle {
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
