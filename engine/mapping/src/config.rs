//! The mapping's configuration (JSON). Every struct refuses unknown keys,
//! so a misspelt option fails at start instead of silently falling back to
//! a default.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How HTTP requests become Cedar requests, and what the host does around
/// the decision. The Envoy filter reads it with its bundle beside it; the
/// gateway reads it from its own file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Where the verified identity comes from and how it becomes a principal.
    pub identity: IdentityConfig,
    /// How method and path become an action and a resource.
    pub routes: RoutesConfig,
    /// Context attributes and where each comes from.
    #[serde(default)]
    pub context: Vec<ContextAttribute>,
    /// Evaluate and log, but never block.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Put the determining policies in the JSON body of a 403.
    #[serde(default)]
    pub reasons_in_deny_body: bool,
    /// Headers set on allowed requests, for the upstream.
    #[serde(default)]
    pub upstream_headers: UpstreamHeaders,
    /// More client headers to remove before the request goes upstream.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// The longest header value the mapping reads; longer ones deny.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// `;` parameters in path segments: `reject` (400, the default) or
    /// `strip` (removed for the decision and the upstream alike).
    #[serde(default)]
    pub path_parameters: crate::path::PathParameters,
    /// A forbid policy whose condition errors: `skip` (Cedar's rule, the
    /// default) or `deny`.
    #[serde(default)]
    pub on_forbid_error: OnForbidError,
}

/// What a forbid whose condition errors does.
///
/// Cedar skips a policy whose condition errors, so a forbid that errors
/// (an attribute missing from an entity, say) cannot block. `deny` makes
/// any erroring forbid deny the request, as if it had been satisfied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnForbidError {
    /// Cedar's rule: the erroring forbid is skipped.
    #[default]
    Skip,
    /// The request is denied.
    Deny,
}

fn default_max_header_bytes() -> usize {
    8 * 1024
}

impl MappingConfig {
    /// The problems found without looking at the bundle (route templates,
    /// placeholders, empty method tables), so that a host whose bundle
    /// failed to load can still report every problem at once.
    pub fn problems_without_bundle(&self) -> Vec<String> {
        let mut problems = Vec::new();
        crate::route::compile_routes(&self.routes, &mut problems);
        problems
    }
}

/// Where the identity comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The claims' source inside Envoy (required there). Hosts that verify
    /// tokens themselves, such as the gateway, leave it out.
    #[serde(default)]
    pub source: Option<ClaimsSource>,
    /// Without claims: 401 when `true`; otherwise the request goes on with
    /// `anonymous_principal`, if set, or is denied.
    #[serde(default = "yes")]
    pub required: bool,
    /// The principal of requests without identity, when not required.
    #[serde(default)]
    pub anonymous_principal: Option<String>,
    /// The principal's entity type, such as `Airflow::User`.
    pub principal_type: String,
    /// The claim whose value is the principal's id.
    #[serde(default = "default_subject_claim")]
    pub principal_id_claim: String,
    /// Group claims → parent entities of the principal.
    #[serde(default)]
    pub groups: Option<GroupsMapping>,
    /// Entity attribute → the claim it comes from.
    #[serde(default)]
    pub attributes: BTreeMap<String, ClaimRef>,
}

fn yes() -> bool {
    true
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

/// The verified claims' source.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClaimsSource {
    /// The payload `jwt_authn` writes to dynamic metadata
    /// (`payload_in_metadata`).
    JwtMetadata {
        /// The metadata namespace; `envoy.filters.http.jwt_authn` by default.
        #[serde(default = "default_jwt_namespace")]
        namespace: String,
        /// The key set by `payload_in_metadata`.
        key: String,
    },
    /// A header that a trusted filter in front of this one sets to the
    /// base64url-encoded JSON claims (as `forward_payload_header` does).
    Header {
        /// The header's name.
        name: String,
    },
}

fn default_jwt_namespace() -> String {
    "envoy.filters.http.jwt_authn".to_owned()
}

/// How group claims become parents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsMapping {
    /// The claim: a string or an array of strings.
    pub claim: String,
    /// The parents' entity type, such as `Airflow::GitlabGroup`.
    pub entity_type: String,
    /// Removed from the front of each group name, such as `/`.
    #[serde(default)]
    pub strip_prefix: String,
}

/// A claim, converted to a Cedar value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRef {
    /// The claim's name; `a.b` reads nested claims.
    pub claim: String,
    /// The Cedar type; by default the JSON type decides.
    #[serde(default, rename = "as")]
    pub as_type: Option<ValueType>,
    /// The value when the claim is absent; without one, absence denies.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// A Cedar type a raw value converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A string.
    String,
    /// A 64-bit integer.
    Long,
    /// `true` or `false`.
    Bool,
    /// An `ipaddr`.
    Ip,
    /// A set of strings.
    StringSet,
}

/// The route table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// The action entity type, such as `Airflow::Action`.
    pub action_type: String,
    /// Routes, tried in order; the first whose path matches decides.
    pub routes: Vec<RouteConfig>,
}

/// One route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A path template: `/api/v1/dags/{dag_id}/dagRuns`; `{name}` matches
    /// one segment, a final `{name*}` matches the rest.
    pub path: String,
    /// HTTP method → action id; `*` matches any other method.
    pub methods: BTreeMap<String, String>,
    /// Match the template's literal segments ignoring ASCII case, for
    /// upstreams that read `/Admin` as `/admin`.
    #[serde(default)]
    pub case_insensitive: bool,
    /// The resource, such as `{"type": "Airflow::Dag", "id": "{dag_id}"}`.
    pub resource: ResourceTemplate,
}

/// A resource uid with `{name}` placeholders filled from the path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTemplate {
    /// The entity type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id, with placeholders.
    pub id: String,
}

/// One context attribute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextAttribute {
    /// The attribute's name in `context`.
    pub name: String,
    /// Where its value comes from.
    pub from: ContextSource,
    /// The Cedar type of a header's or claim's value.
    #[serde(default, rename = "as")]
    pub as_type: Option<ValueType>,
    /// The value when the source is absent; without one, absence denies.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// Where a context value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ContextSource {
    /// The downstream address, as an `ipaddr`.
    SourceAddress,
    /// Seconds since the epoch, as a `Long`.
    RequestTime,
    /// Seconds since the token's `iat` claim, as a `Long`.
    TokenAge,
    /// The mTLS peer's URI SAN, as a string (empty without mTLS).
    PeerIdentity,
    /// The HTTP method.
    Method,
    /// The path, without the query string.
    Path,
    /// A request header.
    Header(String),
    /// A claim.
    Claim(String),
    /// Whether a claim (a string or an array) contains a value, as a `Bool`.
    ClaimContains {
        /// The claim.
        claim: String,
        /// The value looked for.
        value: String,
    },
}

/// Headers set for the upstream on allow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHeaders {
    /// Carries the verified principal uid.
    #[serde(default = "default_principal_header")]
    pub principal: String,
    /// Carries the decision id.
    #[serde(default = "default_decision_header")]
    pub decision_id: String,
}

impl Default for UpstreamHeaders {
    fn default() -> Self {
        Self {
            principal: default_principal_header(),
            decision_id: default_decision_header(),
        }
    }
}

fn default_principal_header() -> String {
    "x-cedar-principal".to_owned()
}

fn default_decision_header() -> String {
    "x-cedar-decision-id".to_owned()
}
