//! One module per subcommand, plus the loading steps they share.

pub mod authorize;
pub mod diff;
pub mod fmt;
pub mod serve;
pub mod test;
pub mod validate;

use std::path::Path;

use cedar_edge_cli::engines::{Engines, LoadedBundle};
use cedar_edge_cli::exit_codes;
use cedar_edge_cli::report::print_bundle_diagnostics;
use cedar_edge_core::{BundleSource, DEFAULT_MAX_FILE_BYTES};
use cedar_edge_runtime::RuntimeError;
use clap::Args;

/// Limits on the bundle and test files a command reads.
#[derive(Debug, Clone, Copy, Args)]
pub struct FileLimits {
    /// The largest bundle or test file read, in bytes; a larger one is
    /// refused.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
}

/// Reads a bundle directory, or prints why not and returns the exit code.
pub fn read_bundle(dir: &Path, limits: FileLimits) -> Result<BundleSource, u8> {
    BundleSource::from_dir_capped(dir, limits.max_file_bytes).map_err(|err| {
        eprintln!("{:?}", miette::Report::msg(err.to_string()));
        exit_codes::BUNDLE
    })
}

/// Loads a bundle into the backend, or prints every problem and returns the
/// exit code.
pub fn load_backend(
    engines: &Engines,
    dir: &Path,
    source: &BundleSource,
) -> Result<LoadedBundle, u8> {
    engines.load(source).map_err(|err| match err {
        RuntimeError::Load(err) => {
            print_bundle_diagnostics(dir, source, &err.diagnostics);
            eprintln!(
                "error: `{}` has {} problem(s)",
                dir.display(),
                err.diagnostics.len()
            );
            exit_codes::BUNDLE
        }
        other => runtime_failure(&other),
    })
}

/// Prints a runtime failure and returns its exit code.
pub fn runtime_failure(err: &RuntimeError) -> u8 {
    eprintln!("{:?}", miette::Report::msg(err.to_string()));
    exit_codes::RUNTIME
}

/// Starts the chosen engine, or prints why not.
pub fn start_engines(choice: cedar_edge_cli::engines::BackendChoice) -> Result<Engines, u8> {
    Engines::new(choice).map_err(|err| runtime_failure(&err))
}
