//! `cedar-edge-gateway --config gateway.yaml`: serves until SIGTERM or
//! Ctrl-C, reloads the bundle on SIGHUP and on change.

use std::path::PathBuf;

use cedar_edge_gateway::config::GatewayConfig;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .init();
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "the gateway stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let config_path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => PathBuf::from(path),
        _ => anyhow::bail!("usage: cedar-edge-gateway --config FILE"),
    };
    let config = GatewayConfig::read(&config_path)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
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
    let summary = cedar_edge_gateway::run(config, listener, shutdown, reload_receiver).await?;
    tracing::info!(audit_records = summary.audit_records, "stopped");
    Ok(())
}
