//! The one trait every decision backend implements.

use std::future::Future;
use std::pin::Pin;

use cedar_edge_engine::{Decision, PolicyError, Request, Response};

use crate::error::AuthorizeError;

/// A boxed future, so that `dyn Backend` stays possible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
            .unwrap_or_else(|err| deny_for(&err, self.bundle_id()))
    }
}

/// The deny that stands in for a failed call.
pub fn deny_for(err: &AuthorizeError, bundle_id: &str) -> Response {
    Response {
        decision: Decision::Deny,
        determining_policies: Vec::new(),
        errors: vec![PolicyError {
            policy_id: String::new(),
            message: err.to_string(),
        }],
        bundle_id: bundle_id.to_owned(),
    }
}
