//! From an HTTP request to a Cedar request, and from the decision to what
//! Envoy does. Pure code, with no proxy-wasm call in it, so that it is
//! tested natively and the end-to-end tests can compute the decision Envoy
//! must return.

use std::str::FromStr;

use base64::Engine as _;
use cedar_edge_engine::{
    Attributes, Bundle, BundleFile, BundleSource, ContextInput, EntityInput, EntityUid,
    ExtensionKind, Request, RequestLimits, Response, Value,
};
use serde_json::{Map, Value as Json};

use crate::config::{
    ClaimRef, ClaimsSource, ContextAttribute, ContextSource, FilterConfig, ValueType,
};

/// A configuration that cannot be used, with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid cedar-edge configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// The parsed configuration with its loaded bundle: built once per VM.
#[derive(Debug)]
pub struct Filter {
    /// The configuration as given.
    pub config: FilterConfig,
    /// The loaded, validated bundle.
    pub bundle: Bundle,
    routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
struct CompiledRoute {
    segments: Vec<Segment>,
    methods: Vec<(String, EntityUid)>,
    resource_type: String,
    resource_id: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Rest(String),
}

/// The request as the filter sees it.
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

/// What the filter does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// 403.
    Deny,
    /// 401: no identity where one is required.
    Unauthenticated,
}

/// The decision and everything needed to act on it and log it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What to do.
    pub verdict: Verdict,
    /// The Cedar request, when mapping got that far.
    pub request: Option<Request>,
    /// The engine's answer, when it gave one.
    pub response: Option<Response>,
    /// Why the request was refused before or during evaluation.
    pub error: Option<String>,
}

impl Filter {
    /// Parses and checks the configuration and loads the bundle. Every
    /// problem is reported, not only the first.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: FilterConfig = serde_json::from_slice(bytes)
            .map_err(|err| ConfigError(vec![format!("configuration JSON: {err}")]))?;
        let mut problems = Vec::new();
        let bundle = match Bundle::load(&bundle_source(&config), RequestLimits::default()) {
            Ok(bundle) => Some(bundle),
            Err(err) => {
                problems.extend(err.diagnostics.iter().map(ToString::to_string));
                None
            }
        };
        let routes = compile_routes(&config, &mut problems);
        check_types(&config, bundle.as_ref(), &routes, &mut problems);
        match bundle {
            Some(bundle) if problems.is_empty() => Ok(Self {
                config,
                bundle,
                routes,
            }),
            _ => Err(ConfigError(problems)),
        }
    }

    /// Maps and decides one request. Never panics; every failure denies.
    pub fn decide(&self, http: &HttpRequest) -> Outcome {
        let refused = |verdict, error: String| Outcome {
            verdict,
            request: None,
            response: None,
            error: Some(error),
        };
        let request = match self.map(http) {
            Ok(request) => request,
            Err(Refusal::NoIdentity) => {
                return refused(
                    Verdict::Unauthenticated,
                    "no verified identity on a route that requires one".to_owned(),
                );
            }
            Err(Refusal::Invalid(reason)) => return refused(Verdict::Deny, reason),
        };
        match self.bundle.authorize(&request) {
            Ok(response) => Outcome {
                verdict: if response.is_allowed() {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                request: Some(request),
                response: Some(response),
                error: None,
            },
            Err(err) => Outcome {
                verdict: Verdict::Deny,
                request: Some(request),
                response: None,
                error: Some(err.to_string()),
            },
        }
    }

    /// The Cedar request for an HTTP request.
    pub fn map(&self, http: &HttpRequest) -> Result<Request, Refusal> {
        let max = self.config.max_header_bytes;
        if let Some((name, _)) = http.headers.iter().find(|(_, value)| value.len() > max) {
            return Err(Refusal::Invalid(format!(
                "header `{name}` is longer than {max} bytes"
            )));
        }
        let path = http.path.split(['?', '#']).next().unwrap_or_default();
        let (action, resource) = self.route(&http.method, path)?;
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
            Some(claims) => self.principal_from_claims(claims)?,
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
                context_value(attribute, http, claims)
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

    fn route(&self, method: &str, path: &str) -> Result<(EntityUid, EntityUid), Refusal> {
        for route in &self.routes {
            let Some(captures) = match_path(&route.segments, path)? else {
                continue;
            };
            let action = route
                .methods
                .iter()
                .find(|(name, _)| name == method)
                .or_else(|| route.methods.iter().find(|(name, _)| name == "*"))
                .map(|(_, action)| action.clone())
                .ok_or_else(|| {
                    Refusal::Invalid(format!("method `{method}` has no action on this route"))
                })?;
            let id = fill(&route.resource_id, &captures);
            return Ok((action, EntityUid::new(&route.resource_type, id)));
        }
        Err(Refusal::Invalid(format!("no route matches `{path}`")))
    }

    fn principal_from_claims(
        &self,
        claims: &Map<String, Json>,
    ) -> Result<(EntityUid, Vec<EntityInput>), Refusal> {
        let identity = &self.config.identity;
        let id = match claim(claims, &identity.principal_id_claim) {
            Some(Json::String(id)) if !id.is_empty() => id.clone(),
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "claim `{}` is not a non-empty string",
                    identity.principal_id_claim
                )));
            }
            None => {
                return Err(Refusal::Invalid(format!(
                    "claim `{}` is missing",
                    identity.principal_id_claim
                )));
            }
        };
        let uid = EntityUid::new(&identity.principal_type, id);
        // The bundle's own entity wins: it holds what the organisation
        // decided, where claims hold what the IdP says.
        if self.bundle.has_entity(&uid) {
            return Ok((uid, Vec::new()));
        }
        let mut parents = Vec::new();
        if let Some(groups) = &identity.groups {
            let names: Vec<&str> = match claim(claims, &groups.claim) {
                None => Vec::new(),
                Some(Json::String(name)) => vec![name.as_str()],
                Some(Json::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().ok_or_else(|| {
                            Refusal::Invalid(format!("claim `{}` holds a non-string", groups.claim))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(Refusal::Invalid(format!(
                        "claim `{}` is neither a string nor an array",
                        groups.claim
                    )));
                }
            };
            for name in names {
                let name = name
                    .strip_prefix(groups.strip_prefix.as_str())
                    .unwrap_or(name);
                parents.push(EntityUid::new(&groups.entity_type, name));
            }
        }
        let attributes = identity
            .attributes
            .iter()
            .map(|(name, reference)| {
                claim_value(claims, reference)
                    .map(|value| (name.clone(), value))
                    .map_err(|reason| Refusal::Invalid(format!("attribute `{name}`: {reason}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entity = EntityInput {
            uid: uid.clone(),
            attrs: Attributes::from_fields(attributes),
            parents,
        };
        Ok((uid, vec![entity]))
    }
}

/// Why a request could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No identity where one is required: 401.
    NoIdentity,
    /// Anything else: 403, with the reason logged.
    Invalid(String),
}

fn bundle_source(config: &FilterConfig) -> BundleSource {
    let bundle = &config.bundle;
    let file = |path: &str, contents: String| BundleFile {
        path: path.to_owned(),
        contents,
    };
    BundleSource {
        policies: bundle
            .policies
            .iter()
            .map(|(name, text)| file(name, text.clone()))
            .collect(),
        schema: bundle
            .schema
            .as_ref()
            .map(|schema| file(&schema.name, schema.text.clone())),
        entities: bundle
            .entities
            .as_ref()
            .map(|entities| file("entities.json", entities.to_string())),
        template_links: bundle
            .template_links
            .as_ref()
            .map(|links| file("template-links.json", links.to_string())),
        prepared_schema_json: None,
    }
}

fn compile_routes(config: &FilterConfig, problems: &mut Vec<String>) -> Vec<CompiledRoute> {
    let mut routes = Vec::new();
    for (index, route) in config.routes.routes.iter().enumerate() {
        let at = |message: String| format!("routes[{index}] `{}`: {message}", route.path);
        let segments = match parse_template(&route.path) {
            Ok(segments) => segments,
            Err(message) => {
                problems.push(at(message));
                continue;
            }
        };
        let captured: Vec<&str> = segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Capture(name) | Segment::Rest(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        for placeholder in placeholders(&route.resource.id) {
            if !captured.contains(&placeholder) {
                problems.push(at(format!(
                    "the resource id uses `{{{placeholder}}}`, which the path does not capture"
                )));
            }
        }
        if route.methods.is_empty() {
            problems.push(at("no methods".to_owned()));
        }
        let methods = route
            .methods
            .iter()
            .map(|(method, action)| {
                (
                    method.to_ascii_uppercase().replace("ANY", "*"),
                    EntityUid::new(&config.routes.action_type, action),
                )
            })
            .collect();
        routes.push(CompiledRoute {
            segments,
            methods,
            resource_type: route.resource.type_name.clone(),
            resource_id: route.resource.id.clone(),
        });
    }
    routes
}

/// Types and actions the configuration names must exist in the schema, so
/// that a typo fails at configure time instead of denying every request.
fn check_types(
    config: &FilterConfig,
    bundle: Option<&Bundle>,
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
    let Some(schema_types) = bundle.and_then(Bundle::schema_entity_types) else {
        return;
    };
    for (field, name) in types {
        if !schema_types.iter().any(|known| known == name) {
            problems.push(format!("`{field}`: the schema has no entity type `{name}`"));
        }
    }
    if let Some(actions) = bundle.and_then(Bundle::schema_actions) {
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

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a path template starts with `/`".to_owned());
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len().saturating_sub(1);
    parts
        .iter()
        .enumerate()
        .map(
            |(index, part)| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.ends_with('*') && index == last => {
                    Ok(Segment::Rest(name.trim_end_matches('*').to_owned()))
                }
                Some(name) if name.ends_with('*') => {
                    Err(format!("`{{{name}}}` may only be the last segment"))
                }
                Some(name) if name.is_empty() || name.contains(['{', '}']) => {
                    Err(format!("`{part}` is not a placeholder"))
                }
                Some(name) => Ok(Segment::Capture(name.to_owned())),
                None if part.contains(['{', '}']) => {
                    Err(format!("`{part}`: a placeholder fills a whole segment"))
                }
                None => Ok(Segment::Literal((*part).to_owned())),
            },
        )
        .collect()
}

fn placeholders(template: &str) -> Vec<&str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
        .collect()
}

/// Matches a path against a template; captured segments are
/// percent-decoded, and one that decodes to invalid UTF-8 or to a `/` is
/// refused rather than guessed at.
fn match_path(segments: &[Segment], path: &str) -> Result<Option<Vec<(String, String)>>, Refusal> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut captures = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Rest(name) => {
                let tail = parts.get(index..).unwrap_or_default().join("/");
                captures.push((name.clone(), percent_decode(&tail, true)?));
                return Ok(Some(captures));
            }
            Segment::Literal(literal) => {
                if parts.get(index) != Some(&literal.as_str()) {
                    return Ok(None);
                }
            }
            Segment::Capture(name) => match parts.get(index) {
                Some(part) if !part.is_empty() => {
                    captures.push((name.clone(), percent_decode(part, false)?));
                }
                _ => return Ok(None),
            },
        }
    }
    Ok((parts.len() == segments.len()).then_some(captures))
}

fn percent_decode(text: &str, allow_slash: bool) -> Result<String, Refusal> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| Refusal::Invalid(format!("bad percent-encoding in `{text}`")))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    let decoded = String::from_utf8(out)
        .map_err(|_| Refusal::Invalid(format!("`{text}` does not decode to UTF-8")))?;
    if !allow_slash && decoded.contains('/') {
        return Err(Refusal::Invalid(format!("`{text}` decodes to a `/`")));
    }
    Ok(decoded)
}

fn fill(template: &str, captures: &[(String, String)]) -> String {
    let mut filled = template.to_owned();
    for (name, value) in captures {
        filled = filled.replace(&format!("{{{name}}}"), value);
    }
    filled
}

/// A claim by name; `a.b` walks into nested objects.
fn claim<'a>(claims: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn claim_value(claims: &Map<String, Json>, reference: &ClaimRef) -> Result<Value, String> {
    match claim(claims, &reference.claim).or(reference.default.as_ref()) {
        Some(value) => json_to_value(value, reference.as_type),
        None => Err(format!("claim `{}` is missing", reference.claim)),
    }
}

fn context_value(
    attribute: &ContextAttribute,
    http: &HttpRequest,
    claims: Option<&Map<String, Json>>,
) -> Result<Value, String> {
    let default = || {
        attribute
            .default
            .as_ref()
            .map(|value| json_to_value(value, attribute.as_type))
    };
    match &attribute.from {
        ContextSource::SourceAddress => {
            let address = http
                .source_address
                .as_deref()
                .ok_or_else(|| "the source address is unknown".to_owned())?;
            Ok(Value::Extension(
                ExtensionKind::Ip,
                strip_port(address).to_owned(),
            ))
        }
        ContextSource::RequestTime => Ok(Value::Long(http.now_seconds)),
        ContextSource::TokenAge => {
            let issued = claims
                .and_then(|claims| claims.get("iat"))
                // Envoy's metadata carries numbers as doubles.
                .and_then(|iat| iat.as_i64().or_else(|| iat.as_f64().map(|f| f as i64)))
                .ok_or_else(|| "the token has no numeric `iat` claim".to_owned())?;
            Ok(Value::Long(http.now_seconds.saturating_sub(issued).max(0)))
        }
        ContextSource::PeerIdentity => Ok(Value::String(
            http.peer_identity.clone().unwrap_or_default(),
        )),
        ContextSource::Method => Ok(Value::String(http.method.clone())),
        ContextSource::Path => Ok(Value::String(
            http.path
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        )),
        ContextSource::Header(name) => {
            let raw = http
                .headers
                .iter()
                .find(|(header, _)| header.eq_ignore_ascii_case(name))
                .map(|(_, value)| value);
            match raw {
                Some(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| format!("header `{name}` is not UTF-8"))?;
                    text_to_value(text, attribute.as_type.unwrap_or(ValueType::String))
                }
                None => default().unwrap_or_else(|| Err(format!("header `{name}` is missing"))),
            }
        }
        ContextSource::Claim(name) => match claims.and_then(|claims| claim(claims, name)) {
            Some(value) => json_to_value(value, attribute.as_type),
            None => default().unwrap_or_else(|| Err(format!("claim `{name}` is missing"))),
        },
        ContextSource::ClaimContains { claim: name, value } => {
            let found = match claims.and_then(|claims| claim(claims, name)) {
                Some(Json::String(text)) => text.split(' ').any(|part| part == value),
                Some(Json::Array(items)) => items.iter().any(|item| item.as_str() == Some(value)),
                _ => false,
            };
            Ok(Value::Bool(found))
        }
    }
}

fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        // One colon: IPv4 with a port. More: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => address,
    }
}

fn text_to_value(text: &str, as_type: ValueType) -> Result<Value, String> {
    Ok(match as_type {
        ValueType::String => Value::String(text.to_owned()),
        ValueType::Long => Value::Long(
            text.trim()
                .parse()
                .map_err(|_| format!("`{text}` is not an integer"))?,
        ),
        ValueType::Bool => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not a boolean")),
        },
        ValueType::Ip => Value::Extension(ExtensionKind::Ip, text.trim().to_owned()),
        ValueType::StringSet => Value::Set(
            text.split(',')
                .map(|part| Value::String(part.trim().to_owned()))
                .collect(),
        ),
    })
}

fn json_to_value(value: &Json, as_type: Option<ValueType>) -> Result<Value, String> {
    match (as_type, value) {
        (None, Json::String(text)) => Ok(Value::String(text.clone())),
        (None, Json::Bool(flag)) => Ok(Value::Bool(*flag)),
        (None | Some(ValueType::Long), Json::Number(number)) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            })
            .map(Value::Long)
            .ok_or_else(|| format!("`{number}` is not an integer")),
        (None, Json::Array(items)) => Ok(Value::Set(
            items
                .iter()
                .map(|item| json_to_value(item, None))
                .collect::<Result<_, _>>()?,
        )),
        (Some(ValueType::StringSet), Json::Array(items)) => Ok(Value::Set(
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(|text| Value::String(text.to_owned()))
                        .ok_or_else(|| format!("`{item}` is not a string"))
                })
                .collect::<Result<_, _>>()?,
        )),
        (Some(ValueType::StringSet), Json::String(text)) => Ok(Value::Set(
            text.split(' ')
                .filter(|part| !part.is_empty())
                .map(|part| Value::String(part.to_owned()))
                .collect(),
        )),
        (Some(as_type), Json::String(text)) => text_to_value(text, as_type),
        (Some(ValueType::Bool), Json::Bool(flag)) => Ok(Value::Bool(*flag)),
        (Some(ValueType::String), other) => Ok(Value::String(other.to_string())),
        (_, Json::Object(_)) => {
            Err("objects are not mapped; name a nested claim with `a.b`".to_owned())
        }
        (_, Json::Null) => Err("the value is null".to_owned()),
        (Some(as_type), other) => Err(format!("`{other}` cannot be read as {as_type:?}")),
    }
}

/// Reads claims from a trusted header: base64url (padded or not) of a
/// JSON object.
pub fn claims_from_header(value: &[u8]) -> Claims {
    let trimmed: Vec<u8> = value.iter().copied().filter(|byte| *byte != b'=').collect();
    let decoded = match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) {
        Ok(decoded) => decoded,
        Err(err) => return Claims::Invalid(format!("not base64url: {err}")),
    };
    match serde_json::from_slice::<Json>(&decoded) {
        Ok(Json::Object(claims)) => Claims::Present(claims),
        Ok(_) => Claims::Invalid("not a JSON object".to_owned()),
        Err(err) => Claims::Invalid(format!("not JSON: {err}")),
    }
}
