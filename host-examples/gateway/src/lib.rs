//! cedar-edge's identity-aware gateway: a tokio reverse proxy that verifies
//! OIDC tokens, decides with Cedar through the WebAssembly component, and
//! forwards only what is allowed; plus the AuthZEN decision API, hot
//! reload, an audit log synced every second, and Prometheus metrics.
//!
//! Connections are bounded: a cap on open client connections (the rest
//! wait in the listen backlog), a header-read timeout, an idle timeout, a
//! pause after a failed accept, and a drain time after which shutdown cuts
//! whatever is still open.

pub mod audit;
pub mod authzen;
pub mod config;
pub mod error;
pub mod jwt;
pub mod metrics;
pub mod proxy;
pub mod search;
pub mod server;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::{AuditAccess, AuditLog};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::metrics::{ConnectionCut, Metrics};
use crate::server::Gateway;
use crate::state::{BundleSlot, Reload};

/// The pause after a failed accept (such as EMFILE), so that the loop does
/// not spin while descriptors are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a finished run reports.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    /// Audit records written.
    pub audit_records: u64,
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight
/// requests and flushes the audit log. `reload` (SIGHUP in the binary)
/// asks for an immediate bundle reload each time it yields.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<RunSummary, GatewayError> {
    let metrics = Arc::new(Metrics::default());
    let mapping_text =
        std::fs::read_to_string(&config.mapping).map_err(|err| GatewayError::Read {
            path: config.mapping.clone(),
            message: err.to_string(),
        })?;
    let mapping = serde_json::from_str(&mapping_text).map_err(|err| GatewayError::Config {
        path: config.mapping.clone(),
        message: err.to_string(),
    })?;
    let bundles = {
        let (dir, backend, metrics) = (config.bundle.clone(), config.backend, Arc::clone(&metrics));
        let settle = Duration::from_millis(config.reload_settle_ms);
        Arc::new(
            state::on_load_thread(move || {
                BundleSlot::start(dir, mapping, backend, settle, metrics)
            })
            .await??,
        )
    };
    let verifier =
        jwt::Verifier::new(&config.issuers, config.leeway_seconds, Arc::clone(&metrics)).await?;
    let access = if config.audit_log_group_readable {
        AuditAccess::Group
    } else {
        AuditAccess::Owner
    };
    let (audit, audit_writer) = AuditLog::open(
        &config.audit_log,
        access,
        config.audit_unauthenticated_per_second,
        &config.redact_claims,
    )
    .await?;
    let limits = config.connections;
    tracing::info!(listen = %config.listen, bundle_id = %bundles.serving().bundle_id(), "gateway started");

    let poll = Duration::from_millis(config.reload_poll_ms.max(50));
    let gateway = Arc::new(Gateway {
        config,
        bundles: Arc::clone(&bundles),
        verifier,
        client: proxy::upstream_client(),
        audit,
        metrics,
        boot: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64),
        sequence: AtomicU64::new(0),
    });

    let (stop_reload, mut reload_stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        loop {
            let when = tokio::select! {
                _ = tokio::time::sleep(poll) => Reload::WhenStable,
                Some(()) = reload.recv() => Reload::Now,
                _ = reload_stopped.changed() => break,
            };
            let bundles = Arc::clone(&bundles);
            // Loading compiles nothing but still takes milliseconds: off the
            // reactor, on a thread with a large stack.
            let _ = state::on_load_thread(move || bundles.reload(when)).await;
        }
    });

    let graceful = GracefulShutdown::new();
    let cap = connection_cap(limits.max);
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let idle = Duration::from_millis(limits.idle_timeout_ms.max(1));
    let mut connections = tokio::task::JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms.max(1)));
    tracing::info!(max_connections = cap, "accepting connections");
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new clients wait in the backlog
        // instead of taking file descriptors the served ones need.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE and friends leave the listener readable:
                        // pause instead of spinning on the same error.
                        gateway.metrics.accept_error();
                        tracing::warn!(error = %err, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let open = OpenConnection::new(Arc::clone(&gateway.metrics), slot);
                let stream = Tracked::new(stream);
                let activity = Arc::clone(&stream.activity);
                let served = Arc::clone(&gateway);
                let service = service_fn(move |request| Arc::clone(&served).handle(request, peer));
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                connections.spawn(async move {
                    let cut = tokio::select! {
                        result = connection => match result {
                            Ok(()) => None,
                            Err(err) if err.is_timeout() => Some(ConnectionCut::HeaderTimeout),
                            Err(err) => {
                                tracing::debug!(error = %err, "connection ended with an error");
                                None
                            }
                        },
                        () = activity.idle_for(idle) => Some(ConnectionCut::IdleTimeout),
                    };
                    if let Some(cut) = cut {
                        open.metrics.connection_cut(cut);
                    }
                    drop(open);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: draining requests");
    drop(listener);
    let drain = Duration::from_millis(limits.drain_timeout_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        let open = connections.len();
        tracing::warn!(
            open,
            "some connections did not finish in time; closing them"
        );
        for _ in 0..open {
            gateway.metrics.connection_cut(ConnectionCut::Shutdown);
        }
    }
    // Whatever is still open is cut here: a slow client cannot hold the
    // exit, nor the audit log's close below.
    connections.shutdown().await;
    let _ = stop_reload.send(true);
    let _ = watcher.await;
    drop(gateway);
    let audit_records = audit_writer.finish().await?;
    tracing::info!(audit_records, "audit log flushed");
    Ok(RunSummary { audit_records })
}

/// Connections open at most when `connections.max` is not set.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Descriptors kept back from the connection cap for the audit log, the
/// bundle files, JWKS fetches and the like.
const RESERVED_DESCRIPTORS: usize = 64;

/// The connection cap: as configured, or a default that stays within the
/// open-files limit (each client may also hold a connection upstream), so
/// that accepting clients cannot starve the gateway of descriptors.
fn connection_cap(configured: Option<usize>) -> usize {
    if let Some(max) = configured {
        return max.max(1);
    }
    let by_descriptors = open_files_limit().map_or(DEFAULT_MAX_CONNECTIONS, |limit| {
        limit.saturating_sub(RESERVED_DESCRIPTORS) / 2
    });
    DEFAULT_MAX_CONNECTIONS.min(by_descriptors).max(1)
}

/// The soft open-files limit, from `/proc/self/limits` (Linux); `None`
/// where that cannot be read or is unlimited.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One accepted connection: holds its slot under the cap and keeps the
/// open-connections gauge right however the connection ends (an abort at
/// shutdown included).
struct OpenConnection {
    metrics: Arc<Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics.connection(true);
        Self {
            metrics,
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection(false);
    }
}

/// When a byte last moved on a connection.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(quiet)).await;
        }
    }
}

/// A client socket that records its activity for the idle timeout.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            activity: Arc::new(Activity {
                started: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
