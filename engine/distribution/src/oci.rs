//! OCI registries as bundle stores.
//!
//! A packed bundle (an opaque, deterministic tar) travels as an OCI image
//! manifest with `artifactType` [`BUNDLE_ARTIFACT_TYPE`], the OCI empty
//! config and one layer of type [`BUNDLE_LAYER_MEDIA_TYPE`]. The layer's
//! digest is the bundle id. An optional signature (base64 text over the
//! artifact, as `cosign sign-blob` writes) travels beside it under cosign's
//! tag convention, `sha256-<manifest hex>.sig`.
//!
//! The registry is not trusted: [`pull`] checks the manifest's types and
//! shape, the manifest digest when asked by digest, each layer's sha256 and
//! the size caps, and fails closed on anything else. Whether a signature is
//! required, and whose, is the caller's decision; this module only carries
//! it.

mod error;
mod manifest;
mod reference;

use std::time::Duration;

use futures_util::StreamExt as _;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::DigestError;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

pub use error::OciError;
pub use manifest::{
    BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_LAYER_MEDIA_TYPE,
};
pub use reference::{Reference, Version};

use error::classify;
use manifest::{Descriptor, EMPTY_CONTENT, IMAGE_MANIFEST, encode, sha256_digest, single_layer};

/// The default cap on a bundle's size: far above any policy set, far below
/// what would hurt an enforcement point's memory.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 16 * 1024 * 1024;

/// The cap on a signature: a cosign signature is well under 1 KiB, so
/// anything this large is not one.
pub const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// Environment variables [`RegistryOptions::from_env`] reads.
pub const USERNAME_VARIABLE: &str = "CEDAR_EDGE_REGISTRY_USERNAME";
/// See [`USERNAME_VARIABLE`].
pub const PASSWORD_VARIABLE: &str = "CEDAR_EDGE_REGISTRY_PASSWORD";

/// How long to wait for a connection, and for each read: a poller should
/// hear "unreachable" rather than hang. Callers wanting a bound on a whole
/// pull wrap it in `tokio::time::timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How to talk to registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`HOST[:PORT]`, exactly as in references) spoken to over
    /// plain HTTP. Empty by default: HTTPS everywhere unless a registry is
    /// named here, so one mistyped reference cannot downgrade the rest.
    pub plain_http: Vec<String>,
    /// Who to be.
    pub credentials: Credentials,
    /// The largest bundle accepted, checked against the manifest's declared
    /// size before downloading and again while reading; also refused on push.
    pub max_artifact_bytes: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            credentials: Credentials::Anonymous,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
        }
    }
}

impl RegistryOptions {
    /// Defaults, with credentials from [`USERNAME_VARIABLE`] and
    /// [`PASSWORD_VARIABLE`] when both are set (anonymous when neither is):
    /// secrets stay out of command lines and configuration files.
    pub fn from_env() -> Result<Self, OciError> {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let credentials = match (read(USERNAME_VARIABLE), read(PASSWORD_VARIABLE)) {
            (None, None) => Credentials::Anonymous,
            (Some(username), Some(password)) => Credentials::Basic { username, password },
            (Some(_), None) => return Err(half_set(USERNAME_VARIABLE, PASSWORD_VARIABLE)),
            (None, Some(_)) => return Err(half_set(PASSWORD_VARIABLE, USERNAME_VARIABLE)),
        };
        Ok(Self {
            credentials,
            ..Self::default()
        })
    }

    /// These options, also speaking plain HTTP to `registry` (a test
    /// registry on loopback, say).
    pub fn with_plain_http(mut self, registry: impl Into<String>) -> Self {
        self.plain_http.push(registry.into());
        self
    }

    fn client(&self) -> Result<Client, OciError> {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.plain_http.clone()),
            // A bundle reference never names an index, so no platform is chosen.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to default settings on an error; a
        // failure must stay a failure.
        Client::try_from(config).map_err(|err| OciError::Settings {
            reason: error::chain(&err),
        })
    }

    fn auth(&self) -> RegistryAuth {
        match &self.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

fn half_set(set: &str, missing: &str) -> OciError {
    OciError::Settings {
        reason: format!("`{set}` is set but `{missing}` is not"),
    }
}

/// Registry credentials.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials (a public registry, or one on loopback).
    #[default]
    Anonymous,
    /// A username and password (or token), used for HTTP basic auth or to
    /// obtain a bearer token, as the registry asks.
    Basic {
        /// The username.
        username: String,
        /// The password or token; never shown by `Debug`.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// What [`push`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The manifest's digest: the same artifact always gives the same one.
    pub manifest_digest: String,
    /// The layer's digest, `sha256:<hex of the artifact>`: the bundle id.
    pub bundle_id: String,
    /// Where the signature went, when one was given.
    pub signature: Option<Reference>,
}

/// What [`pull`] fetched and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The packed bundle, its sha256 checked against `bundle_id`.
    pub artifact: Vec<u8>,
    /// The digest of the manifest pulled: pin it to pull exactly this again.
    pub manifest_digest: String,
    /// The layer's digest, `sha256:<hex of artifact>`.
    pub bundle_id: String,
    /// The signature stored for this manifest, if any; its absence is not
    /// an error here, since only the caller knows whether one is required.
    pub signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for Pulled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A bundle is up to megabytes: its length says enough.
        f.debug_struct("Pulled")
            .field("artifact_bytes", &self.artifact.len())
            .field("manifest_digest", &self.manifest_digest)
            .field("bundle_id", &self.bundle_id)
            .field("signature_bytes", &self.signature.as_ref().map(Vec::len))
            .finish()
    }
}

/// The tag a signature is stored under: cosign's convention, derived from
/// the signed manifest's digest alone, so a puller finds it with one
/// manifest lookup. The referrers API would be the newer way, but the
/// distribution registry 2.8 (Debian's) has none, and a tag works on every
/// registry.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// Pushes a packed bundle, and its signature if given, to `reference`.
///
/// The manifest is deterministic (its shape is in the module's docs; it
/// has no timestamps), so pushing the same artifact again gives the same
/// digest. The
/// signature is pushed before the bundle's manifest, so a poller that sees
/// the tag move finds the signature already there. A reference by digest
/// is accepted only when it is the digest this artifact's manifest has.
pub async fn push(
    reference: &Reference,
    artifact: &[u8],
    signature: Option<&[u8]>,
    options: &RegistryOptions,
) -> Result<Pushed, OciError> {
    let too_large = |what, size: usize, limit| OciError::TooLarge {
        what,
        reference: reference.to_string(),
        size: size as u64,
        limit,
    };
    if artifact.len() as u64 > options.max_artifact_bytes {
        return Err(too_large(
            "bundle",
            artifact.len(),
            options.max_artifact_bytes,
        ));
    }
    if let Some(signature) = signature
        && signature.len() as u64 > MAX_SIGNATURE_BYTES
    {
        return Err(too_large("signature", signature.len(), MAX_SIGNATURE_BYTES));
    }
    let bundle = encode(BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, artifact);
    check_pinned(reference, &bundle.digest)?;
    let client = options.client()?;
    let image = reference.to_client();
    client
        .store_auth_if_needed(image.resolve_registry(), &options.auth())
        .await;

    upload_blob(&client, reference, EMPTY_CONTENT).await?;
    upload_blob(&client, reference, artifact).await?;
    let signature_reference = match signature {
        Some(signature) => {
            let at = reference.with_tag(&signature_tag(&bundle.digest))?;
            let encoded = encode(
                SIGNATURE_ARTIFACT_TYPE,
                SIGNATURE_LAYER_MEDIA_TYPE,
                signature,
            );
            upload_blob(&client, &at, signature).await?;
            upload_manifest(&client, &at, encoded.bytes).await?;
            Some(at)
        }
        None => None,
    };
    upload_manifest(&client, reference, bundle.bytes).await?;
    Ok(Pushed {
        manifest_digest: bundle.digest,
        bundle_id: bundle.layer_digest,
        signature: signature_reference,
    })
}

/// Uploads a blob unless the repository already holds it.
async fn upload_blob(client: &Client, reference: &Reference, blob: &[u8]) -> Result<(), OciError> {
    let image = reference.to_client();
    let digest = sha256_digest(blob);
    let exists = client
        .blob_exists(&image, &digest)
        .await
        .map_err(|err| classify(reference, "look up a blob for", err))?;
    if !exists {
        client
            .push_blob(&image, blob.to_vec(), &digest)
            .await
            .map_err(|err| classify(reference, "push a blob for", err))?;
    }
    Ok(())
}

async fn upload_manifest(
    client: &Client,
    reference: &Reference,
    bytes: Vec<u8>,
) -> Result<(), OciError> {
    client
        .push_manifest_raw(
            &reference.to_client(),
            bytes,
            http::HeaderValue::from_static(IMAGE_MANIFEST),
        )
        .await
        .map(drop)
        .map_err(|err| classify(reference, "push the manifest", err))
}

/// The digest of the manifest `reference` names now, by a HEAD request:
/// what a poller compares with the digest it last pulled before pulling
/// again. It says nothing about whether the manifest is a bundle; [`pull`]
/// checks that.
pub async fn resolve(reference: &Reference, options: &RegistryOptions) -> Result<String, OciError> {
    let client = options.client()?;
    let digest = client
        .fetch_manifest_digest(&reference.to_client(), &options.auth())
        .await
        .map_err(|err| manifest_error(reference, "resolve", err))?;
    reference::check_digest(&digest).map_err(|reason| OciError::Registry {
        action: "resolve",
        reference: reference.to_string(),
        reason: format!("the registry answered with {reason}"),
    })?;
    check_pinned(reference, &digest)?;
    Ok(digest)
}

/// Pulls the bundle `reference` names, with its signature if one is
/// stored, checking everything the registry could get wrong or forge.
pub async fn pull(reference: &Reference, options: &RegistryOptions) -> Result<Pulled, OciError> {
    let client = options.client()?;
    let auth = options.auth();
    let (body, _) = client
        .pull_manifest_raw(&reference.to_client(), &auth, &[IMAGE_MANIFEST])
        .await
        .map_err(|err| manifest_error(reference, "pull the manifest of", err))?;
    // Computed here, whatever the client checked: by digest, this is the
    // whole trust in the pull.
    let manifest_digest = sha256_digest(&body);
    check_pinned(reference, &manifest_digest)?;
    let layer =
        single_layer(&body, BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE).map_err(|reason| {
            OciError::NotABundle {
                reference: reference.to_string(),
                reason,
            }
        })?;
    let artifact = download(
        &client,
        reference,
        &layer,
        "bundle",
        options.max_artifact_bytes,
    )
    .await?;
    let signature = pull_signature(&client, &auth, reference, &manifest_digest).await?;
    Ok(Pulled {
        artifact,
        manifest_digest,
        bundle_id: layer.digest,
        signature,
    })
}

/// The signature stored for a manifest digest, or `None` when the
/// registry has none. Any other failure is an error: a registry that
/// stops answering half-way must not look like an unsigned bundle.
async fn pull_signature(
    client: &Client,
    auth: &RegistryAuth,
    reference: &Reference,
    manifest_digest: &str,
) -> Result<Option<Vec<u8>>, OciError> {
    let at = reference.with_tag(&signature_tag(manifest_digest))?;
    let body = match client
        .pull_manifest_raw(&at.to_client(), auth, &[IMAGE_MANIFEST])
        .await
        .map_err(|err| manifest_error(&at, "pull the signature manifest", err))
    {
        Ok((body, _)) => body,
        Err(OciError::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let layer = single_layer(&body, SIGNATURE_ARTIFACT_TYPE, SIGNATURE_LAYER_MEDIA_TYPE).map_err(
        |reason| OciError::BadSignature {
            reference: at.to_string(),
            reason,
        },
    )?;
    download(client, &at, &layer, "signature", MAX_SIGNATURE_BYTES)
        .await
        .map(Some)
}

/// Reads a layer, refusing it by its declared size before any byte moves,
/// stopping as soon as the registry sends more than declared, and checking
/// the sha256 of what arrived against the manifest's digest (oci-client
/// checks too; this check does not depend on it).
async fn download(
    client: &Client,
    reference: &Reference,
    layer: &Descriptor,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let shown = || reference.to_string();
    if layer.size > limit {
        return Err(OciError::TooLarge {
            what,
            reference: shown(),
            size: layer.size,
            limit,
        });
    }
    let mut stream = client
        .pull_blob_stream(&reference.to_client(), layer.digest.as_str())
        .await
        .map_err(|err| classify(reference, "pull a layer of", err))?;
    let mut bytes = Vec::with_capacity(usize::try_from(layer.size).unwrap_or_default());
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // oci-client's own digest check, at the end of the stream:
            // everything has arrived, so the check below reports it.
            Err(err) if is_digest_error(&err) => break,
            Err(err) => {
                return Err(OciError::Registry {
                    action: "download a layer of",
                    reference: shown(),
                    reason: error::chain(&err),
                });
            }
        };
        let received = bytes.len() as u64 + chunk.len() as u64;
        if received > layer.size {
            return Err(OciError::SizeMismatch {
                what,
                reference: shown(),
                declared: layer.size,
                received,
            });
        }
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let actual = format!("sha256:{:x}", hasher.finalize());
    if actual != layer.digest {
        return Err(OciError::LayerDigestMismatch {
            reference: shown(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != layer.size {
        return Err(OciError::SizeMismatch {
            what,
            reference: shown(),
            declared: layer.size,
            received: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// A reference by digest names exactly one manifest: anything else is
/// refused, whichever side computed the other digest.
fn check_pinned(reference: &Reference, actual: &str) -> Result<(), OciError> {
    match reference.digest() {
        Some(expected) if expected != actual => Err(OciError::ManifestDigestMismatch {
            reference: reference.to_string(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn is_digest_error(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some())
}

/// [`classify`], with the client's manifest digest check reported as the
/// mismatch it is.
fn manifest_error(
    reference: &Reference,
    action: &'static str,
    err: oci_client::errors::OciDistributionError,
) -> OciError {
    match err {
        oci_client::errors::OciDistributionError::DigestError(DigestError::VerificationError {
            expected,
            actual,
        }) => OciError::ManifestDigestMismatch {
            reference: reference.to_string(),
            expected,
            actual,
        },
        other => classify(reference, action, other),
    }
}
