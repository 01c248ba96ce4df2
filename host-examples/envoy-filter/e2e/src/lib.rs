//! Test equipment for the Envoy filter: RSA keys and RS256 JWTs, an echo
//! upstream, a real Envoy process on loopback, a raw HTTP/1.1 client, and
//! the renderer for the shipped Envoy configurations.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod config;
pub mod envoy;
pub mod http;
pub mod jwt;
pub mod load;
pub mod upstream;

/// The filter module, built once by this crate's build script.
pub const FILTER_MODULE: &str = env!("CEDAR_EDGE_ENVOY_FILTER");

/// The repository root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}
