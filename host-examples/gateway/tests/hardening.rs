//! Issue 12, findings 4 to 8, against the gateway binary as operators run
//! it, over loopback: tokens the verifier must refuse, JWKS over https and
//! endpoints that hang or never stop, slow clients and the connection cap,
//! deep and half-written bundles on hot reload, and what the audit log
//! holds after a flood, a SIGTERM and a SIGKILL.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cedar_edge_testkit::free_port;
use cedar_edge_testkit::http::{self, Reply};
use cedar_edge_testkit::jwt::now;
use common::*;
use serde_json::{Value, json};

const TRIGGER: &str = "/api/v1/dags/etl_daily/dagRuns";

/// The gateway binary on its own port; killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
    admin_port: u16,
    log: std::path::PathBuf,
}

impl Gateway {
    /// A setup whose gateway decides natively (no component to compile).
    fn setup(name: &str, extra: &str) -> (Setup, u16) {
        let port = free_port();
        let setup = setup(
            name,
            &format!("127.0.0.1:{port}"),
            &format!("backend: native\n{extra}"),
        );
        (setup, port)
    }

    fn start(setup: &Setup, port: u16) -> Self {
        let child = gateway_command(setup).spawn().unwrap();
        let gateway = Self {
            child,
            port,
            admin_port: setup.admin_port,
            log: setup.dir.join("gateway.log"),
        };
        assert!(
            wait_ready(setup.admin_port),
            "the gateway did not start: {}",
            gateway.log()
        );
        gateway
    }

    fn call(&self, token: Option<&str>) -> Reply {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|bearer| ("authorization", bearer.as_str()))
            .collect();
        http::get(self.port, "POST", TRIGGER, &headers)
    }

    fn bundle_id(&self) -> Value {
        http::get(self.admin_port, "GET", "/healthz", &[]).json()["bundle_id"].clone()
    }

    /// One sample from `/metrics`, by its full name and labels.
    fn metric(&self, series: &str) -> u64 {
        common::metric(self.admin_port, series)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and a clean exit within 15 s.
    fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15));
        assert!(
            status.is_some_and(|status| status.success()),
            "{}",
            self.log()
        );
    }

    /// Waits for the exit, `bound` at most; `None` if still running.
    fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces one line of a setup's configuration file.
fn edit_config(setup: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    assert!(text.contains(from), "`{from}` is not in the configuration");
    std::fs::write(&setup.config, text.replace(from, to)).unwrap();
}

/// Runs the binary to its exit (`bound` at most) and returns its status
/// and log.
fn run_to_exit(setup: &Setup, bound: Duration) -> (Option<std::process::ExitStatus>, String) {
    let mut gateway = Gateway {
        child: gateway_command(setup).spawn().unwrap(),
        port: 0,
        admin_port: 0,
        log: setup.dir.join("gateway.log"),
    };
    let status = gateway.wait_exit(bound);
    (status, gateway.log())
}

fn audit_records(setup: &Setup) -> Vec<Value> {
    std::fs::read_to_string(&setup.audit_log)
        .unwrap_or_default()
        .lines()
        // A SIGKILL may cut the last line short.
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A client that sends half a request line and then nothing.
fn slow_client(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /api/v1/dags HTTP/1.1\r\nhost: loc")
        .unwrap();
    stream
}

/// Whether the gateway closed this connection within `bound`.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn the_example_configuration_reads() {
    let example = cedar_edge_testkit::repo().join("host-examples/gateway/examples/gateway.yaml");
    let config = cedar_edge_gateway::config::GatewayConfig::read(&example).unwrap();
    assert_eq!(config.reload_settle_ms, 2_000);
    assert_eq!(config.connections.idle_timeout_ms, 60_000);
}

// --- finding 4: tokens --------------------------------------------------

#[test]
fn tokens_with_unreadable_times_a_crit_header_or_an_unlisted_type_are_refused() {
    let (setup, port) = Gateway::setup("hardening-tokens", "");
    edit_config(
        &setup,
        "    jwks_file: rsa-jwks.json\n",
        "    jwks_file: rsa-jwks.json\n    accepted_types: [at+jwt]\n",
    );
    let gateway = Gateway::start(&setup, port);
    let header = |extra: Value| {
        let mut header = json!({"alg": "RS256", "kid": setup.rsa.kid, "typ": "at+jwt"});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        header
    };
    let bob = claims(RSA_ISSUER, "bob", &[], true);
    let with = |name: &str, value: Value| {
        let mut claims = bob.clone();
        claims[name] = value;
        claims
    };
    let sign = |header: Value, claims: &Value| setup.rsa.sign_with_header(&header, claims);

    // The same token, well formed, is allowed: every refusal below is down
    // to the one thing changed.
    let good = sign(header(json!({})), &bob);
    assert_eq!(gateway.call(Some(&good)).status, 200);
    let spelled = sign(header(json!({"typ": "application/AT+JWT"})), &bob);
    assert_eq!(gateway.call(Some(&spelled)).status, 200);

    let refused = [
        // GHSA-h395-gr6q-cpjc: jsonwebtoken 9 skips a string `nbf`.
        (
            "string nbf",
            sign(header(json!({})), &with("nbf", json!("99999999999"))),
            "`nbf`",
        ),
        (
            "nbf it cannot hold",
            sign(header(json!({})), &with("nbf", json!(1e30))),
            "`nbf`",
        ),
        (
            "string exp",
            sign(header(json!({})), &with("exp", json!("99999999999"))),
            "`exp`",
        ),
        (
            "string iat",
            sign(header(json!({})), &with("iat", json!("0"))),
            "`iat`",
        ),
        (
            "crit",
            sign(header(json!({"crit": ["exp"], "exp": 1})), &bob),
            "crit",
        ),
        (
            "unlisted typ",
            sign(header(json!({"typ": "JWT"})), &bob),
            "token type",
        ),
        (
            "no typ",
            sign(json!({"alg": "RS256", "kid": setup.rsa.kid}), &bob),
            "token type",
        ),
    ];
    for (case, token, reason) in refused {
        let reply = gateway.call(Some(&token));
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains(reason), "{case}: {challenge}");
    }
    // The list is per issuer: the ES256 issuer lists none.
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    assert_eq!(gateway.call(Some(&carol)).status, 403);
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1, and
/// a TLS server that answers every request with `document`.
struct TlsJwks {
    port: u16,
    ca_pem: String,
}

impl TlsJwks {
    fn start(document: String) -> Self {
        let authority = common::pki::Authority::new("cedar-edge test CA");
        let leaf = authority.leaf(&["localhost"], &[], true);
        let (chain, key) = leaf.for_rustls();
        let config = rustls::ServerConfig::builder_with_provider(common::pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, document) = (Arc::clone(&config), document.clone());
                std::thread::spawn(move || {
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(connection, stream);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                        document.len()
                    );
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Self {
            port,
            ca_pem: authority.pem(),
        }
    }
}

#[test]
fn jwks_over_https_verifies_against_a_private_ca_and_nothing_else() {
    let (setup, port) = Gateway::setup("hardening-jwks-https", "");
    let server = TlsJwks::start(setup.rsa.jwks());
    std::fs::write(setup.dir.join("ca.pem"), &server.ca_pem).unwrap();
    edit_config(
        &setup,
        "    jwks_file: rsa-jwks.json\n",
        &format!(
            "    jwks_url: https://localhost:{}/jwks.json\n    jwks_ca_file: ca.pem\n",
            server.port
        ),
    );
    {
        let gateway = Gateway::start(&setup, port);
        let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
        assert_eq!(gateway.call(Some(&bob)).status, 200);
    }

    // The same server is not trusted through the public web roots: the
    // start fails, and says why.
    edit_config(&setup, "    jwks_ca_file: ca.pem\n", "");
    let (status, log) = run_to_exit(&setup, Duration::from_secs(20));
    assert!(status.is_some_and(|status| !status.success()), "{log}");
    assert!(
        log.contains("TLS") && log.contains("UnknownIssuer"),
        "{log}"
    );

    // Keys fetched in the clear from another machine are refused before
    // any fetch; plain http stays for loopback.
    edit_config(
        &setup,
        &format!("https://localhost:{}/jwks.json", server.port),
        "http://192.0.2.10/jwks.json",
    );
    let refused = cedar_edge_gateway::config::GatewayConfig::read(&setup.config).unwrap_err();
    assert!(refused.to_string().contains("use https://"), "{refused}");
}

#[test]
fn a_dead_or_hanging_jwks_endpoint_fails_the_start_within_the_fetch_timeout() {
    // Dead: nothing listens.
    let (setup, _) = Gateway::setup("hardening-jwks-dead", "");
    let dead = free_port();
    edit_config(
        &setup,
        "    jwks_file: rsa-jwks.json\n",
        &format!("    jwks_url: http://127.0.0.1:{dead}/jwks.json\n"),
    );
    let (status, log) = run_to_exit(&setup, Duration::from_secs(15));
    assert!(status.is_some_and(|status| !status.success()), "{log}");
    assert!(
        log.contains("cannot connect") && log.contains(RSA_ISSUER),
        "{log}"
    );

    // Hanging: the connection is accepted, and nothing is ever sent.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let (setup, _) = Gateway::setup("hardening-jwks-hanging", "");
    edit_config(
        &setup,
        "    jwks_file: rsa-jwks.json\n",
        &format!("    jwks_url: http://127.0.0.1:{hanging}/jwks.json\n"),
    );
    let started = Instant::now();
    // The fetch timeout is 10 s; the bound leaves room for a busy machine.
    let (status, log) = run_to_exit(&setup, Duration::from_secs(30));
    assert!(
        status.is_some_and(|status| !status.success()),
        "still running after {:?}: {log}",
        started.elapsed()
    );
    assert!(
        log.contains("no complete answer within 10 s") && log.contains(&hanging.to_string()),
        "{log}"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the endpoint was never reached"
    );
}

#[test]
fn an_endless_jwks_body_is_cut_at_its_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endless = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicUsize::new(0));
    {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let Some(Ok(mut stream)) = listener.incoming().next() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            // JSON whitespace, 64 KiB a chunk, until the reader goes away
            // (or 512 MiB, which only a reader without a cap would take).
            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            let started = Instant::now();
            while written.load(Ordering::Relaxed) < 512 << 20
                && started.elapsed() < Duration::from_secs(30)
            {
                if stream.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
                written.fetch_add(0x10000, Ordering::Relaxed);
            }
        });
    }
    let (setup, _) = Gateway::setup("hardening-jwks-endless", "");
    edit_config(
        &setup,
        "    jwks_file: rsa-jwks.json\n",
        &format!("    jwks_url: http://127.0.0.1:{endless}/jwks.json\n"),
    );
    let (status, log) = run_to_exit(&setup, Duration::from_secs(30));
    assert!(status.is_some_and(|status| !status.success()), "{log}");
    assert!(log.contains("the cap is 1048576 bytes"), "{log}");
    // What the gateway took is its 1 MiB plus what loopback buffers hold.
    let sent = written.load(Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{sent} bytes went out before the gateway stopped reading"
    );
}

// --- finding 5: connections ---------------------------------------------

#[test]
fn a_slow_header_or_a_stalled_body_is_cut_by_its_timeout() {
    let (setup, port) = Gateway::setup(
        "hardening-slow",
        "connections:\n  header_read_timeout_ms: 500\n  idle_timeout_ms: 800\n",
    );
    let gateway = Gateway::start(&setup, port);
    let mut slow = slow_client(port);
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)),
        "a half-sent header kept its connection"
    );

    // Headers complete, then 10 of 100 body bytes, then nothing: the
    // upstream waits for the rest, and the idle timeout ends it.
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stalled,
        "POST {TRIGGER} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {bob}\r\ncontent-length: 100\r\n\r\n0123456789"
    )
    .unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(10)),
        "a stalled upload kept its connection"
    );
    assert!(gateway.metric("cedar_edge_connections_closed_total{reason=\"header_timeout\"}") >= 1);
    assert!(gateway.metric("cedar_edge_connections_closed_total{reason=\"idle_timeout\"}") >= 1);
    // A client that keeps to the limits is served as before.
    assert_eq!(gateway.call(Some(&bob)).status, 200);
}

#[test]
fn with_every_slot_held_by_slow_clients_a_request_waits_for_a_free_slot_and_is_served() {
    let (setup, port) = Gateway::setup(
        "hardening-cap",
        "connections:\n  max: 8\n  header_read_timeout_ms: 1500\n",
    );
    let gateway = Gateway::start(&setup, port);
    let mut slow: Vec<TcpStream> = (0..8).map(|_| slow_client(port)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let mut legit = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        legit,
        "POST {TRIGGER} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {bob}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    // At the cap the gateway does not take the connection at all...
    legit
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut first = [0u8; 1];
    let early = legit.read(&mut first);
    assert!(
        early.as_ref().is_err_and(|err| matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "answered past the cap: {early:?}"
    );
    // ...until the header timeout frees the slots of the slow clients.
    legit
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    legit.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for stream in &mut slow {
        assert!(closed_within(stream, Duration::from_secs(5)));
    }
    assert!(gateway.metric("cedar_edge_connections_closed_total{reason=\"header_timeout\"}") >= 8);
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_the_accept_loop_pauses_and_recovers() {
    let (setup, port) = Gateway::setup(
        "hardening-emfile",
        "connections:\n  max: 10000\n  header_read_timeout_ms: 2500\n",
    );
    // 128 descriptors for the gateway, and 160 clients that hold theirs.
    let mut command = Command::new("sh");
    let log = std::fs::File::create(setup.dir.join("gateway.log")).unwrap();
    command
        .args([
            "-c",
            "ulimit -n 128 && exec \"$0\" --config \"$1\"",
            gateway_binary().to_str().unwrap(),
            setup.config.to_str().unwrap(),
        ])
        .env("RUST_LOG", "error")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let gateway = Gateway {
        child: command.spawn().unwrap(),
        port,
        admin_port: setup.admin_port,
        log: setup.dir.join("gateway.log"),
    };
    assert!(wait_ready(setup.admin_port), "{}", gateway.log());
    let started = Instant::now();
    let _slow: Vec<TcpStream> = (0..160).map(|_| slow_client(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(gateway.child.id());
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks(gateway.child.id()) - before;
    // A loop that spins on EMFILE burns a whole core: 150 ticks here.
    assert!(
        spent < 60,
        "{spent} ticks of CPU in 1.5 s while out of descriptors"
    );

    // Once the header timeout frees descriptors, requests are served.
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let mut served = false;
    while started.elapsed() < Duration::from_secs(20) && !served {
        served = gateway.call(Some(&bob)).status == 200;
    }
    assert!(served, "{}", gateway.log());
    let errors = gateway.metric("cedar_edge_accept_errors_total");
    // One failed accept per pause (100 ms) at most, while descriptors were short.
    assert!(
        (1..=10 * started.elapsed().as_secs() + 10).contains(&errors),
        "{errors} failed accepts"
    );
}

// --- finding 6 and 7: reloads -------------------------------------------

fn nested(depth: usize) -> String {
    format!(
        "@id(\"deep\")\nforbid (principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

#[test]
fn a_deep_policy_on_hot_reload_is_refused_and_the_last_good_bundle_keeps_serving() {
    let (setup, port) = Gateway::setup("hardening-deep", "");
    let gateway = Gateway::start(&setup, port);
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let serving = gateway.bundle_id();
    assert_eq!(gateway.call(Some(&bob)).status, 200);
    for (round, depth) in [150, 10_000].into_iter().enumerate() {
        // A forbid of everything: served, it would turn bob's 200 into 403.
        std::fs::write(setup.bundle.join("deep.cedar"), nested(depth)).unwrap();
        let mut failed = 0;
        for _ in 0..100 {
            failed = gateway.metric("cedar_edge_reloads_total{result=\"failed\"}");
            if failed > round as u64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(failed, round as u64 + 1, "depth {depth}: {}", gateway.log());
        assert_eq!(gateway.bundle_id(), serving, "depth {depth}");
        assert_eq!(gateway.call(Some(&bob)).status, 200, "depth {depth}");
    }
    // Refused content is not retried on every poll.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        gateway.metric("cedar_edge_reloads_total{result=\"failed\"}"),
        2
    );
    assert_eq!(gateway.metric("cedar_edge_reloads_total{result=\"ok\"}"), 0);
    let log = gateway.log();
    assert!(log.contains("nested more than"), "{log}");
    assert!(log.contains("bundle reload refused"), "{log}");
}

/// Replaces a file the way deploy tools do: write beside it, rename over.
fn write_atomically(path: &std::path::Path, text: &str) {
    let temporary = path.with_extension("tmp-deploy");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[test]
fn a_forbid_moved_between_two_files_is_never_served_half_moved() {
    // Polls every 50 ms; a change must hold 600 ms. The deploy writes its
    // two files 300 ms apart, six polls: the old rule (apply any change at
    // the next poll) served the in-between bundle for 250 ms.
    let (setup, port) = Gateway::setup("hardening-half-applied", "");
    edit_config(&setup, "reload_poll_ms: 100\n", "reload_poll_ms: 50\n");
    edit_config(&setup, "reload_settle_ms: 0\n", "reload_settle_ms: 600\n");
    let gateway = Arc::new(Gateway::start(&setup, port));
    let before = gateway.bundle_id();
    // bob's token is 13 hours old: `forbid-stale-tokens` denies it.
    let mut stale_claims = claims(RSA_ISSUER, "bob", &[], true);
    stale_claims["iat"] = json!(now() - 13 * 3600);
    let stale = setup.rsa.sign(&stale_claims);
    assert_eq!(gateway.call(Some(&stale)).status, 403);

    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let (gateway, done, stale) = (Arc::clone(&gateway), Arc::clone(&done), stale.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !done.load(Ordering::Relaxed) {
                statuses.push(gateway.call(Some(&stale)).status);
            }
            statuses
        })
    };
    let deploy = setup.bundle.join("deploy.cedar");
    let roles = setup.bundle.join("roles.cedar");
    let deploy_text = std::fs::read_to_string(&deploy).unwrap();
    let start = deploy_text
        .find("// Tokens older than an hour")
        .expect("the stale-token forbid");
    let (kept, forbid) = deploy_text.split_at(start);
    std::thread::sleep(Duration::from_millis(200));
    write_atomically(&deploy, kept);
    std::thread::sleep(Duration::from_millis(300));
    let roles_text = std::fs::read_to_string(&roles).unwrap();
    write_atomically(&roles, &format!("{roles_text}\n{forbid}"));
    let mut after = before.clone();
    for _ in 0..100 {
        after = gateway.bundle_id();
        if after != before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(after, before, "the moved forbid never became active");
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    let statuses = load.join().unwrap();
    let allowed = statuses.iter().filter(|status| **status != 403).count();
    assert!(statuses.len() > 20, "only {} requests", statuses.len());
    assert_eq!(
        allowed,
        0,
        "{allowed} of {} requests were not denied",
        statuses.len()
    );
    assert_eq!(gateway.metric("cedar_edge_reloads_total{result=\"ok\"}"), 1);
    // The new bundle is the whole deploy: a fresh token still gets in.
    let fresh = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    assert_eq!(gateway.call(Some(&fresh)).status, 200);
}

#[test]
fn sighup_applies_a_change_at_once_where_polls_wait_for_it_to_settle() {
    let (setup, port) = Gateway::setup("hardening-sighup", "");
    edit_config(&setup, "reload_settle_ms: 0\n", "reload_settle_ms: 60000\n");
    let gateway = Gateway::start(&setup, port);
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    assert_eq!(gateway.call(Some(&carol)).status, 403);
    let roles = setup.bundle.join("roles.cedar");
    let mut text = std::fs::read_to_string(&roles).unwrap();
    text.push_str("\n@id(\"viewers-trigger\")\npermit (principal in Airflow::Role::\"viewer\", action == Airflow::Action::\"trigger\", resource is Airflow::Dag);\n");
    write_atomically(&roles, &text);
    // Several polls see it, but it has not held for the settle time.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gateway.call(Some(&carol)).status, 403);
    gateway.signal("HUP");
    let mut status = 0;
    for _ in 0..100 {
        status = gateway.call(Some(&carol)).status;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 200, "{}", gateway.log());
}

// --- finding 8: the audit log -------------------------------------------

#[test]
fn the_audit_log_is_private_and_a_huge_rejected_token_adds_a_short_record() {
    let (setup, port) = Gateway::setup("hardening-audit-size", "");
    let gateway = Gateway::start(&setup, port);
    // A 270 KB token whose unverified `iss` is 200 KB.
    let mut huge = claims("x", "bob", &[], true);
    huge["iss"] = json!("i".repeat(200_000));
    huge["pad"] = json!("p".repeat(70_000));
    let token = setup.rsa.sign(&huge);
    assert!(token.len() > 270_000);
    let reply = gateway.call(Some(&token));
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.header("www-authenticate").unwrap().len() < 400);
    gateway.stop();
    let log = std::fs::read_to_string(&setup.audit_log).unwrap();
    let record = log.lines().last().unwrap();
    assert!(record.contains("\"unauthenticated\""), "{record}");
    assert!(record.len() < 1024, "a {} byte record", record.len());
    let mode = std::fs::metadata(&setup.audit_log)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // Group-readable only when asked.
    let (setup, port) = Gateway::setup("hardening-audit-group", "audit_log_group_readable: true\n");
    Gateway::start(&setup, port).stop();
    let mode = std::fs::metadata(&setup.audit_log)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "{mode:o}");
}

#[test]
fn records_of_unauthenticated_requests_are_rate_limited_and_the_rest_counted() {
    let (setup, port) = Gateway::setup(
        "hardening-audit-flood",
        "audit_unauthenticated_per_second: 20\n",
    );
    let gateway = Gateway::start(&setup, port);
    let sent = 400;
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..sent / 4)
                    .map(|_| http::get(port, "POST", TRIGGER, &[]).status)
                    .filter(|status| *status == 401)
                    .count()
            })
        })
        .collect();
    let refused: usize = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    let seconds = started.elapsed().as_secs();
    assert_eq!(refused, sent);
    let dropped = gateway.metric("cedar_edge_audit_dropped_total");
    // An authenticated decision is never dropped.
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    assert_eq!(gateway.call(Some(&bob)).status, 200);
    gateway.stop();
    let records = audit_records(&setup);
    let written = records
        .iter()
        .filter(|record| record["decision"] == "unauthenticated")
        .count();
    assert_eq!(written as u64 + dropped, sent as u64);
    assert!(dropped > 0);
    assert!(
        written as u64 <= 20 * (seconds + 2),
        "{written} records in {seconds} s"
    );
    assert_eq!(
        records
            .iter()
            .filter(|record| record["decision"] == "allow")
            .count(),
        1
    );
}

/// The decision id of an answer: the echo upstream shows the header the
/// gateway set, and a denial carries it in its body.
fn decision_id(reply: &Reply) -> Option<String> {
    let body = reply.json();
    body["headers"]["x-cedar-decision-id"]
        .as_str()
        .or(body["decision_id"].as_str())
        .map(str::to_owned)
}

#[test]
fn sigkill_under_load_loses_no_record_answered_a_second_and_a_half_earlier() {
    let (setup, port) = Gateway::setup("hardening-sigkill", "");
    let gateway = Gateway::start(&setup, port);
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let workers: Vec<_> = (0..3)
        .map(|worker| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            let token = if worker == 0 {
                carol.clone()
            } else {
                bob.clone()
            };
            std::thread::spawn(move || {
                let bearer = format!("Bearer {token}");
                let headers: [(&str, &[u8]); 1] = [("authorization", bearer.as_bytes())];
                while !stop.load(Ordering::Relaxed) {
                    // After the kill, connections are refused: that ends the load.
                    let Some(reply) = http::try_send(port, "POST", TRIGGER, &headers) else {
                        break;
                    };
                    if let Some(id) = decision_id(&reply) {
                        answered.lock().unwrap().push((id, Instant::now()));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(3000));
    let mut gateway = gateway;
    gateway.child.kill().unwrap();
    let killed = Instant::now();
    gateway.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let written: BTreeSet<String> = audit_records(&setup)
        .iter()
        .filter_map(|record| record["decision_id"].as_str().map(str::to_owned))
        .collect();
    let answered = answered.lock().unwrap();
    let old: Vec<&String> = answered
        .iter()
        .filter(|(_, at)| *at + Duration::from_millis(1500) < killed)
        .map(|(id, _)| id)
        .collect();
    assert!(old.len() > 100, "only {} answers under load", old.len());
    let lost: Vec<&&String> = old.iter().filter(|id| !written.contains(**id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} records lost: {lost:?}",
        lost.len(),
        old.len()
    );
}

#[test]
fn sigterm_with_slow_clients_connected_ends_within_the_drain_time_with_every_record() {
    let (setup, port) = Gateway::setup(
        "hardening-drain",
        "connections:\n  header_read_timeout_ms: 60000\n  drain_timeout_ms: 1000\n",
    );
    let mut gateway = Gateway::start(&setup, port);
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    let mut ids = BTreeSet::new();
    for index in 0..50 {
        let token = if index % 2 == 0 { &bob } else { &carol };
        let reply = gateway.call(Some(token));
        ids.insert(decision_id(&reply).unwrap());
    }
    let _slow: Vec<TcpStream> = (0..20).map(|_| slow_client(port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    gateway.signal("TERM");
    // A 1 s drain; the bound leaves room for a busy machine.
    let status = gateway.wait_exit(Duration::from_secs(8));
    assert!(
        status.is_some(),
        "still running {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(status.unwrap().success(), "{}", gateway.log());
    let written: BTreeSet<String> = audit_records(&setup)
        .iter()
        .filter_map(|record| record["decision_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = ids.difference(&written).collect();
    assert!(missing.is_empty(), "missing records: {missing:?}");
}
