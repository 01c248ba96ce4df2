//! Runs cedar-edge decisions through the WebAssembly component, on wasmtime.
//!
//! - [`ComponentRuntime`] compiles the guest once (or loads it from an
//!   on-disk cache keyed by its hash) and prepares an `InstancePre`
//!   (`runtime`).
//! - [`ComponentBackend`] holds one bundle and a pool of instances that have
//!   loaded it (`pool`). Each call gets its own instance, under a deadline
//!   and a memory cap (`limits`); an instance that traps is thrown away,
//!   never reused.
//! - `convert` translates between the core's types and the WIT types, and
//!   `cache` keeps precompiled components on disk, authenticated
//!   ([`CacheOutcome`] says whether a runtime used it).
//!
//! The [`Backend`] trait and the native backend live in `cedar-edge-core`,
//! so that hosts that decide natively do not build wasmtime.

mod bindings;
mod block_on;
mod cache;
mod convert;
mod error;
mod limits;
mod pool;
mod runtime;

pub use cache::{CacheOutcome, CacheProblem};
pub use error::{AuthorizeError, RuntimeError};
pub use pool::{ComponentBackend, PoolStats};
pub use runtime::{BareInstance, ComponentRuntime, RuntimeConfig};

/// The guest component this crate was built with.
pub static GUEST_COMPONENT: &[u8] = include_bytes!(env!("CEDAR_EDGE_GUEST_COMPONENT"));
