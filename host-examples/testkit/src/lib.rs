//! Test equipment shared by the hosts' tests and load benches: RS256 and
//! ES256 issuers with keys made per run, an echo upstream on loopback that
//! records what it received, a raw HTTP/1.1 client, and a `wrk` runner.
//!
//! Nothing here builds wasm, so a host's tests can use it without waiting
//! for the Envoy filter or the component.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod git_server;
pub mod http;
pub mod jwt;
pub mod load;
pub mod registry;
pub mod upstream;

/// The repository root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Sends SIGTERM to a child process, as a service manager stops it, and
/// waits for its exit.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM failed");
    child.wait().expect("wait for the child")
}
