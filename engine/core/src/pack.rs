//! Packed bundles: one deterministic tar per bundle, whose SHA-256 is the
//! bundle id.
//!
//! A packed bundle is a POSIX ustar archive: `manifest.json` first, then
//! every bundle file in the manifest's order (policies sorted by path, the
//! schema, entities, template links). Every header has mode 0644, owner 0,
//! time 0 and no user names, and the archive ends with two zero blocks, so
//! the same files always give the same bytes. A directory is hashed by
//! packing it in memory: loading the directory and loading its packed file
//! give one id. A packed file is read back only when it is byte for byte
//! what packing its own contents gives, so no archive can carry anything
//! the id does not cover.

use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{BundleFile, BundleSource, ENTITIES_FILE, TEMPLATE_LINKS_FILE, hex};

/// The name of the manifest inside a packed bundle.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The one format this build reads and writes.
pub const FORMAT: &str = "cedar-edge.bundle.v1";
/// The optional settings file of a bundle directory: its validation mode.
pub const SETTINGS_FILE: &str = "bundle.json";
/// Most files in one packed bundle.
const MAX_ENTRIES: usize = 100_000;

const BLOCK: usize = 512;

/// How a bundle's policies are checked against its schema before serving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    /// Cedar's strict validator: the default, and the only mode that needs
    /// no opt-in.
    #[default]
    Strict,
    /// Cedar's permissive validator, which accepts some ill-typed
    /// expressions strict mode refuses.
    Permissive,
    /// No policy validation: the schema still types entities and requests,
    /// and Cedar answers ill-typed policies as it does without a validator.
    None,
}

impl ValidationMode {
    /// The spelling used in manifests and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for ValidationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bundle says about itself beyond its files; part of its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSettings {
    /// How policies are validated.
    pub validation: ValidationMode,
    /// The Cedar version recorded by the packer, when the bundle was read
    /// from a packed file made by another build; `None` means this build's.
    pub cedar_version: Option<String>,
}

/// The settings file of a bundle directory, as its owner writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsFile {
    #[serde(default)]
    pub(crate) validation: ValidationMode,
}

/// The Cedar version this build decides with.
pub fn cedar_version() -> String {
    cedar_policy::get_sdk_version().to_string()
}

/// What a bundle file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// Cedar policies and templates.
    Policy,
    /// The schema, in Cedar or JSON syntax.
    Schema,
    /// Static entities.
    Entities,
    /// Template links.
    TemplateLinks,
}

impl FileRole {
    /// The role a bundle directory gives a file by its path, if any: the
    /// one rule both for reading directories and for checking manifests.
    pub fn of_path(relative: &str) -> Option<Self> {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        if name.ends_with(".cedar") {
            Some(Self::Policy)
        } else if name.ends_with(".cedarschema") || name.ends_with(".cedarschema.json") {
            Some(Self::Schema)
        } else if relative == ENTITIES_FILE {
            Some(Self::Entities)
        } else if relative == TEMPLATE_LINKS_FILE {
            Some(Self::TemplateLinks)
        } else {
            None
        }
    }
}

/// The manifest of a packed bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The Cedar version the bundle was packed and checked with.
    pub cedar_version: String,
    /// How its policies are validated.
    pub validation: ValidationMode,
    /// Every file, in archive order.
    pub files: Vec<ManifestFile>,
}

/// One file listed in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// The path in the bundle, with `/` separators.
    pub path: String,
    /// What the file is for.
    pub role: FileRole,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 of its contents, 64 hex digits.
    pub sha256: String,
}

/// A bundle that cannot be packed, or a packed bundle that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PackError {
    /// What is wrong, naming the file or entry at fault.
    pub message: String,
}

impl PackError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl BundleSource {
    /// The files with their roles, in archive order: policies sorted by
    /// path (byte order, as a directory lists them), so that the same files
    /// give the same bytes however they were gathered.
    fn files_with_roles(&self) -> impl Iterator<Item = (FileRole, &BundleFile)> {
        let mut policies: Vec<&BundleFile> = self.policies.iter().collect();
        policies.sort_by(|a, b| a.path.cmp(&b.path));
        policies
            .into_iter()
            .map(|file| (FileRole::Policy, file))
            .chain(self.schema.iter().map(|file| (FileRole::Schema, file)))
            .chain(self.entities.iter().map(|file| (FileRole::Entities, file)))
            .chain(
                self.template_links
                    .iter()
                    .map(|file| (FileRole::TemplateLinks, file)),
            )
    }

    /// The manifest that packing this bundle writes.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            format: FORMAT.to_owned(),
            cedar_version: self
                .settings
                .cedar_version
                .clone()
                .unwrap_or_else(cedar_version),
            validation: self.settings.validation,
            files: self
                .files_with_roles()
                .map(|(role, file)| ManifestFile {
                    path: file.path.clone(),
                    role,
                    size: file.contents.len() as u64,
                    sha256: hex(&Sha256::digest(file.contents.as_bytes())),
                })
                .collect(),
        }
    }

    /// Writes the packed form of the bundle.
    pub fn write_packed(&self, out: &mut impl Write) -> Result<(), PackError> {
        let manifest = self.manifest();
        let mut manifest_text = serde_json::to_string_pretty(&manifest)
            .map_err(|err| PackError::new(format!("cannot write the manifest: {err}")))?;
        manifest_text.push('\n');
        write_entry(out, MANIFEST_PATH, manifest_text.as_bytes())?;
        for (_, file) in self.files_with_roles() {
            write_entry(out, &file.path, file.contents.as_bytes())?;
        }
        out.write_all(&[0; 2 * BLOCK]).map_err(write_error)
    }

    /// The packed form of the bundle, as `cedar-edge pack` writes it.
    pub fn pack(&self) -> Result<Vec<u8>, PackError> {
        let mut out = Vec::new();
        self.write_packed(&mut out)?;
        Ok(out)
    }

    /// The bundle id: `sha256:` and the 64 hex digits of the SHA-256 of the
    /// packed form, computed without holding the archive.
    pub fn content_hash(&self) -> Result<String, PackError> {
        let mut hasher = HashWriter(Sha256::new());
        self.write_packed(&mut hasher)?;
        Ok(format!("sha256:{}", hex(&hasher.0.finalize())))
    }

    /// Reads a packed bundle, refusing anything that is not exactly what
    /// [`pack`](Self::pack) writes for its own contents. Each file is at
    /// most `max_file_bytes` long.
    pub fn from_packed(bytes: &[u8], max_file_bytes: u64) -> Result<Self, PackError> {
        let entries = read_entries(bytes, max_file_bytes)?;
        let mut entries = entries.into_iter();
        let Some((first_path, manifest_bytes)) = entries.next() else {
            return Err(PackError::new("the archive is empty"));
        };
        if first_path != MANIFEST_PATH {
            return Err(PackError::new(format!(
                "not a cedar-edge bundle: the first entry is `{first_path}`, not `{MANIFEST_PATH}`"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(manifest_bytes)
            .map_err(|err| PackError::new(format!("`{MANIFEST_PATH}`: {err}")))?;
        if manifest.format != FORMAT {
            return Err(PackError::new(format!(
                "`{MANIFEST_PATH}`: format `{}` is not one this build reads (`{FORMAT}`)",
                manifest.format
            )));
        }
        let mut source = Self {
            settings: BundleSettings {
                validation: manifest.validation,
                cedar_version: (manifest.cedar_version != cedar_version())
                    .then(|| manifest.cedar_version.clone()),
            },
            ..Self::default()
        };
        let mut listed = manifest.files.iter();
        for (path, contents) in entries {
            let path = path.as_str();
            let Some(listing) = listed.next() else {
                return Err(PackError::new(format!(
                    "`{path}` is in the archive but not in `{MANIFEST_PATH}`"
                )));
            };
            if listing.path != path {
                return Err(PackError::new(format!(
                    "`{path}` is in the archive where `{MANIFEST_PATH}` lists `{}`",
                    listing.path
                )));
            }
            if listing.size != contents.len() as u64
                || listing.sha256 != hex(&Sha256::digest(contents))
            {
                return Err(PackError::new(format!(
                    "`{path}` does not match its size and SHA-256 in `{MANIFEST_PATH}`: changed after packing"
                )));
            }
            if FileRole::of_path(path) != Some(listing.role) {
                return Err(PackError::new(format!(
                    "`{path}`: the manifest gives it the role `{:?}`, which its name does not have",
                    listing.role
                )));
            }
            let contents = String::from_utf8(contents.to_vec())
                .map_err(|_| PackError::new(format!("`{path}` is not UTF-8 text")))?;
            let file = BundleFile {
                path: path.to_owned(),
                contents,
            };
            let slot = match listing.role {
                FileRole::Policy => {
                    // Packing sorts them; another order fails the
                    // canonical-form check below.
                    source.policies.push(file);
                    continue;
                }
                FileRole::Schema => &mut source.schema,
                FileRole::Entities => &mut source.entities,
                FileRole::TemplateLinks => &mut source.template_links,
            };
            if let Some(first) = slot {
                return Err(PackError::new(format!(
                    "`{path}`: a bundle holds one such file, and `{}` is already one",
                    first.path
                )));
            }
            *slot = Some(file);
        }
        if let Some(missing) = listed.next() {
            return Err(PackError::new(format!(
                "`{}` is listed in `{MANIFEST_PATH}` but not in the archive",
                missing.path
            )));
        }
        if source.policies.is_empty() {
            return Err(PackError::new("no `*.cedar` policy file in the bundle"));
        }
        if source.pack()? != bytes {
            return Err(PackError::new(
                "the archive is not in the canonical form `cedar-edge pack` writes (order, headers or padding differ); pack it again",
            ));
        }
        Ok(source)
    }
}

/// The bundle id of a packed bundle's bytes: `sha256:` and 64 hex digits,
/// what [`BundleSource::content_hash`] computes without the archive.
pub fn packed_id(packed: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(packed)))
}

/// Whether `bytes` start like a packed bundle rather than a directory's
/// file: a ustar header naming the manifest.
pub fn looks_packed(bytes: &[u8]) -> bool {
    bytes.get(257..263) == Some(b"ustar\0")
        && bytes.get(..MANIFEST_PATH.len()) == Some(MANIFEST_PATH.as_bytes())
}

fn write_error(err: std::io::Error) -> PackError {
    PackError::new(format!("cannot write the archive: {err}"))
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `text` left-aligned into the field at `at` of a header.
fn put(header: &mut [u8; BLOCK], at: usize, text: &[u8]) {
    if let Some(field) = header.get_mut(at..at + text.len()) {
        field.copy_from_slice(text);
    }
}

/// Splits a path into ustar's `prefix` (155 bytes) and `name` (100 bytes).
fn split_name(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.char_indices()
        .filter(|&(_, c)| c == '/')
        .filter_map(|(at, _)| Some((path.get(..at)?, path.get(at + 1..)?)))
        .find(|(prefix, name)| prefix.len() <= 155 && !name.is_empty() && name.len() <= 100)
}

fn write_entry(out: &mut impl Write, path: &str, contents: &[u8]) -> Result<(), PackError> {
    let (prefix, name) = split_name(path).ok_or_else(|| {
        PackError::new(format!(
            "`{path}`: the path is too long to pack (at most 100 bytes after a folder of at most 155)"
        ))
    })?;
    let mut header = [0u8; BLOCK];
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000644\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", contents.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 148, b"        ");
    put(&mut header, 156, b"0");
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    put(&mut header, 345, prefix.as_bytes());
    let checksum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    put(&mut header, 148, format!("{checksum:06o}\0 ").as_bytes());
    out.write_all(&header).map_err(write_error)?;
    out.write_all(contents).map_err(write_error)?;
    out.write_all(&vec![0; padding(contents.len())])
        .map_err(write_error)
}

fn padding(len: usize) -> usize {
    (BLOCK - len % BLOCK) % BLOCK
}

/// The text of a NUL-terminated header field.
fn field(header: &[u8], at: usize, len: usize) -> &[u8] {
    let bytes = header.get(at..at + len).unwrap_or_default();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or_default()
}

fn octal(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.trim_matches([' ', '\0']);
    u64::from_str_radix(text, 8).ok()
}

/// Splits a ustar archive into (path, contents), checking each header.
/// The canonical-form check after parsing catches every other difference.
fn read_entries(bytes: &[u8], max_file_bytes: u64) -> Result<Vec<(String, &[u8])>, PackError> {
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0usize;
    loop {
        let at = |what: &str| PackError::new(format!("entry {}: {what}", entries.len() + 1));
        let header = bytes
            .get(offset..offset + BLOCK)
            .ok_or_else(|| at("the archive ends inside a header"))?;
        if header.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        if entries.len() == MAX_ENTRIES {
            return Err(PackError::new(format!(
                "more than {MAX_ENTRIES} files in the archive"
            )));
        }
        let recorded = octal(header.get(148..156).unwrap_or_default())
            .ok_or_else(|| at("unreadable header checksum"))?;
        let computed: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if recorded != computed {
            return Err(at("header checksum mismatch"));
        }
        if header.get(257..263) != Some(b"ustar\0") || header.get(156) != Some(&b'0') {
            return Err(at("only plain files in a ustar archive are read"));
        }
        let name =
            std::str::from_utf8(field(header, 0, 100)).map_err(|_| at("the name is not UTF-8"))?;
        let prefix = std::str::from_utf8(field(header, 345, 155))
            .map_err(|_| at("the name is not UTF-8"))?;
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        check_path(&path)?;
        let size =
            octal(header.get(124..136).unwrap_or_default()).ok_or_else(|| at("unreadable size"))?;
        if size > max_file_bytes {
            return Err(PackError::new(format!(
                "`{path}` is {size} bytes, over the cap of {max_file_bytes}"
            )));
        }
        let start = offset + BLOCK;
        let size = usize::try_from(size).map_err(|_| at("size out of range"))?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| at("size out of range"))?;
        let contents = bytes
            .get(start..end)
            .ok_or_else(|| PackError::new(format!("`{path}`: the archive ends inside it")))?;
        if !seen.insert(path.clone()) {
            return Err(PackError::new(format!("`{path}` is in the archive twice")));
        }
        entries.push((path, contents));
        offset = end + padding(size);
    }
}

/// A path as a bundle directory could hold it: relative, `/`-separated,
/// no empty, `.`, `..` or hidden parts, not under a skipped folder.
fn check_path(path: &str) -> Result<(), PackError> {
    let bad = |why: &str| Err(PackError::new(format!("`{path}`: {why}")));
    if path.is_empty() || path.contains(['\\', '\0']) {
        return bad("not a bundle path");
    }
    for part in path.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return bad("absolute, empty, hidden or `..` parts are not bundle paths");
        }
    }
    if path.starts_with("tests/") {
        return bad("`tests/` holds test suites, never bundle files");
    }
    Ok(())
}
