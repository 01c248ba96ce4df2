//! The gateway's configuration file (YAML). Unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::GatewayError;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The bundle directory; watched for changes.
    pub bundle: PathBuf,
    /// The claims → entities and route → action/resource mapping (JSON), the
    /// same form the Envoy filter reads beside its bundle.
    pub mapping: PathBuf,
    /// `component` (default) or `native`.
    #[serde(default)]
    pub backend: BackendKind,
    /// `false` skips the Cedar decision (tokens are still verified); for
    /// measuring what authorization costs.
    #[serde(default = "yes")]
    pub authorization: bool,
    /// Upstream name → base URL (`http://host:port`).
    pub upstreams: BTreeMap<String, String>,
    /// Path prefix → upstream name; the longest matching prefix wins.
    pub routes: Vec<ProxyRoute>,
    /// Trusted token issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Where the audit log goes, one JSON line per decision.
    pub audit_log: PathBuf,
    /// Claims whose values never reach the audit log.
    #[serde(default)]
    pub redact_claims: Vec<String>,
    /// How often the bundle directory is checked for changes.
    #[serde(default = "default_poll")]
    pub reload_poll_ms: u64,
    /// AuthZEN subject and resource `type` → Cedar entity type, for types
    /// that are not already Cedar type names.
    #[serde(default)]
    pub authzen_types: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_leeway() -> u64 {
    30
}

fn default_poll() -> u64 {
    500
}

/// Which backend decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// The WebAssembly component.
    #[default]
    Component,
    /// The core, natively.
    Native,
}

/// One proxied prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// The path prefix.
    pub prefix: String,
    /// The upstream's name.
    pub upstream: String,
}

/// A trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// A JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`http://`), fetched at start and when an unknown `kid` shows up.
    #[serde(default)]
    pub jwks_url: Option<String>,
}

impl GatewayConfig {
    /// Reads a configuration file; relative paths in it are relative to
    /// the file's folder.
    pub fn read(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|err| GatewayError::Read {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let mut config: Self = serde_yaml::from_str(&text).map_err(|err| GatewayError::Config {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |relative: &Path| base.join(relative);
        config.bundle = resolve(&config.bundle);
        config.mapping = resolve(&config.mapping);
        config.audit_log = resolve(&config.audit_log);
        for issuer in &mut config.issuers {
            if let Some(file) = &issuer.jwks_file {
                issuer.jwks_file = Some(resolve(file));
            }
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), GatewayError> {
        for route in &self.routes {
            if !self.upstreams.contains_key(&route.upstream) {
                return Err(GatewayError::Field(format!(
                    "`routes`: prefix `{}` names the unknown upstream `{}`",
                    route.prefix, route.upstream
                )));
            }
        }
        for (name, url) in &self.upstreams {
            if !url.starts_with("http://") {
                return Err(GatewayError::Field(format!(
                    "`upstreams.{name}`: `{url}` is not an http:// URL"
                )));
            }
        }
        for issuer in &self.issuers {
            if issuer.jwks_file.is_none() == issuer.jwks_url.is_none() {
                return Err(GatewayError::Field(format!(
                    "`issuers`: `{}` needs exactly one of `jwks_file` and `jwks_url`",
                    issuer.issuer
                )));
            }
        }
        if self.issuers.is_empty() {
            return Err(GatewayError::Field(
                "`issuers` is empty: no token could ever be verified".to_owned(),
            ));
        }
        Ok(())
    }
}
