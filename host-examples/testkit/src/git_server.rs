//! A Git server on loopback for tests: `git daemon` serving bare
//! repositories from a temporary folder, with pushes allowed, and work trees
//! that commit and push into them.
//!
//! Every `git` run here gets its user settings as `-c` flags and an empty
//! home, so a developer's own configuration (signing, hooks, default
//! branch) cannot change what a test sees.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

/// Makes each temporary folder of a test process distinct.
static NEXT_ROOT: AtomicU64 = AtomicU64::new(0);

/// A `git daemon` on 127.0.0.1 serving the repositories of a temporary
/// folder. Dropping it stops the daemon and removes the folder.
pub struct GitServer {
    root: PathBuf,
    port: u16,
    daemon: Option<Child>,
}

impl GitServer {
    /// Starts the daemon on a free port and waits until it accepts.
    pub fn start() -> Self {
        let root = std::env::temp_dir().join(format!(
            "cedar-edge-git-{}-{}",
            std::process::id(),
            NEXT_ROOT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for folder in ["repos", "work", "home", "scratch"] {
            std::fs::create_dir_all(root.join(folder)).expect("create the server's folders");
        }
        let repos = root.join("repos");
        let port = free_port();
        // `git-daemon` itself rather than `git daemon`: `git` would run it
        // as a child, which killing `git` leaves listening.
        let exec_path = run(git_command(&root).arg("--exec-path"));
        let mut daemon = Command::new(Path::new(exec_path.trim()).join("git-daemon"));
        daemon
            .env("HOME", &root)
            .env("XDG_CONFIG_HOME", &root)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        let daemon = daemon
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg(format!("--base-path={}", repos.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(&repos)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let mut server = Self {
            root,
            port,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(daemon) = server.daemon.as_mut()
                && let Ok(Some(status)) = daemon.try_wait()
            {
                panic!("git daemon exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The port the daemon listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty bare repository `name` and gives its URL.
    pub fn create_repo(&self, name: &str) -> String {
        let path = self.root.join("repos").join(name);
        run(git_command(&self.root)
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&path));
        self.url(name)
    }

    /// The URL of repository `name`: `git://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty folder below the server's temporary folder (removed with
    /// it), for a test's cache or keys.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.root.join("scratch").join(name);
        std::fs::create_dir_all(&path).expect("create a scratch folder");
        path
    }

    /// A fresh work tree on branch `main` whose `origin` is repository
    /// `name` of this server.
    pub fn work_tree(&self, name: &str) -> WorkTree {
        let dir = self.root.join("work").join(format!(
            "{name}-{}",
            NEXT_ROOT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the work tree");
        let tree = WorkTree {
            dir,
            home: self.root.join("home"),
        };
        tree.git(&["init", "--quiet", "--initial-branch=main"]);
        tree.git(&["remote", "add", "origin", &self.url(name)]);
        tree
    }

    /// Stops the daemon (SIGKILL) and waits for it; the repositories stay
    /// until drop.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A working clone that writes files, commits and pushes.
pub struct WorkTree {
    dir: PathBuf,
    home: PathBuf,
}

impl WorkTree {
    /// The work tree's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `path` (relative, `/`-separated), creating
    /// folders as needed.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) {
        let target = self.dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        std::fs::write(&target, contents).expect("write a file");
    }

    /// Copies every file below `from` to `to` in the work tree, and gives
    /// the copied files' paths relative to `from`.
    pub fn copy_dir(&self, from: &Path, to: &str) -> Vec<String> {
        let mut copied = Vec::new();
        for relative in files_below(from) {
            let contents = std::fs::read(from.join(&relative)).expect("read a file to copy");
            self.write(&format!("{to}/{relative}"), contents);
            copied.push(relative);
        }
        copied
    }

    /// Makes `path` a symbolic link to `target`.
    #[cfg(unix)]
    pub fn symlink(&self, path: &str, target: &str) {
        let link = self.dir.join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        std::os::unix::fs::symlink(target, link).expect("make a symbolic link");
    }

    /// Removes a file or folder from the work tree.
    pub fn remove(&self, path: &str) {
        let target = self.dir.join(path);
        if target.is_dir() {
            std::fs::remove_dir_all(target).expect("remove a folder");
        } else {
            std::fs::remove_file(target).expect("remove a file");
        }
    }

    /// Commits every change and gives the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Commits every change, signed with the SSH private key `key`, and
    /// gives the commit id.
    pub fn commit_signed(&self, message: &str, key: &Path) -> String {
        self.git(&["add", "--all"]);
        let signing_key = format!("user.signingkey={}", key.display());
        self.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "--quiet",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        self.head()
    }

    /// The current commit id.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Makes an annotated tag of the current commit and gives the tag
    /// object's id (not the commit's).
    pub fn tag(&self, name: &str, message: &str) -> String {
        self.git(&["tag", "--annotate", "-m", message, name]);
        self.git(&["rev-parse", &format!("refs/tags/{name}")])
            .trim()
            .to_owned()
    }

    /// Switches to a new branch `name` starting at `start` (a commit or ref).
    pub fn branch(&self, name: &str, start: &str) {
        self.git(&["checkout", "--quiet", "-B", name, start]);
    }

    /// Pushes `refspec` to `origin`, e.g. `HEAD:refs/heads/main`, a tag
    /// `refs/tags/v1`, or `+HEAD:refs/heads/main` to force.
    pub fn push(&self, refspec: &str) {
        self.git(&["push", "--quiet", "origin", refspec]);
    }

    /// Runs git in the work tree and gives its stdout; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let mut command = git_command(&self.home);
        command
            .args(["-c", "user.name=cedar-edge test"])
            .args(["-c", "user.email=test@cedar-edge.invalid"])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .arg("-C")
            .arg(&self.dir)
            .args(args);
        run(&mut command)
    }
}

/// `git` with an empty home and no system configuration.
fn git_command(home: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// Runs a command to success and gives its stdout.
fn run(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect("run git");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every file below `dir`, as `/`-separated paths relative to it, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(dir.join(&relative)).expect("list a folder");
        for entry in entries {
            let entry = entry.expect("read a folder entry");
            let child = relative.join(entry.file_name());
            let kind = entry.file_type().expect("read a file type");
            if kind.is_dir() {
                pending.push(child);
            } else {
                found.push(
                    child
                        .components()
                        .map(|part| part.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    found.sort();
    found
}
