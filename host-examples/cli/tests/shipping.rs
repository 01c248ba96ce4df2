//! Shipping a bundle with the CLI: pack, keygen, sign, push to a real
//! registry (Debian's `docker-registry` on loopback), pull by tag and by
//! digest, verify, and decide from what was pulled; and every refusal on
//! the way: a flipped byte, a wrong key, a missing signature, a registry
//! that is down.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use cedar_edge_core::hex;
use cedar_edge_testkit::registry::Registry;
use common::{authorize_bob_triggers, cedar_edge, text, write_tree};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shipping-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}

fn sha256_of(file: &str) -> String {
    format!(
        "sha256:{}",
        hex(&Sha256::digest(std::fs::read(file).unwrap()))
    )
}

/// bob triggers `etl_daily` from the office with MFA: one decision, as JSON.
fn decide(bundle: &str, extra: &[&str]) -> Value {
    let out = authorize_bob_triggers(bundle, extra);
    serde_json::from_str(&text(&out.stdout))
        .unwrap_or_else(|err| panic!("{err}: {}", text(&out.stderr)))
}

#[test]
fn pack_sign_push_pull_verify_and_decide_round_trip() {
    let dir = scratch("round-trip");
    let packed = path(&dir, "airflow.tar");
    let id = ok(&cedar_edge(&[
        "pack",
        "policies/airflow-gitlab",
        "-o",
        &packed,
    ]));
    assert_eq!(id, sha256_of(&packed), "the id is the artifact's digest");
    // Deterministic: packing again gives the same bytes.
    let again = path(&dir, "again.tar");
    ok(&cedar_edge(&[
        "pack",
        "policies/airflow-gitlab",
        "-o",
        &again,
    ]));
    assert_eq!(
        std::fs::read(&packed).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let fingerprint = ok(&cedar_edge(&["keygen", "-o", &path(&dir, "ci")]));
    assert!(
        fingerprint.starts_with("ecdsa-p256 sha256:"),
        "{fingerprint}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("ci.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
    }
    let ci_pub = path(&dir, "ci.pub");
    assert_eq!(
        ok(&cedar_edge(&[
            "sign",
            "--key",
            &path(&dir, "ci.key"),
            &packed
        ])),
        id
    );
    assert_eq!(
        ok(&cedar_edge(&["verify", "--trusted-key", &ci_pub, &packed])),
        id
    );

    let registry = Registry::start();
    let reference = format!("oci://{}/policies/airflow:prod", registry.host());
    let push = cedar_edge(&["push", &packed, &reference, "--plain-http"]);
    assert_eq!(ok(&push), id);
    let manifest = text(&push.stderr)
        .split("manifest ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    assert!(
        manifest.starts_with("sha256:") && manifest != id,
        "{manifest}"
    );

    // By tag, verified: the same bytes, with the signature beside them.
    let pulled = path(&dir, "pulled.tar");
    let pull = cedar_edge(&[
        "pull",
        &reference,
        "-o",
        &pulled,
        "--trusted-key",
        &ci_pub,
        "--plain-http",
    ]);
    assert_eq!(ok(&pull), id);
    assert!(
        text(&pull.stderr).contains("signed by"),
        "{}",
        text(&pull.stderr)
    );
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&packed).unwrap()
    );
    assert_eq!(
        ok(&cedar_edge(&["verify", "--trusted-key", &ci_pub, &pulled])),
        id
    );
    // By digest: the same.
    let by_digest = format!("oci://{}/policies/airflow@{manifest}", registry.host());
    let pinned = path(&dir, "pinned.tar");
    assert_eq!(
        ok(&cedar_edge(&[
            "pull",
            &by_digest,
            "-o",
            &pinned,
            "--trusted-key",
            &ci_pub,
            "--plain-http"
        ])),
        id
    );

    // Serve: the pulled bundle decides as the directory does, on both
    // backends, and names the same bundle.
    let from_dir = decide("policies/airflow-gitlab", &[]);
    for backend in ["component", "native"] {
        let from_pull = decide(&pulled, &["--trusted-key", &ci_pub, "--backend", backend]);
        assert_eq!(from_pull["decision"], from_dir["decision"], "{backend}");
        assert_eq!(from_pull["bundle_id"], id, "{backend}");
    }
    assert_eq!(from_dir["bundle_id"], id);
    assert_eq!(from_dir["decision"], "allow");
}

#[test]
fn tampered_unsigned_and_strangers_bundles_are_refused() {
    let dir = scratch("refusals");
    let packed = path(&dir, "airflow.tar");
    ok(&cedar_edge(&[
        "pack",
        "policies/airflow-gitlab",
        "-o",
        &packed,
    ]));
    ok(&cedar_edge(&["keygen", "-o", &path(&dir, "ci")]));
    ok(&cedar_edge(&[
        "keygen",
        "--algorithm",
        "ed25519",
        "-o",
        &path(&dir, "stranger"),
    ]));
    let ci_pub = path(&dir, "ci.pub");

    // Missing signature.
    let out = cedar_edge(&["verify", "--trusted-key", &ci_pub, &packed]);
    assert_eq!(out.status.code(), Some(77));
    assert!(
        text(&out.stderr).contains("unsigned"),
        "{}",
        text(&out.stderr)
    );
    let out = authorize_bob_triggers(&packed, &["--trusted-key", &ci_pub]);
    assert_eq!(out.status.code(), Some(77), "an unsigned bundle decided");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    // Signed by a key that is not trusted.
    ok(&cedar_edge(&[
        "sign",
        "--key",
        &path(&dir, "stranger.key"),
        &packed,
    ]));
    let out = cedar_edge(&["verify", "--trusted-key", &ci_pub, &packed]);
    assert_eq!(out.status.code(), Some(77));
    assert!(
        text(&out.stderr).contains("none of the 1 trusted key"),
        "{}",
        text(&out.stderr)
    );

    // Signed by the trusted key, then one byte flipped.
    ok(&cedar_edge(&[
        "sign",
        "--key",
        &path(&dir, "ci.key"),
        &packed,
    ]));
    ok(&cedar_edge(&["verify", "--trusted-key", &ci_pub, &packed]));
    let mut bytes = std::fs::read(&packed).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    let tampered = path(&dir, "tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();
    std::fs::copy(format!("{packed}.sig"), format!("{tampered}.sig")).unwrap();
    let out = cedar_edge(&["verify", "--trusted-key", &ci_pub, &tampered]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("changed after signing"));

    // Pulled from a registry: a stranger's signature leaves no file behind.
    let registry = Registry::start();
    let reference = format!("oci://{}/policies/airflow:stranger", registry.host());
    let strangers = path(&dir, "strangers.tar");
    std::fs::copy(&packed, &strangers).unwrap();
    ok(&cedar_edge(&[
        "sign",
        "--key",
        &path(&dir, "stranger.key"),
        &strangers,
    ]));
    ok(&cedar_edge(&[
        "push",
        &strangers,
        &reference,
        "--plain-http",
    ]));
    let refused = path(&dir, "refused.tar");
    let out = cedar_edge(&[
        "pull",
        &reference,
        "-o",
        &refused,
        "--trusted-key",
        &ci_pub,
        "--plain-http",
    ]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(!Path::new(&refused).exists());

    // A registry that is down: a clear error, nothing written.
    let port = cedar_edge_testkit::free_port();
    let out = cedar_edge(&[
        "pull",
        &format!("oci://127.0.0.1:{port}/policies/airflow:prod"),
        "-o",
        &refused,
        "--plain-http",
    ]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
}

/// A bundle whose owner opted out of strict validation: `validate` warns,
/// `pack` records the mode, and both backends serve Cedar's answers for a
/// policy the strict validator refuses.
#[test]
fn an_opted_out_bundle_is_packed_served_and_warned_about() {
    let schema = "entity User;\nentity Doc { owner: User, level: Long };\naction view appliesTo { principal: User, resource: Doc };\n";
    let policy = "permit (principal, action == Action::\"view\", resource)\nwhen { resource.owner == principal };\npermit (principal, action == Action::\"view\", resource)\nwhen { resource.level == \"high\" };\n@id(\"erring-forbid\")\nforbid (principal, action, resource)\nwhen { resource.level < \"x\" };\n";
    let entities = r#"[{"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": []},
 {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "ana"}}, "level": 3}, "parents": []}]"#;
    let strict = write_tree(
        "shipping-strict",
        &[
            ("docs.cedar", policy),
            ("docs.cedarschema", schema),
            ("entities.json", entities),
        ],
    );
    let opted_out = write_tree(
        "shipping-opted-out",
        &[
            ("docs.cedar", policy),
            ("docs.cedarschema", schema),
            ("entities.json", entities),
            ("bundle.json", "{\"validation\": \"none\"}\n"),
        ],
    );
    let strict = strict.display().to_string();
    let opted_out = opted_out.display().to_string();
    let out = cedar_edge(&["pack", &strict, "-o", &format!("{strict}.tar")]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "a strict failure is not packed"
    );

    let out = cedar_edge(&["validate", &opted_out]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("validation is `none`"),
        "{}",
        text(&out.stderr)
    );
    let out = cedar_edge(&["validate", "--deny-warnings", &opted_out]);
    assert_eq!(out.status.code(), Some(1));
    let packed = format!("{opted_out}.tar");
    ok(&cedar_edge(&["pack", &opted_out, "-o", &packed]));
    let manifest = std::process::Command::new("tar")
        .args(["-xOf", &packed, "manifest.json"])
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["validation"], "none");

    for backend in ["component", "native"] {
        let out = cedar_edge(&[
            "authorize",
            "--bundle",
            &packed,
            "--principal",
            "User::\"ana\"",
            "--action",
            "Action::\"view\"",
            "--resource",
            "Doc::\"d1\"",
            "--backend",
            backend,
            "--format",
            "json",
        ]);
        let answer: Value = serde_json::from_str(&text(&out.stdout))
            .unwrap_or_else(|err| panic!("{err}: {}", text(&out.stderr)));
        // Cedar's answer: the owner's permit allows, the forbid that
        // compares a Long with a String errors and so does not apply.
        assert_eq!(answer["decision"], "allow", "{backend}: {answer}");
        let errors = answer["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{answer}");
        assert!(errors[0].to_string().contains("erring-forbid"), "{answer}");
    }
}
