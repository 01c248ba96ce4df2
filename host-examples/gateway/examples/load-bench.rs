//! What authorization costs the gateway: two gateway processes, identical
//! but for `authorization: false` in one, in front of the same upstream,
//! loaded alternately by `wrk` in one run. Prints a markdown table with
//! each gateway's requests/s, p50, p99 and CPU time per request (its
//! process's user and system time over the requests wrk completed).
//!
//!     cargo build --release -p cedar-edge-gateway --bins --examples
//!     target/release/examples/load-bench [SECONDS] [CONNECTIONS] [component|native] [ROUNDS]
//!
//! The gateway binary is the one next to this example's directory
//! (`target/release/cedar-edge-gateway`).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cedar_edge_testkit::free_port;
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::load::compare_with_cpu;
use cedar_edge_testkit::{http, repo, upstream};
use serde_json::json;

const PATH: &str = "/api/v1/dags/etl_daily/dagRuns";

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(10);
    let connections: u32 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(8);
    let backend = args.next().unwrap_or_else(|| "component".to_owned());
    let rounds: usize = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(3);
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("cedar-edge-gateway");
    let dir = std::env::temp_dir().join("cedar-edge-gateway-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = Issuer::generate("bench");
    std::fs::write(dir.join("jwks.json"), issuer.jwks()).unwrap();
    let upstream = upstream::Upstream::start();
    let start = |name: &str, authorization: bool| {
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nbundle: {bundle}\nmapping: {mapping}\nauthorization: {authorization}\nbackend: {backend}\n\
                 upstreams: {{ airflow: \"http://127.0.0.1:{up}\" }}\nroutes: [{{ prefix: /api/, upstream: airflow }}]\n\
                 issuers: [{{ issuer: \"https://gitlab.example.com\", audience: airflow, jwks_file: jwks.json }}]\n\
                 audit_log: {name}-audit.jsonl\n",
                bundle = repo().join("policies/airflow-gitlab").display(),
                mapping = repo().join("host-examples/envoy-filter/examples/airflow-mapping.json").display(),
                up = upstream.port,
            ),
        )
        .unwrap();
        // Each run starts a fresh audit log rather than append gigabytes.
        let _ = std::fs::remove_file(dir.join(format!("{name}-audit.jsonl")));
        // The gateway's log (an upstream that failed, say) goes next to
        // the configuration, to explain a run that wrk reports as failed.
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(&binary)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "the gateway binary is built (cargo build --release -p cedar-edge-gateway --bins)",
            );
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (Gateway(child), port)
    };
    let (off, off_port) = start("authorization-off", false);
    let (on, on_port) = start("authorization-on", true);
    let token = issuer.sign(&json!({
        "iss": "https://gitlab.example.com", "aud": "airflow", "sub": "1", "preferred_username": "bob",
        "email": "bob@example.com", "groups": [], "amr": ["mfa"], "iat": now(), "exp": now() + 3600,
    }));
    let bearer = format!("Bearer {token}");
    for port in [off_port, on_port] {
        let reply = http::get(port, "GET", PATH, &[("authorization", &bearer)]);
        assert_eq!(reply.status, 200, "warm-up: {}", reply.body);
    }
    println!("GET {PATH} as bob (allowed); both gateways verify the RS256 token");
    // benches/scripts/gateway_profile.py attaches perf to these.
    println!(
        "gateway processes: authorization off {}, on {}",
        off.0.id(),
        on.0.id()
    );
    println!("{}", machine_load("before"));
    let label = format!("gateway, Cedar ({backend} backend)");
    compare_with_cpu(
        [
            (
                "gateway, authorization off",
                &format!("http://127.0.0.1:{off_port}{PATH}"),
                off.0.id(),
            ),
            (
                &label,
                &format!("http://127.0.0.1:{on_port}{PATH}"),
                on.0.id(),
            ),
        ],
        &format!("authorization: {bearer}"),
        seconds,
        connections,
        rounds,
    );
    println!("\n{}", machine_load("after"));
}

/// The load average and core count, so that a run records how busy the
/// machine was.
fn machine_load(when: &str) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{cores} cores; load average {when} the run: {}",
        load.trim()
    )
}
