//! The gateway binary, as operators run it: 10,000 requests, then SIGTERM;
//! the audit log must hold exactly one complete record per decision, with
//! no token and the configured claims redacted.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use cedar_edge_testkit::free_port;
use cedar_edge_testkit::http;
use common::*;

#[test]
fn ten_thousand_decisions_then_sigterm_give_ten_thousand_records() {
    let port = free_port();
    let setup = setup("audit", &format!("127.0.0.1:{port}"), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cedar-edge-gateway"))
        .args(["--config", setup.config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", setup.admin_port)).is_ok()
            && http::get(setup.admin_port, "GET", "/healthz", &[]).status == 200
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "the gateway did not start");
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    let total = 10_000;
    let threads: Vec<_> = (0..4)
        .map(|worker| {
            let (bob, carol) = (bob.clone(), carol.clone());
            std::thread::spawn(move || {
                let mut statuses = [0usize; 2];
                for index in 0..total / 4 {
                    let token = if (index + worker) % 2 == 0 {
                        &bob
                    } else {
                        &carol
                    };
                    let bearer = format!("Bearer {token}");
                    let reply = http::get(
                        port,
                        "POST",
                        "/api/v1/dags/etl_daily/dagRuns",
                        &[("authorization", &bearer)],
                    );
                    match reply.status {
                        200 => statuses[0] += 1,
                        403 => statuses[1] += 1,
                        other => panic!("unexpected status {other}: {}", reply.body),
                    }
                }
                statuses
            })
        })
        .collect();
    let mut allowed = 0;
    let mut denied = 0;
    for thread in threads {
        let [a, d] = thread.join().unwrap();
        allowed += a;
        denied += d;
    }
    assert_eq!(allowed + denied, total);
    let exit = cedar_edge_testkit::terminate(&mut child);
    assert!(exit.success(), "the gateway exited with {exit}");

    let log = std::fs::read_to_string(&setup.audit_log).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), total, "one record per decision");
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), total, "decision ids are unique");
    let allows = records.iter().filter(|r| r["decision"] == "allow").count();
    assert_eq!(allows, allowed);
    for record in &records {
        for field in [
            "time",
            "principal",
            "action",
            "resource",
            "bundle_id",
            "latency_us",
            "determining_policies",
            "errors",
        ] {
            assert!(record.get(field).is_some(), "{field} missing in {record}");
        }
        assert_eq!(record["claims"]["email"], "[redacted]");
    }
    assert!(
        !log.contains(&bob) && !log.contains(&carol) && !log.contains("eyJ"),
        "a token reached the audit log"
    );
    assert!(
        !log.contains("@example.com"),
        "a redacted claim reached the audit log"
    );
}
