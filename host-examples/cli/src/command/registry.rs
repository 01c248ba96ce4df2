//! `cedar-edge push | pull`: packed bundles and their signatures through an
//! OCI registry.

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use cedar_edge_distribution::oci::{self, OciError, Reference, RegistryOptions};
use cedar_edge_distribution::verify::{default_signature_path, from_artifact};
use clap::Args;

use super::{BundleOptions, pack_or_report, read_bundle, signature_for};

/// How to reach the registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to this reference's registry (a registry on
    /// loopback); HTTPS otherwise. Credentials come from
    /// `CEDAR_EDGE_REGISTRY_USERNAME` and `CEDAR_EDGE_REGISTRY_PASSWORD`.
    #[arg(long)]
    plain_http: bool,
}

/// Arguments of `cedar-edge push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The packed bundle, or a directory to pack on the way.
    bundle: PathBuf,
    /// Where to push: `oci://HOST[:PORT]/REPOSITORY:TAG`.
    reference: String,
    /// The signature to push with it; by default BUNDLE.sig when present.
    #[arg(long, value_name = "SIG")]
    signature: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Arguments of `cedar-edge pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What to pull: `oci://HOST[:PORT]/REPOSITORY:TAG` or `…@sha256:…`.
    reference: String,
    /// Where to write the packed bundle; its signature goes to FILE.sig.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    options: BundleOptions,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn connect(reference: &str, args: &RegistryArgs) -> Result<(Reference, RegistryOptions), u8> {
    let reference: Reference = reference.parse().map_err(|err: OciError| {
        eprintln!("error: {err}");
        exit_codes::USAGE
    })?;
    let mut options = RegistryOptions::from_env().map_err(|err| {
        eprintln!("error: {err}");
        exit_codes::USAGE
    })?;
    if args.plain_http {
        options = options.with_plain_http(reference.registry());
    }
    Ok((reference, options))
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| runtime.block_on(work))
        .map_err(|err| {
            eprintln!("error: cannot start the async runtime: {err}");
            exit_codes::RUNTIME
        })
}

fn registry_failure(err: &OciError) -> u8 {
    eprintln!("{:?}", miette::Report::msg(err.to_string()));
    match err {
        OciError::Unreachable { .. } => exit_codes::UNAVAILABLE,
        _ => exit_codes::FAILED,
    }
}

/// Pushes a packed bundle and its signature; prints the bundle id.
pub fn push(args: &PushArgs) -> u8 {
    let (reference, options) = match connect(&args.reference, &args.registry) {
        Ok(found) => found,
        Err(code) => return code,
    };
    // The archive pushed is always the canonical packing of a readable
    // bundle, so its digest is the id every loader computes.
    let packed = match read_bundle(&args.bundle, &BundleOptions::unverified())
        .and_then(|source| pack_or_report(&args.bundle, &source))
    {
        Ok(packed) => packed,
        Err(code) => return code,
    };
    let signature = match signature_for(&args.bundle, args.signature.as_deref()) {
        Ok(signature) => signature,
        Err(code) => return code,
    };
    let pushed = match block_on(oci::push(
        &reference,
        &packed,
        signature.as_deref(),
        &options,
    )) {
        Ok(Ok(pushed)) => pushed,
        Ok(Err(err)) => return registry_failure(&err),
        Err(code) => return code,
    };
    eprintln!(
        "pushed {reference}: manifest {}{}",
        pushed.manifest_digest,
        if signature.is_some() {
            ", signature beside it"
        } else {
            ", unsigned"
        }
    );
    println!("{}", pushed.bundle_id);
    exit_codes::OK
}

/// Pulls a bundle, verifies it when keys are trusted, writes it; prints
/// the bundle id.
pub fn pull(args: &PullArgs) -> u8 {
    let (reference, mut options) = match connect(&args.reference, &args.registry) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let trusted = match args.options.trusted() {
        Ok(trusted) => trusted,
        Err(code) => return code,
    };
    options.max_artifact_bytes = cedar_edge_core::archive_cap(args.options.max_file_bytes);
    let pulled = match block_on(oci::pull(&reference, &options)) {
        Ok(Ok(pulled)) => pulled,
        Ok(Err(err)) => return registry_failure(&err),
        Err(code) => return code,
    };
    let origin = reference.to_string();
    let verified = match from_artifact(
        &pulled.artifact,
        pulled.signature.as_deref(),
        &trusted,
        args.options.max_file_bytes,
        &origin,
    ) {
        Ok(verified) => verified,
        Err(err) => {
            eprintln!("{:?}", miette::Report::msg(err.to_string()));
            return if err.signature {
                exit_codes::UNTRUSTED
            } else {
                exit_codes::BUNDLE
            };
        }
    };
    if let Err(err) = std::fs::write(&args.output, &pulled.artifact) {
        eprintln!("error: cannot write `{}`: {err}", args.output.display());
        return exit_codes::FAILED;
    }
    if let Some(signature) = &pulled.signature {
        let path = default_signature_path(&args.output);
        if let Err(err) = std::fs::write(&path, signature) {
            eprintln!("error: cannot write `{}`: {err}", path.display());
            return exit_codes::FAILED;
        }
    }
    eprintln!(
        "pulled {reference} (manifest {}) → {}{}",
        pulled.manifest_digest,
        args.output.display(),
        verified
            .signer
            .map(|signer| format!(", signed by {signer}"))
            .unwrap_or_default()
    );
    println!("{}", pulled.bundle_id);
    exit_codes::OK
}
