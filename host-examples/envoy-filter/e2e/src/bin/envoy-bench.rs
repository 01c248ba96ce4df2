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

use std::process::Command;

use cedar_edge_envoy_e2e::config::{JwtProvider, Ports, Upstream, envoy_yaml, plugin_config};
use cedar_edge_envoy_e2e::envoy::{Envoy, free_port};
use cedar_edge_envoy_e2e::jwt::{Issuer, now};
use cedar_edge_envoy_e2e::{FILTER_MODULE, http, repo, upstream};
use serde_json::json;

const PATH: &str = "/api/v1/dags/etl_daily/dagRuns";

struct Sample {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

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
    let mut results: Vec<(&str, Vec<Sample>)> = vec![
        ("without filter", Vec::new()),
        ("with cedar-edge", Vec::new()),
    ];
    // Alternate, so that drift on a shared machine hits both alike.
    for _round in 0..2 {
        for (index, envoy) in [&without, &with].into_iter().enumerate() {
            let sample = wrk(envoy.port, &bearer, seconds, connections);
            results[index].1.push(sample);
        }
    }
    let average = |samples: &[Sample], pick: fn(&Sample) -> f64| {
        samples.iter().map(pick).sum::<f64>() / samples.len() as f64
    };
    println!(
        "wrk -t1 -c{connections} -d{seconds}s, two alternating rounds each, GET {PATH} (allowed)\n"
    );
    println!("| Envoy | requests/s | p50 | p99 |\n| --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for (name, samples) in &results {
        let row = (
            average(samples, |s| s.requests_per_second),
            average(samples, |s| s.p50_us),
            average(samples, |s| s.p99_us),
        );
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs |",
            row.0, row.1, row.2
        );
        rows.push(row);
    }
    let (base, filtered) = (rows[0], rows[1]);
    println!(
        "| difference | {:+.1}% | {:+.0} µs | {:+.0} µs |",
        100.0 * (filtered.0 - base.0) / base.0,
        filtered.1 - base.1,
        filtered.2 - base.2
    );
    let allowed = with.counter("wasmcustom.cedar_edge.allowed").unwrap_or(0);
    println!(
        "\nthe filter allowed {allowed} requests; the upstream served {}",
        upstream.hits.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn wrk(port: u16, bearer: &str, seconds: u32, connections: u32) -> Sample {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
        ])
        .arg(format!("authorization: {bearer}"))
        .arg(format!("http://127.0.0.1:{port}{PATH}"))
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "some requests failed:\n{text}");
    let field = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"));
        let value = line.trim_start_matches(prefix).trim();
        parse_duration_us(value).unwrap_or_else(|| value.parse().unwrap())
    };
    Sample {
        requests_per_second: field("Requests/sec:"),
        p50_us: field("50%"),
        p99_us: field("99%"),
    }
}

fn parse_duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}
