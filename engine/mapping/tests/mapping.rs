//! The mapping from HTTP to Cedar, natively: paths, methods, claims and
//! hostile headers, against the airflow-gitlab bundle and the shipped
//! example mapping.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;

use cedar_edge_core::{Bundle, BundleSource, ContextInput, EntityUid, RequestLimits, Value};
use cedar_edge_mapping::{
    Claims, HttpRequest, Mapping, MappingError, Refusal, Verdict, claims_from_header,
};
use serde_json::json;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn load_bundle(name: &str) -> Arc<Bundle> {
    let source = BundleSource::from_dir(&repo().join("policies").join(name)).unwrap();
    Arc::new(Bundle::load(&source, RequestLimits::default()).unwrap())
}

fn example_mapping(name: &str) -> serde_json::Value {
    let path = repo()
        .join("host-examples/envoy-filter/examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The airflow example mapping, edited, over the airflow-gitlab bundle.
fn mapping_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Mapping, MappingError> {
    let mut config = example_mapping("airflow-mapping.json");
    edit(&mut config);
    Mapping::from_json(config.to_string().as_bytes(), load_bundle("airflow-gitlab"))
}

fn filter() -> Mapping {
    mapping_with(|_| {}).expect("the example configuration loads")
}

fn request(method: &str, path: &str, claims: serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        headers: vec![("x-request-id".into(), b"r-1".to_vec())],
        source_address: Some("10.1.2.3:51234".into()),
        peer_identity: None,
        now_seconds: 1_800_000_000,
        claims: match claims {
            serde_json::Value::Object(map) => Claims::Present(map),
            _ => Claims::Absent,
        },
    }
}

fn bob() -> serde_json::Value {
    json!({"preferred_username": "bob", "email": "bob@example.com", "amr": ["mfa"], "iat": 1_800_000_000 - 90, "groups": []})
}

#[test]
fn paths_and_methods_map_to_actions_and_resources() {
    let filter = filter();
    let cases = [
        (
            "POST",
            "/api/v1/dags/etl_daily/dagRuns",
            "trigger",
            "etl_daily",
        ),
        (
            "GET",
            "/api/v1/dags/etl_daily/dagRuns?limit=5",
            "read",
            "etl_daily",
        ),
        ("PATCH", "/api/v1/dags/ml%5Ftraining", "edit", "ml_training"),
        ("GET", "/api/v1/dags/caf%C3%A9", "read", "café"),
    ];
    for (method, path, action, dag) in cases {
        let mapped = filter.map(&request(method, path, bob())).unwrap();
        assert_eq!(
            mapped.action,
            EntityUid::new("Airflow::Action", action),
            "{method} {path}"
        );
        assert_eq!(
            mapped.resource,
            EntityUid::new("Airflow::Dag", dag),
            "{method} {path}"
        );
        assert_eq!(mapped.principal, EntityUid::new("Airflow::User", "bob"));
    }
    for (method, path) in [
        ("DELETE", "/api/v1/dags/etl_daily"),
        ("GET", "/api/v1/dags"),
        ("GET", "/api/v1/dags/etl_daily/dagRuns/extra"),
        ("GET", "/api/v1/dags/%ff"),
    ] {
        assert!(
            matches!(
                filter.map(&request(method, path, bob())),
                Err(Refusal::Invalid(_))
            ),
            "{method} {path} must not map"
        );
    }
    // Targets that two readers could see differently never reach a route.
    for path in [
        "/api/v1/dags/a%2Fb",
        "/api/v1/dags/%zz",
        "/api/v1//dags/etl_daily",
        "/api/v1/dags/./etl_daily",
    ] {
        let outcome = filter.decide(&request("GET", path, bob()));
        assert_eq!(outcome.verdict, Verdict::Malformed, "{path}");
        assert!(
            outcome.request.is_none() && outcome.target.is_none(),
            "{path}"
        );
    }
}

#[test]
fn the_decided_target_is_canonical_and_routes_can_ignore_case() {
    let filter = mapping_with(|config| {
        config["path_parameters"] = json!("strip");
    })
    .unwrap();
    let outcome = filter.decide(&request("GET", "/api/v1/dags/%65tl_daily;v=1?x=%2f", bob()));
    let target = outcome.target.unwrap();
    assert_eq!(target.path_and_query(), "/api/v1/dags/etl_daily?x=%2f");
    assert_eq!(
        outcome.request.unwrap().resource,
        EntityUid::new("Airflow::Dag", "etl_daily")
    );
    // A trailing `/` keeps its route.
    let mapped = filter.map(&request("GET", "/api/v1/dags/etl_daily/", bob()));
    assert_eq!(
        mapped.unwrap().resource,
        EntityUid::new("Airflow::Dag", "etl_daily")
    );

    let mut mapping = example_mapping("gateway-mapping.json");
    // The example folds case on its admin routes; this compares both ways.
    mapping["routes"]["routes"][0]["case_insensitive"] = json!(false);
    let exact = Mapping::from_json(mapping.to_string().as_bytes(), load_bundle("gateway")).unwrap();
    let mut folded = mapping.clone();
    folded["routes"]["routes"][0]["case_insensitive"] = json!(true);
    let folded = Mapping::from_json(folded.to_string().as_bytes(), load_bundle("gateway")).unwrap();
    let alice = json!({"preferred_username": "alice", "email": "a@example.com", "amr": ["mfa"],
                       "iat": 1_800_000_000 - 5, "groups": []});
    let http = request("GET", "/gitlab/ADMIN/users", alice.clone());
    let action = |mapping: &Mapping| mapping.map(&http).unwrap().action;
    assert_eq!(action(&exact), EntityUid::new("Gateway::Action", "connect"));
    assert_eq!(
        action(&folded),
        EntityUid::new("Gateway::Action", "administer")
    );
    // Letters that lenient upstreams fold to `i`, and escapes of the
    // literal's own characters, land on the admin route too.
    for spelling in [
        "/gitlab/adm%C4%B1n/users",
        "/gitlab/adm%C4%B0n/users",
        "/gitlab/%41dmin/users",
    ] {
        let mapped = folded.map(&request("GET", spelling, alice.clone()));
        assert_eq!(
            mapped.unwrap().action,
            EntityUid::new("Gateway::Action", "administer"),
            "{spelling}"
        );
    }
}

#[test]
fn route_literals_match_what_upstreams_decode_and_methods_must_be_upper_case() {
    let mut config = example_mapping("gateway-mapping.json");
    config["routes"]["routes"][0] = json!({"path": "/gitlab/users:search", "methods": {"*": "administer"},
        "resource": {"type": "Gateway::App", "id": "gitlab"}});
    let mapping =
        Mapping::from_json(config.to_string().as_bytes(), load_bundle("gateway")).unwrap();
    let alice = json!({"preferred_username": "alice", "email": "a@example.com", "amr": ["mfa"],
                       "iat": 1_800_000_000 - 5, "groups": []});
    for spelling in [
        "/gitlab/users:search",
        "/gitlab/users%3Asearch",
        "/gitlab/users%3asearch",
    ] {
        let http = request("GET", spelling, alice.clone());
        assert_eq!(
            mapping.map(&http).unwrap().action,
            EntityUid::new("Gateway::Action", "administer"),
            "{spelling}"
        );
    }
    for method in ["delete", "Get", ""] {
        let http = request(method, "/gitlab/projects", alice.clone());
        assert_eq!(
            mapping.decide(&http).verdict,
            Verdict::Malformed,
            "{method:?}"
        );
    }
}

#[test]
fn a_forbid_whose_condition_errors_denies_only_when_configured() {
    let mapping = |setting: &str| {
        let mut config = example_mapping("gateway-mapping.json");
        config["routes"]["routes"][0] = json!({"path": "/wiki/{rest*}", "methods": {"*": "connect"},
            "resource": {"type": "Gateway::App", "id": "wiki"}});
        config["on_forbid_error"] = json!(setting);
        Mapping::from_json(config.to_string().as_bytes(), load_bundle("gateway")).unwrap()
    };
    let bob = request("GET", "/wiki/home", bob());
    let skipped = mapping("skip").decide(&bob);
    let denied = mapping("deny").decide(&bob);
    let forbid = "forbid-internal-apps-off-network";
    let response = skipped.response.unwrap();
    assert_eq!(skipped.verdict, Verdict::Allow);
    assert!(
        response
            .errors
            .iter()
            .any(|error| error.policy_id == forbid)
    );
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.response.unwrap().determining_policies, [forbid]);
}

#[test]
fn headers_a_client_may_not_send_are_found_in_any_spelling() {
    let filter = filter();
    let sent: Vec<(String, Vec<u8>)> = [
        ("X-Cedar_Principal", "x"),
        ("connection", "x-other"),
        ("x-other", "1"),
        ("accept", "*/*"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
    .collect();
    let removed = filter.headers_to_remove(
        sent.iter()
            .map(|(name, value)| (name.as_str(), value.as_slice())),
    );
    assert_eq!(removed, ["X-Cedar_Principal", "connection", "x-other"]);
    // Path, method and user overrides never reach an upstream.
    let overrides: Vec<(String, Vec<u8>)> = [
        "X-Original-URL",
        "x_rewrite_url",
        "X-HTTP-Method-Override",
        "x-method-override",
        "Remote-User",
        "X-Auth-Request-Email",
    ]
    .iter()
    .map(|name| ((*name).to_owned(), b"x".to_vec()))
    .collect();
    let removed = filter.headers_to_remove(
        overrides
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice())),
    );
    assert_eq!(removed.len(), overrides.len(), "{removed:?}");
    let mut twice = request("GET", "/api/v1/dags/etl_daily", bob());
    twice
        .headers
        .push(("authorization".into(), b"Bearer a".to_vec()));
    twice
        .headers
        .push(("Authorization".into(), b"Bearer b".to_vec()));
    assert_eq!(filter.decide(&twice).verdict, Verdict::Malformed);
}

#[test]
fn claims_build_a_principal_the_bundle_does_not_know() {
    let filter = filter();
    let frank = json!({"preferred_username": "frank", "email": "f@example.com", "amr": "pwd mfa",
                      "iat": 1_800_000_000 - 30, "groups": ["data-platform/operators"]});
    let mapped = filter
        .map(&request("POST", "/api/v1/dags/etl_daily/dagRuns", frank))
        .unwrap();
    assert_eq!(mapped.entities.len(), 1);
    let entity = &mapped.entities[0];
    assert_eq!(
        entity.parents,
        [EntityUid::new(
            "Airflow::GitlabGroup",
            "data-platform/operators"
        )]
    );
    let ContextInput::Typed(context) = &mapped.context else {
        panic!("typed context")
    };
    let expected = cedar_edge_core::Attributes::from_fields([
        ("mfa".to_owned(), Value::Bool(true)),
        (
            "source_ip".to_owned(),
            Value::Extension(cedar_edge_core::ExtensionKind::Ip, "10.1.2.3".into()),
        ),
        ("token_age_seconds".to_owned(), Value::Long(30)),
    ]);
    assert_eq!(*context, expected);
    // frank is an operator through his group claim.
    let outcome = filter.decide(&request("POST", "/api/v1/dags/etl_daily/dagRuns", json!({
        "preferred_username": "frank", "email": "f@example.com", "amr": ["mfa"], "iat": 1_800_000_000 - 30,
        "groups": ["data-platform/operators"]})));
    assert_eq!(outcome.verdict, Verdict::Allow, "{outcome:?}");
    // A bundle entity is not replaced by claims: bob's groups come from entities.json.
    let mapped = filter
        .map(&request("GET", "/api/v1/dags/etl_daily", bob()))
        .unwrap();
    assert!(mapped.entities.is_empty());
}

#[test]
fn a_missing_claim_denies_and_no_identity_is_401() {
    let filter = filter();
    let mut no_email =
        json!({"preferred_username": "zoe", "amr": ["mfa"], "iat": 1_800_000_000, "groups": []});
    let outcome = filter.decide(&request("GET", "/api/v1/dags/etl_daily", no_email.clone()));
    assert_eq!(outcome.verdict, Verdict::Deny);
    assert!(
        outcome
            .refusal
            .unwrap()
            .contains("claim `email` is missing")
    );
    no_email["email"] = json!("z@example.com");
    no_email.as_object_mut().unwrap().remove("iat");
    let outcome = filter.decide(&request("GET", "/api/v1/dags/etl_daily", no_email));
    assert!(outcome.refusal.unwrap().contains("`iat`"));
    let outcome = filter.decide(&request("GET", "/api/v1/dags/etl_daily", json!(null)));
    assert_eq!(outcome.verdict, Verdict::Unauthenticated);
    let outcome = filter.decide(&request(
        "GET",
        "/api/v1/dags/etl_daily",
        json!({"preferred_username": 7}),
    ));
    assert_eq!(outcome.verdict, Verdict::Deny);
}

#[test]
fn hostile_headers_deny_instead_of_breaking() {
    let filter = mapping_with(|config| {
        config["context"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tenant", "from": {"header": "x-tenant"}}));
    });
    // The schema's context has no `tenant`: the configuration loads, and the
    // request is refused by Cedar's request validation, naming the field.
    let filter = filter.unwrap();
    let mut http = request("GET", "/api/v1/dags/etl_daily", bob());
    http.headers
        .push(("x-tenant".into(), vec![0xff, 0xfe, b'a']));
    let outcome = filter.decide(&http);
    assert_eq!(outcome.verdict, Verdict::Deny);
    assert!(outcome.refusal.unwrap().contains("not UTF-8"));

    let mut http = request("GET", "/api/v1/dags/etl_daily", bob());
    http.headers
        .push(("x-huge".into(), vec![b'a'; 1024 * 1024]));
    let outcome = filter.decide(&http);
    assert_eq!(outcome.verdict, Verdict::Deny);
    assert!(outcome.refusal.unwrap().contains("longer than"));
}

#[test]
fn claims_from_a_trusted_header_are_base64url_json() {
    let encoded = base64_url(br#"{"sub":"a","groups":["x"]}"#);
    assert!(
        matches!(claims_from_header(encoded.as_bytes()), Claims::Present(map) if map["sub"] == "a")
    );
    assert!(matches!(claims_from_header(b"!!!"), Claims::Invalid(_)));
    assert!(matches!(
        claims_from_header(base64_url(b"[1]").as_bytes()),
        Claims::Invalid(_)
    ));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn bad_configurations_are_refused_with_every_reason() {
    let err = mapping_with(|config| {
        config["routes"]["routes"][0]["methods"]["PUT"] = json!("rewrite");
        config["routes"]["routes"][1]["resource"]["id"] = json!("{missing}");
        config["identity"]["principal_type"] = json!("Airflow::Person");
    })
    .unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    let text = err.to_string();
    assert!(text.contains("{missing}"), "{text}");
    assert!(text.contains("Airflow::Action::\"rewrite\""), "{text}");
    assert!(text.contains("Airflow::Person"), "{text}");
    let typo = mapping_with(|config| {
        config["shadow_mod"] = json!(true);
    })
    .unwrap_err()
    .to_string();
    assert!(typo.contains("shadow_mod"), "{typo}");
}

#[test]
fn the_gateway_example_maps_registry_and_admin_paths() {
    let mapping = example_mapping("gateway-mapping.json");
    let filter =
        Mapping::from_json(mapping.to_string().as_bytes(), load_bundle("gateway")).unwrap();
    let alice = json!({"preferred_username": "alice", "email": "a@example.com", "amr": ["mfa"],
                       "iat": 1_800_000_000 - 5, "groups": []});
    let cases = [
        (
            "GET",
            "/gitlab/admin/users",
            "administer",
            "Gateway::AdminArea",
            "gitlab-admin",
            Verdict::Allow,
        ),
        (
            "GET",
            "/gitlab/group/project",
            "connect",
            "Gateway::App",
            "gitlab",
            Verdict::Allow,
        ),
        (
            "PUT",
            "/v2/platform/base-image/manifests/v1",
            "push_image",
            "Gateway::Repository",
            "platform/base-image",
            Verdict::Deny,
        ),
        (
            "HEAD",
            "/v2/team/sandbox/blobs/sha256:abc",
            "pull_image",
            "Gateway::Repository",
            "team/sandbox",
            Verdict::Deny,
        ),
    ];
    for (method, path, action, resource_type, resource_id, verdict) in cases {
        let http = request(method, path, alice.clone());
        let mapped = filter.map(&http).unwrap();
        assert_eq!(
            mapped.action,
            EntityUid::new("Gateway::Action", action),
            "{path}"
        );
        assert_eq!(
            mapped.resource,
            EntityUid::new(resource_type, resource_id),
            "{path}"
        );
        assert_eq!(filter.decide(&http).verdict, verdict, "{method} {path}");
    }
}
