//! Cedar decisions inside Envoy: a proxy-wasm HTTP filter that links the
//! cedar-edge core directly (proxy-wasm hosts load core modules, not
//! components).
//!
//! The root context parses the configuration and loads the bundle once per
//! VM ([`config::load`]); each request is only mapped and evaluated by the
//! shared `cedar-edge-mapping` crate. Everything but the host calls is plain
//! Rust, tested natively.

#[cfg(feature = "bench-stages")]
pub mod bench;
pub mod config;
pub mod decision;
pub mod protobuf;

#[cfg(target_arch = "wasm32")]
mod plugin;
