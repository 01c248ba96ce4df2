//! Builds the policy guest component once, in its own release profile, and
//! hands its path to this crate as `CEDAR_EDGE_GUEST_COMPONENT`.
//!
//! Set `CEDAR_EDGE_GUEST_COMPONENT` to an existing `.wasm` to skip the build.

use cedar_edge_wasm_build::{WasmArtifact, build};

fn main() {
    build(&WasmArtifact {
        package: "cedar-edge-policy-guest",
        file_name: "cedar_edge_policy_guest.wasm",
        target: "wasm32-wasip2",
        profile: "guest",
        env_var: "CEDAR_EDGE_GUEST_COMPONENT",
        inputs: &[
            "policy-guest/src",
            "policy-guest/Cargo.toml",
            "engine/core/src",
            "engine/core/Cargo.toml",
            "wit",
            "Cargo.toml",
            "Cargo.lock",
            ".cargo/config.toml",
        ],
    });
}
