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
    /// Where the proxy listens. Without it the process is a decision
    /// service only (`pdp`, `ext_authz`), and `mapping`, `upstreams`,
    /// `routes` and `issuers` are not needed.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Where `/healthz` and `/metrics` are served: never on the proxy or
    /// decision listeners, which face clients.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// The AuthZEN decision service, on a listener of its own.
    #[serde(default)]
    pub pdp: Option<PdpConfig>,
    /// Where the bundle comes from: a directory or packed file (watched for
    /// changes), `oci://HOST/REPOSITORY:TAG` (or `@sha256:…`), or
    /// `git+URL#REF:SUBDIR`.
    pub bundle: String,
    /// How a registry or Git source is polled, pinned and trusted.
    #[serde(default)]
    pub bundle_source: crate::source::SourceConfig,
    /// Public keys (PEM files); when any is given, a bundle must be signed
    /// by one of them, or it is refused and the last good one keeps
    /// serving.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// The claims → entities and route → action/resource mapping (JSON), the
    /// same form the Envoy filter reads beside its bundle. Needed by the
    /// proxy and by `ext_authz`.
    #[serde(default)]
    pub mapping: Option<PathBuf>,
    /// `component` (default) or `native`.
    #[serde(default)]
    pub backend: BackendKind,
    /// `false` skips the Cedar decision (tokens are still verified); for
    /// measuring what authorization costs.
    #[serde(default = "yes")]
    pub authorization: bool,
    /// Upstream name → base URL (`http://host:port`).
    #[serde(default)]
    pub upstreams: BTreeMap<String, String>,
    /// Path prefix → upstream name; the longest matching prefix wins.
    #[serde(default)]
    pub routes: Vec<ProxyRoute>,
    /// Trusted token issuers of the proxy's clients.
    #[serde(default)]
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
    /// Envoy's `ext_authz` gRPC service, deciding with `mapping`; off when
    /// absent.
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

/// The AuthZEN decision service: its listener, who may call it, and what
/// one request may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// TLS for the listener; with `client_ca`, callers may authenticate
    /// with certificates.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The PDP identifier published in its metadata, with no path, query or
    /// fragment (`https://pdp.example.com`). Unset: the listen address, as
    /// `https://` under TLS. Never taken from a request's `Host`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Who may ask for decisions. Everyone else gets 401.
    pub callers: Vec<CallerConfig>,
    /// AuthZEN subject and resource `type` → Cedar entity type, for types
    /// that are not Cedar type names already. Checked against the schema.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// The Cedar entity type of actions: an AuthZEN action `name` is an id
    /// of this type. Checked against the schema.
    #[serde(default = "default_action_type")]
    pub action_type: String,
    /// What one request may cost.
    #[serde(default)]
    pub limits: PdpLimits,
    /// `Cache-Control: max-age` of the metadata document.
    #[serde(default = "default_metadata_max_age")]
    pub metadata_max_age_seconds: u64,
}

fn default_action_type() -> String {
    "Action".to_owned()
}

fn default_metadata_max_age() -> u64 {
    300
}

/// A listener's certificate, and the CA its callers' certificates chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM CA certificates that caller certificates must chain to; a
    /// certificate is then asked for, and verified when sent. Callers
    /// without `mtls` may still connect without one.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One caller of the decision service, and what it may see and send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// The name its decisions are audited under.
    pub name: String,
    /// Authenticates with a client certificate (needs `tls.client_ca`)
    /// that names this identity.
    #[serde(default)]
    pub mtls: Option<CertificateIdentity>,
    /// Authenticates with `Authorization: Bearer SECRET`, where this is
    /// the hex SHA-256 of SECRET (`printf %s "$SECRET" | sha256sum`). The
    /// secret itself is never in the configuration.
    #[serde(default)]
    pub bearer_sha256: Option<String>,
    /// Authenticates with a JWT from this issuer in `Authorization:
    /// Bearer`.
    #[serde(default)]
    pub jwt: Option<IssuerConfig>,
    /// With `jwt`: the `sub` the token must carry; unset accepts any
    /// subject of the issuer and audience.
    #[serde(default)]
    pub jwt_subject: Option<String>,
    /// Whether answers carry `context.reason_admin`: the determining policy
    /// ids and evaluation errors. They tell a caller how the policies are
    /// written, so only trusted callers should see them.
    #[serde(default)]
    pub reason_admin: bool,
    /// Whether subject and resource `properties` in requests are used.
    #[serde(default)]
    pub request_attributes: RequestAttributes,
}

/// The identity a caller's certificate must carry: `{ dns_name: … }` or
/// `{ uri: … }` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "CertificateName")]
pub enum CertificateIdentity {
    /// A DNS subject alternative name, compared without regard to case.
    DnsName(String),
    /// A URI subject alternative name, such as a SPIFFE id, compared
    /// exactly.
    Uri(String),
}

/// How the configuration spells a [`CertificateIdentity`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateName {
    #[serde(default)]
    dns_name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

impl TryFrom<CertificateName> for CertificateIdentity {
    type Error = String;

    fn try_from(name: CertificateName) -> Result<Self, String> {
        match (name.dns_name, name.uri) {
            (Some(dns_name), None) => Ok(Self::DnsName(dns_name)),
            (None, Some(uri)) => Ok(Self::Uri(uri)),
            _ => Err("`mtls` needs exactly one of `dns_name` and `uri`".to_owned()),
        }
    }
}

/// What becomes of `properties` a caller sends for a subject or resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAttributes {
    /// Never used: entities come only from the bundle. Otherwise a caller
    /// could ask about a subject the bundle lacks and give it whatever
    /// roles it likes.
    #[default]
    Ignored,
    /// Used as the attributes of subjects and resources the bundle lacks
    /// (the bundle's own entities keep their attributes).
    Trusted,
}

/// What one decision-service request may cost.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PdpLimits {
    /// Items in one `evaluations` request; more is a 400.
    pub max_batch_items: usize,
    /// Requests decided at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Bytes of one request body; more is a 413.
    pub max_body_bytes: usize,
    /// Results in one search page.
    pub max_search_page: usize,
}

impl Default for PdpLimits {
    fn default() -> Self {
        Self {
            max_batch_items: 100,
            max_concurrent_requests: 64,
            max_body_bytes: 256 * 1024,
            max_search_page: 1000,
        }
    }
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
        if let crate::source::Location::Local(path) =
            crate::source::Location::parse(&config.bundle, base)
        {
            config.bundle = path.display().to_string();
        }
        config.trusted_keys = config.trusted_keys.iter().map(|key| resolve(key)).collect();
        config.bundle_source.require_signed_commits = config
            .bundle_source
            .require_signed_commits
            .as_deref()
            .map(resolve);
        config.bundle_source.cache_dir = config.bundle_source.cache_dir.as_deref().map(resolve);
        config.mapping = config.mapping.as_deref().map(resolve);
        config.audit_log = resolve(&config.audit_log);
        let resolve_issuer = |issuer: &mut IssuerConfig| {
            issuer.jwks_file = issuer.jwks_file.as_deref().map(resolve);
            issuer.jwks_ca_file = issuer.jwks_ca_file.as_deref().map(resolve);
        };
        config.issuers.iter_mut().for_each(resolve_issuer);
        if let Some(pdp) = &mut config.pdp {
            if let Some(tls) = &mut pdp.tls {
                tls.certificate = resolve(&tls.certificate);
                tls.private_key = resolve(&tls.private_key);
                tls.client_ca = tls.client_ca.as_deref().map(resolve);
            }
            pdp.callers
                .iter_mut()
                .filter_map(|caller| caller.jwt.as_mut())
                .for_each(resolve_issuer);
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), GatewayError> {
        if self.listen.is_none() && self.pdp.is_none() && self.ext_authz.is_none() {
            return Err(field(
                "nothing to serve: set `listen` (the proxy), `pdp` (the decision service) or `ext_authz`",
            ));
        }
        if self.ext_authz.is_some() && self.mapping.is_none() {
            return Err(field("`mapping` is needed with `ext_authz`"));
        }
        if self.listen.is_some() {
            self.check_proxy()?;
        }
        if let Some(pdp) = &self.pdp {
            pdp.check()?;
        }
        Ok(())
    }

    fn check_proxy(&self) -> Result<(), GatewayError> {
        let needed = |name: &str| field(format!("`{name}` is needed with `listen` (the proxy)"));
        if self.mapping.is_none() {
            return Err(needed("mapping"));
        }
        if self.upstreams.is_empty() {
            return Err(needed("upstreams"));
        }
        if self.routes.is_empty() {
            return Err(needed("routes"));
        }
        for route in &self.routes {
            if !self.upstreams.contains_key(&route.upstream) {
                return Err(field(format!(
                    "`routes`: prefix `{}` names the unknown upstream `{}`",
                    route.prefix, route.upstream
                )));
            }
        }
        for (name, url) in &self.upstreams {
            if !url.starts_with("http://") {
                return Err(field(format!(
                    "`upstreams.{name}`: `{url}` is not an http:// URL"
                )));
            }
        }
        for issuer in &self.issuers {
            check_issuer("issuers", issuer)?;
        }
        if self.issuers.is_empty() {
            return Err(field("`issuers` is empty: no token could ever be verified"));
        }
        Ok(())
    }
}

impl PdpConfig {
    /// The PDP identifier: the configured public URL, or the listen
    /// address with the listener's scheme.
    pub fn identifier(&self) -> String {
        self.public_url.as_ref().map_or_else(
            || {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            },
            |url| url.trim_end_matches('/').to_owned(),
        )
    }

    fn check(&self) -> Result<(), GatewayError> {
        match &self.public_url {
            Some(url) => check_public_url(url, self.tls.is_some())?,
            None if self.listen.ip().is_unspecified() => {
                return Err(field(format!(
                    "`pdp.public_url` is needed: `pdp.listen` ({}) is not an address callers can use",
                    self.listen
                )));
            }
            None => {}
        }
        if self.callers.is_empty() {
            return Err(field(
                "`pdp.callers` is empty: every caller must authenticate, so none could call",
            ));
        }
        let limits = &self.limits;
        for (name, value) in [
            ("max_batch_items", limits.max_batch_items),
            ("max_concurrent_requests", limits.max_concurrent_requests),
            ("max_body_bytes", limits.max_body_bytes),
            ("max_search_page", limits.max_search_page),
        ] {
            if value == 0 {
                return Err(field(format!("`pdp.limits.{name}` must be at least 1")));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for caller in &self.callers {
            let at = format!("`pdp.callers`: `{}`", caller.name);
            if !names.insert(caller.name.as_str()) {
                return Err(field(format!("{at} is named twice")));
            }
            let ways = usize::from(caller.mtls.is_some())
                + usize::from(caller.bearer_sha256.is_some())
                + usize::from(caller.jwt.is_some());
            if ways != 1 {
                return Err(field(format!(
                    "{at} needs exactly one of `mtls`, `bearer_sha256` and `jwt`"
                )));
            }
            if caller.mtls.is_some() && self.tls.as_ref().is_none_or(|tls| tls.client_ca.is_none())
            {
                return Err(field(format!(
                    "{at} authenticates with `mtls`, which needs `pdp.tls.client_ca`"
                )));
            }
            if let Some(hash) = &caller.bearer_sha256
                && (hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()))
            {
                return Err(field(format!(
                    "{at}: `bearer_sha256` is not 64 hex digits (a SHA-256)"
                )));
            }
            if let Some(issuer) = &caller.jwt {
                check_issuer("pdp.callers", issuer)?;
            } else if caller.jwt_subject.is_some() {
                return Err(field(format!("{at} has `jwt_subject` without `jwt`")));
            }
            // A bearer credential sent in the clear can be replayed by
            // anyone on the path; only this machine's loopback is spared.
            let bearer = caller.bearer_sha256.is_some() || caller.jwt.is_some();
            if bearer && self.tls.is_none() && !self.listen.ip().is_loopback() {
                return Err(field(format!(
                    "{at} sends a bearer credential, which needs `pdp.tls` on a non-loopback `pdp.listen`"
                )));
            }
        }
        Ok(())
    }
}

fn field(message: impl Into<String>) -> GatewayError {
    GatewayError::Field(message.into())
}

/// The PDP identifier must be a bare origin, `https://` under TLS.
fn check_public_url(url: &str, tls: bool) -> Result<(), GatewayError> {
    let refuse = |why: &str| Err(field(format!("`pdp.public_url` `{url}` {why}")));
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return refuse("is not a URL");
    };
    if uri.host().is_none_or(str::is_empty) {
        return refuse("has no host");
    }
    if uri.query().is_some() || url.contains('#') || !matches!(uri.path(), "" | "/") {
        return refuse("must have no path, query or fragment");
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if tls => refuse("is http://, but the listener serves TLS"),
        Some("http") => Ok(()),
        _ => refuse("is not an https:// URL"),
    }
}

fn check_issuer(section: &str, issuer: &IssuerConfig) -> Result<(), GatewayError> {
    if issuer.jwks_file.is_none() == issuer.jwks_url.is_none() {
        return Err(field(format!(
            "`{section}`: `{}` needs exactly one of `jwks_file` and `jwks_url`",
            issuer.issuer
        )));
    }
    if let Some(url) = &issuer.jwks_url {
        check_jwks_url(&issuer.issuer, url, issuer.jwks_ca_file.is_some())
    } else if issuer.jwks_ca_file.is_some() {
        Err(field(format!(
            "`{section}`: `{}` has `jwks_ca_file` without `jwks_url`",
            issuer.issuer
        )))
    } else {
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
