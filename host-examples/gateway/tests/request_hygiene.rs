//! The request the gateway decides is the request it forwards: every
//! re-spelling of an admin path is refused or decided as `administer`, the
//! upstream receives exactly the canonical target that was decided, client
//! addresses come only from trusted proxies, and headers a client must not
//! set never reach the upstream. Over real loopback HTTP, with the gateway
//! bundle, the shipped example mapping and the component backend.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cedar_edge_testkit::http::Reply;
use cedar_edge_testkit::jwt::{EcIssuer, now};
use cedar_edge_testkit::repo;
use cedar_edge_testkit::upstream::Upstream;
use common::running::Running;
use serde_json::{Value, json};

const ISSUER: &str = "https://sso.example.com";
const AUDIENCE: &str = "internal-apps";
/// An address on the office network, where bob may reach every app.
const OFFICE: &str = "10.1.2.3";

/// The gateway bundle behind the gateway, with the example mapping as
/// shipped or edited, and one recording upstream behind every prefix.
struct Site {
    dir: PathBuf,
    issuer: EcIssuer,
    upstream: Upstream,
}

impl Site {
    fn new(
        name: &str,
        trusted_proxies: &[&str],
        edit_mapping: impl FnOnce(&mut Value),
    ) -> (Self, Running) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("request-hygiene")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let issuer = EcIssuer::generate("hygiene-key");
        std::fs::write(dir.join("jwks.json"), issuer.jwks()).unwrap();
        let example = repo().join("host-examples/gateway/examples/gateway-mapping.json");
        let mut mapping: Value =
            serde_json::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
        edit_mapping(&mut mapping);
        std::fs::write(dir.join("mapping.json"), mapping.to_string()).unwrap();
        let upstream = Upstream::start();
        let config = dir.join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                r#"listen: 127.0.0.1:0
bundle: {bundle}
mapping: mapping.json
upstreams:
  apps: http://127.0.0.1:{port}
routes:
  - {{ prefix: /airflow/, upstream: apps }}
  - {{ prefix: /gitlab/, upstream: apps }}
  - {{ prefix: /v2/, upstream: apps }}
  - {{ prefix: /wiki/, upstream: apps }}
issuers:
  - issuer: {ISSUER}
    audience: {AUDIENCE}
    jwks_file: jwks.json
audit_log: audit.jsonl
trusted_proxies: {trusted:?}
"#,
                bundle = repo().join("policies/gateway").display(),
                port = upstream.port,
                trusted = trusted_proxies,
            ),
        )
        .unwrap();
        let running = Running::start(&config);
        (
            Self {
                dir,
                issuer,
                upstream,
            },
            running,
        )
    }

    /// A token for a user the bundle knows, with MFA.
    fn token(&self, user: &str) -> String {
        self.issuer.sign(&json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": format!("id-{user}"),
            "preferred_username": user, "email": format!("{user}@example.com"),
            "groups": [], "amr": ["pwd", "mfa"], "iat": now() - 30, "exp": now() + 600,
        }))
    }

    /// The audit records, by decision id (read after the gateway stopped
    /// and flushed them).
    fn audit(&self) -> BTreeMap<String, Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .map(|record| (record["decision_id"].as_str().unwrap().to_owned(), record))
            .collect()
    }

    /// Every target the upstream received, in order.
    fn received_targets(&self) -> Vec<String> {
        self.upstream
            .received()
            .into_iter()
            .map(|received| received.target)
            .collect()
    }
}

fn decision_id(reply: &Reply) -> Option<String> {
    reply.json()["decision_id"].as_str().map(str::to_owned)
}

/// A request from bob on the office network, through the trusted proxy
/// that the test client plays.
fn from_office(bearer: &str) -> Vec<(&str, &[u8])> {
    vec![
        ("authorization", bearer.as_bytes()),
        ("x-forwarded-for", OFFICE.as_bytes()),
    ]
}

/// Every spelling that an upstream could read as the admin area: each is
/// refused with 400 before any decision, or decided as `administer` (which
/// bob may not do) and denied; none is decided as `connect`, which bob may
/// do from the office, and none reaches the upstream.
#[test]
fn every_spelling_of_an_admin_path_is_refused_or_decided_as_administer() {
    let (site, gateway) = Site::new("matrix", &["127.0.0.1/32"], |_| {});
    let bearer = format!("Bearer {}", site.token("bob"));
    let headers = from_office(&bearer);

    // The lesser action is allowed, and the admin area itself is denied:
    // so a spelling decided as `connect` would show as a 200.
    let plain = gateway.send("GET", "/airflow/dags/etl", &headers);
    assert_eq!(plain.status, 200, "{}", plain.body);
    let admin = gateway.send("GET", "/airflow/admin/secret.txt", &headers);
    assert_eq!(admin.status, 403, "{}", admin.body);

    let spellings = [
        "/airflow//admin/secret.txt",
        "/airflow/./admin/secret.txt",
        "/airflow/x/../admin/secret.txt",
        "/airflow/x/%2e%2e/admin/secret.txt",
        "/airflow/x/.%2E/admin/secret.txt",
        "/airflow/..;/admin/secret.txt",
        "/airflow/%61dmin/secret.txt",
        "/airflow/admi%6e/secret.txt",
        "/airflow/%41dmin/secret.txt",
        "/airflow/%2e/admin/secret.txt",
        "/airflow/%2E/admin/secret.txt",
        "/airflow/admin%2fsecret.txt",
        "/airflow/admin%2Fsecret.txt",
        "/airflow/admin%5csecret.txt",
        "/airflow/admin\\secret.txt",
        "/airflow/Admin/secret.txt",
        "/airflow/aDmIn/secret.txt",
        "/airflow/ADMIN/secret.txt",
        "/airflow/admin;jsessionid=1/secret.txt",
        "/airflow/%252e/admin/secret.txt",
        "/airflow/%252E%252E/airflow/admin/secret.txt",
        "/airflow/admin./secret.txt",
        "/airflow/admin/secret.txt.",
        "/airflow/admin%00/secret.txt",
        "/airflow/admin%/secret.txt",
        "/airflow/admin\"/secret.txt",
    ];
    let mut outcomes = Vec::new();
    for spelling in spellings {
        let reply = gateway.send("GET", spelling, &headers);
        assert!(
            reply.status == 400 || reply.status == 403,
            "{spelling}: {} {}",
            reply.status,
            reply.body
        );
        outcomes.push((spelling, reply.status, decision_id(&reply)));
    }
    let refusals = outcomes
        .iter()
        .filter(|(_, status, _)| *status == 400)
        .count();
    let metrics = gateway.admin("/metrics").body;
    gateway.stop();

    assert_eq!(
        site.received_targets(),
        ["/airflow/dags/etl"],
        "only the plain request reached the upstream"
    );
    let audit = site.audit();
    assert_eq!(
        audit[&decision_id(&admin).unwrap()]["action"],
        r#"Gateway::Action::"administer""#
    );
    for (spelling, status, id) in &outcomes {
        // Every refusal is the gateway's own, so it is audited.
        let id = id
            .as_ref()
            .unwrap_or_else(|| panic!("{spelling}: no decision id"));
        let record = &audit[id];
        if *status == 403 {
            assert_eq!(
                record["action"], r#"Gateway::Action::"administer""#,
                "{spelling}: {record}"
            );
            assert_eq!(record["decision"], "deny", "{spelling}: {record}");
        } else {
            assert_eq!(record["action"], Value::Null, "{spelling}: {record}");
            assert_eq!(record["decision"], "error", "{spelling}: {record}");
            let refusal = record["refusal"].as_str().unwrap_or_default();
            assert!(
                refusal.starts_with("request target"),
                "{spelling}: {record}"
            );
        }
    }
    // Every refusal counts, as an error.
    assert!(refusals >= 18, "{outcomes:?}");
    assert!(
        metrics.contains(&format!(
            "cedar_edge_decisions_total{{outcome=\"error\"}} {refusals}\n"
        )),
        "{metrics}"
    );
}

/// Spellings that are allowed reach the upstream in the one canonical form
/// that was decided, never as the client wrote them.
#[test]
fn the_upstream_receives_exactly_the_canonical_target_that_was_decided() {
    let (site, gateway) = Site::new("canonical", &["127.0.0.1/32"], |_| {});
    let bearer = format!("Bearer {}", site.token("bob"));
    let headers = from_office(&bearer);
    let cases = [
        ("/airflow/%64ags/etl%5Fdaily", "/airflow/dags/etl_daily"),
        (
            "/airflow/dags/x%2dy?limit=5&q=%2f",
            "/airflow/dags/x-y?limit=5&q=%2f",
        ),
        (
            "/airflow/files/caf%c3%a9.txt",
            "/airflow/files/caf%C3%A9.txt",
        ),
        ("/airflow/dags/", "/airflow/dags/"),
        ("/gitlab/~alice/project", "/gitlab/~alice/project"),
    ];
    let mut ids = Vec::new();
    for (sent, canonical) in cases {
        let reply = gateway.send("GET", sent, &headers);
        assert_eq!(reply.status, 200, "{sent}: {}", reply.body);
        assert_eq!(
            reply.json()["path"],
            canonical,
            "{sent} went upstream as something else"
        );
        ids.push(reply.json()["headers"]["x-cedar-decision-id"].clone());
    }
    gateway.stop();
    let expected: Vec<&str> = cases.iter().map(|(_, canonical)| *canonical).collect();
    assert_eq!(site.received_targets(), expected);
    let audit = site.audit();
    for (id, (sent, _)) in ids.iter().zip(cases) {
        let record = &audit[id.as_str().unwrap()];
        assert_eq!(record["action"], r#"Gateway::Action::"connect""#, "{sent}");
        assert_eq!(record["decision"], "allow", "{sent}");
    }
}

/// From a peer that is not a trusted proxy, forwarding headers count for
/// nothing: the socket address decides, and the upstream gets a chain of
/// the socket address alone.
#[test]
fn forwarding_headers_from_an_untrusted_peer_are_ignored_and_dropped() {
    let (site, gateway) = Site::new("untrusted-peer", &[], |_| {});
    let bearer = format!("Bearer {}", site.token("bob"));
    // Airflow is internal: only the office network may connect.
    for spoof in [
        vec![("x-forwarded-for", OFFICE)],
        vec![("x-real-ip", OFFICE)],
        vec![("forwarded", "for=10.1.2.3")],
        vec![("x_forwarded_for", OFFICE), ("x-forwarded-for", OFFICE)],
    ] {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(spoof.iter().copied());
        let reply = gateway.call("GET", "/airflow/dags/etl", &headers);
        assert_eq!(reply.status, 403, "{spoof:?}: {}", reply.body);
    }
    // Pulling an image is allowed from anywhere: see what went upstream.
    let reply = gateway.call(
        "GET",
        "/v2/team/sandbox/manifests/latest",
        &[
            ("authorization", &bearer),
            ("x-forwarded-for", OFFICE),
            ("x_forwarded_for", OFFICE),
            ("x-real-ip", OFFICE),
            ("forwarded", "for=10.1.2.3"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    gateway.stop();
    let received = site.upstream.last().unwrap();
    assert_eq!(received.header_values("x-forwarded-for"), ["127.0.0.1"]);
    for name in [
        "x_forwarded_for",
        "x-real-ip",
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        assert!(
            received.header_values(name).is_empty(),
            "{name}: {received:?}"
        );
    }
}

/// Behind trusted proxies, the client is the right-most hop that is not
/// itself a trusted proxy; hops left of it were written by the client.
#[test]
fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
    let (site, gateway) = Site::new("trusted-peer", &["127.0.0.1/32", "10.9.0.0/16"], |_| {});
    let bearer = format!("Bearer {}", site.token("bob"));
    let cases = [
        // The proxy appended the office address bob connected from.
        ("203.0.113.9, 10.1.2.3", 200),
        // bob wrote the office address himself; the proxy appended where
        // he really was, a blocked network.
        ("10.1.2.3, 203.0.113.9", 403),
        // A second trusted proxy (10.9.x.x) in the chain is skipped.
        ("10.1.2.3, 10.9.0.7", 200),
        ("10.1.2.3, 203.0.113.9, 10.9.0.7", 403),
        // Every hop trusted: the left-most one is the client.
        ("10.9.4.4, 10.9.0.7", 200),
        // A port on a hop is allowed; garbage where the client is read is not.
        ("10.1.2.3:51234", 200),
        ("10.1.2.3, unknown", 400),
    ];
    for (chain, status) in cases {
        let reply = gateway.call(
            "GET",
            "/airflow/dags/etl",
            &[("authorization", &bearer), ("x-forwarded-for", chain)],
        );
        assert_eq!(reply.status, status, "{chain}: {}", reply.body);
    }
    // Several X-Forwarded-For lines are one list, in order.
    let reply = gateway.send(
        "GET",
        "/airflow/dags/etl",
        &[
            ("authorization", bearer.as_bytes()),
            ("x-forwarded-for", b"203.0.113.9"),
            ("x-forwarded-for", b"10.1.2.3"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    // X-Real-IP is single-valued: two copies are refused.
    let reply = gateway.send(
        "GET",
        "/airflow/dags/etl",
        &[
            ("authorization", bearer.as_bytes()),
            ("x-real-ip", OFFICE.as_bytes()),
            ("X_Real_IP", b"203.0.113.9"),
        ],
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    gateway.stop();
    // The chain goes on from the decided client, with this hop appended:
    // what the client wrote left of itself is not passed on.
    let received = site.upstream.last().unwrap();
    assert_eq!(
        received.header_values("x-forwarded-for"),
        ["10.1.2.3, 127.0.0.1"]
    );
    // The upstream gets its own authority as `Host`, not the client's.
    let upstream_authority = format!("127.0.0.1:{}", site.upstream.port);
    assert_eq!(
        received.header_values("host"),
        [upstream_authority.as_str()]
    );
}

/// Headers the gateway sets, hop-by-hop headers and headers `Connection`
/// names never reach the upstream, in any spelling; two `Authorization`
/// headers are refused.
#[test]
fn client_identity_and_hop_by_hop_headers_never_reach_the_upstream() {
    let (site, gateway) = Site::new("headers", &[], |_| {});
    let bearer = format!("Bearer {}", site.token("bob"));
    let alice = r#"Gateway::User::"alice""#;
    // Pulling an image is allowed from anywhere.
    let reply = gateway.call(
        "GET",
        "/v2/team/sandbox/manifests/latest",
        &[
            ("authorization", &bearer),
            ("x_cedar_principal", alice),
            ("X-Cedar_Principal", alice),
            ("x-cedar-principal", alice),
            ("X_CEDAR_DECISION_ID", "forged"),
            ("x_forwarded_user", "alice"),
            ("connection", "x-cedar-principal, x-hop-secret"),
            ("x-hop-secret", "1"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic YWxpY2U6cGFzcw=="),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = site.upstream.last().unwrap();
    let folded = |name: &str| name.to_ascii_lowercase().replace('_', "-");
    let values = |wanted: &str| -> Vec<String> {
        received
            .headers
            .iter()
            .filter(|(name, _)| folded(name) == wanted)
            .map(|(_, value)| value.clone())
            .collect()
    };
    assert_eq!(
        values("x-cedar-principal"),
        [r#"Gateway::User::"bob""#],
        "{received:?}"
    );
    assert_eq!(values("x-cedar-decision-id").len(), 1, "{received:?}");
    assert_ne!(values("x-cedar-decision-id")[0], "forged");
    for name in [
        "x-forwarded-user",
        "x-hop-secret",
        "upgrade",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(values(name).is_empty(), "{name}: {received:?}");
    }
    assert!(
        values("connection")
            .iter()
            .all(|value| !value.contains("x-cedar-principal") && !value.contains("x-hop-secret")),
        "{received:?}"
    );
    assert!(values("authorization").len() == 1, "{received:?}");

    // Two Authorization headers: which one would the upstream read?
    let hits = site.upstream.received().len();
    let other = format!("Bearer {}", site.token("alice"));
    for second in [
        ("authorization", other.as_str()),
        ("Authorization", "Basic YTpi"),
    ] {
        let reply = gateway.call(
            "GET",
            "/v2/team/sandbox/manifests/latest",
            &[("authorization", &bearer), second],
        );
        assert_eq!(reply.status, 400, "{second:?}: {}", reply.body);
        assert!(reply.body.contains("authorization"), "{}", reply.body);
    }
    gateway.stop();
    assert_eq!(site.upstream.received().len(), hits);
}

/// An app missing from entities.json makes the off-network forbid error.
/// Cedar skips a policy whose condition errors, so by default the permit
/// wins; with `on_forbid_error: deny` the erroring forbid denies and is
/// named as the reason.
#[test]
fn a_forbid_that_errors_denies_only_with_on_forbid_error_deny() {
    let add_wiki = |mapping: &mut Value, on_forbid_error: Option<&str>| {
        let routes = mapping["routes"]["routes"].as_array_mut().unwrap();
        routes.insert(
            0,
            json!({"path": "/wiki/{rest*}", "methods": {"*": "connect"},
                   "resource": {"type": "Gateway::App", "id": "wiki"}}),
        );
        let object = mapping.as_object_mut().unwrap();
        match on_forbid_error {
            Some(setting) => object.insert("on_forbid_error".into(), json!(setting)),
            None => object.remove("on_forbid_error"),
        };
    };
    let forbid = "forbid-internal-apps-off-network";
    for (name, setting, status) in [
        ("forbid-error-default", None, 200),
        ("forbid-error-skip", Some("skip"), 200),
        ("forbid-error-deny", Some("deny"), 403),
    ] {
        let (site, gateway) = Site::new(name, &["127.0.0.1/32"], |mapping| {
            add_wiki(mapping, setting)
        });
        let bearer = format!("Bearer {}", site.token("bob"));
        let reply = gateway.send("GET", "/wiki/home", &from_office(&bearer));
        assert_eq!(reply.status, status, "{setting:?}: {}", reply.body);
        let id = decision_id(&reply)
            .or_else(|| {
                reply.json()["headers"]["x-cedar-decision-id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap();
        gateway.stop();
        let record = &site.audit()[&id];
        let errors = record["errors"].to_string();
        assert!(errors.contains(forbid), "{setting:?}: {record}");
        if status == 403 {
            assert_eq!(record["decision"], "deny", "{record}");
            assert_eq!(record["determining_policies"], json!([forbid]), "{record}");
        } else {
            assert_eq!(
                record["determining_policies"],
                json!(["employees-connect"]),
                "{record}"
            );
        }
    }
}
