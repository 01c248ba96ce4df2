//! Why the gateway cannot start or reload. Every case names the file or
//! the field at fault.

use std::path::PathBuf;

use cedar_edge_core::{BundleReadError, LoadError};
use cedar_edge_mapping::MappingError;
use cedar_edge_runtime::RuntimeError;

/// A gateway start or reload that failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GatewayError {
    /// A file could not be read.
    #[error("cannot read `{}`: {message}", path.display())]
    #[diagnostic(code(cedar_edge::gateway::read))]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration file is not valid.
    #[error("`{}`: {message}", path.display())]
    #[diagnostic(code(cedar_edge::gateway::config))]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A configuration field is not valid.
    #[error("{0}")]
    #[diagnostic(code(cedar_edge::gateway::config))]
    Field(String),
    /// What the bundle's source served was refused (unsigned, untrusted,
    /// not the pinned digest, unreadable): not retried until it changes.
    #[error("bundle source: {0}")]
    #[diagnostic(code(cedar_edge::gateway::source))]
    Source(String),
    /// The bundle's source could not be reached or did not answer in time:
    /// tried again at the next poll.
    #[error("bundle source unavailable: {0}")]
    #[diagnostic(code(cedar_edge::gateway::source_unavailable))]
    SourceUnavailable(String),
    /// The bundle directory could not be read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    BundleRead(#[from] BundleReadError),
    /// The bundle did not load.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Bundle(#[from] LoadError),
    /// The mapping does not fit the bundle.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Mapping(#[from] MappingError),
    /// The component could not be prepared or loaded.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Runtime(#[from] RuntimeError),
    /// An issuer's keys could not be loaded.
    #[error("issuer `{issuer}`: {message}")]
    #[diagnostic(code(cedar_edge::gateway::issuer))]
    Issuer {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        message: String,
    },
    /// The audit log could not be opened or flushed.
    #[error("audit log: {0}")]
    #[diagnostic(code(cedar_edge::gateway::audit))]
    Audit(#[from] std::io::Error),
    /// A blocking task died.
    #[error("internal task failed: {0}")]
    #[diagnostic(code(cedar_edge::gateway::task))]
    Task(String),
}
