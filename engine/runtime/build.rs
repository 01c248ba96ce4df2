//! Builds the policy guest component once, in its own release profile, and
//! hands its path to this crate as `CEDAR_EDGE_GUEST_COMPONENT`.
//!
//! Set `CEDAR_EDGE_GUEST_COMPONENT` to an existing `.wasm` to skip the build.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";

fn main() {
    println!("cargo:rerun-if-env-changed=CEDAR_EDGE_GUEST_COMPONENT");
    if let Ok(prebuilt) = env::var("CEDAR_EDGE_GUEST_COMPONENT") {
        println!("cargo:rerun-if-changed={prebuilt}");
        println!("cargo:rustc-env=CEDAR_EDGE_GUEST_COMPONENT={prebuilt}");
        return;
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir.join("../..");
    for input in [
        "policy-guest/src",
        "policy-guest/Cargo.toml",
        "engine/core/src",
        "engine/core/Cargo.toml",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    // A target directory of its own: the outer build holds the lock on the main one.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("guest");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args([
            "build",
            "--package",
            "cedar-edge-policy-guest",
            "--target",
            GUEST_TARGET,
        ])
        .args(["--profile", GUEST_PROFILE, "--target-dir"])
        .arg(&target_dir);
    // The outer build's flags, wrappers and profile are for the host, not the guest.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let outer_only = key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_ENCODED_")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_MAKEFLAGS"
            );
        if outer_only {
            build.env_remove(&key);
        }
    }
    let status = build.status();
    let component = target_dir
        .join(GUEST_TARGET)
        .join(GUEST_PROFILE)
        .join("cedar_edge_policy_guest.wasm");
    match status {
        Ok(status) if status.success() && component.exists() => {}
        Ok(_) | Err(_) => fail(&component),
    }
    println!(
        "cargo:rustc-env=CEDAR_EDGE_GUEST_COMPONENT={}",
        component.display()
    );
}

fn fail(component: &Path) -> ! {
    eprintln!(
        "error: building the policy guest component failed, so `{}` does not exist.\n\
         Is the target installed? Run `rustup target add {GUEST_TARGET}`, or `cargo xtask test`, which does.",
        component.display()
    );
    std::process::exit(1);
}
