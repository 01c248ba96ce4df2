//! The decision service over real loopback HTTP: one evaluation, and
//! batches of 10 and 100, through the component and natively, on one
//! kept-alive connection. What the table shows is the cost a caller sees:
//! HTTP parsing, caller authentication, JSON, the decisions and their
//! audit records.
//!
//! `cargo bench -p cedar-edge-gateway --bench decision_service`
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const SECRET: &str = "bench-caller-secret";

/// A decision service running on its own runtime, for as long as the bench.
struct Service {
    port: u16,
    _runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    cedar_edge_core::hex(&sha2::Sha256::digest(text.as_bytes()))
}

impl Service {
    fn start(backend: &str) -> Self {
        let dir = repo().join("target/bench-decision-service").join(backend);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("pdp.yaml");
        std::fs::write(
            &config,
            format!(
                "bundle: {bundle}\nbackend: {backend}\naudit_log: audit.jsonl\npdp:\n  listen: 127.0.0.1:0\n  \
                 public_url: http://127.0.0.1\n  types: {{ user: Todo::User, todo: Todo::Todo }}\n  \
                 action_type: Todo::Action\n  callers:\n    - name: bench\n      bearer_sha256: {hash}\n",
                bundle = repo().join("policies/authzen-todo").display(),
                hash = sha256_hex(SECRET),
            ),
        )
        .unwrap();
        let config = cedar_edge_gateway::config::GatewayConfig::read(&config).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let listeners = cedar_edge_gateway::Listeners {
            proxy: None,
            pdp: Some(listener),
            admin: None,
            ext_authz: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (reload_sender, reload) = tokio::sync::mpsc::channel(1);
        runtime.spawn(async move {
            let _keep = reload_sender;
            let shutdown = async {
                let _ = stopped.await;
            };
            cedar_edge_gateway::run(config, listeners, shutdown, reload).await
        });
        let service = Self {
            port,
            _runtime: runtime,
            _stop: stop,
        };
        let mut client = Client::connect(port);
        for _ in 0..600 {
            if client.post("/access/v1/evaluation", &single()).is_some() {
                return service;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            client = Client::connect(port);
        }
        panic!("the decision service did not start");
    }
}

/// A kept-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                break stream;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        stream.set_nodelay(true).unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// POSTs a body and returns the answer's body when the status is 200.
    fn post(&mut self, path: &str, body: &[u8]) -> Option<Vec<u8>> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {SECRET}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes()).ok()?;
        self.writer.write_all(body).ok()?;
        let mut status = String::new();
        self.reader.read_line(&mut status).ok()?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer).ok()?;
        status.contains(" 200 ").then_some(answer)
    }
}

fn evaluation(subject: &str, todo: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": todo},
    })
}

fn single() -> Vec<u8> {
    evaluation(
        "morty@the-citadel.com",
        "7240d0db-8ff0-41ec-98b2-34a096273b91",
    )
    .to_string()
    .into_bytes()
}

/// A batch of `size` items sharing the subject and action, half allowed.
fn batch(size: usize) -> Vec<u8> {
    let todos = [
        "7240d0db-8ff0-41ec-98b2-34a096273b91",
        "7240d0db-8ff0-41ec-98b2-34a096273b92",
    ];
    let items: Vec<Value> = (0..size)
        .map(|index| json!({"resource": {"type": "todo", "id": todos[index % 2]}}))
        .collect();
    json!({
        "subject": {"type": "user", "id": "morty@the-citadel.com"},
        "action": {"name": "can_update_todo"},
        "evaluations": items,
    })
    .to_string()
    .into_bytes()
}

fn decision_service(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision_service");
    for backend in ["component", "native"] {
        let service = Service::start(backend);
        let mut client = Client::connect(service.port);
        let body = single();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{backend}/evaluation"), |b| {
            b.iter(|| client.post("/access/v1/evaluation", &body).unwrap());
        });
        for size in [10, 100] {
            let body = batch(size);
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(format!("{backend}/evaluations/{size}"), |b| {
                b.iter(|| client.post("/access/v1/evaluations", &body).unwrap());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decision_service);
criterion_main!(benches);
