//! One module per subcommand, plus the loading steps they share.

pub mod authorize;
pub mod diff;
pub mod envoy_config;
pub mod fmt;
pub mod keys;
pub mod pack;
pub mod registry;
pub mod serve;
pub mod test;
pub mod validate;

use std::path::{Path, PathBuf};

use cedar_edge_cli::engines::{Engines, LoadedBundle};
use cedar_edge_cli::exit_codes;
use cedar_edge_cli::report::print_bundle_diagnostics;
use cedar_edge_core::{BundleSource, DEFAULT_MAX_FILE_BYTES};
use cedar_edge_distribution::verify::{
    Verified, default_signature_path, read_local, read_signature,
};
use cedar_edge_runtime::RuntimeError;
use cedar_edge_signing::TrustedKeys;
use clap::Args;

/// How a command reads its bundle: limits, and the keys it must be signed
/// with.
#[derive(Debug, Clone, Args)]
pub struct BundleOptions {
    /// The largest bundle or test file read, in bytes; a larger one is
    /// refused.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// Require a signature by this public key (PEM; repeat for several).
    /// Without any, signatures are not checked.
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<PathBuf>,
    /// The signature file; by default the bundle's path with `.sig`
    /// appended.
    #[arg(long, value_name = "SIG")]
    pub signature: Option<PathBuf>,
}

impl BundleOptions {
    /// Default limits and no trusted key: for commands that read a bundle
    /// only to pack, sign or push it.
    pub fn unverified() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            trusted_keys: Vec::new(),
            signature: None,
        }
    }

    /// The trusted keys, or prints why they cannot be read.
    pub fn trusted(&self) -> Result<TrustedKeys, u8> {
        TrustedKeys::from_files(&self.trusted_keys).map_err(|err| {
            eprintln!("error: {err}");
            exit_codes::USAGE
        })
    }
}

/// Reads a bundle directory or packed file, verified when keys are
/// trusted, or prints why not and returns the exit code.
pub fn read_bundle(path: &Path, options: &BundleOptions) -> Result<BundleSource, u8> {
    read_verified(path, options).map(|verified| verified.source)
}

/// [`read_bundle`], keeping who signed it.
pub fn read_verified(path: &Path, options: &BundleOptions) -> Result<Verified, u8> {
    let trusted = options.trusted()?;
    read_local(
        path,
        &trusted,
        options.signature.as_deref(),
        options.max_file_bytes,
    )
    .map_err(|err| {
        eprintln!("{:?}", miette::Report::msg(err.to_string()));
        if err.signature {
            exit_codes::UNTRUSTED
        } else {
            exit_codes::BUNDLE
        }
    })
}

/// The packed form of a bundle read from `path`, or prints why not.
pub fn pack_or_report(path: &Path, source: &BundleSource) -> Result<Vec<u8>, u8> {
    source.pack().map_err(|err| {
        eprintln!("error: `{}`: {err}", path.display());
        exit_codes::BUNDLE
    })
}

/// The signature for `bundle`: the file named by `--signature` (which
/// must exist), or else `BUNDLE.sig` when present; or prints why not.
pub fn signature_for(bundle: &Path, named: Option<&Path>) -> Result<Option<Vec<u8>>, u8> {
    let path = named
        .map(Path::to_owned)
        .unwrap_or_else(|| default_signature_path(bundle));
    match read_signature(&path) {
        Ok(None) if named.is_some() => Err("no such file".to_owned()),
        other => other,
    }
    .map_err(|err| {
        eprintln!("error: `{}`: {err}", path.display());
        exit_codes::USAGE
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
