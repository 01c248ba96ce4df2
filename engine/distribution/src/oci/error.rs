//! What can go wrong moving a bundle through a registry. Every message
//! names the reference (or registry) and what failed, so a poller's log
//! line is enough to act on.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::Reference;

/// A failed push, pull or lookup.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum OciError {
    /// The text is not a bundle reference.
    #[error("invalid OCI reference `{input}`: {reason}")]
    #[diagnostic(code(cedar_edge::oci::reference))]
    InvalidReference {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Registry settings that cannot be used.
    #[error("invalid registry settings: {reason}")]
    #[diagnostic(code(cedar_edge::oci::settings))]
    Settings {
        /// What is wrong.
        reason: String,
    },
    /// No connection to the registry (refused, timed out, TLS failed).
    #[error("registry `{registry}` unreachable: {reason}")]
    #[diagnostic(code(cedar_edge::oci::unreachable))]
    Unreachable {
        /// `HOST[:PORT]`.
        registry: String,
        /// The transport's own words.
        reason: String,
    },
    /// The registry has no such manifest (or repository).
    #[error("manifest `{reference}` not found")]
    #[diagnostic(code(cedar_edge::oci::not_found))]
    NotFound {
        /// What was asked for.
        reference: String,
    },
    /// The registry refused the credentials, or their absence.
    #[error("registry refused access to `{reference}`: {reason}")]
    #[diagnostic(code(cedar_edge::oci::denied))]
    Denied {
        /// What was asked for.
        reference: String,
        /// The registry's answer.
        reason: String,
    },
    /// Any other failure the registry reported.
    #[error("{action} `{reference}` failed: {reason}")]
    #[diagnostic(code(cedar_edge::oci::registry))]
    Registry {
        /// What was being done (`pull the manifest of`, `push a layer to`).
        action: &'static str,
        /// The reference it was done for.
        reference: String,
        /// The registry's or the client's words.
        reason: String,
    },
    /// The manifest is not one this module wrote for a bundle.
    #[error("`{reference}` is not a cedar-edge bundle: {reason}")]
    #[diagnostic(code(cedar_edge::oci::not_a_bundle))]
    NotABundle {
        /// The reference pulled.
        reference: String,
        /// Which check failed.
        reason: String,
    },
    /// The signature manifest is not one this module wrote.
    #[error("signature `{reference}` refused: {reason}")]
    #[diagnostic(code(cedar_edge::oci::signature))]
    BadSignature {
        /// The signature's reference.
        reference: String,
        /// Which check failed.
        reason: String,
    },
    /// The manifest's bytes do not hash to the digest they were asked by.
    #[error("manifest digest mismatch for `{reference}`: expected `{expected}`, got `{actual}`")]
    #[diagnostic(code(cedar_edge::oci::manifest_digest))]
    ManifestDigestMismatch {
        /// The reference.
        reference: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came back (or, on push, of what was written).
        actual: String,
    },
    /// A downloaded layer does not hash to the manifest's digest for it.
    #[error("layer digest mismatch for `{reference}`: expected `{expected}`, got `{actual}`")]
    #[diagnostic(code(cedar_edge::oci::layer_digest))]
    LayerDigestMismatch {
        /// The reference.
        reference: String,
        /// The digest the manifest names.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// An artifact or signature over its cap, refused from its declared
    /// size before any of it is downloaded (or, on push, uploaded).
    #[error("the {what} of `{reference}` is {size} bytes, over the limit of {limit} bytes")]
    #[diagnostic(code(cedar_edge::oci::too_large))]
    TooLarge {
        /// `bundle` or `signature`.
        what: &'static str,
        /// The reference.
        reference: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The registry sent a different number of bytes than the manifest
    /// declared; reading stops as soon as it sends more.
    #[error(
        "the registry sent {received} bytes for the {what} of `{reference}`, which declares {declared}"
    )]
    #[diagnostic(code(cedar_edge::oci::size_mismatch))]
    SizeMismatch {
        /// `bundle` or `signature`.
        what: &'static str,
        /// The reference.
        reference: String,
        /// The size in the manifest.
        declared: u64,
        /// What arrived (more than declared: as far as reading went).
        received: u64,
    },
}

/// Sorts oci-client's errors into the kinds a caller acts on differently:
/// retry later (unreachable), fix the name (not found), fix credentials
/// (denied), or read the message.
pub(crate) fn classify(
    reference: &Reference,
    action: &'static str,
    err: OciDistributionError,
) -> OciError {
    let shown = reference.to_string();
    match &err {
        OciDistributionError::RequestError(request)
            if request.is_connect() || request.is_timeout() =>
        {
            return OciError::Unreachable {
                registry: reference.registry().to_owned(),
                reason: chain(request),
            };
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            return OciError::Denied {
                reference: shown,
                reason: chain(&err),
            };
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            return OciError::NotFound { reference: shown };
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => {
            return OciError::Denied {
                reference: shown,
                reason: chain(&err),
            };
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|error| &error.code);
            if codes().any(|code| {
                matches!(
                    code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                return OciError::NotFound { reference: shown };
            }
            if codes().any(|code| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return OciError::Denied {
                    reference: shown,
                    reason: chain(&err),
                };
            }
        }
        _ => {}
    }
    OciError::Registry {
        action,
        reference: shown,
        reason: chain(&err),
    }
}

/// An error and its sources on one line, skipping a source whose words
/// the line already holds (wrappers often repeat their cause).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !line.contains(&words) {
            line = format!("{line}: {words}");
        }
        source = cause.source();
    }
    line
}
