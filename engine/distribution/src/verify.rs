//! Reading a bundle from a path or from pulled bytes, and refusing it
//! unless a trusted key signed it, when keys are trusted.
//!
//! The signature is checked over the packed bytes before they are parsed:
//! an unsigned archive is never read further. A directory is packed in
//! memory first, so a directory and its packed file verify with one
//! signature.

use std::path::{Path, PathBuf};

use cedar_edge_core::{BundleSource, archive_cap, read_regular_file};
use cedar_edge_signing::{MAX_SIGNATURE_BYTES, Signer, TrustedKeys};

/// A bundle read and, when keys are trusted, verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The bundle's files and settings.
    pub source: BundleSource,
    /// Who signed it, when keys are trusted.
    pub signer: Option<Signer>,
}

/// A bundle that cannot be read or is not trusted, naming the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct VerifyError {
    /// The bundle's path, or where it was pulled from.
    pub origin: String,
    /// What is wrong.
    pub message: String,
    /// Whether the signature was at fault (rather than reading or parsing).
    pub signature: bool,
}

/// Where a bundle's signature file is looked for unless named: beside the
/// bundle, with `.sig` appended (`airflow.tar.sig`, `policies/airflow.sig`).
pub fn default_signature_path(bundle: &Path) -> PathBuf {
    path_with_suffix(bundle, ".sig")
}

/// `path` with `suffix` appended to its last part (`ci` → `ci.key`,
/// `policies/airflow/` → `policies/airflow.sig`).
pub fn path_with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Reads a directory or packed file; with trusted keys, requires a
/// signature (at `signature`, or [`default_signature_path`]).
pub fn read_local(
    path: &Path,
    trusted: &TrustedKeys,
    signature: Option<&Path>,
    max_file_bytes: u64,
) -> Result<Verified, VerifyError> {
    let origin = path.display().to_string();
    let fail = |message: String| VerifyError {
        origin: origin.clone(),
        message,
        signature: false,
    };
    if trusted.is_empty() {
        let source =
            BundleSource::open(path, max_file_bytes).map_err(|err| fail(err.to_string()))?;
        return Ok(Verified {
            source,
            signer: None,
        });
    }
    let signature_path = signature
        .map(Path::to_owned)
        .unwrap_or_else(|| default_signature_path(path));
    let signature_text = read_signature(&signature_path).map_err(|message| VerifyError {
        origin: signature_path.display().to_string(),
        message,
        signature: true,
    })?;
    if path.is_dir() {
        let source = BundleSource::from_dir_capped(path, max_file_bytes)
            .map_err(|err| fail(err.to_string()))?;
        let packed = source.pack().map_err(|err| fail(err.message))?;
        let signer = check(trusted, &packed, signature_text.as_deref(), &origin)?;
        return Ok(Verified {
            source,
            signer: Some(signer),
        });
    }
    let bytes = read_regular_file(path, archive_cap(max_file_bytes)).map_err(fail)?;
    from_artifact(
        &bytes,
        signature_text.as_deref(),
        trusted,
        max_file_bytes,
        &origin,
    )
}

/// Verifies pulled bytes (when keys are trusted), then reads them.
pub fn from_artifact(
    bytes: &[u8],
    signature: Option<&[u8]>,
    trusted: &TrustedKeys,
    max_file_bytes: u64,
    origin: &str,
) -> Result<Verified, VerifyError> {
    let signer = if trusted.is_empty() {
        None
    } else {
        Some(check(trusted, bytes, signature, origin)?)
    };
    let source = BundleSource::from_packed(bytes, max_file_bytes).map_err(|err| VerifyError {
        origin: origin.to_owned(),
        message: err.message,
        signature: false,
    })?;
    Ok(Verified { source, signer })
}

fn check(
    trusted: &TrustedKeys,
    bytes: &[u8],
    signature: Option<&[u8]>,
    origin: &str,
) -> Result<Signer, VerifyError> {
    trusted.verify(bytes, signature).map_err(|err| VerifyError {
        origin: origin.to_owned(),
        message: err.to_string(),
        signature: true,
    })
}

/// A signature file's text, capped; a missing file is no signature.
pub fn read_signature(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
        Ok(_) => read_regular_file(path, MAX_SIGNATURE_BYTES as u64).map(Some),
    }
}
