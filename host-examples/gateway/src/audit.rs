//! The audit log: one JSON line per decision, written by one task through a
//! buffer.
//!
//! - Records go through an unbounded channel, so a slow disk never drops an
//!   answered decision.
//! - The writer hands records to the kernel as soon as the queue is empty,
//!   and under load at least every [`SYNC_INTERVAL`], when it also fsyncs.
//!   So a killed process (SIGKILL, an abort) loses only what was queued or
//!   buffered in its last second, and a power cut what came after the last
//!   fsync, at most about a second. Closing the log drains the channel,
//!   flushes and syncs.
//! - The file is created `0600` (`0640` when configured): records hold
//!   claims.
//! - Records of unauthenticated requests are rate-limited (anyone can send
//!   those), and what was dropped is counted by the caller.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest time a written record stays only in memory.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What the rest of the gateway holds to write records.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::UnboundedSender<String>,
    unauthenticated: Mutex<RateWindow>,
    unauthenticated_per_second: u32,
}

#[derive(Debug)]
struct RateWindow {
    started: Instant,
    kept: u32,
}

/// The writer task; await [`AuditWriter::finish`] to close the log.
#[derive(Debug)]
pub struct AuditWriter {
    close: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<u64>>,
}

/// How the log file may be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditAccess {
    /// The owner only (`0600`).
    #[default]
    Owner,
    /// The owner and the group (`0640`).
    Group,
}

impl AuditLog {
    /// Opens (appends to) the log file and starts the writer. At most
    /// `unauthenticated_per_second` records of requests without a verified
    /// identity are kept each second.
    pub async fn open(
        path: &Path,
        access: AuditAccess,
        unauthenticated_per_second: u32,
    ) -> std::io::Result<(Self, AuditWriter)> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mode = match access {
            AuditAccess::Owner => 0o600,
            AuditAccess::Group => 0o640,
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(mode)
            .open(path)
            .await?;
        // An existing file keeps its owner but gets the configured mode.
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .await?;
        }
        let (sender, receiver) = mpsc::unbounded_channel::<String>();
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(write_records(file, receiver, closed));
        Ok((
            Self {
                sender,
                unauthenticated: Mutex::new(RateWindow {
                    started: Instant::now(),
                    kept: 0,
                }),
                unauthenticated_per_second,
            },
            AuditWriter { close, task },
        ))
    }

    /// Queues one record.
    pub fn record(&self, record: Value) {
        // After the log is closed, late records have nowhere to go.
        let _ = self.sender.send(record.to_string());
    }

    /// Whether one more record of an unauthenticated request may be written
    /// this second.
    pub fn admit_unauthenticated(&self) -> bool {
        let Ok(mut window) = self.unauthenticated.lock() else {
            return true;
        };
        if window.started.elapsed() >= Duration::from_secs(1) {
            window.started = Instant::now();
            window.kept = 0;
        }
        window.kept = window.kept.saturating_add(1);
        window.kept <= self.unauthenticated_per_second
    }
}

async fn write_records(
    file: tokio::fs::File,
    mut receiver: mpsc::UnboundedReceiver<String>,
    mut closed: oneshot::Receiver<()>,
) -> std::io::Result<u64> {
    let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    let mut written = 0u64;
    let mut unsynced = false;
    let mut sync = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            line = receiver.recv() => {
                let Some(line) = line else { break };
                writer.write_all(line.as_bytes()).await?;
                writer.write_all(b"\n").await?;
                written += 1;
                unsynced = true;
                // Flush when the queue is momentarily empty: buffered
                // under load, prompt when idle.
                if receiver.is_empty() {
                    writer.flush().await?;
                }
            }
            _ = sync.tick() => {
                if unsynced {
                    writer.flush().await?;
                    writer.get_mut().sync_data().await?;
                    unsynced = false;
                }
            }
            _ = &mut closed => {
                // No new records; write the ones already queued.
                receiver.close();
                while let Some(line) = receiver.recv().await {
                    writer.write_all(line.as_bytes()).await?;
                    writer.write_all(b"\n").await?;
                    written += 1;
                }
                break;
            }
        }
    }
    writer.flush().await?;
    writer.get_mut().sync_all().await?;
    Ok(written)
}

impl AuditWriter {
    /// Closes the log: what is queued is written, then the file is synced.
    /// Returns how many records were written. Connections that are still
    /// open cannot hold the close up.
    pub async fn finish(self) -> std::io::Result<u64> {
        let _ = self.close.send(());
        self.task
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))?
    }
}

/// Claims with the named ones replaced by `"[redacted]"`. Names match
/// without regard to case, and `a.b` names a nested claim.
pub fn redact(claims: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    let paths: Vec<Vec<String>> = names
        .iter()
        .map(|name| name.split('.').map(str::to_ascii_lowercase).collect())
        .collect();
    redact_at(claims, &paths.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

fn redact_at(claims: &Map<String, Value>, paths: &[&[String]]) -> Map<String, Value> {
    claims
        .iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let here: Vec<&[String]> = paths
                .iter()
                .filter_map(|path| match path.split_first() {
                    Some((first, rest)) if *first == lower => Some(rest),
                    _ => None,
                })
                .collect();
            let value = if here.iter().any(|rest| rest.is_empty()) {
                Value::String("[redacted]".to_owned())
            } else if let (Value::Object(inner), false) = (value, here.is_empty()) {
                Value::Object(redact_at(inner, &here))
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redaction_ignores_case_and_follows_dotted_paths() {
        let claims = serde_json::json!({
            "Email": "a@example.com",
            "profile": {"email": "b@example.com", "team": "data"},
            "sub": "id-a",
        });
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let redacted = redact(&claims, &["email".to_owned(), "Profile.Email".to_owned()]);
        let text = Value::Object(redacted).to_string();
        assert!(!text.contains("example.com"), "{text}");
        assert!(
            text.contains("\"team\":\"data\"") && text.contains("id-a"),
            "{text}"
        );
    }
}
