//! The audit log: one JSON line per decision, written by one task through a
//! buffer.
//!
//! - Records go through an unbounded channel, so a slow disk never drops an
//!   answered decision. They go as owned values: the writer task redacts
//!   and serialises them, off the request's path, into one reused buffer.
//! - The writer hands records to the kernel in batches: those that arrive
//!   within [`GATHER_TIME`] of the first one, written together, so that a
//!   request costs neither a wake-up of the writer nor a write of its own.
//!   It fsyncs at least every [`SYNC_INTERVAL`].
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cedar_edge_core::{Request, Response};
use cedar_edge_mapping::{DecisionKind, DecisionRecord};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest time a written record stays only in memory.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How long the writer waits, once a record arrives, for more to join it
/// before it writes them all to the file.
const GATHER_TIME: Duration = Duration::from_millis(10);

/// The most records serialised and written in one go.
const BATCH_RECORDS: usize = 1024;

/// What the rest of the gateway holds to write records.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::UnboundedSender<AuditEntry>,
    unauthenticated: Mutex<RateWindow>,
    unauthenticated_per_second: u32,
}

#[derive(Debug)]
struct RateWindow {
    started: Instant,
    kept: u32,
}

/// One decision as the log records it: the fields of the shared
/// [`DecisionRecord`], owned, and what the gateway adds to them.
#[derive(Debug)]
pub struct AuditEntry {
    /// The id the gateway gave the decision.
    pub decision_id: String,
    /// How the request ended.
    pub kind: DecisionKind,
    /// The Cedar request, when mapping got that far.
    pub request: Option<Request>,
    /// The engine's answer, when it gave one.
    pub response: Option<Response>,
    /// Why the request was refused before evaluation.
    pub refusal: Option<String>,
    /// The bundle that decided (or would have).
    pub bundle_id: String,
    /// The OCI manifest digest or Git commit that bundle was fetched at.
    pub bundle_revision: Option<String>,
    /// The verified claims, redacted when written.
    pub claims: Option<Map<String, Value>>,
    /// When the decision was counted.
    pub time: SystemTime,
    /// Microseconds from the request's arrival to its decision.
    pub latency_us: u64,
    /// Whether authorization was on.
    pub authorization: bool,
    /// The decision-service caller that asked, by its configured name.
    pub caller: Option<String>,
    /// The caller's `X-Request-ID`, and the item's index in a batch.
    pub request_id: Option<String>,
    /// For a search: its kind and how many results went back.
    pub search: Option<Value>,
}

impl AuditEntry {
    fn record(&self) -> DecisionRecord<'_> {
        DecisionRecord {
            decision_id: &self.decision_id,
            kind: self.kind,
            request: self.request.as_ref(),
            response: self.response.as_ref(),
            refusal: self.refusal.as_deref(),
            bundle_id: &self.bundle_id,
        }
    }
}

/// One line of the log: the shared record's fields, then the gateway's.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    record: Map<String, Value>,
    time: String,
    latency_us: u64,
    claims: Option<Redacted<'a>>,
    authorization: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle_revision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<&'a Value>,
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
    /// identity are kept each second. The claims that `redact_claims` names
    /// are written as `"[redacted]"`.
    pub async fn open(
        path: &Path,
        access: AuditAccess,
        unauthenticated_per_second: u32,
        redact_claims: &[String],
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
        let (sender, receiver) = mpsc::unbounded_channel();
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(write_records(
            file,
            receiver,
            closed,
            Redaction::new(redact_claims),
        ));
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
    pub fn record(&self, entry: AuditEntry) {
        // After the log is closed, late records have nowhere to go.
        let _ = self.sender.send(entry);
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
    mut receiver: mpsc::UnboundedReceiver<AuditEntry>,
    mut closed: oneshot::Receiver<()>,
    redaction: Redaction,
) -> std::io::Result<u64> {
    let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(1024);
    let mut batch = Vec::with_capacity(BATCH_RECORDS);
    let mut written = 0u64;
    let mut unsynced = false;
    let mut sync = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH_RECORDS) => {
                if received == 0 {
                    break;
                }
                // Let the records of the next few milliseconds join this
                // one: the writer then wakes and writes once per batch,
                // not once per request.
                let closing = tokio::select! {
                    () = tokio::time::sleep(GATHER_TIME) => false,
                    _ = &mut closed => true,
                };
                while batch.len() < BATCH_RECORDS {
                    match receiver.try_recv() {
                        Ok(entry) => batch.push(entry),
                        Err(_) => break,
                    }
                }
                for entry in batch.drain(..) {
                    if serialise(&entry, &redaction, &mut line) {
                        writer.write_all(&line).await?;
                        written += 1;
                    }
                }
                writer.flush().await?;
                unsynced = true;
                if closing {
                    break;
                }
            }
            _ = sync.tick() => {
                if unsynced {
                    writer.get_mut().sync_data().await?;
                    unsynced = false;
                }
            }
            _ = &mut closed => break,
        }
    }
    // No new records; write the ones already queued.
    receiver.close();
    while let Some(entry) = receiver.recv().await {
        if serialise(&entry, &redaction, &mut line) {
            writer.write_all(&line).await?;
            written += 1;
        }
    }
    writer.flush().await?;
    writer.get_mut().sync_all().await?;
    Ok(written)
}

/// Writes one entry as a JSON line into `line` (cleared first); `false`
/// if it could not be serialised, which JSON values and strings never
/// fail.
fn serialise(entry: &AuditEntry, redaction: &Redaction, line: &mut Vec<u8>) -> bool {
    line.clear();
    let fields = Line {
        record: entry.record().to_json(),
        time: rfc3339(entry.time),
        latency_us: entry.latency_us,
        claims: entry.claims.as_ref().map(|claims| redaction.apply(claims)),
        authorization: entry.authorization,
        bundle_revision: entry.bundle_revision.as_deref(),
        caller: entry.caller.as_deref(),
        request_id: entry.request_id.as_deref(),
        search: entry.search.as_ref(),
    };
    match serde_json::to_writer(&mut *line, &fields) {
        Ok(()) => {
            line.push(b'\n');
            true
        }
        Err(err) => {
            tracing::error!(error = %err, decision_id = %entry.decision_id, "cannot serialise an audit record");
            false
        }
    }
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

/// The claims to redact, as dotted paths (`a.b` names a nested claim),
/// lower-cased once when the log opens.
#[derive(Debug, Clone, Default)]
struct Redaction {
    paths: Vec<Vec<String>>,
}

impl Redaction {
    fn new(names: &[String]) -> Self {
        let paths = names
            .iter()
            .map(|name| name.split('.').map(str::to_ascii_lowercase).collect())
            .collect();
        Self { paths }
    }

    /// The claims, serialised with the named ones as `"[redacted]"`.
    fn apply<'a>(&'a self, claims: &'a Map<String, Value>) -> Redacted<'a> {
        Redacted {
            claims,
            paths: self.paths.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// A claims object that serialises with the claims at `paths` replaced,
/// without copying the rest. Names match without regard to case.
struct Redacted<'a> {
    claims: &'a Map<String, Value>,
    paths: Vec<&'a [String]>,
}

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.claims.len()))?;
        for (name, value) in self.claims {
            // The rest of each path that starts with this claim.
            let below: Vec<&[String]> = self
                .paths
                .iter()
                .filter_map(|path| match path.split_first() {
                    Some((first, rest)) if first.eq_ignore_ascii_case(name) => Some(rest),
                    _ => None,
                })
                .collect();
            match value {
                _ if below.iter().any(|rest| rest.is_empty()) => {
                    map.serialize_entry(name, "[redacted]")?;
                }
                Value::Object(inner) if !below.is_empty() => {
                    let inner = Redacted {
                        claims: inner,
                        paths: below,
                    };
                    map.serialize_entry(name, &inner)?;
                }
                _ => map.serialize_entry(name, value)?,
            }
        }
        map.end()
    }
}

/// UTC time as RFC 3339 with milliseconds, without a date library.
fn rfc3339(time: SystemTime) -> String {
    let elapsed = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = elapsed.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        elapsed.subsec_millis()
    )
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
        let redaction = Redaction::new(&["email".to_owned(), "Profile.Email".to_owned()]);
        let text = serde_json::to_string(&redaction.apply(&claims)).unwrap();
        assert!(!text.contains("example.com"), "{text}");
        assert!(
            text.contains("\"team\":\"data\"") && text.contains("id-a"),
            "{text}"
        );
    }
}
