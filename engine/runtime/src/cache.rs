//! The on-disk cache of precompiled components.
//!
//! An entry is keyed by the SHA-256 of the component bytes together with
//! wasmtime's compatibility hash of the engine settings, so a new guest, a
//! new wasmtime or a changed setting each get a fresh entry.
//!
//! wasmtime runs a precompiled artifact as native code without checking it,
//! so whoever can change an entry runs code in every host that loads it. An
//! entry is therefore used only when:
//! - the folder is a real folder (not a symbolic link), owned by the current
//!   user and writable by nobody else; it is created 0700, and a folder of
//!   ours that others may only read is narrowed to 0700;
//! - the entry is opened relative to that folder without following symbolic
//!   links, and is a regular file owned by the user that nobody else may
//!   write;
//! - its HMAC-SHA256 tag, over its name and content, verifies under a random
//!   key kept in the folder (0600, made on first use).
//!
//! The bytes that were verified are the bytes deserialized, so the file
//! cannot change between the check and the use. Anything else compiles in
//! memory; an entry is rewritten only in a folder that passed the checks,
//! through a temporary file with a random name that must not exist yet.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The key file, next to the entries it authenticates.
const KEY_FILE: &str = "cache-key";
const KEY_LEN: usize = 32;
/// Starts every entry; the version byte changes with the format.
const MAGIC: &[u8; 8] = b"cedrcw\x00\x01";
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + TAG_LEN;
/// Mode bits that let someone other than the owner change a file or folder.
const OTHERS_WRITE: u32 = 0o022;
/// Mode bits that give anyone other than the owner any access.
const OTHERS_ANY: u32 = 0o077;

/// Feeds `Hash` output into SHA-256, so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(wasm);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = hasher.0.finalize();
    cedar_edge_core::hex(digest.get(..16).unwrap_or(&digest))
}

/// The name of the entry for `wasm` compiled by `engine`.
fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    format!("cedar-edge-{}.cwasm", cache_key(engine, wasm))
}

/// Where precompiled components are kept by default: the user's cache
/// folder. Relative paths are ignored, as the XDG specification asks, so an
/// empty `HOME` never puts the cache in the working directory.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |path: PathBuf| path.is_absolute().then_some(path);
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .and_then(absolute)
                .map(|home| home.join(".cache"))
        })?;
    Some(base.join("cedar-edge"))
}

/// How a runtime obtained its compiled component.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// No cache folder is configured: compiled in memory.
    Disabled,
    /// The cache folder or its key failed a check: compiled in memory, and
    /// nothing was read from or written to the folder.
    Untrusted(CacheProblem),
    /// Compiled in this process. `rejected` says why an existing entry was
    /// not used (`None` when there was none); `stored` says whether the new
    /// entry was written.
    Compiled {
        /// Why an existing entry was refused.
        rejected: Option<CacheProblem>,
        /// Whether the freshly compiled entry was written to the cache.
        stored: bool,
    },
    /// Deserialized from an entry whose tag verified.
    Loaded,
}

impl CacheOutcome {
    /// Whether the component came from the cache rather than a compile.
    pub fn loaded_from_cache(&self) -> bool {
        matches!(self, Self::Loaded)
    }
}

/// Why the cache, or one entry of it, was not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheProblem {
    /// A file or folder could not be opened, read or written.
    #[error("cannot use `{}`: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A symbolic link stands where a file or folder was expected.
    #[error("`{}` is a symbolic link", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A folder stands where a file was expected, or the other way round,
    /// or something that is neither.
    #[error("`{}` is not a regular {expected}", path.display())]
    WrongKind {
        /// The path.
        path: PathBuf,
        /// `file` or `folder`.
        expected: &'static str,
    },
    /// Owned by another user.
    #[error("`{}` is not owned by the current user", path.display())]
    NotOwned {
        /// The file or folder.
        path: PathBuf,
    },
    /// Group or others may write to it.
    #[error("`{}` is writable by group or others", path.display())]
    Writable {
        /// The file or folder.
        path: PathBuf,
    },
    /// The key file may be read by group or others.
    #[error("`{}` is readable by group or others", path.display())]
    Readable {
        /// The key file.
        path: PathBuf,
    },
    /// The key file does not hold a key.
    #[error("`{}` does not hold a 32-byte key", path.display())]
    MalformedKey {
        /// The key file.
        path: PathBuf,
    },
    /// The entry's tag is missing or does not match its name and content.
    #[error("`{}` fails its authentication check", path.display())]
    Unauthenticated {
        /// The entry.
        path: PathBuf,
    },
    /// The entry verified, but wasmtime refused it.
    #[error("wasmtime refused `{}`: {reason}", path.display())]
    Refused {
        /// The entry.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
}

/// Compiles `wasm`, or loads its precompiled artifact from `cache_dir` when
/// the checks in the module documentation pass. A cache that cannot be used
/// only costs a compile.
pub(crate) fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheOutcome)> {
    let Some(dir_path) = cache_dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
    };
    let cache = match CacheDir::open(dir_path) {
        Ok(cache) => cache,
        Err(problem) => {
            tracing::warn!(%problem, "not using the component cache; compiling in memory");
            return Ok((
                Component::new(engine, wasm)?,
                CacheOutcome::Untrusted(problem),
            ));
        }
    };
    let name = entry_name(engine, wasm);
    let rejected = match cache.read_entry(&name) {
        Ok(None) => None,
        Ok(Some(entry)) => match deserialize(engine, entry.artifact()) {
            Ok(component) => return Ok((component, CacheOutcome::Loaded)),
            Err(err) => Some(CacheProblem::Refused {
                path: cache.path.join(&name),
                reason: format!("{err:#}"),
            }),
        },
        Err(problem) => Some(problem),
    };
    if let Some(problem) = &rejected {
        tracing::warn!(%problem, "ignoring a cached component; compiling it again");
    }
    let precompiled = engine.precompile_component(wasm)?;
    let stored = match cache.write_entry(&name, &precompiled) {
        Ok(()) => true,
        Err(problem) => {
            tracing::warn!(%problem, "cannot store the compiled component");
            false
        }
    };
    let component = deserialize(engine, Precompiled(&precompiled))?;
    Ok((component, CacheOutcome::Compiled { rejected, stored }))
}

/// Bytes known to come from `Engine::precompile_component` under settings
/// compatible with the engine at hand: made by this process, or read back
/// from an entry whose tag this process verified with the cache key.
#[derive(Clone, Copy)]
struct Precompiled<'a>(&'a [u8]);

fn deserialize(engine: &Engine, precompiled: Precompiled<'_>) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires bytes that its own `precompile_component`
    // produced. `Precompiled` holds only such bytes: produced here, or read
    // from an entry in a folder only this user may write, authenticated by
    // a key only this user may read, under a tag that covers the entry's
    // name (the component's hash and the engine settings). They are in
    // memory, so nothing can change them after the check; wasmtime also
    // checks the header and the settings itself.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, precompiled.0) };
    component
}

/// An entry read from the cache whose tag verified.
struct Entry {
    bytes: Vec<u8>,
}

impl Entry {
    fn artifact(&self) -> Precompiled<'_> {
        Precompiled(self.bytes.get(HEADER_LEN..).unwrap_or_default())
    }
}

/// The cache folder, open and checked, with its key.
struct CacheDir {
    path: PathBuf,
    dir: File,
    key: [u8; KEY_LEN],
}

impl CacheDir {
    /// Creates the folder if needed, then opens and checks it and reads or
    /// makes its key.
    fn open(path: &Path) -> Result<Self, CacheProblem> {
        let io_problem = |source: io::Error| CacheProblem::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_problem)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            // Linux says "not a directory" for a link opened this way.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)
                if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_symlink()) =>
            {
                return Err(CacheProblem::Symlink {
                    path: path.to_owned(),
                });
            }
            Err(errno) => return Err(io_problem(errno.into())),
        };
        let metadata = dir.metadata().map_err(io_problem)?;
        if !metadata.is_dir() {
            return Err(CacheProblem::WrongKind {
                path: path.to_owned(),
                expected: "folder",
            });
        }
        check_owner_and_writers(path, &metadata)?;
        if metadata.mode() & OTHERS_ANY != 0 {
            // Only the owner could ever write here, so what is inside is
            // ours: narrowing the mode is enough (folders made before 0700
            // was enforced were 0755).
            dir.set_permissions(std::fs::Permissions::from_mode(0o700))
                .map_err(io_problem)?;
        }
        let key = read_or_make_key(&dir, path)?;
        Ok(Self {
            path: path.to_owned(),
            dir,
            key,
        })
    }

    /// Reads and authenticates the entry `name`; `None` when there is none.
    fn read_entry(&self, name: &str) -> Result<Option<Entry>, CacheProblem> {
        let path = self.path.join(name);
        let Some((mut file, metadata)) = open_checked(&self.dir, &path, name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|source| CacheProblem::Io {
                path: path.clone(),
                source,
            })?;
        let authentic = bytes
            .strip_prefix(MAGIC.as_slice())
            .and_then(|rest| rest.split_first_chunk::<TAG_LEN>())
            .is_some_and(|(tag, artifact)| {
                constant_time_eq(tag, &entry_tag(&self.key, name, artifact))
            });
        if !authentic {
            return Err(CacheProblem::Unauthenticated { path });
        }
        Ok(Some(Entry { bytes }))
    }

    /// Writes the entry `name` with its tag, replacing any entry or link of
    /// that name.
    fn write_entry(&self, name: &str, artifact: &[u8]) -> Result<(), CacheProblem> {
        let tag = entry_tag(&self.key, name, artifact);
        publish(&self.dir, name, &[MAGIC, &tag, artifact], Publish::Replace).map_err(|source| {
            CacheProblem::Io {
                path: self.path.join(name),
                source,
            }
        })
    }
}

/// Opens `name` in `dir` without following a link, and checks that it is a
/// regular file of this user that nobody else may write. `None` when it
/// does not exist.
fn open_checked(
    dir: &File,
    path: &Path,
    name: &str,
) -> Result<Option<(File, std::fs::Metadata)>, CacheProblem> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(CacheProblem::Symlink {
                path: path.to_owned(),
            });
        }
        Err(errno) => {
            return Err(CacheProblem::Io {
                path: path.to_owned(),
                source: errno.into(),
            });
        }
    };
    let metadata = file.metadata().map_err(|source| CacheProblem::Io {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(CacheProblem::WrongKind {
            path: path.to_owned(),
            expected: "file",
        });
    }
    check_owner_and_writers(path, &metadata)?;
    Ok(Some((file, metadata)))
}

fn check_owner_and_writers(path: &Path, metadata: &std::fs::Metadata) -> Result<(), CacheProblem> {
    if metadata.uid() != rustix::process::geteuid().as_raw() {
        return Err(CacheProblem::NotOwned {
            path: path.to_owned(),
        });
    }
    if metadata.mode() & OTHERS_WRITE != 0 {
        return Err(CacheProblem::Writable {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Reads the folder's key, or makes one. A key file that fails a check is
/// replaced, which only costs recompiling the entries it signed.
fn read_or_make_key(dir: &File, dir_path: &Path) -> Result<[u8; KEY_LEN], CacheProblem> {
    let path = dir_path.join(KEY_FILE);
    let io_problem = |source: io::Error| CacheProblem::Io {
        path: path.clone(),
        source,
    };
    match read_key(dir, &path) {
        Ok(Some(key)) => return Ok(key),
        Ok(None) => {
            let key = random_bytes::<KEY_LEN>().map_err(io_problem)?;
            // Linked, not renamed, into place: when two processes start
            // together, the first key wins and the second reads it.
            return match publish(dir, KEY_FILE, &[&key], Publish::IfAbsent) {
                Ok(()) => Ok(key),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    read_key(dir, &path)?.ok_or_else(|| io_problem(io::ErrorKind::NotFound.into()))
                }
                Err(err) => Err(io_problem(err)),
            };
        }
        Err(problem @ CacheProblem::Io { .. }) => return Err(problem),
        Err(problem) => {
            tracing::warn!(%problem, "replacing the component cache key");
        }
    }
    let key = random_bytes::<KEY_LEN>().map_err(io_problem)?;
    publish(dir, KEY_FILE, &[&key], Publish::Replace).map_err(io_problem)?;
    Ok(key)
}

fn read_key(dir: &File, path: &Path) -> Result<Option<[u8; KEY_LEN]>, CacheProblem> {
    let Some((file, metadata)) = open_checked(dir, path, KEY_FILE)? else {
        return Ok(None);
    };
    if metadata.mode() & OTHERS_ANY != 0 {
        return Err(CacheProblem::Readable {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    // One byte more than a key, to notice a longer file.
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CacheProblem::Io {
            path: path.to_owned(),
            source,
        })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map(Some)
        .map_err(|_| CacheProblem::MalformedKey {
            path: path.to_owned(),
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Atomically replace whatever has the name, links included.
    Replace,
    /// Fail with `AlreadyExists` if the name is taken.
    IfAbsent,
}

/// Writes `parts` to a new 0600 file with a random name in `dir`, then
/// moves it to `name`. The temporary name cannot be guessed in advance, and
/// creating it fails rather than follows anything already there.
fn publish(dir: &File, name: &str, parts: &[&[u8]], mode: Publish) -> io::Result<()> {
    let temp = format!(
        ".tmp-{}.partial",
        cedar_edge_core::hex(&random_bytes::<16>()?)
    );
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::openat(
        dir,
        &temp,
        flags,
        Mode::RUSR | Mode::WUSR,
    )?);
    let written = parts.iter().try_for_each(|part| file.write_all(part));
    drop(file);
    let placed = written.and_then(|()| match mode {
        Publish::Replace => rustix::fs::renameat(dir, &temp, dir, name).map_err(io::Error::from),
        Publish::IfAbsent => {
            rustix::fs::linkat(dir, &temp, dir, name, AtFlags::empty()).map_err(io::Error::from)
        }
    });
    // A renamed file no longer has the temporary name; anything else leaves
    // it behind.
    if mode == Publish::IfAbsent || placed.is_err() {
        let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
    }
    placed
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes)
}

/// The tag of an entry: it binds the content to the name, which carries the
/// component's hash and the engine settings, so a genuine entry for another
/// component or another wasmtime does not verify under this name.
fn entry_tag(key: &[u8; KEY_LEN], name: &str, artifact: &[u8]) -> [u8; TAG_LEN] {
    hmac_sha256(key, &[MAGIC, name.as_bytes(), b"\n", artifact])
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    let hashed;
    let key = if key.len() > BLOCK {
        hashed = Sha256::digest(key);
        hashed.as_slice()
    } else {
        key
    };
    for (slot, byte) in block.iter_mut().zip(key) {
        *slot = *byte;
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|byte| byte ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|byte| byte ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a forged tag was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
