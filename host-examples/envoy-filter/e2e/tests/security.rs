//! Issue 12 through the real Envoy 1.40: what reaches the upstream is
//! exactly what was decided. Re-spelt admin paths, a client's
//! `X-Forwarded-For` and `x-request-id`, spoofed and hop-by-hop headers,
//! repeated credentials, policies nested too deep, and forbids whose
//! condition errors.
//!
//! Two Envoys serve the same plugin: one with the shipped listener
//! settings (path normalisation on), one with Envoy's normalisation off
//! and `jwt_authn` forwarding the token, so that the filter's own checks
//! are what is tested. A third is given policies nested too deep.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cedar_edge_core::{MAX_NESTING, MAX_OPERATOR_DEPTH};
use cedar_edge_envoy_e2e::config::Listener;
use cedar_edge_envoy_e2e::stack::{Stack, claims, gateway_plugin};
use cedar_edge_mapping::{Claims, HttpRequest, Verdict, fold_header_name};
use cedar_edge_testkit::http::{self, Reply};
use cedar_edge_testkit::jwt::now;
use cedar_edge_testkit::upstream::Received;
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("envoy-security")
        .join(name)
}

/// A user the test bundle lets `connect` to anything from anywhere, and
/// who may not `administer`: a path decided as the lesser action shows
/// as a 200 for her.
const MALLORY: &str = "mallory";
/// An admin with MFA: allowed to administer from loopback.
const ALICE: &str = "alice";

/// The shipped gateway example (bundle and mapping), plus what the tests
/// need: mallory's grant, a route to an app missing from `entities.json`,
/// policies exactly as deep and as long as the pre-check accepts (which
/// must still run inside the filter's VM), reasons in refusals, and
/// `on_forbid_error`.
fn test_plugin(on_forbid_error: &str) -> Value {
    let mut plugin = gateway_plugin();
    let deepest = at_the_limit(
        &plugin,
        "test-deepest-accepted.cedar",
        MAX_NESTING,
        nested_forbid,
    );
    let longest = at_the_limit(
        &plugin,
        "test-longest-accepted.cedar",
        MAX_OPERATOR_DEPTH,
        chained_forbid,
    );
    let policies = &mut plugin["bundle"]["policies"];
    policies["test-grants.cedar"] = json!(format!(
        "@id(\"test-mallory-connects\")\n\
         permit (principal == Gateway::User::\"{MALLORY}\", action == Gateway::Action::\"connect\", resource);\n"
    ));
    policies["test-deepest-accepted.cedar"] = json!(deepest);
    policies["test-longest-accepted.cedar"] = json!(longest);
    plugin["routes"]["routes"].as_array_mut().unwrap().insert(
        0,
        json!({"path": "/wiki/{rest*}", "methods": {"*": "connect"},
                   "resource": {"type": "Gateway::App", "id": "wiki"}}),
    );
    plugin["reasons_in_deny_body"] = json!(true);
    plugin["on_forbid_error"] = json!(on_forbid_error);
    plugin
}

/// The largest `size` up to `max` for which `policy(size)` loads natively
/// beside the plugin's bundle, as `file`: the pre-check's limit, whatever
/// way it counts. Policies right at the limit must also run in the VM.
fn at_the_limit(plugin: &Value, file: &str, max: usize, policy: fn(usize) -> String) -> String {
    (1..=max)
        .rev()
        .map(policy)
        .find(|text| {
            let mut candidate = plugin.clone();
            candidate["bundle"]["policies"][file] = json!(text);
            cedar_edge_envoy_filter::config::load(candidate.to_string().as_bytes()).is_ok()
        })
        .unwrap_or_else(|| panic!("no size of `{file}` loads"))
}

/// A forbid that never holds, its condition inside `depth` parentheses.
fn nested_forbid(depth: usize) -> String {
    format!(
        "@id(\"test-deepest-accepted\")\nforbid (principal, action, resource)\nwhen {{ {}context.mfa && false{} }};\n",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

/// A forbid that never holds, its condition a chain of `length` `||`:
/// Cedar evaluates it recursively, on every request.
fn chained_forbid(length: usize) -> String {
    format!(
        "@id(\"test-longest-accepted\")\nforbid (principal, action, resource)\nwhen {{ context.mfa && false{} }};\n",
        " || false".repeat(length)
    )
}

/// A policy `depth` parentheses deep.
fn policy_nested(depth: usize) -> String {
    format!(
        "permit (principal, action, resource)\nwhen {{ {}true{} }};\n",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

fn user_claims(user: &str, groups: &[&str]) -> Value {
    claims(user, groups, true, 60)
}

/// Where the upstream's copy of the request says it was decided.
fn decision_id_received(received: &Received) -> String {
    let ids = received.header_values("x-cedar-decision-id");
    assert_eq!(ids.len(), 1, "{received:?}");
    ids[0].to_owned()
}

/// What a spelling of `/gitlab/admin/users` must come to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Decided as `administer`; for alice, forwarded as exactly this.
    Canonical(&'static str),
    /// Refused with 400 by the filter.
    RefusedByFilter,
    /// Refused with 400 by Envoy's own normalisation, before the filter.
    RefusedByEnvoy,
}

use Outcome::{Canonical, RefusedByEnvoy, RefusedByFilter};

/// Every spelling in finding 1, and `%252e`, trailing dots and mixed
/// case: what each comes to with Envoy's normalisation, and with the
/// filter alone.
const MATRIX: &[(&str, Outcome, Outcome)] = &[
    (
        "/gitlab/admin/users",
        Canonical("/gitlab/admin/users"),
        Canonical("/gitlab/admin/users"),
    ),
    (
        "/gitlab//admin/users",
        Canonical("/gitlab/admin/users"),
        RefusedByFilter,
    ),
    (
        "/gitlab/%61dmin/users",
        Canonical("/gitlab/admin/users"),
        Canonical("/gitlab/admin/users"),
    ),
    (
        "/gitlab/admi%6e/users",
        Canonical("/gitlab/admin/users"),
        Canonical("/gitlab/admin/users"),
    ),
    (
        "/gitlab/%61dmin/users?page=2",
        Canonical("/gitlab/admin/users?page=2"),
        Canonical("/gitlab/admin/users?page=2"),
    ),
    (
        "/gitlab/./admin/users",
        Canonical("/gitlab/admin/users"),
        RefusedByFilter,
    ),
    (
        "/gitlab/x/../admin/users",
        Canonical("/gitlab/admin/users"),
        RefusedByFilter,
    ),
    (
        "/gitlab/%2e/admin/users",
        Canonical("/gitlab/admin/users"),
        RefusedByFilter,
    ),
    (
        "/gitlab/admin\\users",
        Canonical("/gitlab/admin/users"),
        RefusedByFilter,
    ),
    (
        "/gitlab/Admin/users",
        Canonical("/gitlab/Admin/users"),
        Canonical("/gitlab/Admin/users"),
    ),
    (
        "/gitlab/aDmIN/users",
        Canonical("/gitlab/aDmIN/users"),
        Canonical("/gitlab/aDmIN/users"),
    ),
    (
        "/GitLab/ADMIN/users",
        Canonical("/GitLab/ADMIN/users"),
        Canonical("/GitLab/ADMIN/users"),
    ),
    // Envoy leaves escapes' hex case alone; the filter upper-cases it.
    (
        "/gitlab/admin/us%3aers",
        Canonical("/gitlab/admin/us%3Aers"),
        Canonical("/gitlab/admin/us%3Aers"),
    ),
    (
        "/gitlab/admin;jsessionid=1/users",
        RefusedByFilter,
        RefusedByFilter,
    ),
    ("/gitlab/admin%2Fusers", RefusedByEnvoy, RefusedByFilter),
    ("/gitlab/admin%2fusers", RefusedByEnvoy, RefusedByFilter),
    ("/gitlab/admin%5Cusers", RefusedByEnvoy, RefusedByFilter),
    ("/gitlab/admin%00/users", RefusedByEnvoy, RefusedByFilter),
    (
        "/gitlab/%252e/admin/users",
        RefusedByFilter,
        RefusedByFilter,
    ),
    ("/gitlab/admin%252fusers", RefusedByFilter, RefusedByFilter),
    ("/gitlab/admin./users", RefusedByFilter, RefusedByFilter),
    ("/gitlab/admin/users.", RefusedByFilter, RefusedByFilter),
    ("/gitlab/admin%2e/users", RefusedByFilter, RefusedByFilter),
];

/// Runs the matrix against one Envoy: mallory (who may connect but not
/// administer) is never let through, and alice (who may administer) is
/// forwarded exactly the canonical path that her decision record holds.
fn path_matrix(stack: &Stack, normalising: bool) {
    let mallory = stack.token(&user_claims(MALLORY, &[]));
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    // The control: mallory's lesser action is allowed, so a path decided
    // as `connect` would show as a 200.
    let control = stack.call("GET", "/gitlab/projects", Some(&mallory), &[]);
    assert_eq!(control.status, 200, "{}", control.body);
    let malformed_before = stack.counter("malformed");
    let mut refused_by_filter = 0;
    for &(raw, with_envoy, filter_alone) in MATRIX {
        let expected = if normalising {
            with_envoy
        } else {
            filter_alone
        };
        let context = format!("{raw} (Envoy normalising: {normalising})");

        let hits = stack.upstream.received().len();
        let reply = stack.call("GET", raw, Some(&mallory), &[]);
        assert_eq!(
            stack.upstream.received().len(),
            hits,
            "{context}: mallory got through: {}",
            reply.body
        );
        match expected {
            Canonical(_) => {
                assert_eq!(reply.status, 403, "{context}: {}", reply.body);
                let line = stack
                    .decision(reply.json()["decision_id"].as_str().unwrap())
                    .unwrap();
                assert_eq!(
                    line["action"], r#"Gateway::Action::"administer""#,
                    "{context}: {line}"
                );
            }
            RefusedByFilter => {
                assert_refused_by_filter(stack, &reply, &context);
                refused_by_filter += 1;
            }
            RefusedByEnvoy => assert_refused_by_envoy(&reply, &context),
        }

        let reply = stack.call("GET", raw, Some(&alice), &[]);
        match expected {
            Canonical(canonical) => {
                assert_eq!(reply.status, 200, "{context}: {}", reply.body);
                let received = stack.upstream.last().unwrap();
                assert_eq!(received.target, canonical, "{context}");
                let line = stack.decision(&decision_id_received(&received)).unwrap();
                assert_eq!(
                    line["action"], r#"Gateway::Action::"administer""#,
                    "{context}: {line}"
                );
                assert_eq!(line["decision"], "allow", "{context}: {line}");
                // The decided path is the forwarded one, less the query.
                let forwarded_path = received.target.split('?').next().unwrap();
                assert_eq!(line["path"], forwarded_path, "{context}: {line}");
            }
            RefusedByFilter => {
                assert_refused_by_filter(stack, &reply, &context);
                refused_by_filter += 1;
            }
            RefusedByEnvoy => assert_refused_by_envoy(&reply, &context),
        }
    }
    // Every refusal by the filter is counted.
    assert_eq!(
        stack.counter("malformed") - malformed_before,
        refused_by_filter
    );
}

fn assert_refused_by_filter(stack: &Stack, reply: &Reply, context: &str) {
    assert_eq!(reply.status, 400, "{context}: {}", reply.body);
    let body = reply.json();
    assert_eq!(body["decision"], "bad_request", "{context}: {}", reply.body);
    let line = stack
        .decision(body["decision_id"].as_str().unwrap())
        .unwrap();
    assert!(
        line["action"].is_null(),
        "{context}: decided anyway: {line}"
    );
    assert!(
        line["refusal"].as_str().is_some_and(|why| !why.is_empty()),
        "{context}: {line}"
    );
}

fn assert_refused_by_envoy(reply: &Reply, context: &str) {
    assert_eq!(reply.status, 400, "{context}: {}", reply.body);
    assert!(
        reply.json()["decision_id"].is_null(),
        "{context}: the filter saw it: {}",
        reply.body
    );
}

/// The shipped listener settings, two worker threads (two Wasm VMs).
#[test]
fn with_the_shipped_listener_settings() {
    let stack = Stack::launch(
        &scratch("shipped"),
        test_plugin("deny"),
        &Listener::default(),
        2,
    )
    .ready();
    path_matrix(&stack, true);
    client_addresses_come_from_the_socket(&stack);
    spoofed_and_hop_by_hop_headers_never_reach_the_upstream(&stack);
    decision_ids_are_the_filters_own_and_unique(&stack);
    a_forbid_whose_condition_errors_denies(&stack);
    // jwt_authn removes the header it verified: the upstream reads no
    // credential at all, and two bearer tokens are no token.
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    let reply = stack.call(
        "GET",
        "/gitlab/admin/users",
        Some(&alice),
        &[("authorization", "Basic bWFsbG9yeTpwdw==")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = stack.upstream.last().unwrap();
    assert!(
        received.header_values("authorization").is_empty(),
        "{received:?}"
    );
    two_bearer_tokens_are_refused(&stack);
}

/// Envoy's normalisation off and the token forwarded: the filter alone
/// keeps the upstream to what was decided.
#[test]
fn with_envoy_normalisation_off_the_filter_refuses_on_its_own() {
    let listener = Listener {
        normalize_paths: false,
        forward_token: true,
        ..Listener::default()
    };
    let stack = Stack::launch(&scratch("filter-alone"), test_plugin("deny"), &listener, 1).ready();
    path_matrix(&stack, false);
    spoofed_and_hop_by_hop_headers_never_reach_the_upstream(&stack);
    // The token stays on the request here, so the filter sees a second
    // credential (Envoy joins repeated headers with a comma) and refuses.
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    let hits = stack.upstream.received().len();
    let malformed = stack.counter("malformed");
    let reply = http::get(
        stack.envoy.port,
        "GET",
        "/gitlab/admin/users",
        &[
            ("authorization", "Basic bWFsbG9yeTpwdw=="),
            ("authorization", &format!("Bearer {alice}")),
        ],
    );
    assert_refused_by_filter(&stack, &reply, "two authorization headers");
    assert_eq!(stack.upstream.received().len(), hits);
    assert_eq!(stack.counter("malformed"), malformed + 1);
    two_bearer_tokens_are_refused(&stack);
    // One credential still passes, and reaches the upstream once.
    let reply = stack.call("GET", "/gitlab/admin/users", Some(&alice), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = stack.upstream.last().unwrap();
    assert_eq!(
        received.header_values("authorization"),
        [format!("Bearer {alice}")]
    );
}

fn two_bearer_tokens_are_refused(stack: &Stack) {
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    let mallory = stack.token(&user_claims(MALLORY, &[]));
    let hits = stack.upstream.received().len();
    for (first, second) in [(&alice, &mallory), (&mallory, &alice)] {
        let reply = http::get(
            stack.envoy.port,
            "GET",
            "/gitlab/projects",
            &[
                ("authorization", &format!("Bearer {first}")),
                ("authorization", &format!("Bearer {second}")),
            ],
        );
        // jwt_authn reads the joined value as one malformed token.
        assert!(
            matches!(reply.status, 400 | 401),
            "{}: {}",
            reply.status,
            reply.body
        );
    }
    assert_eq!(stack.upstream.received().len(), hits);
}

/// Finding 2: bob is 403 on `/gitlab/projects` from loopback, and a
/// client's `X-Forwarded-For` does not move him onto the corporate
/// network.
fn client_addresses_come_from_the_socket(stack: &Stack) {
    let bob_claims = user_claims("bob", &["engineering"]);
    let bob = stack.token(&bob_claims);
    // Were the header believed, bob would be allowed: the test can fail.
    let reference = cedar_edge_envoy_filter::config::load(stack.plugin.to_string().as_bytes())
        .expect("the plugin loads natively");
    let from = |address: &str| {
        reference
            .decide(&HttpRequest {
                method: "GET".into(),
                path: "/gitlab/projects".into(),
                source_address: Some(address.into()),
                now_seconds: now(),
                claims: Claims::Present(bob_claims.as_object().unwrap().clone()),
                ..HttpRequest::default()
            })
            .verdict
    };
    assert_eq!(from("10.1.2.3"), Verdict::Allow);
    assert_eq!(from("127.0.0.1"), Verdict::Deny);
    let hits = stack.upstream.received().len();
    for forwarded in [None, Some("10.1.2.3"), Some("10.1.2.3, 10.9.9.9")] {
        let mut headers = Vec::new();
        if let Some(addresses) = forwarded {
            headers.push(("x-forwarded-for", addresses));
        }
        let reply = stack.call("GET", "/gitlab/projects", Some(&bob), &headers);
        assert_eq!(
            reply.status, 403,
            "X-Forwarded-For {forwarded:?}: {}",
            reply.body
        );
    }
    assert_eq!(stack.upstream.received().len(), hits);
}

/// Finding 3: the principal header in any spelling, the strip list in any
/// spelling, hop-by-hop headers and the headers `Connection` names.
fn spoofed_and_hop_by_hop_headers_never_reach_the_upstream(stack: &Stack) {
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    let forged = r#"Gateway::User::"mallory""#;
    let reply = stack.call(
        "GET",
        "/gitlab/admin/users",
        Some(&alice),
        &[
            ("x-cedar-principal", forged),
            ("x_cedar_principal", forged),
            ("X-Cedar_Principal", forged),
            ("X_CEDAR_DECISION_ID", "forged"),
            ("x_forwarded_user", "root"),
            ("Connection", "x-nominated, keep-alive"),
            ("x-nominated", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic bWFsbG9yeTpwdw=="),
            ("TE", "trailers, deflate"),
            ("Trailer", "x-late"),
            ("Upgrade", "h2c"),
            ("x-kept", "1"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = stack.upstream.last().unwrap();
    let folded: Vec<(String, &str)> = received
        .headers
        .iter()
        .map(|(name, value)| (fold_header_name(name), value.as_str()))
        .collect();
    let values = |name: &str| -> Vec<&str> {
        folded
            .iter()
            .filter(|(folded, _)| folded == name)
            .map(|(_, value)| *value)
            .collect()
    };
    assert_eq!(
        values("x-cedar-principal"),
        [r#"Gateway::User::"alice""#],
        "{received:?}"
    );
    assert_eq!(values("x-cedar-decision-id").len(), 1, "{received:?}");
    assert_ne!(values("x-cedar-decision-id"), ["forged"]);
    for name in [
        "x-forwarded-user",
        "connection",
        "x-nominated",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            values(name).is_empty(),
            "`{name}` reached the upstream: {received:?}"
        );
    }
    assert_eq!(values("x-kept"), ["1"], "an ordinary header was lost");
}

/// Finding 3: a client's `x-request-id` is not the decision id, and ids
/// are unique across requests and across the worker threads' VMs.
fn decision_ids_are_the_filters_own_and_unique(stack: &Stack) {
    let alice = stack.token(&user_claims(ALICE, &["platform-admins"]));
    let chosen = "client-chosen-id";
    let reply = stack.call(
        "GET",
        "/gitlab/admin/users",
        Some(&alice),
        &[("x-request-id", chosen)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = stack.upstream.last().unwrap();
    let id = decision_id_received(&received);
    assert_ne!(id, chosen);
    assert!(id.starts_with("cedar-"), "{id}");
    assert!(
        !received.header_values("x-request-id").contains(&chosen),
        "{received:?}"
    );
    assert!(stack.decision(&id).is_some());
    assert!(
        stack
            .decisions()
            .iter()
            .all(|line| line["decision_id"] != chosen)
    );
    // Each request is its own connection; two workers share them out.
    let count = 40;
    let before = stack.upstream.received().len();
    for _ in 0..count {
        let reply = stack.call("GET", "/gitlab/admin/users", Some(&alice), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let ids: BTreeSet<String> = stack.upstream.received()[before..]
        .iter()
        .map(decision_id_received)
        .collect();
    assert_eq!(ids.len(), count, "repeated decision ids: {ids:?}");
    let vms: BTreeSet<&str> = ids.iter().filter_map(|id| id.split('-').nth(1)).collect();
    assert!(vms.len() >= 2, "every request went to one VM: {ids:?}");
    let logged: Vec<Value> = stack.decisions();
    let unique: BTreeSet<&str> = logged
        .iter()
        .filter_map(|line| line["decision_id"].as_str())
        .collect();
    assert_eq!(unique.len(), logged.len(), "a decision id was logged twice");
}

/// Finding 11: with `on_forbid_error: deny`, a forbid whose condition
/// errors (the app is missing from `entities.json`) denies.
fn a_forbid_whose_condition_errors_denies(stack: &Stack) {
    let mallory_claims = user_claims(MALLORY, &[]);
    let mallory = stack.token(&mallory_claims);
    // Cedar's own rule would allow: the test can fail.
    let mut skipping = stack.plugin.clone();
    skipping["on_forbid_error"] = json!("skip");
    let skipping = cedar_edge_envoy_filter::config::load(skipping.to_string().as_bytes()).unwrap();
    let natively = skipping.decide(&HttpRequest {
        method: "GET".into(),
        path: "/wiki/home".into(),
        source_address: Some("127.0.0.1".into()),
        now_seconds: now(),
        claims: Claims::Present(mallory_claims.as_object().unwrap().clone()),
        ..HttpRequest::default()
    });
    assert_eq!(natively.verdict, Verdict::Allow);
    let hits = stack.upstream.received().len();
    let reply = stack.call("GET", "/wiki/home", Some(&mallory), &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(
        reply.json()["reasons"],
        json!(["forbid-internal-apps-off-network"])
    );
    assert_eq!(stack.upstream.received().len(), hits);
    let line = stack
        .decision(reply.json()["decision_id"].as_str().unwrap())
        .unwrap();
    assert!(
        line["errors"].as_array().unwrap().iter().any(|error| error
            .as_str()
            .unwrap()
            .starts_with("forbid-internal-apps-off-network")),
        "{line}"
    );
}

/// Finding 6: policies 150 and 10,000 levels deep make `on_configure`
/// fail with the reason, instead of crashing the VM; Envoy then refuses
/// its configuration, so nothing is served.
#[test]
fn policies_nested_too_deep_are_refused_at_configure_time() {
    let mut plugin = test_plugin("skip");
    plugin["bundle"]["policies"]["deep-150.cedar"] = json!(policy_nested(150));
    plugin["bundle"]["policies"]["deep-10000.cedar"] = json!(policy_nested(10_000));
    let mut stack = Stack::launch(&scratch("deep"), plugin, &Listener::default(), 1);
    assert!(
        stack.not_ready.is_some(),
        "Envoy served a refused configuration"
    );
    // Envoy 1.40 exits when a static listener's Wasm plugin fails to
    // configure: nothing listens, so nothing is allowed.
    assert!(!stack.envoy.running());
    assert!(stack.upstream.received().is_empty());
    let log = stack.envoy.log();
    for file in ["deep-150.cedar", "deep-10000.cedar"] {
        assert!(
            log.lines()
                .any(|line| line.contains(file) && line.contains("nested more than")),
            "{file} was not refused with its reason:\n{log}"
        );
    }
    assert!(
        log.contains("Failed to configure base Wasm plugin"),
        "{log}"
    );
}
