//! `cedar-edge-gateway --config gateway.yaml`: serves until SIGTERM or
//! Ctrl-C, reloads the bundle on SIGHUP and on change.

use std::path::PathBuf;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .init();
    let mut args = std::env::args().skip(1);
    let config_path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: cedar-edge-gateway --config FILE");
            return std::process::ExitCode::from(64);
        }
    };
    match cedar_edge_gateway::serve_config_file(&config_path).await {
        Ok(summary) => {
            tracing::info!(audit_records = summary.audit_records, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "the gateway stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
