//! Helpers the CLI's test files share.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the built `cedar-edge` from the repository root.
pub fn cedar_edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cedar-edge"))
        .args(args)
        .current_dir(repo())
        // Keep the compiled-component cache inside the build tree.
        .env(
            "XDG_CACHE_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
        )
        .output()
        .expect("the binary runs")
}

/// `cedar-edge authorize` of the example request (bob triggers
/// `etl_daily` from the office with MFA) against `bundle`, as JSON, with
/// `extra` arguments.
pub fn authorize_bob_triggers(bundle: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "authorize",
        "--bundle",
        bundle,
        "--principal",
        "Airflow::User::\"bob\"",
        "--action",
        "Airflow::Action::\"trigger\"",
        "--resource",
        "Airflow::Dag::\"etl_daily\"",
        "--context",
        "@policies/airflow-gitlab/requests/context-mfa-office.json",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    cedar_edge(&args)
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a bundle (or any tree of files) into a fresh directory under the
/// test's temporary folder, and returns its path.
pub fn write_tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
    }
    dir
}

/// Runs the built `cedar-edge` like [`cedar_edge`], but kills it and fails
/// the test when it runs longer than `limit`: a command that loops fails
/// instead of hanging the suite.
pub fn cedar_edge_within(limit: std::time::Duration, args: &[&str]) -> Output {
    use std::io::Read as _;
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_cedar-edge"))
        .args(args)
        .current_dir(repo())
        .env(
            "XDG_CACHE_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Drained while it runs, so that a full pipe never stalls it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as _));
    let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as _));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cedar-edge {}` still ran after {limit:?}", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}
