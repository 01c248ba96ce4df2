//! Policy bundles: reading them, hashing them, and loading them once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, SlotId};
#[cfg(feature = "validate")]
use cedar_policy::{ValidationMode, Validator};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::request::RequestLimits;
use crate::value::EntityUid;

/// The name of a bundle's static entities file.
pub const ENTITIES_FILE: &str = "entities.json";
/// The name of a bundle's template links file.
pub const TEMPLATE_LINKS_FILE: &str = "template-links.json";
/// Folders of a bundle directory that never hold bundle files.
const SKIPPED_DIRS: &[&str] = &["tests"];

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// The path relative to the bundle directory, with `/` separators.
    pub path: String,
    /// The file's text.
    pub contents: String,
}

/// The files that make up a bundle, before parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSource {
    /// Cedar policy files, sorted by path.
    pub policies: Vec<BundleFile>,
    /// The schema: `*.cedarschema` (Cedar syntax) or `*.cedarschema.json`.
    pub schema: Option<BundleFile>,
    /// Static entities in Cedar's JSON entity format.
    pub entities: Option<BundleFile>,
    /// Template links.
    pub template_links: Option<BundleFile>,
    /// The schema already converted to JSON by the host, for builds without
    /// the Cedar-syntax schema parser (the component). Not part of the
    /// bundle id: it is derived from `schema`.
    pub prepared_schema_json: Option<String>,
}

/// A bundle directory that could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot read bundle `{}`: {message}", path.display())]
#[diagnostic(code(cedar_edge::bundle::read))]
pub struct BundleReadError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl BundleSource {
    /// Reads a bundle directory: every `*.cedar` file below it (except in
    /// `tests/` and hidden folders), one schema, `entities.json` and
    /// `template-links.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, BundleReadError> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.sort();
        let mut source = Self::default();
        for relative in files {
            let name = relative.rsplit('/').next().unwrap_or(&relative);
            let is_schema = name.ends_with(".cedarschema") || name.ends_with(".cedarschema.json");
            let slot = if name.ends_with(".cedar") {
                None
            } else if is_schema {
                Some(&mut source.schema)
            } else if relative == ENTITIES_FILE {
                Some(&mut source.entities)
            } else if relative == TEMPLATE_LINKS_FILE {
                Some(&mut source.template_links)
            } else {
                continue;
            };
            let path = dir.join(&relative);
            let contents = std::fs::read_to_string(&path).map_err(|err| BundleReadError {
                path: path.clone(),
                message: err.to_string(),
            })?;
            let file = BundleFile {
                path: relative,
                contents,
            };
            match slot {
                None => source.policies.push(file),
                Some(slot @ None) => *slot = Some(file),
                Some(Some(first)) => {
                    return Err(BundleReadError {
                        path,
                        message: format!(
                            "a bundle holds one such file, and `{}` is already one",
                            first.path
                        ),
                    });
                }
            }
        }
        if source.policies.is_empty() {
            return Err(BundleReadError {
                path: dir.to_owned(),
                message: "no `*.cedar` policy file found".to_owned(),
            });
        }
        Ok(source)
    }

    /// Every file of the bundle: policies, schema, entities, links.
    pub fn files(&self) -> impl Iterator<Item = &BundleFile> {
        self.policies
            .iter()
            .chain(self.schema.iter())
            .chain(self.entities.iter())
            .chain(self.template_links.iter())
    }

    /// The content hash of the bundle: `sha256:` and 64 hex digits.
    ///
    /// Each file is hashed with its role, path and length, so that moving text
    /// between files changes the id.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let roles = self
            .policies
            .iter()
            .map(|file| ("policy", file))
            .chain(self.schema.iter().map(|file| ("schema", file)))
            .chain(self.entities.iter().map(|file| ("entities", file)))
            .chain(self.template_links.iter().map(|file| ("links", file)));
        for (role, file) in roles {
            for part in [
                role.as_bytes(),
                file.path.as_bytes(),
                file.contents.as_bytes(),
            ] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        format!("sha256:{}", hex(&hasher.finalize()))
    }
}

fn collect_files(root: &Path, dir: &Path, found: &mut Vec<String>) -> Result<(), BundleReadError> {
    let read_error = |err: std::io::Error| BundleReadError {
        path: dir.to_owned(),
        message: err.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if dir != root || !SKIPPED_DIRS.contains(&name) {
                collect_files(root, &path, found)?;
            }
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<_> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect();
            found.push(parts.join("/"));
        }
    }
    Ok(())
}

/// Lowercase hex of a digest: the one spelling of every hash the project
/// prints (bundle ids, cache keys, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A bundle that failed to load, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// Every problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the bundle has {} problem(s)", self.diagnostics.len())?;
        for diagnostic in &self.diagnostics {
            write!(f, "\n  {diagnostic}")?;
        }
        Ok(())
    }
}

/// A parsed and validated bundle, ready to decide requests.
#[derive(Debug)]
pub struct Bundle {
    pub(crate) id: String,
    pub(crate) policies: PolicySet,
    pub(crate) schema: Option<Schema>,
    pub(crate) entities: Entities,
    pub(crate) index: crate::index::PolicyIndex,
    pub(crate) graph: crate::slice::EntityGraph,
    pub(crate) limits: RequestLimits,
    policy_ids: Vec<String>,
    /// Policy or template id → the bundle file it was written in.
    policy_files: HashMap<String, String>,
    /// The validated files, with the schema as JSON, ready to hand to a
    /// guest that loads them without validating again. Hosts only: the
    /// guest would hold a second copy of its bundle for nothing.
    #[cfg(feature = "validate")]
    hand_over: std::sync::Arc<BundleSource>,
}

impl Bundle {
    /// Parses and validates a bundle. Every problem is collected, not only
    /// the first; validation against the schema is strict.
    pub fn load(source: &BundleSource, limits: RequestLimits) -> Result<Self, LoadError> {
        let mut diagnostics = Vec::new();
        let schema = source.schema.as_ref().and_then(|file| {
            parse_schema(file, source.prepared_schema_json.as_deref())
                .map_err(|found| diagnostics.extend(found))
                .ok()
        });
        let (mut policies, origins) = parse_policies(&source.policies, &mut diagnostics);
        if let Some(file) = &source.template_links {
            link_templates(file, &mut policies, &mut diagnostics);
        }
        #[cfg(feature = "validate")]
        if let (Some(schema), true) = (&schema, diagnostics.is_empty()) {
            validate_policies(schema, &policies, &origins, &mut diagnostics);
        }
        let entities = parse_entities(source.entities.as_ref(), schema.as_ref(), &mut diagnostics);
        if !diagnostics.is_empty() {
            return Err(LoadError { diagnostics });
        }
        let mut policy_ids: Vec<String> = policies
            .policies()
            .map(|policy| policy.id().to_string())
            .collect();
        policy_ids.sort();
        let mut policy_files: HashMap<String, String> = origins
            .iter()
            .map(|(id, file)| (id.clone(), file.path.clone()))
            .collect();
        for policy in policies.policies().filter(|policy| !policy.is_static()) {
            policy_files.insert(policy.id().to_string(), TEMPLATE_LINKS_FILE.to_owned());
        }
        let index = crate::index::PolicyIndex::new(&policies);
        let entities = entities.unwrap_or_else(Entities::empty);
        let graph = crate::slice::EntityGraph::new(entities.as_ref());
        #[cfg(feature = "validate")]
        let hand_over = {
            let mut prepared = source.clone();
            prepared.prepare_schema_json()?;
            std::sync::Arc::new(prepared)
        };
        Ok(Self {
            id: source.content_hash(),
            policies,
            schema,
            entities,
            graph,
            index,
            limits,
            policy_ids,
            policy_files,
            #[cfg(feature = "validate")]
            hand_over,
        })
    }

    /// The bundle's files as they were validated, with a Cedar-syntax schema
    /// also given as JSON: what a guest without a validator loads.
    #[cfg(feature = "validate")]
    pub fn validated_source(&self) -> &std::sync::Arc<BundleSource> {
        &self.hand_over
    }

    /// The content hash that every decision carries.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ids of the policies and template links, sorted.
    pub fn policy_ids(&self) -> &[String] {
        &self.policy_ids
    }

    /// The parsed policies, with their stable ids.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The schema, if the bundle has one.
    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// The bundle's static entities.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// Whether the bundle's static entities hold this uid.
    pub fn has_entity(&self, uid: &EntityUid) -> bool {
        crate::request::cedar_uid(uid, "uid").is_ok_and(|uid| self.entities.get(&uid).is_some())
    }

    /// The entity types the schema declares, with their namespaces; `None`
    /// without a schema.
    pub fn schema_entity_types(&self) -> Option<Vec<String>> {
        let schema = self.schema.as_ref()?;
        Some(schema.entity_types().map(ToString::to_string).collect())
    }

    /// The actions the schema declares; `None` without a schema.
    pub fn schema_actions(&self) -> Option<Vec<EntityUid>> {
        let schema = self.schema.as_ref()?;
        Some(
            schema
                .actions()
                .map(|uid| EntityUid::new(uid.type_name().to_string(), uid.id().unescaped()))
                .collect(),
        )
    }

    /// The bundle file a policy, template or template link was written in.
    pub fn policy_file(&self, policy_id: &str) -> Option<&str> {
        self.policy_files.get(policy_id).map(String::as_str)
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> RequestLimits {
        self.limits
    }
}

fn parse_schema(file: &BundleFile, prepared_json: Option<&str>) -> Result<Schema, Vec<Diagnostic>> {
    let from_json = |text: &str| {
        Schema::from_json_str(text)
            .map_err(|err| Diagnostic::all_from_cedar(&file.path, text, &err))
    };
    if file.path.ends_with(".json") {
        return from_json(&file.contents);
    }
    if let Some(json) = prepared_json {
        return from_json(json);
    }
    parse_cedar_schema(file)
}

#[cfg(feature = "validate")]
fn parse_cedar_schema(file: &BundleFile) -> Result<Schema, Vec<Diagnostic>> {
    Schema::from_cedarschema_str(&file.contents)
        .map(|(schema, _warnings)| schema)
        .map_err(|err| Diagnostic::all_from_cedar(&file.path, &file.contents, &err))
}

#[cfg(not(feature = "validate"))]
fn parse_cedar_schema(file: &BundleFile) -> Result<Schema, Vec<Diagnostic>> {
    Err(vec![Diagnostic::in_file(
        &file.path,
        "this build reads JSON schemas only; the host must supply the schema converted to JSON",
    )])
}

impl BundleSource {
    /// Converts a Cedar-syntax schema to JSON into `prepared_schema_json`,
    /// so that a build without the schema parser can load the bundle.
    #[cfg(feature = "validate")]
    pub fn prepare_schema_json(&mut self) -> Result<(), LoadError> {
        let Some(file) = self
            .schema
            .as_ref()
            .filter(|file| !file.path.ends_with(".json"))
        else {
            return Ok(());
        };
        let converted = cedar_policy::SchemaFragment::from_cedarschema_str(&file.contents)
            .map_err(|err| Diagnostic::all_from_cedar(&file.path, &file.contents, &err))
            .and_then(|(fragment, _warnings)| {
                fragment
                    .to_json_string()
                    .map_err(|err| vec![Diagnostic::in_file(&file.path, err.to_string())])
            });
        match converted {
            Ok(json) => {
                self.prepared_schema_json = Some(json);
                Ok(())
            }
            Err(diagnostics) => Err(LoadError { diagnostics }),
        }
    }
}

/// Where each policy id came from, for placing validation errors.
type Origins<'a> = HashMap<String, &'a BundleFile>;

/// Parses every policy file and gives each policy its stable id: its `@id`
/// annotation, or `file#index` where index counts policies and templates
/// in source order.
fn parse_policies<'a>(
    files: &'a [BundleFile],
    diagnostics: &mut Vec<Diagnostic>,
) -> (PolicySet, Origins<'a>) {
    let mut merged = PolicySet::new();
    let mut origins: Origins<'a> = HashMap::new();
    for file in files {
        let parsed = match PolicySet::from_str(&file.contents) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for error in errors.iter() {
                    diagnostics.push(Diagnostic::from_cedar(&file.path, &file.contents, error));
                }
                continue;
            }
        };
        let stable_id = |default_id: &PolicyId, annotation: Option<&str>| match annotation {
            Some(id) => id.to_owned(),
            None => {
                // Cedar numbers a file's policies and templates `policy0`, `policy1`, ... in order.
                let index = default_id
                    .to_string()
                    .trim_start_matches("policy")
                    .to_owned();
                format!("{}#{index}", file.path)
            }
        };
        // Sorted so that a duplicate id is always reported at the same place.
        let mut renamed: BTreeMap<String, Result<cedar_policy::Policy, cedar_policy::Template>> =
            BTreeMap::new();
        for policy in parsed.policies() {
            let id = stable_id(policy.id(), policy.annotation("id"));
            renamed.insert(id.clone(), Ok(policy.new_id(PolicyId::new(&id))));
        }
        for template in parsed.templates() {
            let id = stable_id(template.id(), template.annotation("id"));
            renamed.insert(id.clone(), Err(template.new_id(PolicyId::new(&id))));
        }
        for (id, item) in renamed {
            if let Some(first) = origins.get(&id) {
                let message = format!(
                    "policy id `{id}` is used twice: in `{}` and here",
                    first.path
                );
                let mut diagnostic = Diagnostic::in_file(&file.path, message);
                if let Some(offset) = file.contents.find(&format!("\"{id}\"")) {
                    diagnostic.place(&file.contents, offset, id.len() + 2);
                }
                diagnostics.push(diagnostic);
                continue;
            }
            let added = match item {
                Ok(policy) => merged.add(policy),
                Err(template) => merged.add_template(template),
            };
            if let Err(err) = added {
                diagnostics.push(Diagnostic::in_file(&file.path, err.to_string()));
            }
            origins.insert(id, file);
        }
    }
    (merged, origins)
}

/// One entry of `template-links.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateLink {
    template_id: String,
    link_id: String,
    args: BTreeMap<String, LinkArg>,
}

/// A slot value: `"User::\"alice\""` or `{"type": "User", "id": "alice"}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LinkArg {
    Literal(String),
    Parts {
        #[serde(rename = "type")]
        type_name: String,
        id: String,
    },
}

fn link_templates(file: &BundleFile, policies: &mut PolicySet, diagnostics: &mut Vec<Diagnostic>) {
    let links: Vec<TemplateLink> = match serde_json::from_str(&file.contents) {
        Ok(links) => links,
        Err(err) => {
            let mut diagnostic = Diagnostic::in_file(&file.path, err.to_string());
            diagnostic.line = u32::try_from(err.line()).unwrap_or(0);
            diagnostic.column = u32::try_from(err.column()).unwrap_or(0);
            diagnostics.push(diagnostic);
            return;
        }
    };
    for (position, link) in links.into_iter().enumerate() {
        let at = |message: String| {
            Diagnostic::in_file(
                &file.path,
                format!("link {position} (`{}`): {message}", link.link_id),
            )
        };
        let mut slots = HashMap::new();
        for (slot, arg) in &link.args {
            let slot_id = match slot.as_str() {
                "?principal" => SlotId::principal(),
                "?resource" => SlotId::resource(),
                other => {
                    diagnostics.push(at(format!(
                        "unknown slot `{other}`; use `?principal` or `?resource`"
                    )));
                    continue;
                }
            };
            let uid = match arg {
                LinkArg::Literal(text) => EntityUid::from_str(text),
                LinkArg::Parts { type_name, id } => Ok(EntityUid::new(type_name, id)),
            }
            .and_then(|uid| crate::request::cedar_uid(&uid, slot).map_err(|err| err.to_string()));
            match uid {
                Ok(uid) => {
                    slots.insert(slot_id, uid);
                }
                Err(message) => diagnostics.push(at(message)),
            }
        }
        if let Err(err) = policies.link(
            PolicyId::new(&link.template_id),
            PolicyId::new(&link.link_id),
            slots,
        ) {
            diagnostics.push(at(err.to_string()));
        }
    }
}

#[cfg(feature = "validate")]
fn validate_policies(
    schema: &Schema,
    policies: &PolicySet,
    origins: &Origins<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    for error in result.validation_errors() {
        let policy_id = error.policy_id().to_string();
        // A template link is reported at its template.
        let template_id = policies
            .policy(error.policy_id())
            .and_then(|policy| policy.template_id())
            .map(ToString::to_string);
        let origin = origins
            .get(&policy_id)
            .or_else(|| template_id.and_then(|id| origins.get(&id)));
        match origin {
            Some(file) => {
                diagnostics.push(Diagnostic::from_cedar(&file.path, &file.contents, error))
            }
            None => diagnostics.push(Diagnostic::in_file(TEMPLATE_LINKS_FILE, error.to_string())),
        }
    }
}

fn parse_entities(
    file: Option<&BundleFile>,
    schema: Option<&Schema>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Entities> {
    // With a schema, even an empty bundle gets the schema's action entities.
    let (path, text) = file.map_or((ENTITIES_FILE, "[]"), |file| {
        (file.path.as_str(), file.contents.as_str())
    });
    match Entities::from_json_str(text, schema) {
        Ok(entities) => Some(entities),
        Err(err) => {
            let mut diagnostic = Diagnostic::from_cedar(path, text, &err);
            let message = diagnostic.message.clone();
            locate_entity(text, &message, &mut diagnostic);
            diagnostics.push(diagnostic);
            None
        }
    }
}

/// Cedar's entity errors name the entity but carry no position: find the
/// first quoted entity id the message mentions, and point at it in the file.
fn locate_entity(text: &str, message: &str, diagnostic: &mut Diagnostic) {
    if diagnostic.line > 0 {
        return;
    }
    let quoted_ids = message
        .split("::\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next());
    for id in quoted_ids {
        let needle = format!("\"{id}\"");
        if let Some(offset) = text.find(&needle) {
            diagnostic.place(text, offset, needle.len());
            return;
        }
    }
}
