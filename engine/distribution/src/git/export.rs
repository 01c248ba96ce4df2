//! Writing a `git archive` stream out as plain files.
//!
//! Only folders and regular files are written. A symbolic link is refused
//! rather than written, wherever it points: a bundle read from Git is a set
//! of plain files, and a link could reach files of the gateway's host.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// An entry of the archive that cannot be written out.
#[derive(Debug)]
pub(super) struct ExportError {
    /// The entry's path inside the archive (empty for the archive itself).
    pub(super) path: String,
    pub(super) reason: String,
}

impl ExportError {
    fn new(path: &str, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Writes the archive's folders and files below `dest`, which exists and is
/// empty. Stops at the first entry that is not a plain file or folder, or
/// whose path is not a plain relative one.
pub(super) fn unpack(archive: &[u8], dest: &Path) -> Result<(), ExportError> {
    let mut archive = tar::Archive::new(archive);
    let entries = archive
        .entries()
        .map_err(|err| ExportError::new("", format!("unreadable archive: {err}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|err| ExportError::new("", format!("unreadable archive: {err}")))?;
        let kind = entry.header().entry_type();
        // `git archive` of a commit records the commit id here; nothing to write.
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|err| ExportError::new("", format!("unreadable entry name: {err}")))?
            .into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let relative = plain_relative(&raw)
            .ok_or_else(|| ExportError::new(&shown, "path is not a plain relative path"))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        let written = match kind {
            EntryType::Directory => fs::create_dir_all(&target),
            EntryType::Regular | EntryType::Continuous => write_file(&mut entry, &target),
            EntryType::Symlink => {
                let pointee = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|link| link.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(ExportError::new(
                    &shown,
                    format!(
                        "is a symbolic link (to `{pointee}`); a bundle from git must hold plain files only"
                    ),
                ));
            }
            other => {
                return Err(ExportError::new(
                    &shown,
                    format!("is neither a file nor a folder ({other:?})"),
                ));
            }
        };
        written.map_err(|err| ExportError::new(&shown, format!("cannot write: {err}")))?;
    }
    Ok(())
}

/// `path` with `.` components dropped, or `None` if any component is
/// `..`, a root or a prefix.
fn plain_relative(path: &Path) -> Option<PathBuf> {
    let mut plain = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => plain.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(plain)
}

/// Writes a new file: never over an existing one, so a name repeated in the
/// archive is an error rather than a silent replacement.
fn write_file(contents: &mut impl io::Read, target: &Path) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)?;
    io::copy(contents, &mut file)?;
    Ok(())
}
