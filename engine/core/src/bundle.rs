//! Policy bundles: reading them, hashing them, and loading them once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, SlotId};
#[cfg(feature = "validate")]
use cedar_policy::{ValidationMode, Validator};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::pack::{BundleSettings, FileRole, SETTINGS_FILE, SettingsFile, ValidationMode as Mode};
use crate::request::RequestLimits;
use crate::value::EntityUid;

/// The name of a bundle's static entities file.
pub const ENTITIES_FILE: &str = "entities.json";
/// The name of a bundle's template links file.
pub const TEMPLATE_LINKS_FILE: &str = "template-links.json";
/// Folders of a bundle directory that never hold bundle files.
const SKIPPED_DIRS: &[&str] = &["tests"];
/// The largest bundle or test file read unless the caller says otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

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
    /// The validation mode and packer's Cedar version: part of the id.
    pub settings: BundleSettings,
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
    /// `template-links.json`, each at most [`DEFAULT_MAX_FILE_BYTES`] long.
    /// See [`BundleDir`] for what is refused.
    pub fn from_dir(dir: &Path) -> Result<Self, BundleReadError> {
        Self::from_dir_capped(dir, DEFAULT_MAX_FILE_BYTES)
    }

    /// [`from_dir`](Self::from_dir) with another cap on each file's size.
    pub fn from_dir_capped(dir: &Path, max_file_bytes: u64) -> Result<Self, BundleReadError> {
        let bundle_dir = BundleDir::open(dir, max_file_bytes)?;
        let mut source = Self::default();
        for relative in bundle_dir.files("", SKIPPED_DIRS)? {
            if relative == SETTINGS_FILE {
                let text = bundle_dir.read(&relative)?;
                let settings: SettingsFile =
                    serde_json::from_str(&text).map_err(|err| BundleReadError {
                        path: dir.join(&relative),
                        message: err.to_string(),
                    })?;
                source.settings.validation = settings.validation;
                continue;
            }
            let slot = match FileRole::of_path(&relative) {
                Some(FileRole::Policy) => None,
                Some(FileRole::Schema) => Some(&mut source.schema),
                Some(FileRole::Entities) => Some(&mut source.entities),
                Some(FileRole::TemplateLinks) => Some(&mut source.template_links),
                None => continue,
            };
            let contents = bundle_dir.read(&relative)?;
            let file = BundleFile {
                path: relative,
                contents,
            };
            match slot {
                None => source.policies.push(file),
                Some(slot @ None) => *slot = Some(file),
                Some(Some(first)) => {
                    return Err(BundleReadError {
                        path: dir.join(&file.path),
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

    /// Refuses files nested too deep for Cedar's parsers to take without
    /// overflowing their thread's stack: every such file, with its place.
    /// [`Bundle::load`] runs this first; commands that parse a bundle's
    /// files otherwise (a formatter) run it themselves.
    pub fn check_nesting(&self) -> Result<(), LoadError> {
        let too_deep: Vec<Diagnostic> = self
            .files()
            .filter_map(|file| crate::nesting::check(file).err())
            .collect();
        if too_deep.is_empty() {
            Ok(())
        } else {
            Err(LoadError {
                diagnostics: too_deep,
            })
        }
    }

    /// Every file of the bundle: policies, schema, entities, links.
    pub fn files(&self) -> impl Iterator<Item = &BundleFile> {
        self.policies
            .iter()
            .chain(self.schema.iter())
            .chain(self.entities.iter())
            .chain(self.template_links.iter())
    }

    /// Reads a bundle from a directory or a packed file (`cedar-edge
    /// pack`), each file at most `max_file_bytes` long.
    pub fn open(path: &Path, max_file_bytes: u64) -> Result<Self, BundleReadError> {
        if path.is_dir() {
            return Self::from_dir_capped(path, max_file_bytes);
        }
        let error = |message: String| BundleReadError {
            path: path.to_owned(),
            message,
        };
        let bytes = read_regular_file(path, archive_cap(max_file_bytes))
            .map_err(|message| error(format!("the packed bundle: {message}")))?;
        if !crate::pack::looks_packed(&bytes) {
            return Err(error(
                "neither a bundle directory nor a packed bundle (`cedar-edge pack`)".to_owned(),
            ));
        }
        Self::from_packed(&bytes, max_file_bytes).map_err(|err| error(err.message))
    }
}

/// How deep real directories may nest below a bundle root: a loop made
/// with bind mounts ends here.
const MAX_DIR_DEPTH: usize = 32;

/// A directory whose files are read without ever leaving it.
///
/// - The root is canonicalised once, so the directory itself may be a
///   symbolic link (an atomic swap of a deployed bundle).
/// - A file may be a symbolic link whose target stays inside the root (a
///   Kubernetes ConfigMap mount is made of these); a file whose canonical
///   path leaves the root is refused, and its content is never read.
/// - A link whose target, relative to the root, passes through a hidden
///   name (`.git/config`) is refused too; names starting with `..` (a
///   ConfigMap's `..data` and `..2024_...` folders) are not hidden here.
/// - Symbolic links to directories are refused, never followed: no
///   directory loop, and no file read twice under two names.
/// - Only regular files are read, each at most the cap: the size is checked
///   before reading, and the read stops one byte past the cap, so a file
///   that grows meanwhile is refused too. On Unix the file is opened with
///   `O_NOFOLLOW` and checked again through the opened handle.
/// - Hidden files and folders (`.name`) are skipped.
///
/// Every error names the file at fault.
#[derive(Debug, Clone)]
pub struct BundleDir {
    /// The directory as the caller named it, for messages.
    given: PathBuf,
    /// Its canonical path: every file is reached through it, and must stay
    /// under it.
    root: PathBuf,
    max_file_bytes: u64,
}

impl BundleDir {
    /// Opens a directory; each file read from it is at most `max_file_bytes`.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, BundleReadError> {
        let root = dir.canonicalize().map_err(|err| BundleReadError {
            path: dir.to_owned(),
            message: err.to_string(),
        })?;
        if !root.is_dir() {
            return Err(BundleReadError {
                path: dir.to_owned(),
                message: "not a directory".to_owned(),
            });
        }
        Ok(Self {
            given: dir.to_owned(),
            root,
            max_file_bytes,
        })
    }

    /// The directory as the caller named it.
    pub fn path(&self) -> &Path {
        &self.given
    }

    /// The paths, relative to the root with `/` separators and sorted, of
    /// the non-hidden files below the folder `under` (`""` for the root),
    /// leaving out the folders of `under` named in `skipped`. A folder
    /// `under` that does not exist has no files.
    pub fn files(&self, under: &str, skipped: &[&str]) -> Result<Vec<String>, BundleReadError> {
        let start = self.root.join(under);
        match std::fs::symlink_metadata(&start) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(self.error(under, err.to_string())),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(self.error(under, DIR_LINK.to_owned()));
            }
            Ok(meta) if !meta.is_dir() => return Ok(Vec::new()),
            Ok(_) => {}
        }
        let mut found = Vec::new();
        let prefix: Vec<String> = under
            .split('/')
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect();
        self.walk(&prefix, skipped, &mut found)?;
        found.sort();
        Ok(found)
    }

    fn walk(
        &self,
        parts: &[String],
        skipped: &[&str],
        found: &mut Vec<String>,
    ) -> Result<(), BundleReadError> {
        let relative = parts.join("/");
        if parts.len() > MAX_DIR_DEPTH {
            return Err(self.error(
                &relative,
                format!("folders nest more than {MAX_DIR_DEPTH} levels deep"),
            ));
        }
        // Through the canonical root: every file comes from the directory
        // that `open` resolved, even if a link to it is swapped meanwhile.
        let dir = self.root.join(&relative);
        let read_error = |err: std::io::Error| self.error(&relative, err.to_string());
        for entry in std::fs::read_dir(&dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let top_level = parts.is_empty();
            if top_level && skipped.contains(&name.as_str()) {
                continue;
            }
            let mut child = parts.to_vec();
            child.push(name);
            let child_relative = child.join("/");
            // The entry itself, not what a link points to.
            let file_type = entry.file_type().map_err(read_error)?;
            if file_type.is_dir() {
                self.walk(&child, skipped, found)?;
            } else if file_type.is_symlink() && self.root.join(&child_relative).is_dir() {
                return Err(self.error(&child_relative, DIR_LINK.to_owned()));
            } else {
                // Links to files, and anything else, are judged when read.
                found.push(child_relative);
            }
        }
        Ok(())
    }

    /// Reads one file, given by its path relative to the root.
    pub fn read(&self, relative: &str) -> Result<String, BundleReadError> {
        let fail = |message: String| self.error(relative, message);
        let canonical = self
            .root
            .join(relative)
            .canonicalize()
            .map_err(|err| fail(err.to_string()))?;
        let Ok(inside) = canonical.strip_prefix(&self.root) else {
            return Err(fail(
                "it leads outside the bundle directory through a symbolic link; it is not read"
                    .to_owned(),
            ));
        };
        // The walk skips hidden names, and a link must not lead to one: a
        // bundle at the root of a checkout has `.git/config` inside it.
        if inside.components().any(|part| is_hidden(part.as_os_str())) {
            return Err(fail(format!(
                "it leads to the hidden path `{}`; hidden files and folders (`.name`, but not \
                 Kubernetes' `..name`) are never read, even through a symbolic link",
                inside.display()
            )));
        }
        // Checked before opening: opening a FIFO would wait for a writer.
        let meta = std::fs::metadata(&canonical).map_err(|err| fail(err.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".to_owned()));
        }
        let cap = self.max_file_bytes;
        let too_large = || fail(format!("larger than the limit of {cap} bytes"));
        if meta.len() > cap {
            return Err(too_large());
        }
        let file = open_no_follow(&canonical).map_err(|err| fail(err.to_string()))?;
        // Checked again on what was opened: the path may have changed since.
        let opened = file.metadata().map_err(|err| fail(err.to_string()))?;
        if !opened.is_file() {
            return Err(fail("not a regular file".to_owned()));
        }
        if opened.len() > cap {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|err| fail(err.to_string()))?;
        if bytes.len() as u64 > cap {
            return Err(too_large());
        }
        String::from_utf8(bytes).map_err(|_| fail("not valid UTF-8".to_owned()))
    }

    fn error(&self, relative: &str, message: String) -> BundleReadError {
        BundleReadError {
            path: self.given.join(relative),
            message,
        }
    }
}

/// Whether a path component is hidden: `.name`, but not Kubernetes'
/// `..data` and `..2024_...` folders of a ConfigMap mount.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".") && !name.starts_with(b"..")
}

/// Opens a file for reading, refusing a symbolic link as its last
/// component (one swapped in since the path was canonicalised) and never
/// waiting on a FIFO swapped in since it was checked.
#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Why a symbolic link to a directory is refused.
const DIR_LINK: &str = "a symbolic link to a directory; bundles do not follow links to directories";

/// The largest packed bundle read when each file may be `max_file_bytes`
/// long: the files and their headers, with a margin. Every loader of
/// packed bundles (files, registries) caps them so.
pub fn archive_cap(max_file_bytes: u64) -> u64 {
    max_file_bytes.saturating_mul(4)
}

/// A regular file's bytes, at most `cap`, checked before and during the
/// read. A FIFO or device is refused before it is opened: opening a FIFO
/// waits for a writer.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|err| err.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > cap {
        return Err(format!("over the cap of {cap} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!("over the cap of {cap} bytes"));
    }
    Ok(bytes)
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

/// SHA-256 over `parts`, each framed by its length so that no two lists
/// of parts share a digest: 64 hex digits. For hosts that bind their own
/// tokens to a bundle and a query.
pub fn digest_of_parts(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
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
    validation: Mode,
    pub(crate) policies: PolicySet,
    pub(crate) schema: Option<Schema>,
    pub(crate) entities: Entities,
    pub(crate) index: crate::index::PolicyIndex,
    pub(crate) graph: crate::slice::EntityGraph,
    /// The schema's entity type descriptions, for checking request entities.
    pub(crate) conformance: crate::conformance::ConformanceCache,
    /// Request entities already checked, by their exact input.
    pub(crate) entity_cache: crate::entity_cache::EntityCache,
    pub(crate) limits: RequestLimits,
    /// The candidates of each entity type a search enumerates, sorted by
    /// id: built on the first search, so that hosts that never search
    /// (and the guest) do not pay for it at load.
    pub(crate) search_candidates: std::sync::OnceLock<crate::search::CandidatesByType>,
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
        // Before any parser runs: a parser that overflows its stack aborts.
        source.check_nesting()?;
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
            validate_policies(
                schema,
                source.settings.validation,
                &policies,
                &origins,
                &mut diagnostics,
            );
        }
        let id = source
            .content_hash()
            .map_err(|err| diagnostics.push(Diagnostic::in_file("", err.message)))
            .unwrap_or_default();
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
        let conformance = schema
            .as_ref()
            .map(|schema| crate::conformance::ConformanceCache::new(schema.as_ref()))
            .unwrap_or_default();
        #[cfg(feature = "validate")]
        let hand_over = {
            let mut prepared = source.clone();
            prepared.prepare_schema_json()?;
            std::sync::Arc::new(prepared)
        };
        Ok(Self {
            id,
            validation: source.settings.validation,
            policies,
            schema,
            entities,
            graph,
            conformance,
            entity_cache: crate::entity_cache::EntityCache::default(),
            index,
            limits,
            search_candidates: std::sync::OnceLock::new(),
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

    /// How the bundle's policies were validated.
    pub fn validation_mode(&self) -> Mode {
        self.validation
    }

    /// The ids of the policies and template links, sorted.
    pub fn policy_ids(&self) -> &[String] {
        &self.policy_ids
    }

    /// The parsed policies, with their stable ids.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// Whether a policy or template link is a `forbid`.
    pub fn is_forbid(&self, policy_id: &str) -> bool {
        self.policies
            .policy(&PolicyId::new(policy_id))
            .is_some_and(|policy| policy.effect() == cedar_policy::Effect::Forbid)
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
    mode: Mode,
    policies: &PolicySet,
    origins: &Origins<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mode = match mode {
        Mode::Strict => ValidationMode::Strict,
        Mode::Permissive => ValidationMode::Permissive,
        // The owner opted out: Cedar answers such policies, errors and all.
        Mode::None => return,
    };
    let result = Validator::new(schema.clone()).validate(policies, mode);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cedar-edge-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// procfs reports a size of 0 for files that hold text: the size check
    /// passes, and only the bounded read can catch them.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_larger_than_its_reported_size_is_still_capped() {
        let proc_dir = BundleDir::open(Path::new("/proc/self"), 16).unwrap();
        let refused = proc_dir.read("status").unwrap_err();
        assert!(
            refused
                .message
                .contains("larger than the limit of 16 bytes"),
            "{refused}"
        );
        assert!(refused.path.ends_with("status"), "{refused:?}");
        let roomy = BundleDir::open(Path::new("/proc/self"), 1 << 20).unwrap();
        assert!(roomy.read("status").unwrap().contains("Pid:"));
    }

    #[cfg(unix)]
    #[test]
    fn links_are_judged_by_where_they_lead() {
        let top = scratch("links");
        let bundle = top.join("bundle");
        std::fs::create_dir_all(bundle.join("..data")).unwrap();
        std::fs::write(top.join("secret.env"), "TOKEN=do-not-read").unwrap();
        std::fs::write(
            bundle.join("..data/ok.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        std::os::unix::fs::symlink("..data/ok.cedar", bundle.join("ok.cedar")).unwrap();
        // Reached through a link to the bundle: the root is where it leads.
        std::os::unix::fs::symlink("bundle", top.join("current")).unwrap();
        let source = BundleSource::from_dir(&top.join("current")).unwrap();
        assert_eq!(source.policies.len(), 1);
        assert_eq!(source.policies.first().unwrap().path, "ok.cedar");

        std::os::unix::fs::symlink("../secret.env", bundle.join("leak.cedar")).unwrap();
        let refused = BundleSource::from_dir(&bundle).unwrap_err();
        assert!(refused.path.ends_with("leak.cedar"), "{refused:?}");
        assert!(!refused.to_string().contains("do-not-read"), "{refused}");
        std::fs::remove_file(bundle.join("leak.cedar")).unwrap();

        std::os::unix::fs::symlink("..", bundle.join("up")).unwrap();
        let refused = BundleSource::from_dir(&bundle).unwrap_err();
        assert!(refused.path.ends_with("up"), "{refused:?}");
        let _ = std::fs::remove_dir_all(&top);
    }

    /// A ConfigMap mount as the kubelet writes it: each file a link through
    /// `..data`, itself a link to a `..<timestamp>` folder.
    #[cfg(unix)]
    #[test]
    fn a_config_map_mount_loads() {
        let bundle = scratch("config-map");
        let version = bundle.join("..2024_01_01_00_00_00.123456789");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(
            version.join("ok.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        std::fs::write(version.join(ENTITIES_FILE), "[]").unwrap();
        std::os::unix::fs::symlink("..2024_01_01_00_00_00.123456789", bundle.join("..data"))
            .unwrap();
        for name in ["ok.cedar", ENTITIES_FILE] {
            std::os::unix::fs::symlink(format!("..data/{name}"), bundle.join(name)).unwrap();
        }
        let source = BundleSource::from_dir(&bundle).unwrap();
        let paths: Vec<&str> = source.files().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["ok.cedar", ENTITIES_FILE]);
        assert!(Bundle::load(&source, RequestLimits::default()).is_ok());
        let _ = std::fs::remove_dir_all(&bundle);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_hidden_file_inside_the_bundle_is_refused() {
        let bundle = scratch("hidden-link");
        std::fs::create_dir_all(bundle.join(".git")).unwrap();
        std::fs::write(bundle.join(".git/config"), "token = do-not-read").unwrap();
        std::fs::write(bundle.join(".env"), "TOKEN=do-not-read").unwrap();
        std::fs::write(
            bundle.join("ok.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        for (link, target) in [("leak.cedar", ".git/config"), ("env.cedar", ".env")] {
            std::os::unix::fs::symlink(target, bundle.join(link)).unwrap();
            let refused = BundleSource::from_dir(&bundle).unwrap_err();
            assert!(refused.path.ends_with(link), "{refused:?}");
            assert!(
                refused
                    .message
                    .contains(&format!("the hidden path `{target}`")),
                "{refused}"
            );
            assert!(!refused.to_string().contains("do-not-read"), "{refused}");
            std::fs::remove_file(bundle.join(link)).unwrap();
        }
        let _ = std::fs::remove_dir_all(&bundle);
    }
}
