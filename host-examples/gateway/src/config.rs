//! The gateway's configuration file (YAML). Unknown keys are errors.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
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
    /// Claims whose values never reach the audit log; case does not
    /// count, and `a.b` names a nested claim.
    #[serde(default)]
    pub redact_claims: Vec<String>,
    /// Let the group read the audit log (`0640`); it is `0600` otherwise.
    #[serde(default)]
    pub audit_log_group_readable: bool,
    /// Connection limits.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// How often the bundle directory is checked for changes.
    #[serde(default = "default_poll")]
    pub reload_poll_ms: u64,
    /// How long a changed bundle must stay unchanged before a poll applies
    /// it (at least two polls see the same content either way), so that a
    /// deploy writing its files one by one is never served half-written.
    /// SIGHUP applies at once.
    #[serde(default = "default_settle")]
    pub reload_settle_ms: u64,
    /// Audit records of requests without a verified identity kept per
    /// second; anyone can send those, so the rest are only counted.
    #[serde(default = "default_unauthenticated_records")]
    pub audit_unauthenticated_per_second: u32,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed. From any other
    /// peer the socket address is the client, and forwarding headers are
    /// discarded.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// AuthZEN subject and resource `type` → Cedar entity type, for types
    /// that are not already Cedar type names.
    #[serde(default)]
    pub authzen_types: BTreeMap<String, String>,
    // ext_authz (issue 14): Envoy's gRPC Check service, beside the HTTP
    // listener; off when absent. It decides with `mapping`.
    /// Envoy's `ext_authz` gRPC service; off when absent.
    #[serde(default)]
    pub ext_authz: Option<crate::ext_authz::ExtAuthzConfig>,
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

fn default_settle() -> u64 {
    2_000
}

fn default_unauthenticated_records() -> u32 {
    100
}

/// An address block, such as `10.0.0.0/8` or `::1/128`; a bare address is
/// a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether the block holds an address (IPv4-mapped IPv6 addresses count
    /// as their IPv4 form).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length is not 0..={max}"))?
        };
        Ok(Self { network, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What one client connection may hold.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open client connections at most; more wait in the listen backlog.
    /// Unset: 4096, or less when the open-files limit is lower (each
    /// client may also need a connection upstream).
    pub max: Option<usize>,
    /// Time a client has to send a request's headers, counted from the
    /// connection's start or from the end of the previous response (so it
    /// also closes idle kept-alive connections).
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing is read or written for this long is
    /// closed: a stalled body upload, a client that stops reading, or an
    /// upstream slower than this.
    pub idle_timeout_ms: u64,
    /// Time SIGTERM gives in-flight requests before connections are cut.
    pub drain_timeout_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: None,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            drain_timeout_ms: 10_000,
        }
    }
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
    /// A JWKS URL, fetched at start and when an unknown `kid` shows up:
    /// `https://`, or `http://` to a loopback address only. A fetch has 5 s
    /// to connect and 10 s in all, and reads at most 1 MiB. An endpoint
    /// that fails at start stops the start.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM certificates of the CAs trusted for `jwks_url` instead of the
    /// public web roots, for an IdP behind a private CA.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// The token `typ` values accepted, such as `[JWT, at+jwt]`; empty
    /// accepts any.
    #[serde(default)]
    pub accepted_types: Vec<String>,
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
            if let Some(file) = &issuer.jwks_ca_file {
                issuer.jwks_ca_file = Some(resolve(file));
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
            if let Some(url) = &issuer.jwks_url {
                check_jwks_url(&issuer.issuer, url, issuer.jwks_ca_file.is_some())?;
            } else if issuer.jwks_ca_file.is_some() {
                return Err(GatewayError::Field(format!(
                    "`issuers`: `{}` has `jwks_ca_file` without `jwks_url`",
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

/// A JWKS URL must be `https://`, or plain `http://` to this machine:
/// keys fetched in the clear could be swapped by anyone on the path.
fn check_jwks_url(issuer: &str, url: &str, has_ca_file: bool) -> Result<(), GatewayError> {
    let refuse = |why: &str| {
        Err(GatewayError::Field(format!(
            "`issuers`: `{issuer}`: `jwks_url` `{url}` {why}"
        )))
    };
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return refuse("is not a URL");
    };
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if has_ca_file => refuse("is http://, and `jwks_ca_file` needs https://"),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => refuse("is http:// to another machine; use https://"),
        _ => refuse("is not an https:// URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}
