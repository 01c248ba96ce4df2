//! `cedar-edge envoy-config`: the Envoy filter's plugin configuration for a
//! packed bundle and a mapping, with the bundle's digest (and signature and
//! trusted keys) in it.

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use clap::Args;

use super::{BundleOptions, pack_or_report, read_verified, signature_for};

/// Arguments of `cedar-edge envoy-config`.
#[derive(Debug, Args)]
pub struct EnvoyConfigArgs {
    /// The packed bundle (or a directory, packed on the way).
    #[arg(long, value_name = "FILE")]
    bundle: PathBuf,
    /// The mapping: JSON, as the filter's README describes.
    #[arg(long, value_name = "FILE")]
    mapping: PathBuf,
    /// Where to write the configuration; standard output by default.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    options: BundleOptions,
}

/// Renders the configuration after loading it exactly as the filter will,
/// so a configuration Envoy would refuse is never written.
pub fn run(args: &EnvoyConfigArgs) -> u8 {
    let verified = match read_verified(&args.bundle, &args.options) {
        Ok(verified) => verified,
        Err(code) => return code,
    };
    let mapping: serde_json::Value = match std::fs::read(&args.mapping)
        .map_err(|err| err.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|err| err.to_string()))
    {
        Ok(mapping) => mapping,
        Err(err) => {
            eprintln!("error: `{}`: {err}", args.mapping.display());
            return exit_codes::USAGE;
        }
    };
    let packed = match pack_or_report(&args.bundle, &verified.source) {
        Ok(packed) => packed,
        Err(code) => return code,
    };
    let signature = match signature_for(&args.bundle, args.options.signature.as_deref()) {
        Ok(signature) => signature.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        Err(code) => return code,
    };
    // The keys as `read_verified` accepted them, written as PEM.
    let trusted_pems: Vec<String> = match args.options.trusted() {
        Ok(trusted) => trusted.keys().iter().map(|key| key.key.to_pem()).collect(),
        Err(code) => return code,
    };
    let config = cedar_edge_envoy_filter::config::packed_plugin_config(
        &packed,
        signature.as_deref(),
        &trusted_pems,
        &mapping,
    );
    let text = config.to_string();
    if let Err(err) = cedar_edge_envoy_filter::config::load(text.as_bytes()) {
        eprintln!("error: the filter would refuse this configuration: {err}");
        return exit_codes::BUNDLE;
    }
    let id = verified.source.content_hash().unwrap_or_default();
    match &args.output {
        Some(path) => {
            if let Err(err) = std::fs::write(path, &text) {
                eprintln!("error: cannot write `{}`: {err}", path.display());
                return exit_codes::FAILED;
            }
            eprintln!("wrote {} for bundle {id}", path.display());
        }
        None => println!("{text}"),
    }
    exit_codes::OK
}
