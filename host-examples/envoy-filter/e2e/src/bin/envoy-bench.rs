//! What the filter adds inside Envoy, and where it goes: the same route,
//! the same `jwt_authn` and the same upstream behind one Envoy per row,
//! loaded by `wrk` in one run, rows alternating round by round, at one
//! connection and then at eight. Prints markdown tables.
//!
//!     cargo run --release -p cedar-edge-envoy-e2e --bin envoy-bench [SECONDS] [ROUNDS]
//!
//! (4 s and 5 rounds unless given.)
//!
//! Rows: no filter; the bench build of the module (feature
//! `bench-stages`, which this program builds) stopped after each stage;
//! the shipped module; Envoy's `ext_authz` filter asking the cedar-edge
//! gateway's gRPC service (the gateway binary, which this program builds,
//! in its own process as it is deployed, with the same bundle and mapping);
//! Envoy's own RBAC filter with an equivalent rule.
//! `CEDAR_EDGE_GATEWAY_BIN=path` takes a prebuilt gateway binary.
//! `ENVOY_BENCH_MODULES=name=path,…` adds rows for other builds of the
//! module, such as another opt-level or an older commit's, and
//! `ENVOY_BENCH_STAGED_MODULE=path` takes a prebuilt bench module.
//! Every row has the same access log, which writes the decision record
//! when there is one.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cedar_edge_envoy_e2e::config::{
    EXT_AUTHZ_CLUSTER, JwtProvider, Listener, Ports, Upstream, envoy_yaml_with_clusters,
    ext_authz_filter_yaml, grpc_cluster_yaml, plugin_config, wasm_filter_yaml,
};
use cedar_edge_envoy_e2e::envoy::{Envoy, free_port};
use cedar_edge_envoy_e2e::{FILTER_MODULE, repo};
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::load::{Sample, wrk};
use cedar_edge_testkit::{http, upstream};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/dags/etl_daily/dagRuns";

/// The bench build's stages, in order; each adds one step to the one before.
const STAGES: [(&str, &str); 5] = [
    ("continue", "filter returns Continue at once"),
    ("headers", "+ reads the headers"),
    ("claims", "+ reads the JWT metadata and properties"),
    ("mapping", "+ maps to a Cedar request"),
    ("decision", "+ decides and acts (no record)"),
];

/// Envoy's RBAC filter with the rule that lets `bob` read DAG runs in the
/// Cedar bundle (`operators-trigger-runs`): `GET` on the route, the
/// verified `preferred_username` and MFA in `amr`. RBAC has no groups from
/// an entity store, so the rule names the user.
const RBAC_FILTER: &str = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: ALLOW
      policies:
        operators-trigger-runs:
          permissions:
            - and_rules:
                rules:
                  - header: { name: ":method", string_match: { exact: GET } }
                  - url_path: { path: { safe_regex: { regex: "^/api/v1/dags/[^/]+/dagRuns$" } } }
          principals:
            - and_ids:
                ids:
                  - metadata:
                      filter: envoy.filters.http.jwt_authn
                      path: [{ key: jwt_payload }, { key: preferred_username }]
                      value: { string_match: { exact: bob } }
                  - metadata:
                      filter: envoy.filters.http.jwt_authn
                      path: [{ key: jwt_payload }, { key: amr }]
                      value: { list_match: { one_of: { string_match: { exact: mfa } } } }
"#;

struct Row {
    name: String,
    envoy: Envoy,
    one: Vec<Sample>,
    eight: Vec<Sample>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(4);
    let rounds: usize = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(5);
    // A prebuilt bench module (an older commit's) instead of this tree's.
    let staged_module = std::env::var_os("ENVOY_BENCH_STAGED_MODULE")
        .map_or_else(build_staged_module, PathBuf::from);
    let issuer = Issuer::generate("bench-key");
    let upstream = upstream::Upstream::start();
    let provider = JwtProvider {
        issuer: "https://gitlab.example.com".into(),
        audience: "airflow".into(),
        jwks: issuer.jwks(),
    };
    let mapping: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("host-examples/envoy-filter/examples/airflow-mapping.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let plugin = plugin_config(&repo().join("policies/airflow-gitlab"), &mapping);
    let staged = |stage: &str| {
        let mut config = plugin.clone();
        config["bench_stage"] = json!(stage);
        wasm_filter_yaml(&staged_module.to_string_lossy(), &config)
    };
    let scratch = std::env::temp_dir().join("cedar-edge-envoy-bench");
    let routes = [Upstream {
        name: "airflow".into(),
        prefix: "/".into(),
        port: upstream.port,
    }];
    // Each row: its name, its HTTP filter, and any cluster that filter calls.
    let mut filters: Vec<(String, String, String)> = vec![(
        "no filter (jwt_authn only)".into(),
        String::new(),
        String::new(),
    )];
    filters.extend(
        STAGES
            .iter()
            .map(|(stage, name)| ((*name).to_owned(), staged(stage), String::new())),
    );
    filters.push((
        "cedar-edge filter (shipped module)".into(),
        wasm_filter_yaml(FILTER_MODULE, &plugin),
        String::new(),
    ));
    for (name, module) in extra_modules() {
        filters.push((
            format!("cedar-edge filter ({name})"),
            wasm_filter_yaml(&module.to_string_lossy(), &plugin),
            String::new(),
        ));
    }
    let service = ExtAuthzService::start(&scratch.join("ext-authz"));
    filters.push((
        "ext_authz → cedar-edge gateway (gRPC)".into(),
        ext_authz_filter_yaml(EXT_AUTHZ_CLUSTER),
        grpc_cluster_yaml(EXT_AUTHZ_CLUSTER, service.ext_authz_port),
    ));
    filters.push((
        "Envoy RBAC, equivalent rule".into(),
        RBAC_FILTER.to_owned(),
        String::new(),
    ));
    let token = issuer.sign(&json!({
        "iss": provider.issuer, "aud": provider.audience, "sub": "1", "preferred_username": "bob",
        "email": "bob@example.com", "groups": [], "amr": ["mfa"], "iat": now(), "exp": now() + 3600,
    }));
    let bearer = format!("Bearer {token}");
    let mut rows: Vec<Row> = filters
        .into_iter()
        .enumerate()
        .map(|(index, (name, filter, clusters))| {
            let ports = Ports {
                listener: free_port(),
                admin: free_port(),
            };
            let yaml = envoy_yaml_with_clusters(
                &Listener::default(),
                &ports,
                Some(&provider),
                &filter,
                &routes,
                &clusters,
            );
            let dir = scratch.join(format!("row-{index}"));
            let envoy = match Envoy::start(&dir, &yaml, ports.listener, ports.admin) {
                Ok(envoy) => envoy,
                Err((envoy, message)) => panic!("{name}: {message}\n{}", envoy.log()),
            };
            let reply = http::get(envoy.port, "GET", PATH, &[("authorization", &bearer)]);
            assert_eq!(reply.status, 200, "{name}, warm-up: {}", reply.body);
            Row {
                name,
                envoy,
                one: Vec::new(),
                eight: Vec::new(),
            }
        })
        .collect();
    let header = format!("authorization: {bearer}");
    for connections in [1, 8] {
        for _ in 0..rounds {
            for row in &mut rows {
                let url = format!("http://127.0.0.1:{}{PATH}", row.envoy.port);
                let sample = wrk(&url, &header, seconds, connections);
                if connections == 1 {
                    row.one.push(sample);
                } else {
                    row.eight.push(sample);
                }
            }
        }
    }
    println!(
        "GET {PATH} as bob (allowed), every Envoy `--concurrency 1`; wrk -t1 -d{seconds}s, \
         {rounds} alternating rounds per row; medians of the rounds\n"
    );
    println!("One connection:\n");
    println!(
        "| Envoy | requests/s | p50 | p99 | p50 added | p99 added | p50 step |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    let base = medians(&rows[0].one);
    let mut previous = base;
    for row in &rows {
        let figures = medians(&row.one);
        println!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:+.0} µs | {:+.0} µs | {:+.0} µs |",
            row.name,
            figures.requests_per_second,
            figures.p50_us,
            figures.p99_us,
            figures.p50_us - base.p50_us,
            figures.p99_us - base.p99_us,
            figures.p50_us - previous.p50_us,
        );
        previous = figures;
    }
    println!("\nEight connections:\n");
    println!(
        "| Envoy | requests/s | throughput lost | p50 | p99 |\n| --- | --- | --- | --- | --- |"
    );
    let base = medians(&rows[0].eight);
    for row in &rows {
        let figures = medians(&row.eight);
        println!(
            "| {} | {:.0} | {:.1} % | {:.0} µs | {:.0} µs |",
            row.name,
            figures.requests_per_second,
            100.0 * (1.0 - figures.requests_per_second / base.requests_per_second),
            figures.p50_us,
            figures.p99_us,
        );
    }
    println!("\nRounds, requests/s at one connection | at eight:\n");
    for row in &rows {
        let list = |samples: &[Sample]| {
            samples
                .iter()
                .map(|sample| format!("{:.0}", sample.requests_per_second))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("- {}: {} | {}", row.name, list(&row.one), list(&row.eight));
    }
    println!(
        "\nthe upstream served {} requests",
        upstream.hits.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(service);
}

/// The gateway binary serving only its `ext_authz` gRPC service, with the
/// bundle and mapping the filter rows use, its audit log on. It runs in its
/// own process, as deployed beside Envoy, so its CPU is counted against the
/// same two cores as Envoy's, wrk's and the upstream's.
struct ExtAuthzService {
    child: Child,
    ext_authz_port: u16,
}

impl ExtAuthzService {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let binary =
            std::env::var_os("CEDAR_EDGE_GATEWAY_BIN").map_or_else(build_gateway, PathBuf::from);
        // Envoy's jwt_authn verifies tokens and sends the claims, so the
        // service needs no issuers of its own.
        let (admin_port, ext_authz_port) = (free_port(), free_port());
        let config = dir.join("gateway.yaml");
        let json = |path: &Path| serde_json::to_string(&path.to_string_lossy()).unwrap();
        std::fs::write(
            &config,
            format!(
                "admin_listen: 127.0.0.1:{admin_port}\n\
                 bundle: {bundle}\n\
                 mapping: {mapping}\n\
                 backend: component\n\
                 ext_authz: {{ listen: 127.0.0.1:{ext_authz_port} }}\n\
                 audit_log: {audit}\n",
                bundle = json(&repo().join("policies/airflow-gitlab")),
                mapping =
                    json(&repo().join("host-examples/envoy-filter/examples/airflow-mapping.json")),
                audit = json(&dir.join("audit.jsonl")),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
        let mut service = Self {
            child,
            ext_authz_port,
        };
        // The gRPC listener is bound before the admin one answers.
        for _ in 0..600 {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("the gateway exited with {status}; see {}", dir.display());
            }
            if std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
                && http::get(admin_port, "GET", "/healthz", &[]).status == 200
            {
                return service;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = service.child.kill();
        panic!("the gateway did not start in 60 s; see {}", dir.display());
    }
}

impl Drop for ExtAuthzService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the gateway binary (release, this workspace's target directory)
/// and returns its path.
fn build_gateway() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "--package",
            "cedar-edge-gateway",
            "--bin",
            "cedar-edge-gateway",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the gateway build failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    target.join("release/cedar-edge-gateway")
}

/// Each figure's median over the rounds: a round that another process on
/// the two cores slowed down moves it less than it would a mean.
fn medians(samples: &[Sample]) -> Sample {
    let median = |pick: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            count if count % 2 == 1 => values[count / 2],
            count => (values[count / 2 - 1] + values[count / 2]) / 2.0,
        }
    };
    Sample {
        requests_per_second: median(|sample| sample.requests_per_second),
        p50_us: median(|sample| sample.p50_us),
        p99_us: median(|sample| sample.p99_us),
        // Every round's requests, not a median: the rounds' total.
        requests: samples.iter().map(|sample| sample.requests).sum(),
    }
}

/// Builds the module with `bench-stages`, with the shipped module's
/// settings (profile `envoy-bench` inherits them), and returns its path.
fn build_staged_module() -> PathBuf {
    let target_dir = repo().join("target/wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--package",
            "cedar-edge-envoy-filter",
            "--features",
            "bench-stages",
            "--target",
            "wasm32-wasip1",
            "--profile",
            "envoy-bench",
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the bench build of the module failed");
    target_dir.join("wasm32-wasip1/envoy-bench/cedar_edge_envoy_filter.wasm")
}

/// `ENVOY_BENCH_MODULES=name=path,…`: more builds of the module to compare.
fn extra_modules() -> Vec<(String, PathBuf)> {
    std::env::var("ENVOY_BENCH_MODULES")
        .unwrap_or_default()
        .split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, path) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("`{entry}` is not name=path"));
            let path = Path::new(path).to_path_buf();
            assert!(path.exists(), "no module at {}", path.display());
            (name.to_owned(), path)
        })
        .collect()
}
