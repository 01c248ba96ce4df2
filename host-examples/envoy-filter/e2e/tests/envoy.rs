//! The filter inside a real Envoy (1.40, from PyPI), on 127.0.0.1: real
//! RS256 tokens checked by `jwt_authn`, an echo upstream, and decisions
//! compared with the native core's on the same mapped requests.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use cedar_edge_envoy_e2e::config::{JwtProvider, Listener, Ports, Upstream, envoy_yaml};
use cedar_edge_envoy_e2e::envoy::validate;
use cedar_edge_envoy_e2e::repo;
use cedar_edge_envoy_e2e::stack::{
    AIRFLOW_PEOPLE, AIRFLOW_ROUTES, AUDIENCE, ISSUER, Stack, airflow_plugin, claims, gateway_plugin,
};
use cedar_edge_mapping::{Claims, HttpRequest, Verdict};
use cedar_edge_testkit::jwt::{Issuer, now};
use serde_json::json;

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("envoy")
        .join(name)
}

fn start(name: &str, plugin: serde_json::Value) -> Stack {
    Stack::start(&scratch(name), plugin)
}

#[test]
fn shipped_configs_are_current_and_pass_envoy_validate() {
    let demo_jwks =
        std::fs::read_to_string(repo().join("host-examples/envoy-filter/examples/demo-jwks.json"))
            .unwrap();
    let module = "target/wasm/wasm32-wasip1/envoy-filter/cedar_edge_envoy_filter.wasm";
    let ports = Ports {
        listener: 10000,
        admin: 9901,
    };
    let provider = JwtProvider {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks: demo_jwks.trim().to_owned(),
    };
    let airflow = envoy_yaml(
        &ports,
        Some(&provider),
        Some((module, &airflow_plugin())),
        &[Upstream {
            name: "airflow".into(),
            prefix: "/".into(),
            port: 8080,
        }],
    );
    let gateway_plugin = gateway_plugin();
    let gateway = envoy_yaml(
        &ports,
        Some(&JwtProvider {
            audience: "internal-apps".into(),
            ..provider.clone()
        }),
        Some((module, &gateway_plugin)),
        &[
            Upstream {
                name: "gitlab".into(),
                prefix: "/gitlab/".into(),
                port: 8081,
            },
            Upstream {
                name: "airflow".into(),
                prefix: "/airflow/".into(),
                port: 8082,
            },
            Upstream {
                name: "registry".into(),
                prefix: "/v2/".into(),
                port: 8083,
            },
        ],
    );
    let bless = std::env::var_os("CEDAR_EDGE_BLESS").is_some();
    for (name, rendered) in [
        ("envoy-airflow.yaml", airflow),
        ("envoy-gateway.yaml", gateway),
    ] {
        let path = repo()
            .join("host-examples/envoy-filter/examples")
            .join(name);
        if bless {
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "{name} is out of date with its bundle or mapping; regenerate with \
             CEDAR_EDGE_BLESS=1 cargo test -p cedar-edge-envoy-e2e --test envoy shipped"
        );
        // The module path is relative to the repository root, where the test runs Envoy.
        let out = validate(&path);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn two_hundred_mixed_requests_get_the_native_decision() {
    let stack = start("mixed", airflow_plugin());
    let reference = cedar_edge_envoy_filter::config::load(stack.plugin.to_string().as_bytes())
        .expect("the config loads natively");
    let (people, routes) = (AIRFLOW_PEOPLE, AIRFLOW_ROUTES);
    let mut outcomes = std::collections::BTreeMap::new();
    let mut count = 0;
    for (index, ((user, groups), (method, path))) in people
        .iter()
        .flat_map(|person| routes.iter().map(move |route| (person, route)))
        .cycle()
        .take(200)
        .enumerate()
    {
        let (mfa, age) = [(true, 60), (false, 60), (true, 7200), (true, 300)][index % 4];
        let token_claims = claims(user, groups, mfa, age);
        let token = (index % 17 != 0).then(|| stack.issuer.sign(&token_claims));
        let reply = stack.call(method, path, token.as_deref(), &[]);
        let expected = reference.decide(&HttpRequest {
            method: (*method).into(),
            path: (*path).into(),
            headers: Vec::new(),
            source_address: Some("127.0.0.1".into()),
            peer_identity: None,
            now_seconds: now(),
            claims: match &token {
                Some(_) => Claims::Present(token_claims.as_object().unwrap().clone()),
                None => Claims::Absent,
            },
        });
        let expected_status = match expected.verdict {
            Verdict::Allow => 200,
            Verdict::Deny => 403,
            Verdict::Unauthenticated => 401,
            Verdict::Malformed => 400,
        };
        assert_eq!(
            reply.status, expected_status,
            "{user} {method} {path} mfa={mfa} age={age}: {} / native {:?}",
            reply.body, expected.response
        );
        if let (200, Some(request)) = (reply.status, &expected.request) {
            let forwarded = reply.json();
            assert_eq!(
                forwarded["headers"]["x-cedar-principal"],
                request.principal.to_string()
            );
            assert!(
                forwarded["headers"]["x-cedar-decision-id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty())
            );
        }
        if reply.status == 403 {
            let body = reply.json();
            let reasons = expected
                .response
                .map(|response| response.determining_policies)
                .unwrap_or_default();
            assert_eq!(body["reasons"], json!(reasons), "{user} {method} {path}");
            assert!(body["decision_id"].as_str().is_some());
        }
        if reply.status == 401 {
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        }
        *outcomes.entry(reply.status).or_insert(0) += 1;
        count += 1;
    }
    assert_eq!(count, 200);
    // The mix really is mixed.
    for status in [200, 401, 403] {
        assert!(
            outcomes.get(&status).copied().unwrap_or(0) >= 10,
            "{outcomes:?}"
        );
    }
    assert_eq!(
        stack
            .upstream
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        outcomes[&200]
    );
    assert_eq!(
        stack.envoy.counter("wasmcustom.cedar_edge.allowed"),
        Some(outcomes[&200] as u64)
    );
    assert_eq!(
        stack.envoy.counter("wasmcustom.cedar_edge.denied"),
        Some((outcomes[&401] + outcomes[&403]) as u64)
    );
    // One decision record per request in the access log, and no token in
    // either log.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(stack.decisions().len(), 200);
    for log in [stack.envoy.access_log(), stack.envoy.log()] {
        assert!(!log.contains("eyJ"), "a token reached a log");
    }
}

#[test]
fn spoofed_identity_headers_are_stripped() {
    let stack = start("spoof", airflow_plugin());
    let token = stack.issuer.sign(&claims("bob", &[], true, 60));
    let reply = stack.call(
        "GET",
        "/api/v1/dags/etl_daily/dagRuns",
        Some(&token),
        &[
            ("x-cedar-principal", r#"Airflow::User::"alice""#),
            ("x-cedar-decision-id", "forged"),
            ("x-airflow-user", "admin"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-cedar-principal"], r#"Airflow::User::"bob""#);
    assert_ne!(headers["x-cedar-decision-id"], "forged");
    assert!(headers.get("x-airflow-user").is_none(), "{headers}");
    // The spoofed principal header alone is no identity.
    let anonymous = stack.call(
        "GET",
        "/api/v1/dags/etl_daily/dagRuns",
        None,
        &[("x-cedar-principal", r#"Airflow::User::"alice""#)],
    );
    assert_eq!(anonymous.status, 401);
}

#[test]
fn jwt_authn_refuses_bad_tokens_before_the_filter() {
    let stack = start("bad-tokens", airflow_plugin());
    let mut expired = claims("bob", &[], true, 60);
    expired["exp"] = json!(now() - 120);
    let mut foreign = claims("bob", &[], true, 60);
    foreign["iss"] = json!("https://evil.example.com");
    let other_key = Issuer::generate("test-key");
    for token in [
        stack.issuer.sign(&expired),
        stack.issuer.sign(&foreign),
        other_key.sign(&claims("bob", &[], true, 60)),
    ] {
        let reply = stack.call("GET", "/api/v1/dags/etl_daily/dagRuns", Some(&token), &[]);
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    assert_eq!(
        stack
            .upstream
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn shadow_mode_lets_traffic_through_and_counts_would_be_denials() {
    let mut plugin = airflow_plugin();
    plugin["shadow_mode"] = json!(true);
    let stack = start("shadow", plugin);
    let token = stack.issuer.sign(&claims("carol", &[], true, 60));
    let mut denied = 0;
    for path in ["/api/v1/dags/etl_daily", "/api/v1/dags/reporting"] {
        // A viewer editing: denied by the policies, passed in shadow mode.
        let reply = stack.call("PATCH", path, Some(&token), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.json()["headers"].get("x-cedar-principal").is_none());
        denied += 1;
    }
    let reply = stack.call("GET", "/api/v1/dags/etl_daily", Some(&token), &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        stack.envoy.counter("wasmcustom.cedar_edge.shadow_denied"),
        Some(denied)
    );
    assert_eq!(
        stack.envoy.counter("wasmcustom.cedar_edge.allowed"),
        Some(1)
    );
    assert_eq!(stack.envoy.counter("wasmcustom.cedar_edge.denied"), Some(0));
}

#[test]
fn a_broken_policy_is_refused_and_nothing_is_allowed() {
    let mut plugin = airflow_plugin();
    plugin["bundle"]["policies"]["roles.cedar"] =
        json!("permit (principal, action, resource) when { ;");
    let mut stack = Stack::launch(&scratch("broken"), plugin, &Listener::default(), 1);
    if stack.envoy.running() {
        let token = stack.token(&claims("bob", &[], true, 60));
        for _ in 0..5 {
            let reply = stack.call("GET", "/api/v1/dags/etl_daily/dagRuns", Some(&token), &[]);
            assert_ne!(
                reply.status, 200,
                "a broken configuration allowed a request"
            );
        }
    }
    assert_eq!(
        stack
            .upstream
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = stack.envoy.log();
    assert!(log.contains("invalid cedar-edge configuration"), "{log}");
    assert!(
        log.contains("roles.cedar"),
        "the error names the file: {log}"
    );
}
