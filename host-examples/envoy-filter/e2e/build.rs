//! Builds the Envoy filter module once for `wasm32-wasip1` and hands its
//! path to the tests as `CEDAR_EDGE_ENVOY_FILTER`.

use cedar_edge_wasm_build::{WasmArtifact, build};

fn main() {
    build(&WasmArtifact {
        package: "cedar-edge-envoy-filter",
        file_name: "cedar_edge_envoy_filter.wasm",
        target: "wasm32-wasip1",
        profile: "envoy-filter",
        env_var: "CEDAR_EDGE_ENVOY_FILTER",
        inputs: &[
            "host-examples/envoy-filter/src",
            "host-examples/envoy-filter/Cargo.toml",
            "engine/mapping/src",
            "engine/mapping/Cargo.toml",
            "engine/core/src",
            "engine/core/Cargo.toml",
            "Cargo.toml",
            "Cargo.lock",
        ],
    });
}
