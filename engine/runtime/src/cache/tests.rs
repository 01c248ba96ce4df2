//! The cache's checks, on tiny components that compile in microseconds; the
//! runtime's integration tests (`tests/cache.rs`) repeat the attacks on the
//! real guest and check its decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use wasmtime::{Config, Engine};

use super::*;

/// A private scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("cedar-edge-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .unwrap();
        Self(path)
    }

    fn cache(&self) -> PathBuf {
        self.0.join("cache")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config).unwrap()
}

/// An empty component told apart by a custom section.
fn tiny_component(label: &str) -> Vec<u8> {
    let name = b"cedar-edge-test";
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.push(0);
    bytes.push(u8::try_from(1 + name.len() + label.len()).unwrap());
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend(name);
    bytes.extend(label.as_bytes());
    bytes
}

fn load(engine: &Engine, wasm: &[u8], dir: &Path) -> CacheOutcome {
    load_or_compile(engine, wasm, Some(dir)).unwrap().1
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn assert_stored_fresh(outcome: &CacheOutcome) {
    assert!(
        matches!(
            outcome,
            CacheOutcome::Compiled {
                rejected: None,
                stored: true
            }
        ),
        "{outcome:?}"
    );
}

fn assert_rejected(outcome: &CacheOutcome, expected: fn(&CacheProblem) -> bool) {
    match outcome {
        CacheOutcome::Compiled {
            rejected: Some(problem),
            stored: true,
        } if expected(problem) => {}
        other => panic!("expected a rejected entry that was then rewritten, got {other:?}"),
    }
}

fn unauthenticated(problem: &CacheProblem) -> bool {
    matches!(problem, CacheProblem::Unauthenticated { .. })
}

/// The names in a folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn hmac_matches_rfc_4231() {
    let hex = |key: &[u8], data: &[u8]| cedar_edge_core::hex(&hmac_sha256(key, &[data]));
    assert_eq!(
        hex(&[0x0b; 20], b"Hi There"),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    assert_eq!(
        hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    // Parts are concatenated.
    assert_eq!(
        hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]),
        hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"])
    );
}

#[test]
fn new_folder_is_0700_key_and_entry_0600_and_reused() {
    let scratch = Scratch::new("fresh");
    let dir = scratch.0.join("xdg").join("cedar-edge");
    let (engine, wasm) = (engine(), tiny_component("a"));
    assert_stored_fresh(&load(&engine, &wasm, &dir));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&scratch.0.join("xdg")), 0o700);
    let key = dir.join(KEY_FILE);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(fs::read(&key).unwrap().len(), KEY_LEN);
    let entry = dir.join(entry_name(&engine, &wasm));
    assert_eq!(mode(&entry), 0o600);
    // Only the key and the entry: no temporary file is left behind.
    assert_eq!(
        listing(&dir),
        vec![KEY_FILE.to_owned(), entry_name(&engine, &wasm)]
    );

    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
    // The key is made once.
    assert_eq!(fs::read(&key).unwrap().len(), KEY_LEN);
}

#[test]
fn changed_bytes_are_not_loaded() {
    let scratch = Scratch::new("flip");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    let genuine = fs::read(&entry).unwrap();
    let len = genuine.len();
    // A byte of the artifact, of the tag, and of the format marker.
    for at in [len - 1, len / 2 + HEADER_LEN / 2, MAGIC.len() + 3, 0] {
        let mut patched = genuine.clone();
        *patched.get_mut(at).unwrap() ^= 0x01;
        fs::write(&entry, &patched).unwrap();
        assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
    }
    // Cut short and empty.
    for cut in [genuine.get(..len - 1).unwrap(), &[][..]] {
        fs::write(&entry, cut).unwrap();
        assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
    }
    // Each rejection rewrote the genuine entry.
    assert_eq!(fs::read(&entry).unwrap(), genuine);
    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
}

#[test]
fn another_components_artifact_under_this_name_is_not_loaded() {
    let scratch = Scratch::new("forged");
    let dir = scratch.cache();
    let engine = engine();
    let (wasm, other) = (tiny_component("a"), tiny_component("b"));
    load(&engine, &wasm, &dir);
    load(&engine, &other, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    let other_entry = dir.join(entry_name(&engine, &other));
    assert_ne!(entry, other_entry);

    // A genuine, tagged entry of another component, renamed.
    fs::copy(&other_entry, &entry).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);

    // The bare wasmtime artifact of another component, as the cache held
    // them before entries were authenticated.
    fs::write(&entry, engine.precompile_component(&other).unwrap()).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);

    // An entry tagged with another folder's key.
    let elsewhere = scratch.0.join("elsewhere");
    load(&engine, &wasm, &elsewhere);
    fs::copy(elsewhere.join(entry_name(&engine, &wasm)), &entry).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
}

#[test]
fn a_symlinked_entry_is_not_followed_nor_written_through() {
    let scratch = Scratch::new("symlink");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    // The link leads to a genuine entry, so following it would load.
    let target = scratch.0.join("target.cwasm");
    fs::rename(&entry, &target).unwrap();
    let target_bytes = fs::read(&target).unwrap();
    symlink(&target, &entry).unwrap();

    assert_rejected(&load(&engine, &wasm, &dir), |problem| {
        matches!(problem, CacheProblem::Symlink { .. })
    });
    // The link was replaced, not written through.
    assert!(fs::symlink_metadata(&entry).unwrap().is_file());
    assert_eq!(fs::read(&target).unwrap(), target_bytes);
    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
}

#[test]
fn a_planted_link_at_a_temporary_name_is_not_written_through() {
    let scratch = Scratch::new("temp-link");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    fs::remove_file(&entry).unwrap();
    // Where earlier versions wrote before renaming: `<entry>.partial-<pid>`.
    let victim = scratch.0.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let predictable = entry.with_extension(format!("partial-{}", std::process::id()));
    symlink(&victim, &predictable).unwrap();

    assert_stored_fresh(&load(&engine, &wasm, &dir));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(fs::symlink_metadata(&predictable).unwrap().is_symlink());
    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
}

#[test]
fn a_folder_others_may_write_is_not_used() {
    let scratch = Scratch::new("writable-dir");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let before = listing(&dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    let entry_bytes = fs::read(&entry).unwrap();
    for writable in [0o770, 0o707, 0o777] {
        chmod(&dir, writable);
        match load(&engine, &wasm, &dir) {
            CacheOutcome::Untrusted(CacheProblem::Writable { path }) => assert_eq!(path, dir),
            other => panic!("{writable:o}: {other:?}"),
        }
        // Refused, not repaired, and nothing written.
        assert_eq!(mode(&dir), writable);
        assert_eq!(listing(&dir), before);
        assert_eq!(fs::read(&entry).unwrap(), entry_bytes);
    }
}

#[test]
fn a_folder_others_may_only_read_is_narrowed_and_used() {
    let scratch = Scratch::new("readable-dir");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    chmod(&dir, 0o755);
    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn a_symlinked_folder_is_not_used() {
    let scratch = Scratch::new("linked-dir");
    let real = scratch.0.join("real");
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &real);
    let link = scratch.cache();
    symlink(&real, &link).unwrap();
    assert!(matches!(
        load(&engine, &wasm, &link),
        CacheOutcome::Untrusted(CacheProblem::Symlink { .. })
    ));
}

#[test]
fn an_entry_others_may_write_is_not_trusted() {
    let scratch = Scratch::new("writable-entry");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    for writable in [0o620, 0o602, 0o666] {
        chmod(&entry, writable);
        assert_rejected(&load(&engine, &wasm, &dir), |problem| {
            matches!(problem, CacheProblem::Writable { .. })
        });
        assert_eq!(mode(&entry), 0o600);
    }
}

#[test]
fn files_of_another_user_are_not_trusted() {
    if rustix::process::geteuid().as_raw() != 0 {
        // Only root can give a file away; elsewhere the check is untested.
        return;
    }
    let nobody = 65534;
    let scratch = Scratch::new("owner");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let entry = dir.join(entry_name(&engine, &wasm));
    std::os::unix::fs::chown(&entry, Some(nobody), None).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), |problem| {
        matches!(problem, CacheProblem::NotOwned { .. })
    });
    assert_eq!(fs::metadata(&entry).unwrap().uid(), 0);

    std::os::unix::fs::chown(&dir, Some(nobody), None).unwrap();
    assert!(matches!(
        load(&engine, &wasm, &dir),
        CacheOutcome::Untrusted(CacheProblem::NotOwned { .. })
    ));
}

#[test]
fn a_key_others_may_read_is_replaced() {
    let scratch = Scratch::new("exposed-key");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let key = dir.join(KEY_FILE);
    let old_key = fs::read(&key).unwrap();
    chmod(&key, 0o644);
    // The new key no longer verifies the entry the old one signed.
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
    assert_eq!(mode(&key), 0o600);
    assert_ne!(fs::read(&key).unwrap(), old_key);
    assert!(load(&engine, &wasm, &dir).loaded_from_cache());
}

#[test]
fn a_truncated_or_linked_key_is_replaced() {
    let scratch = Scratch::new("bad-key");
    let dir = scratch.cache();
    let (engine, wasm) = (engine(), tiny_component("a"));
    load(&engine, &wasm, &dir);
    let key = dir.join(KEY_FILE);
    let old_key = fs::read(&key).unwrap();
    fs::write(&key, old_key.get(..KEY_LEN - 1).unwrap()).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
    assert_eq!(fs::read(&key).unwrap().len(), KEY_LEN);

    // A link to a key someone else knows is not used as the key.
    let known = scratch.0.join("known-key");
    fs::write(&known, [7u8; KEY_LEN]).unwrap();
    chmod(&known, 0o600);
    fs::remove_file(&key).unwrap();
    symlink(&known, &key).unwrap();
    assert_rejected(&load(&engine, &wasm, &dir), unauthenticated);
    assert!(fs::symlink_metadata(&key).unwrap().is_file());
    assert_ne!(fs::read(&key).unwrap(), [7u8; KEY_LEN]);
}

#[test]
fn no_folder_means_no_files() {
    let (engine, wasm) = (engine(), tiny_component("a"));
    let (_, outcome) = load_or_compile(&engine, &wasm, None).unwrap();
    assert!(matches!(outcome, CacheOutcome::Disabled));
}
