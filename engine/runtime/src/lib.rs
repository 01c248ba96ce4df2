//! Runs cedar-edge decisions through the WebAssembly component, on wasmtime.
//!
//! - [`ComponentRuntime`] compiles the guest once (or loads it from an
//!   on-disk cache keyed by its hash) and prepares an `InstancePre`.
//! - [`ComponentBackend`] holds one bundle and a pool of instances that have
//!   loaded it. Each call gets its own instance, under a deadline and a
//!   memory cap; an instance that traps is thrown away, never reused.
//! - [`NativeBackend`] runs the same core in-process behind the same
//!   [`Backend`] trait, so hosts can choose and tests can compare.

mod backend;
mod bindings;
mod block_on;
mod cache;
mod component;
mod convert;
mod error;
mod native;

pub use backend::{Backend, deny_for};
pub use component::{ComponentBackend, ComponentRuntime, PoolStats, RuntimeConfig};
pub use error::{AuthorizeError, RuntimeError};
pub use native::NativeBackend;

pub use cedar_edge_engine as engine;

/// The guest component this crate was built with.
pub static GUEST_COMPONENT: &[u8] = include_bytes!(env!("CEDAR_EDGE_GUEST_COMPONENT"));
