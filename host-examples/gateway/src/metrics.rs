//! Prometheus metrics, kept as atomics and rendered as text on `/metrics`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency bucket bounds, in microseconds.
const BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

pub use cedar_edge_mapping::DecisionKind;

/// Every metric.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: [AtomicU64; 4],
    latency_buckets: [AtomicU64; BUCKETS_US.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    jwks_refresh_ok: AtomicU64,
    jwks_refresh_failed: AtomicU64,
    audit_dropped: AtomicU64,
    connections_open: AtomicU64,
    connections_header_timeout: AtomicU64,
    connections_idle_timeout: AtomicU64,
    connections_cut_at_shutdown: AtomicU64,
    accept_errors: AtomicU64,
    pdp_busy: AtomicU64,
    bundle_id: Mutex<String>,
    bundle_origin: Mutex<crate::source::Origin>,
    source_errors: AtomicU64,
}

/// Why the gateway closed a client connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCut {
    /// The request's headers did not arrive in time.
    HeaderTimeout,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// Still open when the shutdown's drain time ran out.
    Shutdown,
}

impl Metrics {
    /// Counts a decision and its latency.
    pub fn decision(&self, kind: DecisionKind, micros: u64) {
        let index = DecisionKind::ALL
            .iter()
            .position(|known| *known == kind)
            .unwrap_or(0);
        if let Some(counter) = self.decisions.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        for (bound, bucket) in BUCKETS_US.iter().zip(&self.latency_buckets) {
            if micros <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a bundle reload.
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a JWKS refresh.
    pub fn jwks_refresh(&self, ok: bool) {
        let counter = if ok {
            &self.jwks_refresh_ok
        } else {
            &self.jwks_refresh_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an audit record not written (rate-limited).
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client connection opening (`true`) or ending.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection the gateway closed, by reason.
    pub fn connection_cut(&self, why: ConnectionCut) {
        let counter = match why {
            ConnectionCut::HeaderTimeout => &self.connections_header_timeout,
            ConnectionCut::IdleTimeout => &self.connections_idle_timeout,
            ConnectionCut::Shutdown => &self.connections_cut_at_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed `accept` (such as running out of file descriptors).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision-service request turned away at the concurrency
    /// cap.
    pub fn pdp_busy(&self) {
        self.pdp_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the active bundle and where it came from.
    pub fn set_bundle(&self, id: &str, origin: &crate::source::Origin) {
        if let Ok(mut current) = self.bundle_id.lock() {
            id.clone_into(&mut current);
        }
        if let Ok(mut current) = self.bundle_origin.lock() {
            current.clone_from(origin);
        }
    }

    /// Counts a poll of a remote bundle source that failed (unreachable,
    /// or what it served was refused).
    pub fn source_error(&self) {
        self.source_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.push_str("# HELP cedar_edge_decisions_total Decisions by outcome.\n# TYPE cedar_edge_decisions_total counter\n");
        for (kind, counter) in DecisionKind::ALL.iter().zip(&self.decisions) {
            let _ = writeln!(
                out,
                "cedar_edge_decisions_total{{outcome=\"{}\"}} {}",
                kind.label(),
                get(counter)
            );
        }
        out.push_str("# HELP cedar_edge_decision_seconds Time from request to decision.\n# TYPE cedar_edge_decision_seconds histogram\n");
        for (bound, bucket) in BUCKETS_US.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "cedar_edge_decision_seconds_bucket{{le=\"{}\"}} {}",
                *bound as f64 / 1e6,
                get(bucket)
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "cedar_edge_decision_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "cedar_edge_decision_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "cedar_edge_decision_seconds_count {count}");
        out.push_str("# HELP cedar_edge_reloads_total Bundle reloads by result.\n# TYPE cedar_edge_reloads_total counter\n");
        let _ = writeln!(
            out,
            "cedar_edge_reloads_total{{result=\"ok\"}} {}",
            get(&self.reloads_ok)
        );
        let _ = writeln!(
            out,
            "cedar_edge_reloads_total{{result=\"failed\"}} {}",
            get(&self.reloads_failed)
        );
        out.push_str("# HELP cedar_edge_jwks_refreshes_total JWKS refreshes by result.\n# TYPE cedar_edge_jwks_refreshes_total counter\n");
        let _ = writeln!(
            out,
            "cedar_edge_jwks_refreshes_total{{result=\"ok\"}} {}",
            get(&self.jwks_refresh_ok)
        );
        let _ = writeln!(
            out,
            "cedar_edge_jwks_refreshes_total{{result=\"failed\"}} {}",
            get(&self.jwks_refresh_failed)
        );
        out.push_str("# HELP cedar_edge_audit_dropped_total Audit records of unauthenticated requests not written (rate limit).\n# TYPE cedar_edge_audit_dropped_total counter\n");
        let _ = writeln!(
            out,
            "cedar_edge_audit_dropped_total {}",
            get(&self.audit_dropped)
        );
        out.push_str("# HELP cedar_edge_connections_open Client connections open now.\n# TYPE cedar_edge_connections_open gauge\n");
        let _ = writeln!(
            out,
            "cedar_edge_connections_open {}",
            get(&self.connections_open)
        );
        out.push_str("# HELP cedar_edge_connections_closed_total Client connections the gateway closed, by reason.\n# TYPE cedar_edge_connections_closed_total counter\n");
        for (reason, counter) in [
            ("header_timeout", &self.connections_header_timeout),
            ("idle_timeout", &self.connections_idle_timeout),
            ("shutdown", &self.connections_cut_at_shutdown),
        ] {
            let _ = writeln!(
                out,
                "cedar_edge_connections_closed_total{{reason=\"{reason}\"}} {}",
                get(counter)
            );
        }
        out.push_str("# HELP cedar_edge_accept_errors_total Failed accepts (such as no free file descriptor), each followed by a pause.\n# TYPE cedar_edge_accept_errors_total counter\n");
        let _ = writeln!(
            out,
            "cedar_edge_accept_errors_total {}",
            get(&self.accept_errors)
        );
        out.push_str("# HELP cedar_edge_pdp_busy_total Decision-service requests turned away (503) at `pdp.limits.max_concurrent_requests`.\n# TYPE cedar_edge_pdp_busy_total counter\n");
        let _ = writeln!(out, "cedar_edge_pdp_busy_total {}", get(&self.pdp_busy));
        out.push_str("# HELP cedar_edge_bundle_info The active bundle.\n# TYPE cedar_edge_bundle_info gauge\n");
        let bundle = self
            .bundle_id
            .lock()
            .map(|id| id.clone())
            .unwrap_or_default();
        let origin = self
            .bundle_origin
            .lock()
            .map(|origin| origin.clone())
            .unwrap_or_default();
        let label = |value: Option<&str>| label_value(value.unwrap_or(""));
        let _ = writeln!(
            out,
            "cedar_edge_bundle_info{{bundle_id=\"{bundle}\",source=\"{}\",revision=\"{}\",signer=\"{}\"}} 1",
            label(Some(&origin.location)),
            label(origin.revision.as_deref()),
            label(origin.signer.as_deref()),
        );
        out.push_str("# HELP cedar_edge_bundle_source_errors_total Polls whose source could not be reached, and revisions whose bundle was refused; the last good bundle kept serving.\n# TYPE cedar_edge_bundle_source_errors_total counter\n");
        let _ = writeln!(
            out,
            "cedar_edge_bundle_source_errors_total {}",
            get(&self.source_errors)
        );
        out
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
