//! A gateway on loopback for the tests: its bundle copied to a scratch
//! folder (so tests can change it), real RS256 and ES256 issuers, and an
//! echo upstream.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod pki;
pub mod running;

use std::path::{Path, PathBuf};

use cedar_edge_testkit::jwt::{EcIssuer, Issuer, now};
use cedar_edge_testkit::repo;
use cedar_edge_testkit::upstream::Upstream;
use serde_json::{Value, json};

pub const RSA_ISSUER: &str = "https://gitlab.example.com";
pub const EC_ISSUER: &str = "https://sso.example.com";
pub const AUDIENCE: &str = "airflow";

/// Claims of a user token.
pub fn claims(issuer: &str, user: &str, groups: &[&str], mfa: bool) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": format!("id-{user}"), "preferred_username": user,
        "email": format!("{user}@example.com"), "groups": groups,
        "amr": if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) },
        "iat": now() - 30, "exp": now() + 600,
    })
}

/// Everything a test needs on disk.
pub struct Setup {
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub config: PathBuf,
    pub audit_log: PathBuf,
    /// The admin listener's port (`/healthz`, `/metrics`) when the gateway
    /// runs as its own process.
    pub admin_port: u16,
    pub rsa: Issuer,
    pub ec: EcIssuer,
    pub upstream: Upstream,
}

/// Writes a configuration for the airflow-gitlab bundle behind the gateway.
pub fn setup(name: &str, listen: &str, extra: &str) -> Setup {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("gateway")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = dir.join("bundle");
    copy_dir(&repo().join("policies/airflow-gitlab"), &bundle);
    let rsa = Issuer::generate("rsa-key");
    let ec = EcIssuer::generate("ec-key");
    std::fs::write(dir.join("rsa-jwks.json"), rsa.jwks()).unwrap();
    std::fs::write(dir.join("ec-jwks.json"), ec.jwks()).unwrap();
    let upstream = Upstream::start();
    let mapping = repo().join("host-examples/envoy-filter/examples/airflow-mapping.json");
    let audit_log = dir.join("audit.jsonl");
    let config = dir.join("gateway.yaml");
    let admin_port = cedar_edge_testkit::free_port();
    std::fs::write(
        &config,
        format!(
            r#"listen: {listen}
admin_listen: 127.0.0.1:{admin_port}
bundle: bundle
mapping: {mapping}
upstreams:
  airflow: http://127.0.0.1:{port}
routes:
  - prefix: /api/
    upstream: airflow
issuers:
  - issuer: {RSA_ISSUER}
    audience: {AUDIENCE}
    jwks_file: rsa-jwks.json
  - issuer: {EC_ISSUER}
    audience: {AUDIENCE}
    jwks_file: ec-jwks.json
audit_log: audit.jsonl
redact_claims: [email]
reload_poll_ms: 100
# Two polls of the same content apply it; the reload tests set their own.
reload_settle_ms: 0
{extra}"#,
            mapping = mapping.display(),
            port = upstream.port,
        ),
    )
    .unwrap();
    Setup {
        dir,
        bundle,
        config,
        audit_log,
        admin_port,
        rsa,
        ec,
        upstream,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The gateway binary with this setup's configuration; its log (JSON
/// lines, on standard output) goes to `gateway.log` beside the
/// configuration.
pub fn gateway_command(setup: &Setup) -> std::process::Command {
    let log = std::fs::File::create(setup.dir.join("gateway.log")).unwrap();
    let mut command = std::process::Command::new(gateway_binary());
    command
        .args(["--config", setup.config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    command
}

/// The gateway binary the tests run: this build's, or the one
/// `CEDAR_EDGE_GATEWAY_BIN` names (to run a suite against another build,
/// such as one without a fix, and see it fail).
pub fn gateway_binary() -> PathBuf {
    std::env::var_os("CEDAR_EDGE_GATEWAY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_cedar-edge-gateway")),
        PathBuf::from,
    )
}

/// Waits until the gateway whose admin listener is on `port` answers
/// `/healthz` (10 s at most).
pub fn wait_ready(port: u16) -> bool {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && cedar_edge_testkit::http::get(port, "GET", "/healthz", &[]).status == 200
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// One sample from the admin listener's `/metrics`, by its full name and
/// labels.
pub fn metric(admin_port: u16, series: &str) -> u64 {
    let metrics = cedar_edge_testkit::http::get(admin_port, "GET", "/metrics", &[]).body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in {metrics}"))
        .parse()
        .unwrap()
}
