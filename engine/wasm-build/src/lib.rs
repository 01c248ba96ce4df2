//! Builds one workspace crate for a wasm target from a build script, once,
//! in its own profile and target directory, and returns the artifact's path.
//!
//! Build scripts of crates that embed or load a wasm artifact (the runtime
//! embeds the component; the Envoy tests load the filter) call [`build`].
//! Setting the artifact's environment variable to an existing file skips
//! the build, for prebuilt artifacts.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct WasmArtifact<'a> {
    /// The cargo package.
    pub package: &'a str,
    /// The file cargo writes, such as `cedar_edge_policy_guest.wasm`.
    pub file_name: &'a str,
    /// The wasm target, such as `wasm32-wasip2`.
    pub target: &'a str,
    /// The cargo profile.
    pub profile: &'a str,
    /// The environment variable that names a prebuilt artifact, and that
    /// the calling crate receives the path in.
    pub env_var: &'a str,
    /// Workspace paths whose change means a rebuild.
    pub inputs: &'a [&'a str],
}

/// Builds the artifact (or takes the prebuilt one), tells cargo when to
/// rebuild, sets `env_var` for the calling crate, and returns the path.
/// A failed build stops the calling build with a message that says how to
/// install the target.
pub fn build(artifact: &WasmArtifact<'_>) -> PathBuf {
    println!("cargo:rerun-if-env-changed={}", artifact.env_var);
    if let Ok(prebuilt) = env::var(artifact.env_var) {
        println!("cargo:rerun-if-changed={prebuilt}");
        println!("cargo:rustc-env={}={prebuilt}", artifact.env_var);
        return PathBuf::from(prebuilt);
    }
    let workspace = workspace_root();
    for input in artifact.inputs {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    // A target directory of its own, since the outer build holds the lock on
    // the main one; shared by every wasm artifact, so their host-side build
    // dependencies (proc macros) compile once.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("wasm");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "--package", artifact.package, "--target"])
        .arg(artifact.target)
        .args(["--profile", artifact.profile, "--target-dir"])
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
                    | "CLIPPY_ARGS"
            );
        if outer_only {
            build.env_remove(&key);
        }
    }
    let status = build.status();
    let path = target_dir
        .join(artifact.target)
        .join(artifact.profile)
        .join(artifact.file_name);
    match status {
        Ok(status) if status.success() && path.exists() => {}
        Ok(_) | Err(_) => fail(artifact, &path),
    }
    println!("cargo:rustc-env={}={}", artifact.env_var, path.display());
    path
}

/// The workspace root: the nearest ancestor of the calling crate whose
/// `Cargo.toml` declares `[workspace]`.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("[workspace]"))
        })
        .map_or(manifest_dir.clone(), Path::to_path_buf)
}

fn fail(artifact: &WasmArtifact<'_>, path: &Path) -> ! {
    eprintln!(
        "error: building `{}` for {} failed, so `{}` does not exist.\n\
         Is the target installed? Run `rustup target add {}`, or `cargo xtask test`, which does.",
        artifact.package,
        artifact.target,
        path.display(),
        artifact.target
    );
    std::process::exit(1);
}
