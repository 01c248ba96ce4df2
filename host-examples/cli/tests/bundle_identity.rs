//! One bundle, one id: packed and signed by the CLI, then served from the
//! packed file by the CLI, the gateway (its health endpoint and its audit
//! log) and the Envoy filter (the configuration `cedar-edge envoy-config`
//! renders, and its decision log), every one reports the id the core
//! computes for the bundle directory.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use cedar_edge_core::{Bundle, BundleSource, RequestLimits};
use cedar_edge_envoy_e2e::FILTER_MODULE;
use cedar_edge_envoy_e2e::config::{JwtProvider, Ports, Upstream, envoy_yaml};
use cedar_edge_envoy_e2e::envoy::Envoy;
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::{free_port, http, upstream};
use common::{authorize_bob_triggers, cedar_edge, repo, text};
use serde_json::{Value, json};

const ISSUER: &str = "https://gitlab.example.com";
const AUDIENCE: &str = "airflow";

fn bob_token(issuer: &Issuer) -> String {
    issuer.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "gitlab|bob", "preferred_username": "bob",
        "email": "bob@example.com", "groups": [], "amr": ["pwd", "mfa"],
        "iat": now() - 30, "exp": now() + 600,
    }))
}

/// The value of `"bundle_id":"…"` in a line of JSON, wherever it sits.
fn bundle_id_in(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("\"bundle_id\":\"")?;
    rest.split('"').next().map(str::to_owned)
}

/// The packed bundle, signed, and its public key.
struct Shipped {
    packed: String,
    public_key: String,
}

fn ship(scratch: &Path) -> (Shipped, String) {
    std::fs::create_dir_all(scratch).unwrap();
    let packed = scratch.join("airflow.tar");
    let prefix = scratch.join("ci");
    let _ = std::fs::remove_file(scratch.join("ci.key"));
    let out = cedar_edge(&[
        "pack",
        "policies/airflow-gitlab",
        "-o",
        packed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let out = cedar_edge(&["keygen", "-o", prefix.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = scratch.join("ci.key");
    let out = cedar_edge(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        packed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shipped = Shipped {
        packed: packed.display().to_string(),
        public_key: scratch.join("ci.pub").display().to_string(),
    };
    (shipped, id)
}

fn through_cli(shipped: &Shipped) -> String {
    let out = authorize_bob_triggers(&shipped.packed, &["--trusted-key", &shipped.public_key]);
    let answer: Value = serde_json::from_str(&text(&out.stdout))
        .unwrap_or_else(|err| panic!("{err}: {}", text(&out.stderr)));
    answer["bundle_id"].as_str().unwrap().to_owned()
}

/// The filter's configuration as `cedar-edge envoy-config` renders it,
/// and the digest written in it.
fn rendered_plugin(scratch: &Path, shipped: &Shipped) -> (Value, String) {
    let output = scratch.join("plugin.json");
    let out = cedar_edge(&[
        "envoy-config",
        "--bundle",
        &shipped.packed,
        "--mapping",
        "host-examples/envoy-filter/examples/airflow-mapping.json",
        "--trusted-key",
        &shipped.public_key,
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plugin: Value = serde_json::from_str(&std::fs::read_to_string(output).unwrap()).unwrap();
    let digest = plugin["bundle"]["digest"].as_str().unwrap().to_owned();
    assert!(
        plugin["trusted_keys"][0]
            .as_str()
            .unwrap()
            .contains("PUBLIC KEY")
    );
    (plugin, digest)
}

fn through_envoy(scratch: &Path, plugin: &Value) -> String {
    let issuer = Issuer::generate("identity-key");
    let upstream = upstream::Upstream::start();
    let ports = Ports {
        listener: free_port(),
        admin: free_port(),
    };
    let yaml = envoy_yaml(
        &ports,
        Some(&JwtProvider {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks: issuer.jwks(),
        }),
        Some((FILTER_MODULE, plugin)),
        &[Upstream {
            name: "airflow".into(),
            prefix: "/".into(),
            port: upstream.port,
        }],
    );
    let envoy = Envoy::start(&scratch.join("envoy"), &yaml, ports.listener, ports.admin)
        .unwrap_or_else(|(envoy, message)| panic!("{message}\n{}", envoy.log()));
    let bearer = format!("Bearer {}", bob_token(&issuer));
    let reply = http::get(
        envoy.port,
        "POST",
        "/api/v1/dags/etl_daily/dagRuns",
        &[("authorization", &bearer)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The access log, where the decision record goes, is flushed within
    // milliseconds.
    for _ in 0..100 {
        if let Some(id) = envoy
            .access_log()
            .lines()
            .filter(|line| line.contains("\"decision_id\""))
            .find_map(bundle_id_in)
        {
            return id;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no decision record in Envoy's access log:\n{}",
        envoy.access_log()
    );
}

/// The gateway's `/healthz` and the audit record of one decision.
fn through_gateway(scratch: &Path, shipped: &Shipped) -> (String, String) {
    let dir = scratch.join("gateway");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = Issuer::generate("identity-key");
    std::fs::write(dir.join("jwks.json"), issuer.jwks()).unwrap();
    let upstream = upstream::Upstream::start();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nbundle: {bundle}\nmapping: {mapping}\nupstreams:\n  airflow: http://127.0.0.1:{port}\n\
             routes:\n  - prefix: /api/\n    upstream: airflow\nissuers:\n  - issuer: {ISSUER}\n    audience: {AUDIENCE}\n    jwks_file: jwks.json\n\
             audit_log: audit.jsonl\ntrusted_keys: [{key}]\n",
            bundle = shipped.packed,
            key = shipped.public_key,
            mapping = repo()
                .join("host-examples/envoy-filter/examples/airflow-mapping.json")
                .display(),
            port = upstream.port,
        ),
    )
    .unwrap();
    let mut config = cedar_edge_gateway::config::GatewayConfig::read(&config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bind = || {
        runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
    };
    let (proxy, admin) = (bind(), bind());
    let port = proxy.local_addr().unwrap().port();
    let admin_port = admin.local_addr().unwrap().port();
    config.admin_listen = Some(admin.local_addr().unwrap());
    let listeners = cedar_edge_gateway::Listeners {
        proxy: Some(proxy),
        pdp: None,
        admin: Some(admin),
        ext_authz: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    let task = runtime.spawn(cedar_edge_gateway::run(
        config,
        listeners,
        async move {
            let _ = stopped.await;
        },
        reloads,
    ));
    let mut health = None;
    for _ in 0..600 {
        let reply = http::get(admin_port, "GET", "/healthz", &[]);
        if reply.status == 200 {
            health = Some(reply.json()["bundle_id"].as_str().unwrap().to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = health.expect("the gateway answers /healthz");
    let bearer = format!("Bearer {}", bob_token(&issuer));
    let reply = http::get(
        port,
        "GET",
        "/api/v1/dags/etl_daily",
        &[("authorization", &bearer)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let _ = stop.send(());
    runtime.block_on(task).unwrap().unwrap();
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let record: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    (health, record["bundle_id"].as_str().unwrap().to_owned())
}

#[test]
fn every_host_reports_the_same_bundle_id() {
    let source = BundleSource::from_dir(&repo().join("policies/airflow-gitlab")).unwrap();
    let core = Bundle::load(&source, RequestLimits::default())
        .unwrap()
        .id()
        .to_owned();
    assert!(core.starts_with("sha256:") && core.len() == 71, "{core}");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bundle-identity");
    let (shipped, packed) = ship(&scratch);
    let cli = through_cli(&shipped);
    let (plugin, rendered) = rendered_plugin(&scratch, &shipped);
    let envoy = through_envoy(&scratch, &plugin);
    let (health, audit) = through_gateway(&scratch, &shipped);
    assert_eq!(packed, core, "`cedar-edge pack`");
    assert_eq!(cli, core, "the CLI");
    assert_eq!(rendered, core, "the filter configuration's digest");
    assert_eq!(envoy, core, "the Envoy filter's decision log");
    assert_eq!(health, core, "the gateway's /healthz");
    assert_eq!(audit, core, "the gateway's audit log");
}
