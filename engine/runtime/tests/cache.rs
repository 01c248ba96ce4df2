//! The precompiled-component cache with the real guest: a second runtime
//! uses an authenticated entry, and a patched or swapped entry is compiled
//! again and decides exactly as the native backend does. The checks one by
//! one (links, modes, owners, the key) are unit tests in `src/cache/tests.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cedar_edge_core::{Backend, NativeBackend, RequestLimits};
use cedar_edge_runtime::{CacheOutcome, CacheProblem, ComponentRuntime, RuntimeConfig};
use common::*;

/// The bytes in front of the wasmtime artifact in an entry: an 8-byte format
/// marker and a 32-byte tag.
const ENTRY_HEADER_LEN: usize = 40;

fn config(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(dir.to_owned()),
        ..RuntimeConfig::default()
    }
}

/// A folder for one test, empty and not yet created.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cache-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

/// A cache folder filled by a first runtime, and the guest's entry in it.
fn seed() -> &'static (PathBuf, PathBuf) {
    static SEED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    SEED.get_or_init(|| {
        let dir = fresh_dir("seed");
        let runtime = ComponentRuntime::new(config(&dir)).unwrap();
        assert!(
            matches!(
                runtime.cache_outcome(),
                CacheOutcome::Compiled {
                    rejected: None,
                    stored: true
                }
            ),
            "{:?}",
            runtime.cache_outcome()
        );
        let entry = entries(&dir)
            .pop()
            .expect("the first runtime stored its entry");
        (dir, entry)
    })
}

/// A copy of the seeded folder, and the guest's entry in it.
fn seeded(name: &str) -> (PathBuf, PathBuf) {
    let (seed_dir, seed_entry) = seed();
    let dir = fresh_dir(name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    for file in fs::read_dir(seed_dir).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), dir.join(file.file_name())).unwrap();
    }
    let entry = dir.join(seed_entry.file_name().unwrap());
    (dir, entry)
}

fn assert_compiled_after_rejecting(runtime: &ComponentRuntime) {
    match runtime.cache_outcome() {
        CacheOutcome::Compiled {
            rejected: Some(CacheProblem::Unauthenticated { .. }),
            stored: true,
        } => {}
        other => panic!("expected the entry to be refused and rewritten, got {other:?}"),
    }
}

/// Decides allows and denies of the example bundle through the runtime and
/// natively, and requires the same responses.
fn assert_decides_like_native(runtime: &ComponentRuntime) {
    let source = example_bundle();
    let component = runtime.load_source(&source).unwrap();
    let native = NativeBackend::load(&source, RequestLimits::default()).unwrap();
    let office = || typed_context(true, "10.1.2.3", 60);
    let requests = [
        allowed_request(),
        airflow_request(
            airflow("User", "bob"),
            "edit",
            airflow("Dag", "etl_daily"),
            office(),
        ),
        airflow_request(
            airflow("User", "carol"),
            "read",
            airflow("Dag", "reporting"),
            office(),
        ),
        airflow_request(
            airflow("User", "carol"),
            "trigger",
            airflow("Dag", "reporting"),
            office(),
        ),
        airflow_request(
            airflow("User", "alice"),
            "edit",
            airflow("Dag", "ml_training"),
            typed_context(true, "10.9.9.9", 7200),
        ),
    ];
    let mut allowed = 0;
    for request in &requests {
        let expected = native.authorize(request).unwrap();
        assert_eq!(component.authorize(request).unwrap(), expected);
        allowed += usize::from(expected.is_allowed());
    }
    assert!(allowed > 0 && allowed < requests.len(), "{allowed} allowed");
}

#[test]
fn a_second_runtime_uses_the_authenticated_entry() {
    let (dir, entry) = seed();
    assert_eq!(fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(dir.join("cache-key")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(entry).unwrap().mode() & 0o777, 0o600);

    let runtime = ComponentRuntime::new(config(dir)).unwrap();
    assert!(
        runtime.cache_outcome().loaded_from_cache(),
        "{:?}",
        runtime.cache_outcome()
    );
    assert_decides_like_native(&runtime);
}

#[test]
fn a_patched_entry_is_compiled_again_and_decides_the_same() {
    let (dir, entry) = seeded("patched");
    let mut bytes = fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    *bytes.get_mut(middle).unwrap() ^= 0x40;
    fs::write(&entry, &bytes).unwrap();

    let runtime = ComponentRuntime::new(config(&dir)).unwrap();
    assert_compiled_after_rejecting(&runtime);
    assert_decides_like_native(&runtime);
    // The rewritten entry serves the next runtime.
    let next = ComponentRuntime::new(config(&dir)).unwrap();
    assert!(next.cache_outcome().loaded_from_cache());
    assert_decides_like_native(&next);
}

#[test]
fn another_components_artifact_under_the_guests_name_is_not_loaded() {
    let (dir, entry) = seeded("swapped");
    // An empty component, told apart by a custom section: it compiles and is
    // stored, then fails to link, since it is no policy engine.
    let mut other = b"\0asm\x0d\0\x01\0".to_vec();
    other.extend([0, 6, 5]);
    other.extend(b"other");
    assert!(ComponentRuntime::with_component(&other, config(&dir)).is_err());
    let other_entry = entries(&dir)
        .into_iter()
        .find(|path| *path != entry)
        .expect("the other component's entry");
    let other_bytes = fs::read(&other_entry).unwrap();

    // Its genuine, tagged entry under the guest's name.
    fs::write(&entry, &other_bytes).unwrap();
    let runtime = ComponentRuntime::new(config(&dir)).unwrap();
    assert_compiled_after_rejecting(&runtime);
    assert_decides_like_native(&runtime);

    // Its bare wasmtime artifact, made with the runtime's own settings, as
    // the cache stored them before entries were authenticated.
    fs::write(&entry, other_bytes.get(ENTRY_HEADER_LEN..).unwrap()).unwrap();
    let runtime = ComponentRuntime::new(config(&dir)).unwrap();
    assert_compiled_after_rejecting(&runtime);
    assert_decides_like_native(&runtime);
}
