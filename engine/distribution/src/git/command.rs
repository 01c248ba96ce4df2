//! Running `git`: separate argv entries (never a shell), an environment
//! built from scratch, capped output and a deadline.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::spec::ALLOWED_SCHEMES;

/// The variables kept from the caller's environment: finding programs,
/// reaching the remote through a proxy, and the SSH agent. Everything
/// else, `GIT_DIR`, `GIT_CONFIG_*` or `GIT_EXEC_PATH` among them, is dropped.
const KEPT_VARIABLES: &[&str] = &[
    "PATH",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Configuration given to every call, ahead of the subcommand. No system or
/// global file is read (see [`run`]), so these are all the settings there are
/// apart from the cache repository's own, which this module writes.
const CONFIG: &[&str] = &[
    // No hooks, whatever a repository's config says.
    "core.hooksPath=/dev/null",
    // No stored credentials or prompts: a missing credential fails fast.
    "credential.helper=",
    // Objects from the remote are checked before they are stored.
    "fetch.fsckObjects=true",
    // No background `gc` outliving the call's deadline.
    "gc.auto=0",
    "maintenance.auto=false",
    // Whatever a planted repository config says: TLS is verified and no
    // proxy command runs.
    "http.sslVerify=true",
    "core.gitProxy=",
];

/// How often a running call is checked on.
const POLL: Duration = Duration::from_millis(10);

/// The most of git's stderr kept for a message.
const STDERR_CAP: usize = 64 * 1024;

/// What a finished call printed.
#[derive(Debug)]
pub(super) struct Output {
    pub(super) success: bool,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: String,
}

/// Why a call did not finish.
#[derive(Debug)]
pub(super) enum RunError {
    /// `git` could not be started.
    Spawn(std::io::Error),
    /// The deadline passed; the process was killed.
    Timeout,
    /// It printed more than the cap; the process was killed.
    TooMuchOutput,
}

/// Runs `git -c … ARGS` with `home` as its `HOME`, so that no user or
/// system configuration (aliases, hooks, `url.*.insteadOf`, credential
/// helpers) applies. Kills it at `timeout` or past `stdout_cap` bytes.
pub(super) fn run(
    home: &Path,
    args: &[OsString],
    timeout: Duration,
    stdout_cap: usize,
) -> Result<Output, RunError> {
    let mut command = Command::new("git");
    command.env_clear();
    for name in KEPT_VARIABLES {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_SCHEMES.join(":"))
        // Messages in one language, for matching and for operators.
        .env("LC_ALL", "C")
        // `refs/replace/*` could swap the tree of a verified, signed commit
        // for another: objects are read as they are.
        .env("GIT_NO_REPLACE_OBJECTS", "1");
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    for setting in CONFIG {
        command.arg("-c").arg(setting);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // Its own process group, so that a timeout also stops the helpers git
    // starts (`git-remote-http`, `ssh`), which may be what hangs.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);

    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let overflow = Arc::new(AtomicBool::new(false));
    let stdout = child.stdout.take().map(|pipe| {
        let overflow = Arc::clone(&overflow);
        thread::spawn(move || read_capped(pipe, stdout_cap, Some(&overflow)))
    });
    let stderr = child
        .stderr
        .take()
        .map(|pipe| thread::spawn(move || read_capped(pipe, STDERR_CAP, None)));

    let deadline = Instant::now() + timeout;
    // Done when git has exited and both pipes are closed: a helper git
    // started may hold them longer, and is bound by the same deadline.
    let mut exited = None;
    let status = loop {
        let failure = if overflow.load(Ordering::Relaxed) {
            Some(RunError::TooMuchOutput)
        } else if Instant::now() >= deadline {
            Some(RunError::Timeout)
        } else {
            None
        };
        if let Some(failure) = failure {
            // The readers are left to end with the pipes.
            kill_group(&mut child);
            return Err(failure);
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(status) => exited = status,
                Err(err) => {
                    kill_group(&mut child);
                    return Err(RunError::Spawn(err));
                }
            }
        }
        let drained = stdout.as_ref().is_none_or(thread::JoinHandle::is_finished)
            && stderr.as_ref().is_none_or(thread::JoinHandle::is_finished);
        if let Some(status) = exited
            && drained
        {
            break status;
        }
        thread::sleep(POLL);
    };
    let stdout = stdout
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    if overflow.load(Ordering::Relaxed) {
        return Err(RunError::TooMuchOutput);
    }
    let stderr = stderr
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    Ok(Output {
        success: status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
    })
}

/// Kills the child's process group (with the `kill` program: this crate
/// has no `unsafe` for `kill(2)`), then the child itself in case that
/// failed, and reaps it.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads a pipe to its end, keeping at most `cap` bytes. Past that, with
/// an `overflow` flag it sets the flag and stops reading (the writer is
/// then killed); without one it drops the rest (for stderr).
fn read_capped(mut pipe: impl Read, cap: usize, overflow: Option<&AtomicBool>) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0_u8; 8192];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return kept,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return kept,
            Ok(read) => {
                let chunk = buffer.get(..read).unwrap_or_default();
                let room = cap.saturating_sub(kept.len());
                if chunk.len() > room
                    && let Some(overflow) = overflow
                {
                    overflow.store(true, Ordering::Relaxed);
                    return kept;
                }
                kept.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
            }
        }
    }
}
