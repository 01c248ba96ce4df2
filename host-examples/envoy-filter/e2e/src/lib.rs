//! Test equipment for the Envoy filter: a real Envoy process on loopback,
//! the filter module built once by this crate's build script, the
//! renderer for the shipped Envoy configurations, and whole stacks of
//! Envoy, filter and echo upstream. Keys, tokens, the echo upstream and
//! the HTTP client come from `cedar-edge-testkit`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod config;
pub mod envoy;
pub mod stack;

pub use cedar_edge_testkit::repo;

/// The filter module, built once by this crate's build script.
pub const FILTER_MODULE: &str = env!("CEDAR_EDGE_ENVOY_FILTER");
