//! Packed bundles: deterministic bytes, one id for a directory and its
//! packed file, and refusal of every archive that is not exactly what
//! packing writes.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cedar_edge_core::{
    Bundle, BundleFile, BundleSource, ContextInput, DEFAULT_MAX_FILE_BYTES, Decision, EntityUid,
    Manifest, Request, RequestLimits, ValidationMode, hex,
};
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example() -> BundleSource {
    BundleSource::from_dir(&repo().join("policies/airflow-gitlab")).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pack-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unpack(bytes: &[u8]) -> Result<BundleSource, String> {
    BundleSource::from_packed(bytes, DEFAULT_MAX_FILE_BYTES).map_err(|err| err.message)
}

#[test]
fn packing_is_deterministic_and_its_digest_is_the_bundle_id() {
    let packed = example().pack().unwrap();
    assert_eq!(example().pack().unwrap(), packed, "same files, same bytes");
    let digest = format!("sha256:{}", hex(&Sha256::digest(&packed)));
    assert_eq!(example().content_hash().unwrap(), digest);
    let bundle = Bundle::load(&example(), RequestLimits::default()).unwrap();
    assert_eq!(bundle.id(), digest);

    // The packed file, read back, is the same bundle with the same id.
    let dir = scratch("identity");
    let file = dir.join("airflow.tar");
    std::fs::write(&file, &packed).unwrap();
    let reread = BundleSource::open(&file, DEFAULT_MAX_FILE_BYTES).unwrap();
    assert_eq!(reread, example());
    assert_eq!(
        Bundle::load(&reread, RequestLimits::default())
            .unwrap()
            .id(),
        digest
    );
}

#[test]
fn the_manifest_records_format_roles_validation_and_cedar_version() {
    let packed = example().pack().unwrap();
    let dir = scratch("manifest");
    let file = dir.join("bundle.tar");
    std::fs::write(&file, &packed).unwrap();
    // GNU tar reads it: a plain ustar archive, nothing private.
    let listing = Command::new("tar")
        .args(["-tvf"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "deploy.cedar",
            "roles.cedar",
            "airflow.cedarschema",
            "entities.json",
            "template-links.json"
        ]
    );
    assert!(
        listing.lines().all(|line| line.contains("1970-01-01")),
        "{listing}"
    );
    let manifest = Command::new("tar")
        .args(["-xOf"])
        .arg(&file)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: Manifest = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest.format, "cedar-edge.bundle.v1");
    assert_eq!(manifest.validation, ValidationMode::Strict);
    assert_eq!(
        manifest.cedar_version,
        cedar_policy::get_sdk_version().to_string()
    );
    let schema = manifest
        .files
        .iter()
        .find(|file| file.path == "airflow.cedarschema")
        .unwrap();
    let text = std::fs::read(repo().join("policies/airflow-gitlab/airflow.cedarschema")).unwrap();
    assert_eq!(schema.sha256, hex(&Sha256::digest(&text)));
    assert_eq!(schema.size, text.len() as u64);
    assert_eq!(
        serde_json::to_value(schema.role).unwrap(),
        serde_json::json!("schema")
    );
}

#[test]
fn any_changed_byte_changes_the_id_or_is_refused() {
    let packed = example().pack().unwrap();
    let original = unpack(&packed).unwrap();
    // Every byte of the archive, flipped in turn: the archive is refused,
    // or (a label such as the Cedar version) read back as a bundle whose id
    // is the digest of the changed bytes. Nothing escapes the id.
    let mut refused = 0;
    for at in (0..packed.len()).step_by(7) {
        let mut tampered = packed.clone();
        tampered[at] ^= 0x01;
        match unpack(&tampered) {
            Err(_) => refused += 1,
            Ok(source) => {
                assert_ne!(source, original, "byte {at}");
                assert_eq!(
                    source.content_hash().unwrap(),
                    format!("sha256:{}", hex(&Sha256::digest(&tampered))),
                    "byte {at}"
                );
            }
        }
    }
    assert!(refused > packed.len() / 7 - 10, "{refused}");
}

#[test]
fn a_changed_file_is_named() {
    let mut packed = example().pack().unwrap();
    let needle = b"permit";
    let at = packed
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap();
    packed[at] = b'P';
    let err = unpack(&packed).unwrap_err();
    assert!(
        err.contains("`deploy.cedar`") && err.contains("changed after packing"),
        "{err}"
    );
}

/// Appends one entry to a canonical archive by packing a bigger bundle and
/// patching the manifest out of sync: a file the manifest does not list.
#[test]
fn archives_that_are_not_canonical_are_refused() {
    let packed = example().pack().unwrap();

    // Trailing data after the end blocks.
    let mut trailing = packed.clone();
    trailing.extend_from_slice(&[0; 512]);
    let err = unpack(&trailing).unwrap_err();
    assert!(err.contains("canonical form"), "{err}");

    // The same files with a different mtime in one header, checksum fixed.
    let mut retimed = packed.clone();
    retimed[136..147].copy_from_slice(b"14000000000");
    fix_checksum(&mut retimed[..512]);
    let err = unpack(&retimed).unwrap_err();
    assert!(err.contains("canonical form"), "{err}");

    // Truncated inside a file.
    let err = unpack(&packed[..packed.len() - 2048]).unwrap_err();
    assert!(err.contains("ends inside"), "{err}");

    // Not an archive at all.
    let err = unpack(b"permit (principal, action, resource);").unwrap_err();
    assert!(err.contains("ends inside a header"), "{err}");
}

#[test]
fn policy_order_does_not_change_the_id_and_an_unsorted_archive_is_refused() {
    let file = |path: &str| BundleFile {
        path: path.to_owned(),
        contents: format!("@id(\"{path}\") permit (principal, action, resource);"),
    };
    let sorted = BundleSource {
        policies: vec![file("a.cedar"), file("b.cedar")],
        ..BundleSource::default()
    };
    let reversed = BundleSource {
        policies: vec![file("b.cedar"), file("a.cedar")],
        ..BundleSource::default()
    };
    assert_eq!(sorted.pack().unwrap(), reversed.pack().unwrap());
    // The two policy entries swapped, and their manifest listings with
    // them (same lengths, so no header changes): every file matches its
    // listing, yet it is not what packing writes.
    let packed = sorted.pack().unwrap();
    let entry_len = |at: usize| {
        let size =
            usize::from_str_radix(std::str::from_utf8(&packed[at + 124..at + 135]).unwrap(), 8)
                .unwrap();
        512 + size.div_ceil(512) * 512
    };
    let a = entry_len(0);
    let b = a + entry_len(a);
    let end = b + entry_len(b);
    let manifest_text = std::str::from_utf8(&packed[512..a]).unwrap();
    let manifest: Manifest =
        serde_json::from_str(manifest_text.trim_end_matches('\0').trim_end()).unwrap();
    let listing = |index: usize| serde_json::to_string_pretty(&manifest.files[index]).unwrap();
    let (first, second) = (listing(0), listing(1));
    let indent = |text: &str| text.replace('\n', "\n    ");
    let swapped_text = manifest_text
        .replacen(&indent(&first), "@@FIRST@@", 1)
        .replacen(&indent(&second), &indent(&first), 1)
        .replacen("@@FIRST@@", &indent(&second), 1);
    assert_ne!(swapped_text, manifest_text, "the listings were found");
    let mut swapped = packed[..512].to_vec();
    swapped.extend_from_slice(swapped_text.as_bytes());
    swapped.extend_from_slice(&packed[b..end]);
    swapped.extend_from_slice(&packed[a..b]);
    swapped.extend_from_slice(&packed[end..]);
    assert_eq!(swapped.len(), packed.len());
    let err = unpack(&swapped).unwrap_err();
    assert!(err.contains("canonical form"), "{err}");
}

#[test]
fn paths_that_a_directory_could_not_hold_are_refused() {
    for (path, expected) in [
        ("../escape.cedar", "`..` parts"),
        ("/etc/passwd.cedar", "absolute"),
        (".hidden.cedar", "hidden"),
        ("tests/x.cedar", "test suites"),
        ("a\\b.cedar", "not a bundle path"),
    ] {
        let source = BundleSource {
            policies: vec![BundleFile {
                path: path.to_owned(),
                contents: "permit (principal, action, resource);".to_owned(),
            }],
            ..BundleSource::default()
        };
        let err = unpack(&source.pack().unwrap()).unwrap_err();
        assert!(
            err.contains(path) && err.contains(expected),
            "{path}: {err}"
        );
    }
}

#[test]
fn a_file_with_the_wrong_role_is_refused() {
    // `notes.txt` is no bundle file: a directory would never yield it.
    let source = BundleSource {
        policies: vec![BundleFile {
            path: "notes.txt".to_owned(),
            contents: "permit (principal, action, resource);".to_owned(),
        }],
        ..BundleSource::default()
    };
    let err = unpack(&source.pack().unwrap()).unwrap_err();
    assert!(err.contains("`notes.txt`") && err.contains("role"), "{err}");
}

#[test]
fn long_paths_are_split_and_read_back() {
    let long = format!("{}/{}.cedar", "team".repeat(30), "p".repeat(90));
    let source = BundleSource {
        policies: vec![BundleFile {
            path: long.clone(),
            contents: "permit (principal, action, resource);".to_owned(),
        }],
        ..BundleSource::default()
    };
    let packed = source.pack().unwrap();
    assert_eq!(unpack(&packed).unwrap(), source);
    let too_long = BundleSource {
        policies: vec![BundleFile {
            path: format!("{}.cedar", "x".repeat(300)),
            contents: String::new(),
        }],
        ..BundleSource::default()
    };
    let err = too_long.pack().unwrap_err().message;
    assert!(err.contains("too long"), "{err}");
}

#[test]
fn a_file_over_the_cap_is_refused_before_it_is_read() {
    let packed = example().pack().unwrap();
    let err = BundleSource::from_packed(&packed, 64).unwrap_err().message;
    assert!(err.contains("over the cap of 64"), "{err}");
}

fn fix_checksum(header: &mut [u8]) {
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// An ill-typed policy (a string compared with a number) that Cedar's
/// strict validator refuses and Cedar itself answers.
const ILL_TYPED: &str = r#"
permit (principal, action == Action::"view", resource)
when { resource.owner == principal };
permit (principal, action == Action::"view", resource)
when { resource.level == "high" };
"#;
const SCHEMA: &str = r#"
entity User;
entity Doc { owner: User, level: Long };
action view appliesTo { principal: User, resource: Doc };
"#;
const ENTITIES: &str = r#"[
  {"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "ana"}}, "level": 3}, "parents": []},
  {"uid": {"type": "Doc", "id": "d2"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "bo"}}, "level": 1}, "parents": []}
]"#;

fn ill_typed_dir(mode: Option<&str>) -> PathBuf {
    let dir = scratch(&format!("mode-{}", mode.unwrap_or("default")));
    std::fs::write(dir.join("docs.cedar"), ILL_TYPED).unwrap();
    std::fs::write(dir.join("docs.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.join("entities.json"), ENTITIES).unwrap();
    if let Some(mode) = mode {
        std::fs::write(
            dir.join("bundle.json"),
            format!("{{\"validation\": \"{mode}\"}}"),
        )
        .unwrap();
    }
    dir
}

/// Cedar's own answer with no validator in the way.
fn cedar_answer(principal: &str, resource: &str) -> cedar_policy::Decision {
    use std::str::FromStr as _;
    let schema = cedar_policy::Schema::from_cedarschema_str(SCHEMA)
        .unwrap()
        .0;
    let policies = cedar_policy::PolicySet::from_str(ILL_TYPED).unwrap();
    let entities = cedar_policy::Entities::from_json_str(ENTITIES, Some(&schema)).unwrap();
    let uid = |text: &str| cedar_policy::EntityUid::from_str(text).unwrap();
    let request = cedar_policy::Request::new(
        uid(principal),
        uid(r#"Action::"view""#),
        uid(resource),
        cedar_policy::Context::empty(),
        Some(&schema),
    )
    .unwrap();
    cedar_policy::Authorizer::new()
        .is_authorized(&request, &policies, &entities)
        .decision()
}

#[test]
fn strict_validation_is_the_default_and_opting_out_serves_cedars_answers() {
    let err = Bundle::load(
        &BundleSource::from_dir(&ill_typed_dir(None)).unwrap(),
        RequestLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("docs.cedar"), "{err}");

    for mode in ["permissive", "none"] {
        let source = BundleSource::from_dir(&ill_typed_dir(Some(mode))).unwrap();
        let expected = if mode == "none" {
            ValidationMode::None
        } else {
            ValidationMode::Permissive
        };
        assert_eq!(source.settings.validation, expected);
        let bundle = Bundle::load(&source, RequestLimits::default()).unwrap();
        assert_eq!(bundle.validation_mode(), expected);
        // The mode is in the manifest, so in the id.
        let strict = BundleSource {
            settings: Default::default(),
            ..source.clone()
        };
        assert_ne!(strict.content_hash().unwrap(), bundle.id());
        let reread = unpack(&source.pack().unwrap()).unwrap();
        assert_eq!(reread.settings.validation, expected);
        for (principal, resource) in [("ana", "d1"), ("ana", "d2"), ("bo", "d2")] {
            let request = Request {
                principal: EntityUid::new("User", principal),
                action: EntityUid::new("Action", "view"),
                resource: EntityUid::new("Doc", resource),
                context: ContextInput::Json("{}".to_owned()),
                entities: Vec::new(),
            };
            let ours = bundle.authorize(&request).unwrap();
            let theirs = cedar_answer(
                &format!("User::\"{principal}\""),
                &format!("Doc::\"{resource}\""),
            );
            assert_eq!(
                ours.decision == Decision::Allow,
                theirs == cedar_policy::Decision::Allow,
                "{principal} {resource}"
            );
        }
    }
}

#[test]
fn a_settings_file_with_an_unknown_mode_is_refused_and_named() {
    let dir = ill_typed_dir(Some("lenient"));
    let err = BundleSource::from_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("bundle.json") && err.contains("lenient"),
        "{err}"
    );
}
