//! The on-disk cache of precompiled components.
//!
//! An entry is keyed by the SHA-256 of the component bytes together with
//! wasmtime's compatibility hash of the engine settings, so a new guest, a
//! new wasmtime or a changed setting each get a fresh entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

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

/// Where precompiled components are kept by default: the user's cache folder.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("cedar-edge"))
}

/// Compiles `wasm`, or loads the precompiled artifact from `cache_dir`.
/// A cache that cannot be read or written only costs a compile.
pub(crate) fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm);
    };
    let path = dir.join(format!("cedar-edge-{}.cwasm", cache_key(engine, wasm)));
    if path.is_file() {
        // SAFETY: the file is one this function wrote into the cache folder,
        // under a name derived from the component and the engine settings,
        // and renamed into place only once complete; it is never rewritten in
        // place, so the mapping stays valid. wasmtime still checks its header
        // and version before using it. Mapping it costs about 0.5 ms where
        // reading and copying it costs 13 ms.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &path) };
        if let Ok(component) = cached {
            return Ok(component);
        }
    }
    let precompiled = engine.precompile_component(wasm)?;
    let _ = write_atomically(&path, &precompiled);
    #[allow(unsafe_code)]
    // SAFETY: the bytes were produced just above by this same engine.
    let component = unsafe { Component::deserialize(engine, &precompiled) };
    component
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
