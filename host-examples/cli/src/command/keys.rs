//! `cedar-edge keygen | sign | verify`: key pairs and signatures over
//! packed bundles, in cosign's `sign-blob` format.

use std::path::{Path, PathBuf};

use cedar_edge_cli::exit_codes;
use cedar_edge_core::packed_id;
use cedar_edge_distribution::verify::{default_signature_path, path_with_suffix};
use cedar_edge_signing::{Algorithm, SigningKey, encode_signature};
use clap::Args;

use super::{BundleOptions, pack_or_report, read_bundle, read_verified};

/// Arguments of `cedar-edge keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// `ecdsa-p256` (cosign's default) or `ed25519`.
    #[arg(long, default_value = "ecdsa-p256")]
    algorithm: String,
    /// Writes PREFIX.key (private, mode 0600) and PREFIX.pub.
    #[arg(short, long, value_name = "PREFIX")]
    output: PathBuf,
}

/// Arguments of `cedar-edge sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The private key (unencrypted PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The packed bundle (`cedar-edge pack`).
    bundle: PathBuf,
    /// Where to write the signature; by default BUNDLE.sig.
    #[arg(short, long, value_name = "SIG")]
    output: Option<PathBuf>,
}

/// Arguments of `cedar-edge verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The packed bundle or bundle directory.
    bundle: PathBuf,
    #[command(flatten)]
    options: BundleOptions,
}

/// Writes a new key pair.
pub fn keygen(args: &KeygenArgs) -> u8 {
    let algorithm: Algorithm = match args.algorithm.parse() {
        Ok(algorithm) => algorithm,
        Err(err) => {
            eprintln!("error: --algorithm: {err}");
            return exit_codes::USAGE;
        }
    };
    let key = SigningKey::generate(algorithm);
    let private = path_with_suffix(&args.output, ".key");
    let public = path_with_suffix(&args.output, ".pub");
    if let Err(err) = write_private(&private, key.to_pem().as_bytes()) {
        eprintln!("error: cannot write `{}`: {err}", private.display());
        return exit_codes::FAILED;
    }
    if let Err(err) = std::fs::write(&public, key.public_key().to_pem()) {
        eprintln!("error: cannot write `{}`: {err}", public.display());
        return exit_codes::FAILED;
    }
    eprintln!(
        "wrote {} (private, keep it secret) and {}",
        private.display(),
        public.display()
    );
    println!("{} {}", algorithm.name(), key.public_key().fingerprint());
    exit_codes::OK
}

/// A new private key file, readable by its owner only, never overwriting.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

/// Signs a packed bundle (or a directory, packed in memory).
pub fn sign(args: &SignArgs) -> u8 {
    let key = match std::fs::read_to_string(&args.key)
        .map_err(|err| err.to_string())
        .and_then(|text| SigningKey::from_pem(&text).map_err(|err| err.to_string()))
    {
        Ok(key) => key,
        Err(err) => {
            eprintln!("error: `{}`: {err}", args.key.display());
            return exit_codes::USAGE;
        }
    };
    // Read as every loader reads it: only a well-formed bundle is signed.
    let packed = match read_bundle(&args.bundle, &BundleOptions::unverified())
        .and_then(|source| pack_or_report(&args.bundle, &source))
    {
        Ok(packed) => packed,
        Err(code) => return code,
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_signature_path(&args.bundle));
    if let Err(err) = std::fs::write(&output, encode_signature(&key.sign(&packed))) {
        eprintln!("error: cannot write `{}`: {err}", output.display());
        return exit_codes::FAILED;
    }
    let id = packed_id(&packed);
    eprintln!(
        "signed {id} with {} → {}",
        key.public_key().fingerprint(),
        output.display()
    );
    println!("{id}");
    exit_codes::OK
}

/// Verifies a bundle's signature against the trusted keys and reads it.
pub fn verify(args: &VerifyArgs) -> u8 {
    if args.options.trusted_keys.is_empty() {
        eprintln!("error: give at least one --trusted-key");
        return exit_codes::USAGE;
    }
    let verified = match read_verified(&args.bundle, &args.options) {
        Ok(verified) => verified,
        Err(code) => return code,
    };
    let id = verified.source.content_hash().unwrap_or_default();
    if let Some(signer) = &verified.signer {
        eprintln!("verified: signed by {signer}");
    }
    println!("{id}");
    exit_codes::OK
}
