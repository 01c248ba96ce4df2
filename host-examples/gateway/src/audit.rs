//! The audit log: one JSON line per decision, written by one task through a
//! buffer. Records go through an unbounded channel, so a slow disk never
//! drops one; closing the log drains the channel and flushes the file, so N
//! decisions always give N lines.

use std::path::Path;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the rest of the gateway holds to write records.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: mpsc::UnboundedSender<String>,
}

/// The writer task; await [`AuditWriter::finish`] after the last sender is
/// gone.
#[derive(Debug)]
pub struct AuditWriter {
    task: JoinHandle<std::io::Result<u64>>,
}

impl AuditLog {
    /// Opens (appends to) the log file and starts the writer.
    pub async fn open(path: &Path) -> std::io::Result<(Self, AuditWriter)> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, file);
            let mut written = 0u64;
            while let Some(line) = receiver.recv().await {
                writer.write_all(line.as_bytes()).await?;
                writer.write_all(b"\n").await?;
                written += 1;
                // Flush when the queue is momentarily empty: buffered under
                // load, prompt when idle.
                if receiver.is_empty() {
                    writer.flush().await?;
                }
            }
            writer.flush().await?;
            writer.get_mut().sync_all().await?;
            Ok(written)
        });
        Ok((Self { sender }, AuditWriter { task }))
    }

    /// Queues one record.
    pub fn record(&self, record: Value) {
        // The writer only stops after every sender is dropped.
        let _ = self.sender.send(record.to_string());
    }
}

impl AuditWriter {
    /// Waits until every queued record is on disk; returns how many were written.
    pub async fn finish(self) -> std::io::Result<u64> {
        self.task
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))?
    }
}

/// Claims with the named ones replaced by `"[redacted]"`.
pub fn redact(claims: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    claims
        .iter()
        .map(|(name, value)| {
            if names.iter().any(|redacted| redacted == name) {
                (name.clone(), Value::String("[redacted]".to_owned()))
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}
