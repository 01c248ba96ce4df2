//! cedar-edge's identity-aware gateway: a tokio reverse proxy that verifies
//! OIDC tokens, decides with Cedar through the WebAssembly component, and
//! forwards only what is allowed; the AuthZEN decision service for
//! authenticated callers; hot reload, an audit log synced every second,
//! and Prometheus metrics.
//!
//! Each role has a listener of its own: the proxy, the decision service
//! (optionally TLS, with client certificates) and the admin endpoints
//! (`/healthz`, `/metrics`), so that what faces clients never exposes the
//! others.
//!
//! Connections are bounded: a cap on open client connections across the
//! listeners (the rest wait in the listen backlog), a header-read timeout
//! (which also bounds a TLS handshake), an idle timeout, a pause after a
//! failed accept, and a drain time after which shutdown cuts whatever is
//! still open.

pub mod audit;
pub mod authzen;
pub mod callers;
pub mod config;
pub mod error;
pub mod ext_authz;
pub mod jwt;
pub mod metrics;
pub mod pdp;
pub mod proxy;
pub mod search;
pub mod server;
pub mod source;
pub mod state;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request as HttpReq, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::{AuditAccess, AuditLog};
use crate::config::{ConnectionLimits, GatewayConfig};
use crate::error::GatewayError;
use crate::metrics::{ConnectionCut, Metrics};
use crate::pdp::{ConnectionInfo, Pdp};
use crate::proxy::Body;
use crate::server::Gateway;
use crate::state::{BundleChecks, BundleSlot, Reload};

/// The pause after a failed accept (such as EMFILE), so that the loop does
/// not spin while descriptors are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a finished run reports.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    /// Audit records written.
    pub audit_records: u64,
}

/// The sockets a gateway serves on, one per configured role: bind them
/// from the configuration with [`Listeners::bind`], or hand in sockets of
/// your own (tests bind port 0).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The proxy's (`listen`).
    pub proxy: Option<TcpListener>,
    /// The decision service's (`pdp.listen`).
    pub pdp: Option<TcpListener>,
    /// `/healthz` and `/metrics` (`admin_listen`).
    pub admin: Option<TcpListener>,
    /// Envoy's `ext_authz` gRPC service (`ext_authz.listen`).
    pub ext_authz: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address the configuration names.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, GatewayError> {
        async fn bind(address: Option<SocketAddr>) -> Result<Option<TcpListener>, GatewayError> {
            match address {
                Some(address) => TcpListener::bind(address).await.map(Some).map_err(|err| {
                    GatewayError::Field(format!("cannot listen on {address}: {err}"))
                }),
                None => Ok(None),
            }
        }
        Ok(Self {
            proxy: bind(config.listen).await?,
            pdp: bind(config.pdp.as_ref().map(|pdp| pdp.listen)).await?,
            admin: bind(config.admin_listen).await?,
            ext_authz: bind(config.ext_authz.as_ref().map(|ext_authz| ext_authz.listen)).await?,
        })
    }
}

/// Serves on the listeners until `shutdown` completes, then drains
/// in-flight requests and flushes the audit log. `reload` (SIGHUP in the
/// binary) asks for an immediate bundle reload each time it yields.
pub async fn run(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<RunSummary, GatewayError> {
    if listeners.proxy.is_some() != config.listen.is_some()
        || listeners.pdp.is_some() != config.pdp.is_some()
        || listeners.admin.is_some() != config.admin_listen.is_some()
        || listeners.ext_authz.is_some() != config.ext_authz.is_some()
    {
        return Err(GatewayError::Field(
            "the listeners given do not match `listen`, `pdp.listen` and `admin_listen`".to_owned(),
        ));
    }
    let metrics = Arc::new(Metrics::default());
    let mapping = match &config.mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| GatewayError::Read {
                path: path.clone(),
                message: err.to_string(),
            })?;
            Some(
                serde_json::from_str(&text).map_err(|err| GatewayError::Config {
                    path: path.clone(),
                    message: err.to_string(),
                })?,
            )
        }
        None => None,
    };
    let checks = BundleChecks {
        mapping,
        authzen: config
            .pdp
            .as_ref()
            .map(|pdp| (pdp.types.clone(), pdp.action_type.clone())),
    };
    let fetcher = source::Fetcher::new(
        &source::Location::parse(&config.bundle, Path::new("")),
        &config.bundle_source,
        &config.trusted_keys,
    )?;
    let poll = if fetcher.is_remote() {
        fetcher.poll_interval()
    } else {
        Duration::from_millis(config.reload_poll_ms.max(50))
    };
    let bundles = {
        let (backend, metrics) = (config.backend, Arc::clone(&metrics));
        let settle = Duration::from_millis(config.reload_settle_ms);
        Arc::new(
            state::on_load_thread(move || {
                BundleSlot::start(fetcher, checks, backend, settle, metrics)
            })
            .await??,
        )
    };
    let verifier =
        jwt::Verifier::new(&config.issuers, config.leeway_seconds, Arc::clone(&metrics)).await?;
    let pdp_parts = match &config.pdp {
        Some(pdp) => {
            let callers =
                callers::Callers::new(&pdp.callers, config.leeway_seconds, Arc::clone(&metrics))
                    .await?;
            let tls = pdp
                .tls
                .as_ref()
                .map(tls::server_config)
                .transpose()?
                .map(tokio_rustls::TlsAcceptor::from);
            Some((pdp.clone(), callers, tls))
        }
        None => None,
    };
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
    tracing::info!(
        proxy = ?config.listen,
        pdp = ?config.pdp.as_ref().map(|pdp| pdp.listen),
        admin = ?config.admin_listen,
        bundle_id = %bundles.serving().bundle_id(),
        bundle_revision = bundles.serving().revision().unwrap_or(""),
        "gateway started"
    );

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

    // ext_authz (issue 14): Envoy's gRPC Check service beside the HTTP
    // listener, stopped by the same shutdown within the same drain time.
    let ext_authz = ext_authz::start(&gateway, listeners.ext_authz).await?;

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

    let cap = connection_cap(limits.max);
    let shared = Shared {
        slots: Arc::new(tokio::sync::Semaphore::new(cap)),
        limits,
        metrics: Arc::clone(&gateway.metrics),
    };
    tracing::info!(max_connections = cap, "accepting connections");
    let (stop_serving, stopped) = tokio::sync::watch::channel(false);
    let mut served = Vec::new();
    let mut serve = |listener: Option<TcpListener>, role: Role, tls| {
        if let Some(listener) = listener {
            served.push(tokio::spawn(serve_listener(
                listener,
                role,
                tls,
                shared.clone(),
                stopped.clone(),
            )));
        }
    };
    serve(listeners.proxy, Role::Proxy(Arc::clone(&gateway)), None);
    serve(listeners.admin, Role::Admin(Arc::clone(&gateway)), None);
    if let Some((pdp, callers, tls)) = pdp_parts {
        let pdp = Arc::new(Pdp::new(Arc::clone(&gateway), pdp, callers));
        serve(listeners.pdp, Role::Pdp(pdp), tls);
    }
    shutdown.await;
    tracing::info!("shutting down: draining requests");
    let _ = stop_serving.send(true);
    // Envoy's gRPC calls drain beside the HTTP connections, and the
    // service's hold on the gateway ends before the audit log closes.
    let drain = Duration::from_millis(limits.drain_timeout_ms);
    let ext_authz_stopped = ext_authz.map(|server| tokio::spawn(server.stop(drain)));
    for listener in served {
        let _ = listener.await;
    }
    if let Some(stopped) = ext_authz_stopped {
        let _ = stopped.await;
    }
    let _ = stop_reload.send(true);
    let _ = watcher.await;
    drop(gateway);
    let audit_records = audit_writer.finish().await?;
    tracing::info!(audit_records, "audit log flushed");
    Ok(RunSummary { audit_records })
}

/// Reads a configuration file and serves it until SIGTERM or Ctrl-C,
/// reloading the bundle on SIGHUP (and on change): what
/// `cedar-edge-gateway --config` and `cedar-edge serve --config` run.
pub async fn serve_config_file(path: &std::path::Path) -> Result<RunSummary, GatewayError> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = GatewayConfig::read(path)?;
    let listeners = Listeners::bind(&config).await?;
    let signals = |kind| {
        signal(kind).map_err(|err| GatewayError::Task(format!("cannot watch signals: {err}")))
    };
    let mut terminate = signals(SignalKind::terminate())?;
    let mut hangup = signals(SignalKind::hangup())?;
    let (reload_sender, reload_receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the bundle");
            let _ = reload_sender.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    run(config, listeners, shutdown, reload_receiver).await
}

/// What answers a listener's requests.
#[derive(Clone)]
enum Role {
    Proxy(Arc<Gateway>),
    Admin(Arc<Gateway>),
    Pdp(Arc<Pdp>),
}

impl Role {
    async fn call(
        self,
        request: HttpReq<Incoming>,
        peer: SocketAddr,
        connection: Arc<ConnectionInfo>,
    ) -> Result<Response<Body>, Infallible> {
        match self {
            Self::Proxy(gateway) => gateway.handle(request, peer).await,
            Self::Admin(gateway) => gateway.admin(request).await,
            Self::Pdp(pdp) => pdp.handle(request, connection).await,
        }
    }
}

/// What every listener shares: the connection cap and its limits.
#[derive(Clone)]
struct Shared {
    slots: Arc<tokio::sync::Semaphore>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
}

/// Accepts on one listener until told to stop, then drains its
/// connections for at most the drain time and cuts the rest.
async fn serve_listener(
    listener: TcpListener,
    role: Role,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let limits = shared.limits;
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        // At the cap, stop accepting: new clients wait in the backlog
        // instead of taking file descriptors the served ones need.
        let slot = tokio::select! {
            slot = Arc::clone(&shared.slots).acquire_owned() => slot,
            _ = stop.changed() => break,
        };
        let Ok(slot) = slot else { break };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE and friends leave the listener readable:
                        // pause instead of spinning on the same error.
                        shared.metrics.accept_error();
                        tracing::warn!(error = %err, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let open = OpenConnection::new(Arc::clone(&shared.metrics), slot);
                let stream = Tracked::new(stream);
                let (role, tls, http) = (role.clone(), tls.clone(), http.clone());
                let watcher = graceful.watcher();
                let idle = Duration::from_millis(limits.idle_timeout_ms.max(1));
                connections.spawn(async move {
                    let activity = Arc::clone(&stream.activity);
                    let served = async {
                        match tls {
                            None => {
                                let info = Arc::new(ConnectionInfo::default());
                                serve_connection(stream, role, peer, info, &http, watcher).await
                            }
                            Some(acceptor) => {
                                // The handshake gets the header-read time.
                                let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => tls,
                                    Ok(Err(err)) => {
                                        tracing::debug!(error = %err, "TLS handshake failed");
                                        return None;
                                    }
                                    Err(_) => return Some(ConnectionCut::HeaderTimeout),
                                };
                                let certificate = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(tls::certificate_identities)
                                    .unwrap_or_default();
                                let info = Arc::new(ConnectionInfo { certificate });
                                serve_connection(tls, role, peer, info, &http, watcher).await
                            }
                        }
                    };
                    let cut = tokio::select! {
                        cut = served => cut,
                        () = activity.idle_for(idle) => Some(ConnectionCut::IdleTimeout),
                    };
                    if let Some(cut) = cut {
                        open.metrics.connection_cut(cut);
                    }
                    drop(open);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
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
            shared.metrics.connection_cut(ConnectionCut::Shutdown);
        }
    }
    // Whatever is still open is cut here: a slow client cannot hold the
    // exit, nor the audit log's close after it.
    connections.shutdown().await;
}

/// Serves HTTP/1 on one connection until it ends; why the gateway cut it,
/// if it did.
async fn serve_connection<I>(
    io: I,
    role: Role,
    peer: SocketAddr,
    info: Arc<ConnectionInfo>,
    http: &http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) -> Option<ConnectionCut>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| role.clone().call(request, peer, Arc::clone(&info)));
    let connection = watcher.watch(http.serve_connection(TokioIo::new(io), service));
    match connection.await {
        Ok(()) => None,
        Err(err) if err.is_timeout() => Some(ConnectionCut::HeaderTimeout),
        Err(err) => {
            tracing::debug!(error = %err, "connection ended with an error");
            None
        }
    }
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
