//! An OCI registry on loopback for tests: the CNCF distribution registry
//! (Debian's `docker-registry`), storing under a temporary folder, with no
//! authentication. It can be stopped and started again on the same port and
//! storage, so a test can show a puller through "registry down" and "back".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The registry binary, as Debian installs it (`cargo xtask test` does).
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// Tells apart the folders of registries started by one test process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running (or stopped) registry with its own port and storage.
pub struct Registry {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// Writes a configuration into a fresh temporary folder and starts the
    /// registry on a free port; returns once `GET /v2/` answers 200.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cedar-edge-registry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the registry's folder");
        let port = crate::free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cedar-edge-testkit\n",
            storage = dir.join("storage").display(),
        );
        std::fs::write(dir.join("config.yml"), config).expect("write the registry's config");
        let mut registry = Self {
            port,
            dir,
            child: None,
        };
        registry.restart();
        registry
    }

    /// `127.0.0.1:PORT`, as an OCI reference names the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The folder the registry stores repositories and blobs under.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Where the filesystem driver keeps the content of a blob
    /// (`sha256:HEX`), so a test can tamper with what the registry serves.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).expect("a full digest"))
            .join(hex)
            .join("data")
    }

    /// Kills the registry and waits for it; the port and storage stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again (stopping it first if it runs) on the
    /// same port and storage, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.join("registry.log")).expect("create the log");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start {REGISTRY_BINARY} (apt-get install docker-registry): {err}")
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reply = crate::http::try_send(self.port, "GET", "/v2/", &[]);
            if reply.is_some_and(|reply| reply.status == 200) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.stop();
                panic!(
                    "the registry on port {} did not start ({exited:?}): {}",
                    self.port,
                    read_log(&self.dir.join("registry.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
