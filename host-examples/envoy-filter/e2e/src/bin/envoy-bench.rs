//! The latency the filter adds inside Envoy: the same route, the same
//! `jwt_authn`, the same upstream, with and without the cedar-edge filter,
//! loaded by `wrk` in one run. Prints a markdown table.
//!
//!     cargo run --release -p cedar-edge-envoy-e2e --bin envoy-bench [SECONDS] [CONNECTIONS]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cedar_edge_envoy_e2e::config::{JwtProvider, Ports, Upstream, envoy_yaml, plugin_config};
use cedar_edge_envoy_e2e::envoy::{Envoy, free_port};
use cedar_edge_envoy_e2e::{FILTER_MODULE, repo};
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::load::compare;
use cedar_edge_testkit::{http, upstream};
use serde_json::json;

const PATH: &str = "/api/v1/dags/etl_daily/dagRuns";

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(10);
    let connections: u32 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(8);
    let issuer = Issuer::generate("bench-key");
    let upstream = upstream::Upstream::start();
    let provider = JwtProvider {
        issuer: "https://gitlab.example.com".into(),
        audience: "airflow".into(),
        jwks: issuer.jwks(),
    };
    let mapping: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("host-examples/envoy-filter/examples/airflow-mapping.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let plugin = plugin_config(&repo().join("policies/airflow-gitlab"), &mapping);
    let scratch = std::env::temp_dir().join("cedar-edge-envoy-bench");
    let routes = [Upstream {
        name: "airflow".into(),
        prefix: "/".into(),
        port: upstream.port,
    }];
    let start = |name: &str, with_filter: bool| {
        let ports = Ports {
            listener: free_port(),
            admin: free_port(),
        };
        let plugin = with_filter.then_some((FILTER_MODULE, &plugin));
        let yaml = envoy_yaml(&ports, Some(&provider), plugin, &routes);
        match Envoy::start(&scratch.join(name), &yaml, ports.listener, ports.admin) {
            Ok(envoy) => envoy,
            Err((envoy, message)) => panic!("{message}\n{}", envoy.log()),
        }
    };
    let without = start("without", false);
    let with = start("with", true);
    let token = issuer.sign(&json!({
        "iss": provider.issuer, "aud": provider.audience, "sub": "1", "preferred_username": "bob",
        "email": "bob@example.com", "groups": [], "amr": ["mfa"], "iat": now(), "exp": now() + 3600,
    }));
    let bearer = format!("Bearer {token}");
    for envoy in [&without, &with] {
        let reply = http::get(envoy.port, "GET", PATH, &[("authorization", &bearer)]);
        assert_eq!(reply.status, 200, "warm-up: {}", reply.body);
    }
    println!("GET {PATH} as bob (allowed)");
    compare(
        [
            (
                "Envoy without filter",
                &format!("http://127.0.0.1:{}{PATH}", without.port),
            ),
            (
                "Envoy with cedar-edge",
                &format!("http://127.0.0.1:{}{PATH}", with.port),
            ),
        ],
        &format!("authorization: {bearer}"),
        seconds,
        connections,
        2,
    );
    let allowed = with.counter("wasmcustom.cedar_edge.allowed").unwrap_or(0);
    println!(
        "\nthe filter allowed {allowed} requests; the upstream served {}",
        upstream.hits.load(std::sync::atomic::Ordering::Relaxed)
    );
}
