//! From an HTTP request to a Cedar request, for every cedar-edge host: the
//! Envoy filter, the gateway, and any other front end.
//!
//! A [`Mapping`] is built once per loaded bundle from a [`MappingConfig`]
//! and shares that bundle (`Arc<Bundle>`) with whatever decides; each
//! request is then only mapped ([`Mapping::map`]) or mapped and decided in
//! process ([`Mapping::decide`]). The code is plain Rust with no host call
//! in it, so it is tested natively and builds for wasm32.
//!
//! - `path`: the canonical request target, decided and forwarded alike;
//! - `headers`: which client headers never go upstream;
//! - `route`: path templates and the route table (method and path →
//!   action and resource);
//! - `principal`: verified claims → the principal and its parents;
//! - `context`: context attributes and their sources;
//! - `record`: the decision record every host logs.

pub mod config;
mod context;
mod headers;
pub mod path;
mod principal;
mod record;
mod route;

use std::str::FromStr;
use std::sync::Arc;

use cedar_edge_core::{Attributes, Bundle, ContextInput, Decision, EntityUid, Request, Response};
use serde_json::{Map, Value as Json};

pub use crate::config::MappingConfig;
use crate::config::{ClaimsSource, ContextSource, OnForbidError};
pub use crate::headers::fold_header_name;
pub use crate::path::{PathError, Target};
pub use crate::principal::claims_from_header;
pub use crate::record::{DecisionKind, DecisionRecord};
use crate::route::CompiledRoute;

/// A mapping configuration that cannot be used, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("invalid cedar-edge mapping: {}", .problems.join("; "))]
#[diagnostic(code(cedar_edge::mapping::invalid))]
pub struct MappingError {
    /// Every problem, each naming the field at fault.
    pub problems: Vec<String>,
}

/// The request as a host sees it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `:method`.
    pub method: String,
    /// `:path`, with any query string.
    pub path: String,
    /// Every header, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The downstream address, `ip:port` or `ip`.
    pub source_address: Option<String>,
    /// The mTLS peer's URI SAN.
    pub peer_identity: Option<String>,
    /// Seconds since the epoch.
    pub now_seconds: i64,
    /// The verified claims, if the source had any.
    pub claims: Claims,
}

/// What the identity source gave.
#[derive(Debug, Clone, Default)]
pub enum Claims {
    /// Nothing: no token, or no verified one.
    #[default]
    Absent,
    /// A verified claims object.
    Present(Map<String, Json>),
    /// Something that cannot be read as claims.
    Invalid(String),
}

/// What the host does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// 403.
    Deny,
    /// 401: no identity where one is required.
    Unauthenticated,
    /// 400: a request target or headers that could be read two ways.
    Malformed,
}

/// A decided request: the verdict and everything needed to act on it and
/// log it.
#[derive(Debug, Clone)]
pub struct MappedDecision {
    /// What to do.
    pub verdict: Verdict,
    /// The Cedar request, when mapping got that far.
    pub request: Option<Request>,
    /// The engine's answer, when it gave one.
    pub response: Option<Response>,
    /// Why the request was refused before or during evaluation.
    pub refusal: Option<String>,
    /// The canonical target that was decided: what the host forwards.
    pub target: Option<Target>,
}

/// Why a request could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No identity where one is required: 401.
    NoIdentity,
    /// A request target or headers that could be read two ways: 400.
    Malformed(String),
    /// Anything else: 403, with the reason logged.
    Invalid(String),
}

/// The mapping over one loaded bundle: built once per load.
#[derive(Debug)]
pub struct Mapping {
    config: MappingConfig,
    bundle: Arc<Bundle>,
    routes: Vec<CompiledRoute>,
    /// Folded names of the headers a client may never send upstream.
    protected: Vec<String>,
    /// Folded names of the headers a request may carry at most once: the
    /// usual ones and every header the mapping reads.
    single: Vec<String>,
}

impl Mapping {
    /// Checks the configuration against the bundle it maps to. Every
    /// problem is reported, not only the first.
    pub fn new(config: MappingConfig, bundle: Arc<Bundle>) -> Result<Self, MappingError> {
        let mut problems = Vec::new();
        let routes = route::compile_routes(&config.routes, &mut problems);
        check_names(&config, &bundle, &routes, &mut problems);
        let upstream = &config.upstream_headers;
        let protected = [&upstream.principal, &upstream.decision_id]
            .into_iter()
            .chain(&config.strip_headers)
            .map(|name| fold_header_name(name))
            .collect();
        let single = single_headers(&config);
        if problems.is_empty() {
            Ok(Self {
                config,
                bundle,
                routes,
                protected,
                single,
            })
        } else {
            Err(MappingError { problems })
        }
    }

    /// Reads a configuration from JSON, then checks it as [`Mapping::new`] does.
    pub fn from_json(json: &[u8], bundle: Arc<Bundle>) -> Result<Self, MappingError> {
        let config = serde_json::from_slice(json).map_err(|err| MappingError {
            problems: vec![format!("mapping JSON: {err}")],
        })?;
        Self::new(config, bundle)
    }

    /// The configuration as given.
    pub fn config(&self) -> &MappingConfig {
        &self.config
    }

    /// The bundle this mapping maps to.
    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    /// The headers (names as sent) to remove from a client's request
    /// before it goes upstream: the ones a host sets for the upstream (the
    /// verified principal, the decision id) and the configured strip list,
    /// matched after folding case and `_`; hop-by-hop headers; and any
    /// header a `Connection` header names.
    pub fn headers_to_remove<'h>(
        &self,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Vec<String> {
        headers::to_remove(&self.protected, headers)
    }

    /// Maps and decides one request in process. Never panics; every
    /// failure denies.
    pub fn decide(&self, http: &HttpRequest) -> MappedDecision {
        let mapped = self.target(&http.path).and_then(|target| {
            self.map_target(http, &target)
                .map(|request| (request, target))
        });
        let (request, target) = match mapped {
            Ok(mapped) => mapped,
            Err(refusal) => return MappedDecision::refused(refusal),
        };
        let mut decision = match self.bundle.authorize(&request) {
            Ok(response) => MappedDecision::decided(request, self.apply_forbid_errors(response)),
            Err(err) => MappedDecision {
                verdict: Verdict::Deny,
                request: Some(request),
                response: None,
                refusal: Some(err.to_string()),
                target: None,
            },
        };
        decision.target = Some(target);
        decision
    }

    /// Applies `on_forbid_error` to an engine answer: with `deny`, an
    /// allow that a forbid's failed condition could have blocked becomes a
    /// deny, determined by those forbids. Hosts that decide elsewhere (the
    /// component) pass every answer through here.
    pub fn apply_forbid_errors(&self, mut response: Response) -> Response {
        if self.config.on_forbid_error == OnForbidError::Skip || !response.is_allowed() {
            return response;
        }
        let erroring_forbids: Vec<String> = response
            .errors
            .iter()
            .filter(|error| self.bundle.is_forbid(&error.policy_id))
            .map(|error| error.policy_id.clone())
            .collect();
        if !erroring_forbids.is_empty() {
            response.decision = Decision::Deny;
            response.determining_policies = erroring_forbids;
        }
        response
    }

    /// The canonical form of a raw request target (`:path`), or 400.
    pub fn target(&self, raw: &str) -> Result<Target, Refusal> {
        path::canonicalize(raw, self.config.path_parameters)
            .map_err(|err| Refusal::Malformed(format!("request target: {err}")))
    }

    /// Headers that make a request ambiguous, such as two `Authorization`
    /// headers (which one did the host verify?), or 400.
    pub fn check_headers(&self, headers: &[(String, Vec<u8>)]) -> Result<(), Refusal> {
        headers::check(headers, &self.single).map_err(Refusal::Malformed)
    }

    /// The Cedar request for an HTTP request, after canonicalising its
    /// target.
    pub fn map(&self, http: &HttpRequest) -> Result<Request, Refusal> {
        self.map_target(http, &self.target(&http.path)?)
    }

    fn map_target(&self, http: &HttpRequest, target: &Target) -> Result<Request, Refusal> {
        self.check_headers(&http.headers)?;
        // Methods are case-sensitive, but some upstreams upper-case them:
        // `delete` would be decided as the `*` action and run as DELETE.
        let token = |byte: u8| byte.is_ascii_uppercase() || byte == b'-' || byte == b'_';
        if http.method.is_empty() || !http.method.bytes().all(token) {
            return Err(Refusal::Malformed(format!(
                "method `{}` is not an upper-case token",
                http.method
            )));
        }
        let max = self.config.max_header_bytes;
        if let Some((name, _)) = http.headers.iter().find(|(_, value)| value.len() > max) {
            return Err(Refusal::Invalid(format!(
                "header `{name}` is longer than {max} bytes"
            )));
        }
        let (action, resource) = route::route(&self.routes, &http.method, &target.path)?;
        let identity = &self.config.identity;
        let claims = match &http.claims {
            Claims::Present(claims) => Some(claims),
            Claims::Invalid(reason) => {
                return Err(Refusal::Invalid(format!("unreadable claims: {reason}")));
            }
            Claims::Absent if identity.required => return Err(Refusal::NoIdentity),
            Claims::Absent => None,
        };
        let (principal, entities) = match claims {
            Some(claims) => principal::from_claims(identity, &self.bundle, claims)?,
            None => {
                let anonymous = identity
                    .anonymous_principal
                    .as_deref()
                    .ok_or(Refusal::NoIdentity)?;
                let uid = EntityUid::from_str(anonymous).map_err(Refusal::Invalid)?;
                (uid, Vec::new())
            }
        };
        let context = self
            .config
            .context
            .iter()
            .map(|attribute| {
                context::value(attribute, http, &target.path, claims)
                    .map(|value| (attribute.name.clone(), value))
                    .map_err(|reason| {
                        Refusal::Invalid(format!("context `{}`: {reason}", attribute.name))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Request {
            principal,
            action,
            resource,
            context: ContextInput::Typed(Attributes::from_fields(context)),
            entities,
        })
    }
}

impl MappedDecision {
    /// A request refused before it reached the engine.
    pub fn refused(refusal: Refusal) -> Self {
        let (verdict, reason) = match refusal {
            Refusal::NoIdentity => (
                Verdict::Unauthenticated,
                "no verified identity on a route that requires one".to_owned(),
            ),
            Refusal::Malformed(reason) => (Verdict::Malformed, reason),
            Refusal::Invalid(reason) => (Verdict::Deny, reason),
        };
        Self {
            verdict,
            request: None,
            response: None,
            refusal: Some(reason),
            target: None,
        }
    }

    /// A request the engine answered.
    pub fn decided(request: Request, response: Response) -> Self {
        Self {
            verdict: if response.is_allowed() {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            request: Some(request),
            response: Some(response),
            refusal: None,
            target: None,
        }
    }
}

/// The headers a request may carry at most once: the usual ones, and
/// every header the mapping reads a value from (which copy would it read?).
fn single_headers(config: &MappingConfig) -> Vec<String> {
    let read = config
        .context
        .iter()
        .filter_map(|attribute| match &attribute.from {
            ContextSource::Header(name) => Some(name.as_str()),
            _ => None,
        })
        .chain(match &config.identity.source {
            Some(ClaimsSource::Header { name }) => Some(name.as_str()),
            _ => None,
        });
    let mut single: Vec<String> = headers::SINGLE
        .into_iter()
        .chain(read)
        .map(fold_header_name)
        .collect();
    single.sort();
    single.dedup();
    single
}

/// Types and actions the configuration names must exist in the schema, so
/// that a typo fails at start instead of denying every request.
fn check_names(
    config: &MappingConfig,
    bundle: &Bundle,
    routes: &[CompiledRoute],
    problems: &mut Vec<String>,
) {
    let identity = &config.identity;
    let mut types = vec![("identity.principal_type", identity.principal_type.as_str())];
    if let Some(groups) = &identity.groups {
        types.push(("identity.groups.entity_type", groups.entity_type.as_str()));
    }
    for route in routes {
        types.push(("routes.resource.type", route.resource_type.as_str()));
    }
    if let Some(schema_types) = bundle.schema_entity_types() {
        for (field, name) in types {
            if !schema_types.iter().any(|known| known == name) {
                problems.push(format!("`{field}`: the schema has no entity type `{name}`"));
            }
        }
    }
    if let Some(actions) = bundle.schema_actions() {
        for route in routes {
            for (method, action) in &route.methods {
                if !actions.contains(action) {
                    problems.push(format!(
                        "routes: method `{method}` maps to `{action}`, which the schema does not declare"
                    ));
                }
            }
        }
    }
    if let Some(Err(err)) = identity
        .anonymous_principal
        .as_deref()
        .map(EntityUid::from_str)
    {
        problems.push(format!("`identity.anonymous_principal`: {err}"));
    }
    if matches!(&identity.source, Some(ClaimsSource::Header { name }) if name.is_empty()) {
        problems.push("`identity.source.header.name` is empty".to_owned());
    }
}
