//! Bundles from a real OCI registry (Debian's `docker-registry`) and a real
//! Git server (`git daemon`) on loopback: served signed, followed as the
//! tag or branch moves, refused when unsigned, signed by a stranger,
//! tampered, pinned away or broken (the last good bundle keeps serving),
//! with the revision on `/healthz`, the metrics and every audit record.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cedar_edge_core::{BundleSource, hex};
use cedar_edge_distribution::oci::{self, Reference, RegistryOptions};
use cedar_edge_gateway::config::GatewayConfig;
use cedar_edge_signing::{Algorithm, SigningKey, encode_signature};
use cedar_edge_testkit::git_server::GitServer;
use cedar_edge_testkit::http::{self, Reply};
use cedar_edge_testkit::registry::Registry;
use cedar_edge_testkit::repo;
use common::running::Running;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "bundle-source-test-secret";
const POLL_MS: u64 = 300;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sources-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn todo_bundle() -> BundleSource {
    BundleSource::from_dir(&repo().join("policies/authzen-todo")).unwrap()
}

/// The todo bundle with reading todos forbidden instead of permitted: a
/// second version whose answers differ.
fn todo_bundle_v2() -> BundleSource {
    let mut source = todo_bundle();
    let file = &mut source.policies[0];
    let changed = file.contents.replace(
        "@id(\"users-read-todos\")\npermit",
        "@id(\"users-read-todos\")\nforbid",
    );
    assert_ne!(changed, file.contents, "the policy to flip is there");
    file.contents = changed;
    source
}

fn id_of(packed: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(packed)))
}

/// A decision-service configuration around `bundle`, with `extra` keys.
fn config(dir: &Path, bundle: &str, extra: &str) -> GatewayConfig {
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "bundle: \"{bundle}\"\nbackend: native\naudit_log: audit.jsonl\nreload_poll_ms: {POLL_MS}\npdp:\n  listen: 127.0.0.1:0\n  types: {{ user: Todo::User, todo: Todo::Todo }}\n  action_type: Todo::Action\n  callers:\n    - name: tests\n      bearer_sha256: {}\n{extra}",
            hex(&Sha256::digest(SECRET.as_bytes()))
        ),
    )
    .unwrap();
    GatewayConfig::read(&path).unwrap()
}

/// Whether Rick may read the todo list, through the decision service.
fn rick_reads_todos(gateway: &Running) -> bool {
    let body = json!({
        "subject": {"type": "user", "id": "rick@the-citadel.com"},
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "todo-1"}
    })
    .to_string();
    let bearer = format!("Bearer {SECRET}");
    let reply = http::send_with_body(
        gateway.pdp_port.unwrap(),
        "POST",
        "/access/v1/evaluation",
        &[
            ("content-type", b"application/json"),
            ("authorization", bearer.as_bytes()),
        ],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["decision"].as_bool().unwrap()
}

fn health(gateway: &Running) -> Value {
    let reply: Reply = gateway.admin("/healthz");
    assert_eq!(reply.status, 200);
    reply.json()
}

/// Waits until `/healthz` reports `bundle_id`, or the timeout passes.
fn serves_within(gateway: &Running, bundle_id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if health(gateway)["bundle_id"] == bundle_id {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Polls long enough for several poll intervals to pass.
fn several_polls() {
    std::thread::sleep(Duration::from_millis(POLL_MS * 5));
}

fn metric(gateway: &Running, series: &str) -> u64 {
    common::metric(gateway.admin_port, series)
}

struct Publisher {
    runtime: tokio::runtime::Runtime,
    options: RegistryOptions,
    reference: Reference,
}

impl Publisher {
    fn new(registry: &Registry, repository: &str) -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            options: RegistryOptions::default().with_plain_http(registry.host()),
            reference: format!("oci://{}/{repository}:prod", registry.host())
                .parse()
                .unwrap(),
        }
    }

    /// Pushes to the `prod` tag; returns the manifest digest.
    fn push(&self, packed: &[u8], signature: Option<&SigningKey>) -> String {
        self.push_to("prod", packed, signature)
    }

    fn push_to(&self, tag: &str, packed: &[u8], signature: Option<&SigningKey>) -> String {
        let signature = signature.map(|key| encode_signature(&key.sign(packed)));
        self.runtime
            .block_on(oci::push(
                &self.reference.with_tag(tag).unwrap(),
                packed,
                signature.as_deref().map(str::as_bytes),
                &self.options,
            ))
            .unwrap()
            .manifest_digest
    }
}

/// Points `to` at the manifest of `from` with the registry's own API, so
/// no blob is uploaded again.
fn retag(registry: &Registry, repository: &str, from: &str, to: &str) {
    let port: u16 = registry.host().rsplit(':').next().unwrap().parse().unwrap();
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    let manifest = http::get(
        port,
        "GET",
        &format!("/v2/{repository}/manifests/{from}"),
        &[("accept", media_type)],
    );
    assert_eq!(manifest.status, 200, "{}", manifest.body);
    let put = http::send_with_body(
        port,
        "PUT",
        &format!("/v2/{repository}/manifests/{to}"),
        &[("content-type", media_type.as_bytes())],
        manifest.body.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", put.body);
}

fn write_key(dir: &Path, name: &str, key: &SigningKey) -> PathBuf {
    let path = dir.join(format!("{name}.pub"));
    std::fs::write(&path, key.public_key().to_pem()).unwrap();
    path
}

#[test]
fn a_signed_bundle_from_a_registry_is_served_followed_and_never_replaced_by_a_refused_one() {
    let dir = scratch("oci");
    let mut registry = Registry::start();
    let publisher = Publisher::new(&registry, "policies/todo");
    let ci = SigningKey::generate(Algorithm::EcdsaP256);
    let stranger = SigningKey::generate(Algorithm::Ed25519);
    let ci_pub = write_key(&dir, "ci", &ci);

    let v1 = todo_bundle().pack().unwrap();
    let v1_manifest = publisher.push(&v1, Some(&ci));
    let extra = format!(
        "bundle_source:\n  poll_interval_ms: {POLL_MS}\n  plain_http: [\"{}\"]\ntrusted_keys: [\"{}\"]\n",
        registry.host(),
        ci_pub.display()
    );
    let gateway = Running::start_with(config(&dir, &publisher.reference.to_string(), &extra));
    let healthz = health(&gateway);
    assert_eq!(healthz["bundle_id"], id_of(&v1));
    assert_eq!(healthz["bundle_revision"], v1_manifest);
    assert!(
        healthz["bundle_signer"]
            .as_str()
            .unwrap()
            .contains(ci.public_key().fingerprint()),
        "{healthz}"
    );
    assert!(rick_reads_todos(&gateway));

    // A new signed version on the tag is followed.
    let v2 = todo_bundle_v2().pack().unwrap();
    let v2_manifest = publisher.push(&v2, Some(&ci));
    assert!(serves_within(
        &gateway,
        &id_of(&v2),
        Duration::from_secs(10)
    ));
    assert_eq!(health(&gateway)["bundle_revision"], v2_manifest);
    assert!(!rick_reads_todos(&gateway));
    let info = gateway.admin("/metrics").body;
    assert!(
        info.contains(&format!("revision=\"{v2_manifest}\"")),
        "{info}"
    );

    // Unsigned, signed by a stranger, or tampered in the registry: each is
    // refused, counted, and v2 keeps serving.
    let mut refused_before = metric(&gateway, "cedar_edge_bundle_source_errors_total");
    // (Versions never signed: v1's signature would rightly let v1 back.)
    let variant = |note: &str| {
        let mut source = todo_bundle();
        source.policies[0].contents.push_str(note);
        source.pack().unwrap()
    };
    publisher.push(&variant("\n// unsigned\n"), None);
    several_polls();
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v2), "unsigned served");
    let refused = metric(&gateway, "cedar_edge_bundle_source_errors_total");
    assert!(
        refused > refused_before,
        "the unsigned bundle was not counted"
    );
    refused_before = refused;

    publisher.push(&variant("\n// a stranger's\n"), Some(&stranger));
    several_polls();
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v2), "stranger served");
    let refused = metric(&gateway, "cedar_edge_bundle_source_errors_total");
    assert!(
        refused > refused_before,
        "the stranger's bundle was not counted"
    );
    refused_before = refused;

    let v3 = variant("\n// v3\n");
    // Signed and pushed under a tag the gateway does not watch, one byte of
    // the stored blob flipped, and only then `prod` moved to it: the
    // registry serves bytes whose digest no longer matches.
    let v3_manifest = publisher.push_to("staging", &v3, Some(&ci));
    let blob = registry.blob_file(&id_of(&v3));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();
    retag(&registry, "policies/todo", "staging", "prod");
    several_polls();
    let healthz = health(&gateway);
    assert_eq!(healthz["bundle_id"], id_of(&v2), "tampered bytes served");
    assert_ne!(healthz["bundle_revision"], v3_manifest);
    assert!(metric(&gateway, "cedar_edge_bundle_source_errors_total") > refused_before);

    // The registry goes down: v2 keeps serving and deciding.
    registry.stop();
    let down_before = metric(&gateway, "cedar_edge_bundle_source_errors_total");
    several_polls();
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v2));
    assert!(!rick_reads_todos(&gateway));
    assert!(metric(&gateway, "cedar_edge_bundle_source_errors_total") > down_before);

    // Back up, with a good signed version: served again.
    registry.restart();
    let v4 = todo_bundle().pack().unwrap();
    let v4_manifest = publisher.push(&v4, Some(&ci));
    assert!(serves_within(
        &gateway,
        &id_of(&v4),
        Duration::from_secs(10)
    ));
    assert_eq!(health(&gateway)["bundle_revision"], v4_manifest);
    assert!(rick_reads_todos(&gateway));
    gateway.stop();

    // Every decision record names the bundle and the manifest it came from.
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let records: Vec<Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(records.len() >= 4);
    for record in &records {
        let revision = record["bundle_revision"].as_str().unwrap();
        let pairs = [
            (id_of(&v1), &v1_manifest),
            (id_of(&v2), &v2_manifest),
            (id_of(&v4), &v4_manifest),
        ];
        assert!(
            pairs
                .iter()
                .any(|(id, manifest)| record["bundle_id"] == *id && revision == manifest.as_str()),
            "{record}"
        );
    }
}

#[test]
fn a_pinned_gateway_refuses_any_other_digest() {
    let dir = scratch("pin");
    let registry = Registry::start();
    let publisher = Publisher::new(&registry, "policies/pinned");
    let v1 = todo_bundle().pack().unwrap();
    publisher.push(&v1, None);
    let extra = format!(
        "bundle_source:\n  poll_interval_ms: {POLL_MS}\n  plain_http: [\"{}\"]\n  pin: \"{}\"\n",
        registry.host(),
        id_of(&v1)
    );
    let gateway = Running::start_with(config(&dir, &publisher.reference.to_string(), &extra));
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v1));
    let before = metric(&gateway, "cedar_edge_reloads_total{result=\"failed\"}")
        + metric(&gateway, "cedar_edge_bundle_source_errors_total");
    publisher.push(&todo_bundle_v2().pack().unwrap(), None);
    several_polls();
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v1));
    assert!(rick_reads_todos(&gateway));
    let after = metric(&gateway, "cedar_edge_reloads_total{result=\"failed\"}")
        + metric(&gateway, "cedar_edge_bundle_source_errors_total");
    assert!(after > before);
    gateway.stop();
}

#[test]
fn two_gateways_polling_one_tag_converge_on_a_new_digest_within_one_interval() {
    const INTERVAL_MS: u64 = 1000;
    let registry = Registry::start();
    let publisher = Publisher::new(&registry, "policies/fleet");
    publisher.push(&todo_bundle().pack().unwrap(), None);
    let extra = format!(
        "bundle_source:\n  poll_interval_ms: {INTERVAL_MS}\n  plain_http: [\"{}\"]\n",
        registry.host()
    );
    let reference = publisher.reference.to_string();
    let first = Running::start_with(config(&scratch("fleet-a"), &reference, &extra));
    let second = Running::start_with(config(&scratch("fleet-b"), &reference, &extra));
    let v2 = todo_bundle_v2().pack().unwrap();
    let pushed = Instant::now();
    publisher.push(&v2, None);
    // One interval for the next poll of each, plus the pull and the load
    // (milliseconds here), with room for a loaded CI machine.
    let bound = Duration::from_millis(INTERVAL_MS) + Duration::from_millis(2500);
    for gateway in [&first, &second] {
        let left = bound.saturating_sub(pushed.elapsed());
        assert!(
            serves_within(gateway, &id_of(&v2), left),
            "not converged {:?} after the push",
            pushed.elapsed()
        );
    }
    eprintln!(
        "both gateways served the new digest {:?} after the push",
        pushed.elapsed()
    );
    assert_eq!(
        health(&first)["bundle_revision"],
        health(&second)["bundle_revision"]
    );
    first.stop();
    second.stop();
}

#[test]
fn a_git_branch_is_followed_commit_by_commit_and_a_broken_commit_is_refused() {
    let dir = scratch("git");
    let server = GitServer::start();
    server.create_repo("policies.git");
    let work = server.work_tree("policies.git");
    work.copy_dir(&repo().join("policies/authzen-todo"), "bundles/todo");
    work.write("README.md", "policies\n");
    let first = work.commit("todo policies");
    work.push("HEAD:refs/heads/main");

    let spec = format!("git+{}#main:bundles/todo", server.url("policies.git"));
    let extra = format!(
        "bundle_source:\n  poll_interval_ms: {POLL_MS}\n  cache_dir: {}\n",
        dir.join("git-cache").display()
    );
    let gateway = Running::start_with(config(&dir, &spec, &extra));
    let healthz = health(&gateway);
    assert_eq!(healthz["bundle_revision"], first);
    assert_eq!(
        healthz["bundle_id"],
        todo_bundle().content_hash().unwrap(),
        "the folder at the commit is the same bundle as on disk"
    );
    assert!(rick_reads_todos(&gateway));

    // A commit that breaks the bundle: refused, the first keeps serving.
    work.write(
        "bundles/todo/todo.cedar",
        "permit (principal, action, resource",
    );
    let broken = work.commit("a typo");
    work.push("HEAD:refs/heads/main");
    let failed_before = metric(&gateway, "cedar_edge_reloads_total{result=\"failed\"}");
    several_polls();
    let healthz = health(&gateway);
    assert_eq!(
        healthz["bundle_revision"], first,
        "broken commit {broken} served"
    );
    assert!(metric(&gateway, "cedar_edge_reloads_total{result=\"failed\"}") > failed_before);
    assert!(rick_reads_todos(&gateway));

    // The fix, as the next commit: served, with its commit.
    let v2 = todo_bundle_v2();
    work.write("bundles/todo/todo.cedar", &v2.policies[0].contents);
    let fixed = work.commit("forbid reading todos");
    work.push("HEAD:refs/heads/main");
    assert!(serves_within(
        &gateway,
        &v2.content_hash().unwrap(),
        Duration::from_secs(10)
    ));
    assert_eq!(health(&gateway)["bundle_revision"], fixed);
    assert!(!rick_reads_todos(&gateway));
    gateway.stop();

    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let revisions: Vec<String> = audit
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["bundle_revision"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(revisions, [first.clone(), first, fixed]);
}

#[test]
fn a_packed_file_must_be_signed_by_a_trusted_key_to_start() {
    let dir = scratch("file");
    let packed = todo_bundle().pack().unwrap();
    let file = dir.join("todo.tar");
    std::fs::write(&file, &packed).unwrap();
    let ci = SigningKey::generate(Algorithm::EcdsaP256);
    let ci_pub = write_key(&dir, "ci", &ci);
    let extra = format!("trusted_keys: [\"{}\"]\n", ci_pub.display());

    // Unsigned: the gateway does not start, and says why.
    let path = dir.join("gateway.yaml");
    let _ = config(&dir, "todo.tar", &extra);
    let err = runtime_start_error(&path);
    assert!(err.contains("unsigned"), "{err}");

    // Signed by the trusted key: served, with the signer reported.
    std::fs::write(
        dir.join("todo.tar.sig"),
        encode_signature(&ci.sign(&packed)),
    )
    .unwrap();
    let gateway = Running::start(&path);
    let healthz = health(&gateway);
    assert_eq!(healthz["bundle_id"], id_of(&packed));
    assert!(
        healthz["bundle_signer"]
            .as_str()
            .unwrap()
            .contains("ci.pub")
    );
    assert!(rick_reads_todos(&gateway));
    gateway.stop();
}

/// Starts the bundle of a configuration file as the gateway does at
/// start, which must fail; returns the error.
fn runtime_start_error(path: &Path) -> String {
    use cedar_edge_gateway::source::{Fetcher, Location};
    use cedar_edge_gateway::state::{BundleChecks, BundleSlot};
    let config = GatewayConfig::read(path).unwrap();
    let fetcher = Fetcher::new(
        &Location::parse(&config.bundle, Path::new("")),
        &config.bundle_source,
        &config.trusted_keys,
    )
    .unwrap();
    let started = BundleSlot::start(
        fetcher,
        BundleChecks {
            mapping: None,
            authzen: None,
        },
        cedar_edge_gateway::config::BackendKind::Native,
        Duration::ZERO,
        std::sync::Arc::new(cedar_edge_gateway::metrics::Metrics::default()),
    );
    match started {
        Ok(_) => panic!("the bundle was accepted"),
        Err(err) => err.to_string(),
    }
}

/// A refused revision is judged again at every poll: the signature pushed
/// after its bundle (same manifest, so same revision) is picked up without
/// a restart.
#[test]
fn a_signature_pushed_after_its_bundle_is_picked_up() {
    let dir = scratch("late-signature");
    let registry = Registry::start();
    let publisher = Publisher::new(&registry, "policies/late");
    let ci = SigningKey::generate(Algorithm::EcdsaP256);
    let ci_pub = write_key(&dir, "ci", &ci);
    let v1 = todo_bundle().pack().unwrap();
    publisher.push(&v1, Some(&ci));
    let extra = format!(
        "bundle_source:\n  poll_interval_ms: {POLL_MS}\n  plain_http: [\"{}\"]\ntrusted_keys: [\"{}\"]\n",
        registry.host(),
        ci_pub.display()
    );
    let gateway = Running::start_with(config(&dir, &publisher.reference.to_string(), &extra));
    let v2 = todo_bundle_v2().pack().unwrap();
    let unsigned_manifest = publisher.push(&v2, None);
    several_polls();
    assert_eq!(health(&gateway)["bundle_id"], id_of(&v1), "unsigned served");
    let signed_manifest = publisher.push(&v2, Some(&ci));
    assert_eq!(
        signed_manifest, unsigned_manifest,
        "one artifact, one manifest"
    );
    assert!(serves_within(
        &gateway,
        &id_of(&v2),
        Duration::from_secs(10)
    ));
    gateway.stop();
}
