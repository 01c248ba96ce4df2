//! `cedar-edge serve`: the decision service from a minimal configuration
//! (a bundle, a listener, callers), over real loopback HTTP, stopped by
//! SIGTERM with its audit log flushed.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cedar_edge_testkit::{free_port, http};
use common::repo;
use serde_json::json;

fn write_config(name: &str, port: u16, extra: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("serve")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // As the README says to make it: `printf %s SECRET | sha256sum`.
    let secret_hash = sha256_hex("ci-caller-secret");
    let config = format!(
        "bundle: {bundle}\naudit_log: decisions.jsonl\npdp:\n  listen: 127.0.0.1:{port}\n  \
         types: {{ user: Todo::User, todo: Todo::Todo }}\n  action_type: Todo::Action\n  \
         callers:\n    - name: ci\n      bearer_sha256: {secret_hash}\n{extra}",
        bundle = repo().join("policies/authzen-todo").display(),
    );
    std::fs::write(dir.join("pdp.yaml"), config).unwrap();
    dir
}

fn sha256_hex(text: &str) -> String {
    let output = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

fn serve(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cedar-edge"))
        .args(["serve", "--config", dir.join("pdp.yaml").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_minimal_configuration_serves_authenticated_decisions_until_sigterm() {
    let port = free_port();
    let dir = write_config("minimal", port, "");
    let mut child = serve(&dir);
    let started = Instant::now();
    let metadata = loop {
        let reply = http::try_send(port, "GET", "/.well-known/authzen-configuration", &[]);
        if let Some(reply) = reply.filter(|reply| reply.status == 200) {
            break reply.json();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(100));
    };
    // No TLS configured on loopback: the identifier says http.
    assert_eq!(
        metadata["policy_decision_point"],
        format!("http://127.0.0.1:{port}")
    );
    let body = json!({
        "subject": {"type": "user", "id": "rick@the-citadel.com"},
        "action": {"name": "can_delete_todo"},
        "resource": {"type": "todo", "id": "7240d0db-8ff0-41ec-98b2-34a096273b91"},
    })
    .to_string();
    let post = |authorization: &str| {
        http::send_with_body(
            port,
            "POST",
            "/access/v1/evaluation",
            &[
                ("authorization", authorization.as_bytes()),
                ("content-type", b"application/json"),
            ],
            body.as_bytes(),
        )
    };
    let allowed = post("Bearer ci-caller-secret");
    assert_eq!(
        (allowed.status, allowed.json()),
        (200, json!({"decision": true}))
    );
    assert_eq!(post("Bearer guess").status, 401);
    let exit = cedar_edge_testkit::terminate(&mut child);
    assert!(exit.success(), "{exit:?}");
    let audit = std::fs::read_to_string(dir.join("decisions.jsonl")).unwrap();
    let decisions: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(decisions.len(), 2, "{audit}");
    assert_eq!(decisions[0]["caller"], "ci");
    assert_eq!(decisions[0]["decision"], "allow");
    assert_eq!(decisions[1]["decision"], "unauthenticated");
}

#[test]
fn a_name_the_schema_lacks_stops_the_start_with_the_field_named() {
    let dir = write_config("bad-names", free_port(), "");
    let text = std::fs::read_to_string(dir.join("pdp.yaml"))
        .unwrap()
        .replace("todo: Todo::Todo", "todo: Todo::Task");
    std::fs::write(dir.join("pdp.yaml"), text).unwrap();
    let output = serve(&dir).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("`pdp.types.todo`") && stderr.contains("Todo::Task"),
        "{stderr}"
    );
}
