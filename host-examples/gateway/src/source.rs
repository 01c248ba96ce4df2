//! Where the serving bundle comes from: a directory or packed file on
//! disk, an OCI registry (`oci://…`), or a folder of a Git remote at a
//! commit (`git+…`). Every source ends in the same checks: the signature
//! against `trusted_keys` (before the archive is parsed), the pin, then the
//! load that any local bundle goes through.
//!
//! Remote sources are polled cheaply (a manifest digest, a commit id) and
//! fetched only when that revision changes; the revision serves beside the
//! bundle id in `/healthz`, the metrics and every audit record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cedar_edge_core::{BundleSource, DEFAULT_MAX_FILE_BYTES, archive_cap, digest_of_parts};
use cedar_edge_distribution::git::GitSource;
use cedar_edge_distribution::oci::{self, Reference, RegistryOptions};
use cedar_edge_distribution::verify::{Verified, from_artifact, read_local};
use cedar_edge_signing::TrustedKeys;
use serde::Deserialize;

use crate::error::GatewayError;

/// How a remote bundle source is polled and checked (`bundle_source:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// How often a registry or Git remote is asked for its revision.
    #[serde(default = "default_remote_poll")]
    pub poll_interval_ms: u64,
    /// `sha256:…`: the only bundle id served; anything else is refused.
    #[serde(default)]
    pub pin: Option<String>,
    /// Registries (`host:port`) spoken to over plain HTTP: loopback tests
    /// and private mirrors; HTTPS otherwise.
    #[serde(default)]
    pub plain_http: Vec<String>,
    /// Git: an SSH allowed-signers file; commits not signed by one of its
    /// keys are refused.
    #[serde(default)]
    pub require_signed_commits: Option<PathBuf>,
    /// Git: where the fetched objects are cached.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_remote_poll(),
            pin: None,
            plain_http: Vec::new(),
            require_signed_commits: None,
            cache_dir: None,
        }
    }
}

fn default_remote_poll() -> u64 {
    30_000
}

/// What `bundle:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A bundle directory or a packed file.
    Local(PathBuf),
    /// An OCI reference.
    Oci(String),
    /// A `git+URL#REF:SUBDIR` spec.
    Git(String),
}

impl Location {
    /// Reads `bundle:`; a path is relative to the configuration's folder.
    pub fn parse(text: &str, base: &Path) -> Self {
        if text.starts_with("oci://") {
            Self::Oci(text.to_owned())
        } else if text.starts_with("git+") {
            Self::Git(text.to_owned())
        } else {
            Self::Local(base.join(text))
        }
    }
}

/// Where the serving bundle came from, as reports show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The configured location (credentials never appear here).
    pub location: String,
    /// The OCI manifest digest or the Git commit; none for local files.
    pub revision: Option<String>,
    /// The trusted key (or Git commit signer) that signed it.
    pub signer: Option<String>,
}

/// A bundle fetched and verified, ready to load.
#[derive(Debug)]
pub struct Fetched {
    /// Its files and settings.
    pub source: BundleSource,
    /// Where it came from.
    pub origin: Origin,
}

enum Remote {
    Local(PathBuf),
    Oci(Reference, RegistryOptions),
    Git(GitSource),
}

/// Fetches the bundle from its configured location.
pub struct Fetcher {
    remote: Remote,
    location: String,
    trusted: TrustedKeys,
    pin: Option<String>,
    poll: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Checks the location and settings; nothing is fetched yet.
    pub fn new(
        location: &Location,
        settings: &SourceConfig,
        trusted_keys: &[PathBuf],
    ) -> Result<Self, GatewayError> {
        let field = |name: &str, message: String| GatewayError::Field(format!("{name}: {message}"));
        let trusted =
            TrustedKeys::from_files(trusted_keys).map_err(|err| field("trusted_keys", err.0))?;
        if let Some(pin) = &settings.pin
            && !(pin.len() == 71
                && pin.starts_with("sha256:")
                && pin
                    .bytes()
                    .skip(7)
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(field(
                "bundle_source.pin",
                format!("`{pin}` is not a bundle id (`sha256:` and 64 lowercase hex digits)"),
            ));
        }
        let (remote, shown) = match location {
            Location::Local(path) => (Remote::Local(path.clone()), path.display().to_string()),
            Location::Oci(text) => {
                let reference: Reference = text
                    .parse()
                    .map_err(|err: oci::OciError| field("bundle", err.to_string()))?;
                let mut options =
                    RegistryOptions::from_env().map_err(|err| field("bundle", err.to_string()))?;
                for registry in &settings.plain_http {
                    options = options.with_plain_http(registry.clone());
                }
                options.max_artifact_bytes = archive_cap(DEFAULT_MAX_FILE_BYTES);
                let shown = reference.to_string();
                (Remote::Oci(reference, options), shown)
            }
            Location::Git(spec) => {
                if !trusted.is_empty() {
                    return Err(field(
                        "trusted_keys",
                        "a Git source is trusted through its commits: use `bundle_source.require_signed_commits` (an SSH allowed-signers file) instead".to_owned(),
                    ));
                }
                let cache = match &settings.cache_dir {
                    Some(dir) => dir.clone(),
                    None => private_cache_dir(spec)
                        .map_err(|err| field("bundle_source.cache_dir", err))?,
                };
                let mut git = GitSource::parse(spec, cache)
                    .map_err(|err| field("bundle", err.to_string()))?;
                if let Some(signers) = &settings.require_signed_commits {
                    git = git.require_signed_commits(signers.clone());
                }
                let shown = git.to_string();
                (Remote::Git(git), shown)
            }
        };
        Ok(Self {
            remote,
            location: shown,
            trusted,
            pin: settings.pin.clone(),
            poll: Duration::from_millis(settings.poll_interval_ms.max(50)),
        })
    }

    /// Whether the bundle comes from a registry or a Git remote.
    pub fn is_remote(&self) -> bool {
        !matches!(self.remote, Remote::Local(_))
    }

    /// How often a remote source is polled.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// The remote's current revision, asked cheaply; none for local files.
    pub fn revision(&self) -> Result<Option<String>, GatewayError> {
        match &self.remote {
            Remote::Local(_) => Ok(None),
            Remote::Oci(reference, options) => block_on(oci::resolve(reference, options))?
                .map(Some)
                .map_err(|err| GatewayError::SourceUnavailable(err.to_string())),
            Remote::Git(git) => git
                .latest_commit()
                .map(Some)
                .map_err(|err| GatewayError::SourceUnavailable(err.to_string())),
        }
    }

    /// Fetches the bundle at `revision` (from [`revision`](Self::revision)),
    /// verifies it and checks the pin.
    pub fn fetch(&self, revision: Option<&str>) -> Result<Fetched, GatewayError> {
        let (verified, revision) = match (&self.remote, revision) {
            (Remote::Local(path), _) => (
                read_local(path, &self.trusted, None, DEFAULT_MAX_FILE_BYTES)
                    .map_err(|err| GatewayError::Source(err.to_string()))?,
                None,
            ),
            (Remote::Oci(reference, options), Some(digest)) => {
                let pinned = reference
                    .with_digest(digest)
                    .map_err(|err| GatewayError::Source(err.to_string()))?;
                // Any failure to fetch (a 5xx, a timeout, a digest that does
                // not match what was sent) is tried again next poll; only
                // bytes that arrived whole are judged, and remembered.
                let pulled = block_on(oci::pull(&pinned, options))?
                    .map_err(|err| GatewayError::SourceUnavailable(err.to_string()))?;
                let verified = from_artifact(
                    &pulled.artifact,
                    pulled.signature.as_deref(),
                    &self.trusted,
                    DEFAULT_MAX_FILE_BYTES,
                    &pinned.to_string(),
                )
                .map_err(|err| GatewayError::Source(err.to_string()))?;
                (verified, Some(pulled.manifest_digest))
            }
            (Remote::Git(git), Some(commit)) => {
                let checkout = git
                    .checkout(commit)
                    .map_err(|err| GatewayError::SourceUnavailable(err.to_string()))?;
                let mut verified =
                    read_local(checkout.dir(), &self.trusted, None, DEFAULT_MAX_FILE_BYTES)
                        .map_err(|err| {
                            GatewayError::Source(format!(
                                "{} at commit {commit}: {err}",
                                self.location
                            ))
                        })?;
                verified.signer = checkout.signer().map(|signer| cedar_edge_signing::Signer {
                    name: signer.to_owned(),
                    fingerprint: String::new(),
                });
                (verified, Some(commit.to_owned()))
            }
            (_, None) => {
                return Err(GatewayError::Source(format!(
                    "{}: no revision to fetch",
                    self.location
                )));
            }
        };
        let Verified { source, signer } = verified;
        if let Some(pin) = &self.pin {
            let id = source
                .content_hash()
                .map_err(|err| GatewayError::Source(err.to_string()))?;
            if id != *pin {
                return Err(GatewayError::Source(format!(
                    "{}: serves bundle {id}, and `bundle_source.pin` allows only {pin}",
                    self.location
                )));
            }
        }
        Ok(Fetched {
            source,
            origin: Origin {
                location: self.location.clone(),
                revision,
                signer: signer.map(|signer| match signer.fingerprint.is_empty() {
                    true => signer.name,
                    false => format!("{} ({})", signer.name, signer.fingerprint),
                }),
            },
        })
    }
}

/// A fresh folder of this process's own (mode 0700, refused if it already
/// exists) for a Git cache: a folder someone else made in the shared temp
/// directory could hold a planted repository configuration or replace refs.
fn private_cache_dir(spec: &str) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cedar-edge-git-{}-{nanos:x}-{}",
        std::process::id(),
        digest_of_parts(&[spec.as_bytes()])
            .get(..12)
            .unwrap_or_default()
    ));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .map(|()| dir.clone())
        .map_err(|err| format!("cannot create `{}`: {err}", dir.display()))
}

/// The longest one registry call may take, all reads included: a registry
/// that trickles bytes cannot hold the bundle-load thread.
const REGISTRY_DEADLINE: Duration = Duration::from_secs(120);

/// Runs one registry call on a small runtime of its own: fetches happen on
/// the bundle-load thread, away from the serving reactor.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, GatewayError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| GatewayError::Task(err.to_string()))?;
    runtime
        // The timer is made inside the runtime, which it needs.
        .block_on(async { tokio::time::timeout(REGISTRY_DEADLINE, work).await })
        .map_err(|_| {
            GatewayError::SourceUnavailable(format!(
                "the registry did not answer within {} s",
                REGISTRY_DEADLINE.as_secs()
            ))
        })
}
