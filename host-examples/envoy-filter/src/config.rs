//! The plugin configuration, as JSON in Envoy's `configuration` field: the
//! bundle inline under `bundle`, and beside it the mapping
//! (`cedar_edge_mapping::MappingConfig`). Every struct refuses unknown keys,
//! so a misspelt option fails `on_configure` instead of silently falling
//! back to a default.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_edge_core::{
    Bundle, BundleFile, BundleSource, DEFAULT_MAX_FILE_BYTES, LoadError, RequestLimits, packed_id,
};
use cedar_edge_mapping::config::ContextSource;
use cedar_edge_mapping::{Mapping, MappingConfig, MappingError};
use cedar_edge_signing::{PublicKey, TrustedKeys};
use serde::Deserialize;
use serde_json::{Value, json};

/// The bundle, every file inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Policy file name → Cedar text.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// The schema: Cedar schema text, or JSON schema text when its name ends in `.json`.
    #[serde(default)]
    pub schema: Option<NamedText>,
    /// Static entities: the text of `entities.json`, or the same JSON inline.
    #[serde(default)]
    pub entities: Option<FileText>,
    /// Template links: the text of `template-links.json`, or the same JSON inline.
    #[serde(default)]
    pub template_links: Option<FileText>,
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

/// A JSON file of the bundle. As a string it is the file's exact text, so
/// the bundle id equals the one every other host computes for the same
/// directory (`cedar-edge envoy-config` writes it so); inline JSON is
/// hashed as serialized here.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileText {
    /// The file's text.
    Text(String),
    /// The file's JSON, inline.
    Json(Value),
}

impl FileText {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Json(json) => json.to_string(),
        }
    }
}

impl BundleConfig {
    /// The bundle as files, named as in a bundle directory.
    pub fn source(&self) -> BundleSource {
        let file = |path: &str, contents: String| BundleFile {
            path: path.to_owned(),
            contents,
        };
        BundleSource {
            policies: self
                .policies
                .iter()
                .map(|(name, text)| file(name, text.clone()))
                .collect(),
            schema: self
                .schema
                .as_ref()
                .map(|schema| file(&schema.name, schema.text.clone())),
            entities: self
                .entities
                .as_ref()
                .map(|entities| file("entities.json", entities.text())),
            template_links: self
                .template_links
                .as_ref()
                .map(|links| file("template-links.json", links.text())),
            prepared_schema_json: None,
            settings: Default::default(),
        }
    }
}

/// Why a plugin configuration cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConfigError {
    /// Not JSON, or not the configuration's shape.
    #[error("invalid cedar-edge configuration: {0}")]
    #[diagnostic(code(cedar_edge::envoy::config))]
    Shape(String),
    /// The inline bundle did not load; the mapping's own problems are
    /// listed with it.
    #[error("invalid cedar-edge configuration: {error}{}", mapping_problems.iter().map(|problem| format!("\n  {problem}")).collect::<String>())]
    #[diagnostic(code(cedar_edge::envoy::bundle))]
    Bundle {
        /// Why the bundle did not load.
        error: LoadError,
        /// Problems of the mapping found without the bundle.
        mapping_problems: Vec<String>,
    },
    /// The mapping does not fit the bundle.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Mapping(#[from] MappingError),
}

/// Which of Envoy's properties the mapping reads, found once at configure
/// time so that each request fetches only those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// `source.address`, for a `source_address` context attribute.
    pub source_address: bool,
    /// `connection.uri_san_peer_certificate`, for `peer_identity`.
    pub peer_identity: bool,
    /// The clock, for `request_time` and `token_age`.
    pub clock: bool,
}

impl Reads {
    /// What `config`'s context attributes read.
    pub fn of(config: &MappingConfig) -> Self {
        let mut reads = Self::default();
        for attribute in &config.context {
            match attribute.from {
                ContextSource::SourceAddress => reads.source_address = true,
                ContextSource::PeerIdentity => reads.peer_identity = true,
                ContextSource::RequestTime | ContextSource::TokenAge => reads.clock = true,
                ContextSource::Method
                | ContextSource::Path
                | ContextSource::Header(_)
                | ContextSource::Claim(_)
                | ContextSource::ClaimContains { .. } => {}
            }
        }
        reads
    }
}

/// A packed bundle inline, as `cedar-edge envoy-config` writes it: the
/// archive's bytes in base64, its signature, and the digest it must have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackedBundle {
    /// The packed bundle (`cedar-edge pack`), base64.
    pub packed: String,
    /// Its `.sig` file's text, required when `trusted_keys` is set.
    #[serde(default)]
    pub signature: Option<String>,
    /// `sha256:…`: the bundle id the archive must have, if pinned.
    #[serde(default)]
    pub digest: Option<String>,
}

impl PackedBundle {
    /// Checks the pin and the signature over the archive's bytes, then
    /// reads it: nothing unsigned is parsed.
    fn source(&self, trusted: &TrustedKeys) -> Result<BundleSource, ConfigError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.packed.trim())
            .map_err(|err| ConfigError::Shape(format!("`bundle.packed`: not base64: {err}")))?;
        let digest = packed_id(&bytes);
        if let Some(pinned) = &self.digest
            && *pinned != digest
        {
            return Err(ConfigError::Shape(format!(
                "`bundle.digest` pins {pinned}, and the packed bundle is {digest}"
            )));
        }
        if !trusted.is_empty() {
            trusted
                .verify(&bytes, self.signature.as_deref().map(str::as_bytes))
                .map_err(|err| ConfigError::Shape(format!("`bundle.signature`: {err}")))?;
        }
        BundleSource::from_packed(&bytes, DEFAULT_MAX_FILE_BYTES)
            .map_err(|err| ConfigError::Shape(format!("`bundle.packed`: {err}")))
    }
}

/// The `trusted_keys` list: PEM public keys, each named by its place.
fn trusted_keys(value: Option<Value>) -> Result<TrustedKeys, ConfigError> {
    let pems: Vec<String> = match value {
        None => Vec::new(),
        Some(value) => serde_json::from_value(value)
            .map_err(|err| ConfigError::Shape(format!("`trusted_keys`: {err}")))?,
    };
    let mut trusted = TrustedKeys::default();
    for (index, pem) in pems.iter().enumerate() {
        let key = PublicKey::from_pem(pem)
            .map_err(|err| ConfigError::Shape(format!("`trusted_keys[{index}]`: {err}")))?;
        trusted.add(format!("trusted_keys[{index}]"), key);
    }
    Ok(trusted)
}

/// Parses a plugin configuration, loads and validates its bundle once, and
/// builds the mapping over it.
pub fn load(bytes: &[u8]) -> Result<Mapping, ConfigError> {
    let mut config: Value =
        serde_json::from_slice(bytes).map_err(|err| ConfigError::Shape(err.to_string()))?;
    let object = config
        .as_object_mut()
        .ok_or_else(|| ConfigError::Shape("not a JSON object".to_owned()))?;
    let bundle_json = object
        .remove("bundle")
        .ok_or_else(|| ConfigError::Shape("missing field `bundle`".to_owned()))?;
    let trusted = trusted_keys(object.remove("trusted_keys"))?;
    let source = if bundle_json.get("packed").is_some() {
        let packed: PackedBundle = serde_json::from_value(bundle_json)
            .map_err(|err| ConfigError::Shape(format!("`bundle`: {err}")))?;
        packed.source(&trusted)?
    } else {
        if !trusted.is_empty() {
            return Err(ConfigError::Shape(
                "`trusted_keys` needs a packed, signed `bundle` (`cedar-edge envoy-config` writes one); inline files carry no signature".to_owned(),
            ));
        }
        let bundle: BundleConfig = serde_json::from_value(bundle_json)
            .map_err(|err| ConfigError::Shape(format!("`bundle`: {err}")))?;
        bundle.source()
    };
    let mapping: MappingConfig =
        serde_json::from_value(config).map_err(|err| ConfigError::Shape(err.to_string()))?;
    let bundle =
        Bundle::load(&source, RequestLimits::default()).map_err(|error| ConfigError::Bundle {
            mapping_problems: mapping.problems_without_bundle(),
            error,
        })?;
    Ok(Mapping::new(mapping, Arc::new(bundle))?)
}

/// The `bundle` section for a bundle read from disk: every file inline,
/// JSON files as their exact text.
pub fn inline_bundle(source: &BundleSource) -> Value {
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
        bundle.insert("entities".to_owned(), json!(entities.contents));
    }
    if let Some(links) = &source.template_links {
        bundle.insert("template_links".to_owned(), json!(links.contents));
    }
    Value::Object(bundle)
}

/// A plugin configuration: the mapping (a JSON object) with the bundle
/// inline under `bundle`.
pub fn plugin_config(source: &BundleSource, mapping: &Value) -> Value {
    let mut config = mapping.as_object().cloned().unwrap_or_default();
    config.insert("bundle".to_owned(), inline_bundle(source));
    Value::Object(config)
}

/// A plugin configuration around a packed bundle: the mapping with
/// `bundle: {packed, signature, digest}` and, when given, `trusted_keys`
/// (PEM) that the filter checks the signature against at configure time.
pub fn packed_plugin_config(
    packed: &[u8],
    signature: Option<&str>,
    trusted_keys: &[String],
    mapping: &Value,
) -> Value {
    use base64::Engine as _;
    let mut config = mapping.as_object().cloned().unwrap_or_default();
    let mut bundle = serde_json::Map::new();
    bundle.insert(
        "packed".to_owned(),
        json!(base64::engine::general_purpose::STANDARD.encode(packed)),
    );
    if let Some(signature) = signature {
        bundle.insert("signature".to_owned(), json!(signature.trim()));
    }
    bundle.insert("digest".to_owned(), json!(packed_id(packed)));
    config.insert("bundle".to_owned(), Value::Object(bundle));
    if !trusted_keys.is_empty() {
        config.insert("trusted_keys".to_owned(), json!(trusted_keys));
    }
    Value::Object(config)
}
