//! The cedar-edge evaluation core.
//!
//! Plain Rust over `cedar-policy`, built both for the host and for wasm32.
//! The same code decides inside the WebAssembly component, inside the Envoy
//! filter and in the native backend, which is what keeps their answers equal.
//!
//! A [`Bundle`] is loaded once from a [`BundleSource`]; each [`Request`] is
//! then decided against it with [`Bundle::authorize`]. Hosts decide through
//! the [`Backend`] trait: [`NativeBackend`] here, the component backend in
//! `cedar-edge-runtime`. [`Bundle::search`] finds the entities of a type
//! that a request with one part left open allows.

mod authorize;
mod backend;
mod bundle;
mod cedar_internals;
mod conformance;
mod diagnostic;
mod entity_cache;
mod index;
mod nesting;
mod pack;
mod request;
mod response;
mod search;
mod slice;
mod value;

pub use backend::{AuthorizeError, Backend, BoxFuture, NativeBackend};
pub use bundle::{
    Bundle, BundleDir, BundleFile, BundleReadError, BundleSource, DEFAULT_MAX_FILE_BYTES,
    LoadError, archive_cap, digest_of_parts, hex, read_regular_file,
};
pub use diagnostic::{Diagnostic, SourcedProblem};
pub use nesting::{MAX_NESTING, MAX_OPERATOR_DEPTH};
pub use pack::{
    BundleSettings, FORMAT as PACK_FORMAT, FileRole, MANIFEST_PATH, Manifest, ManifestFile,
    PackError, SETTINGS_FILE, ValidationMode, cedar_version, looks_packed, packed_id,
};
pub use request::{ContextInput, EntityInput, Request, RequestError, RequestLimits};
pub use response::{Decision, PolicyError, Response};
pub use search::{Search, SearchHit, SearchSlot};
pub use value::{Attributes, EntityUid, ExtensionKind, Value, ValueError, ValueNode};
