//! The plugin configuration, as JSON in Envoy's `configuration` field.
//! Every struct refuses unknown keys, so a misspelt option fails
//! `on_configure` instead of silently falling back to a default.

use std::collections::BTreeMap;

use cedar_edge_engine::BundleSource;
use serde::Deserialize;
use serde_json::{Value, json};

/// The whole plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The policies, schema and entities.
    pub bundle: BundleConfig,
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
    /// The longest header value the filter reads; longer ones deny.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_max_header_bytes() -> usize {
    8 * 1024
}

/// The bundle: inline files, or a packed bundle from `cedar-edge pack`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Policy file name → Cedar text.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// The schema: Cedar schema text, or JSON schema text when its name ends in `.json`.
    #[serde(default)]
    pub schema: Option<NamedText>,
    /// Static entities, as Cedar's entity JSON.
    #[serde(default)]
    pub entities: Option<serde_json::Value>,
    /// Template links, as in `template-links.json`.
    #[serde(default)]
    pub template_links: Option<serde_json::Value>,
}

/// A file's name and text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedText {
    /// The file name, which error messages use.
    pub name: String,
    /// The file's text.
    pub text: String,
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

/// The `bundle` section for a bundle read from disk: every file inline.
pub fn inline_bundle(source: &BundleSource) -> Result<Value, serde_json::Error> {
    let policies: serde_json::Map<String, Value> = source
        .policies
        .iter()
        .map(|file| (file.path.clone(), Value::String(file.contents.clone())))
        .collect();
    let mut bundle = serde_json::Map::new();
    bundle.insert("policies".to_owned(), Value::Object(policies));
    if let Some(schema) = &source.schema {
        bundle.insert(
            "schema".to_owned(),
            json!({"name": schema.path, "text": schema.contents}),
        );
    }
    if let Some(entities) = &source.entities {
        bundle.insert(
            "entities".to_owned(),
            serde_json::from_str(&entities.contents)?,
        );
    }
    if let Some(links) = &source.template_links {
        bundle.insert(
            "template_links".to_owned(),
            serde_json::from_str(&links.contents)?,
        );
    }
    Ok(Value::Object(bundle))
}

/// A plugin configuration: the mapping (a JSON object) with the bundle
/// inline under `bundle`.
pub fn plugin_config(source: &BundleSource, mapping: &Value) -> Result<Value, serde_json::Error> {
    let mut config = mapping.as_object().cloned().unwrap_or_default();
    config.insert("bundle".to_owned(), inline_bundle(source)?);
    Ok(Value::Object(config))
}
