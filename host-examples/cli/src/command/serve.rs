//! `cedar-edge serve --config FILE`: the decision service (AuthZEN over
//! HTTPS, with authenticated callers), or any gateway configuration, until
//! SIGTERM or Ctrl-C. The gateway library does the serving; this command
//! gives it a runtime and JSON logs on standard output.

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use cedar_edge_gateway::error::GatewayError;
use clap::Args;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service's configuration (YAML): `bundle`, `audit_log` and a
    /// `pdp` section with its listener and callers; see the gateway README.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Serves until stopped; the exit code says how it ended.
pub fn run(args: &ServeArgs) -> u8 {
    // A second start in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit_codes::RUNTIME;
        }
    };
    match runtime.block_on(cedar_edge_gateway::serve_config_file(&args.config)) {
        Ok(summary) => {
            tracing::info!(audit_records = summary.audit_records, "stopped");
            exit_codes::OK
        }
        Err(err) => {
            let code = match &err {
                GatewayError::BundleRead(_)
                | GatewayError::Bundle(_)
                | GatewayError::Mapping(_) => exit_codes::BUNDLE,
                _ => exit_codes::CONFIG,
            };
            eprintln!("{:?}", miette::Report::new(err));
            code
        }
    }
}
