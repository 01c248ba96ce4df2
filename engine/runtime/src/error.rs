//! Errors of the host runtime.

pub use cedar_edge_core::AuthorizeError;
use cedar_edge_core::LoadError;

/// Why a runtime or a backend could not be set up.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RuntimeError {
    /// The component did not compile or link.
    #[error("cannot prepare the policy component: {0}")]
    #[diagnostic(code(cedar_edge::runtime::component))]
    Component(String),
    /// The bundle did not load.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] LoadError),
    /// The loading instance itself failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Authorize(#[from] AuthorizeError),
}
