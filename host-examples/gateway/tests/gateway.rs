//! The gateway in-process, over real loopback HTTP: token checks, decisions
//! through the component, header hygiene, the admin listener, and hot
//! reload. The decision service has tests of its own (`decision_service.rs`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cedar_edge_testkit::jwt::now;
use common::running::Running;
use common::*;
use serde_json::json;

const TRIGGER: &str = "/api/v1/dags/etl_daily/dagRuns";

#[test]
fn allowed_requests_are_forwarded_with_verified_identity_and_denied_ones_get_403() {
    let setup = setup("allow-deny", "127.0.0.1:0", "");
    let gateway = Running::start(&setup.config);
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let reply = gateway.call_as(
        "POST",
        TRIGGER,
        Some(&bob),
        &[
            ("x-cedar-principal", r#"Airflow::User::"alice""#),
            ("x-airflow-user", "admin"),
            ("x-cedar-decision-id", "forged"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-cedar-principal"], r#"Airflow::User::"bob""#);
    assert!(headers.get("x-airflow-user").is_none(), "{headers}");
    assert_ne!(headers["x-cedar-decision-id"], "forged");
    assert!(
        headers.get("authorization").is_some(),
        "the token goes on to the upstream"
    );

    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    let reply = gateway.call_as("POST", TRIGGER, Some(&carol), &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.json()["decision_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    // A user the bundle does not know, an operator through the groups claim, with ES256.
    let frank = setup.ec.sign(&claims(
        EC_ISSUER,
        "frank",
        &["data-platform/operators"],
        true,
    ));
    assert_eq!(
        gateway.call_as("POST", TRIGGER, Some(&frank), &[]).status,
        200
    );
    let upstream_hits = setup.upstream.hits.load(Ordering::Relaxed);
    assert_eq!(upstream_hits, 2);
    let metrics = gateway.admin("/metrics").body;
    assert!(
        metrics.contains("cedar_edge_decisions_total{outcome=\"allow\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cedar_edge_decisions_total{outcome=\"deny\"} 1"),
        "{metrics}"
    );
    let summary = gateway.stop();
    assert_eq!(summary.audit_records, 3);
}

#[test]
fn every_token_attack_is_a_401_with_a_challenge() {
    let setup = setup("attacks", "127.0.0.1:0", "");
    let gateway = Running::start(&setup.config);
    let good = claims(RSA_ISSUER, "bob", &[], true);
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut edited = good.clone();
        edit(&mut edited);
        setup.rsa.sign(&edited)
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    // HS256 with the issuer's public JWKS as the secret: the classic confusion attack.
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("rsa-key".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(setup.rsa.jwks().as_bytes()),
    )
    .unwrap();
    let stranger = cedar_edge_testkit::jwt::Issuer::generate("rsa-key").sign(&good);
    let attacks = [
        ("no token", None),
        ("alg none", Some(unsigned)),
        ("HS256 with the public key", Some(confused)),
        ("an unknown key", Some(stranger)),
        ("expired", Some(with(&|c| c["exp"] = json!(now() - 120)))),
        (
            "not yet valid",
            Some(with(&|c| c["nbf"] = json!(now() + 600))),
        ),
        (
            "another audience",
            Some(with(&|c| c["aud"] = json!("gitlab"))),
        ),
        (
            "an untrusted issuer",
            Some(with(&|c| c["iss"] = json!("https://evil.example.com"))),
        ),
        ("garbage", Some("not.a.token".to_owned())),
    ];
    for (what, token) in attacks {
        let reply = gateway.call_as("POST", TRIGGER, token.as_deref(), &[]);
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    }
    // Within the leeway, an expired-by-a-little token still works.
    let fresh_enough = with(&|c| c["exp"] = json!(now() - 5));
    assert_eq!(
        gateway
            .call_as("POST", TRIGGER, Some(&fresh_enough), &[])
            .status,
        200
    );
    assert_eq!(setup.upstream.hits.load(Ordering::Relaxed), 1);
    gateway.stop();
}

#[test]
fn reload_under_load_switches_once_and_a_broken_bundle_is_refused() {
    let setup = setup("reload", "127.0.0.1:0", "");
    let gateway = Arc::new(Running::start(&setup.config));
    let before = gateway.admin("/healthz").json()["bundle_id"].clone();
    let carol = setup.ec.sign(&claims(EC_ISSUER, "carol", &[], true));
    let bob = setup.rsa.sign(&claims(RSA_ISSUER, "bob", &[], true));
    let done = Arc::new(AtomicBool::new(false));
    // Carol, a viewer, keeps asking to trigger; Bob keeps triggering.
    let load = {
        let (gateway, done, carol, bob) = (
            Arc::clone(&gateway),
            Arc::clone(&done),
            carol.clone(),
            bob.clone(),
        );
        std::thread::spawn(move || {
            let mut carol_statuses = Vec::new();
            let mut bob_failures = 0;
            while !done.load(Ordering::Relaxed) {
                carol_statuses.push(gateway.call_as("POST", TRIGGER, Some(&carol), &[]).status);
                if gateway.call_as("POST", TRIGGER, Some(&bob), &[]).status != 200 {
                    bob_failures += 1;
                }
            }
            (carol_statuses, bob_failures)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let roles = setup.bundle.join("roles.cedar");
    let mut text = std::fs::read_to_string(&roles).unwrap();
    text.push_str("\n@id(\"viewers-trigger\")\npermit (principal in Airflow::Role::\"viewer\", action == Airflow::Action::\"trigger\", resource is Airflow::Dag);\n");
    std::fs::write(&roles, &text).unwrap();
    let mut after = before.clone();
    for _ in 0..100 {
        after = gateway.admin("/healthz").json()["bundle_id"].clone();
        if after != before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(after, before, "the new bundle never became active");
    std::thread::sleep(Duration::from_millis(500));

    // A broken bundle is refused; the last good one keeps serving.
    std::fs::write(
        setup.bundle.join("broken.cedar"),
        "permit (principal, action, resource) when { ;",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gateway.admin("/healthz").json()["bundle_id"], after);
    done.store(true, Ordering::Relaxed);
    let (carol_statuses, bob_failures) = load.join().unwrap();
    assert_eq!(bob_failures, 0, "a request failed during the reload");
    assert!(
        carol_statuses
            .iter()
            .all(|status| *status == 200 || *status == 403),
        "{carol_statuses:?}"
    );
    let switches = carol_statuses
        .windows(2)
        .filter(|pair| pair[0] != pair[1])
        .count();
    assert_eq!(
        switches, 1,
        "the decision must switch exactly once: {carol_statuses:?}"
    );
    assert_eq!(carol_statuses.first(), Some(&403));
    assert_eq!(carol_statuses.last(), Some(&200));
    assert_eq!(
        gateway.call_as("POST", TRIGGER, Some(&carol), &[]).status,
        200
    );
    let metrics = gateway.admin("/metrics").body;
    assert!(
        metrics.contains("cedar_edge_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("cedar_edge_reloads_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    Arc::try_unwrap(gateway).ok().unwrap().stop();
}
