//! Errors of the host runtime.

use std::time::Duration;

use cedar_edge_engine::{LoadError, RequestError};

/// Why a call produced no decision. Every case must be treated as a deny.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthorizeError {
    /// The request itself was rejected by the core.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The guest ran past the per-call deadline and was interrupted.
    #[error("the decision took longer than the {0:?} deadline")]
    Timeout(Duration),
    /// The guest tried to grow its memory past the cap.
    #[error("the decision needed more than the {limit_bytes}-byte memory cap")]
    MemoryLimit {
        /// The cap, in bytes.
        limit_bytes: usize,
    },
    /// The guest trapped for another reason.
    #[error("the policy component trapped: {0}")]
    Trap(String),
    /// A fresh instance could not be made.
    #[error("cannot start a policy component instance: {0}")]
    Instantiate(String),
}

/// Why a runtime or a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component did not compile or link.
    #[error("cannot prepare the policy component: {0}")]
    Component(String),
    /// The bundle did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loading instance itself failed.
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
}
