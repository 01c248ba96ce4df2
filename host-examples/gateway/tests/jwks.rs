//! A JWKS served over HTTP: loaded at start, and fetched again when a token
//! names a key the gateway has not seen (key rotation at the IdP).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar_edge_testkit::free_port;
use cedar_edge_testkit::http;
use cedar_edge_testkit::jwt::Issuer;
use common::*;

/// Serves whatever `document` holds at any path.
fn serve_jwks(document: Arc<Mutex<String>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let body = document.lock().unwrap().clone();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn an_unknown_kid_refreshes_the_jwks_from_its_url() {
    let first = Issuer::generate("key-1");
    let rotated = Issuer::generate("key-2");
    let document = Arc::new(Mutex::new(first.jwks()));
    let jwks_port = serve_jwks(Arc::clone(&document));
    let port = free_port();
    let setup = setup("jwks-url", &format!("127.0.0.1:{port}"), "");
    // Point the RSA issuer at the URL instead of the file.
    let config = std::fs::read_to_string(&setup.config).unwrap().replace(
        "jwks_file: rsa-jwks.json",
        &format!("jwks_url: http://127.0.0.1:{jwks_port}/jwks.json"),
    );
    std::fs::write(&setup.config, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cedar-edge-gateway"))
        .args(["--config", setup.config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready);
    let call = |token: &str| {
        let bearer = format!("Bearer {token}");
        http::get(
            port,
            "POST",
            "/api/v1/dags/etl_daily/dagRuns",
            &[("authorization", &bearer)],
        )
        .status
    };
    assert_eq!(
        call(&first.sign(&claims(RSA_ISSUER, "bob", &[], true))),
        200
    );
    // Before the IdP publishes the new key, its tokens are refused...
    assert_eq!(
        call(&rotated.sign(&claims(RSA_ISSUER, "bob", &[], true))),
        401
    );
    // ...and once it does, the next refresh finds it: the start-up load
    // counts as the first fetch, and refreshes come at most every 10 s.
    *document.lock().unwrap() = rotated.jwks();
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        call(&rotated.sign(&claims(RSA_ISSUER, "bob", &[], true))),
        200
    );
    let metrics = http::get(setup.admin_port, "GET", "/metrics", &[]).body;
    assert!(
        metrics.contains("cedar_edge_jwks_refreshes_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
