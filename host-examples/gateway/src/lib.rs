//! cedar-edge's identity-aware gateway: a tokio reverse proxy that verifies
//! OIDC tokens, decides with Cedar through the WebAssembly component, and
//! forwards only what is allowed; plus the AuthZEN decision API, hot
//! reload, an audit log that loses nothing, and Prometheus metrics.

pub mod audit;
pub mod authzen;
pub mod config;
pub mod error;
pub mod jwt;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::server::Gateway;
use crate::state::BundleSlot;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
        Arc::new(
            tokio::task::spawn_blocking(move || BundleSlot::start(dir, mapping, backend, metrics))
                .await
                .map_err(|err| GatewayError::Task(err.to_string()))??,
        )
    };
    let verifier =
        jwt::Verifier::new(&config.issuers, config.leeway_seconds, Arc::clone(&metrics)).await?;
    let (audit, audit_writer) = AuditLog::open(&config.audit_log).await?;
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
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                Some(()) = reload.recv() => {}
                _ = reload_stopped.changed() => break,
            }
            let bundles = Arc::clone(&bundles);
            // Loading compiles nothing but still takes milliseconds: off the reactor.
            let _ = tokio::task::spawn_blocking(move || bundles.reload()).await;
        }
    });

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let gateway = Arc::clone(&gateway);
                let service = service_fn(move |request| Arc::clone(&gateway).handle(request, peer));
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: draining requests");
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time");
    }
    let _ = stop_reload.send(true);
    let _ = watcher.await;
    // The last senders of the audit log go with the gateway.
    drop(gateway);
    let audit_records = audit_writer.finish().await?;
    tracing::info!(audit_records, "audit log flushed");
    Ok(RunSummary { audit_records })
}
