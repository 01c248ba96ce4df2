//! The AuthZEN search APIs over `policies/authzen-search`: the interop's
//! own expected results (copied unchanged into `tests/data/authzen-search`,
//! see its SOURCE.md) all pass, compared as the interop runner compares
//! them, results unordered; every result is what the evaluation API
//! allows; paging walks to exactly the full set; tokens from another
//! query, bundle or hand are refused; malformed requests name the part at
//! fault.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cedar_edge_core::{
    Bundle, BundleFile, BundleSource, ContextInput, EntityUid, NativeBackend, Request,
    RequestLimits,
};
use cedar_edge_gateway::authzen::Names;
use cedar_edge_gateway::config::RequestAttributes;
use cedar_edge_gateway::search::{SearchError, SearchKind, SearchLimits, search};
use cedar_edge_gateway::state::LoadedBundle;
use cedar_edge_mapping::Mapping;
use serde_json::{Value, json};

const ACTION_TYPE: &str = "Records::Action";

fn types() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("user".to_owned(), "Records::User".to_owned()),
        ("record".to_owned(), "Records::Record".to_owned()),
    ])
}

fn loaded(source: &BundleSource, on_forbid_error: &str) -> LoadedBundle {
    let bundle = Arc::new(Bundle::load(source, RequestLimits::default()).unwrap());
    let mapping_path = cedar_edge_testkit::repo()
        .join("host-examples/gateway/examples/authzen-search-mapping.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(mapping_path).unwrap()).unwrap();
    config["on_forbid_error"] = json!(on_forbid_error);
    let mapping =
        Mapping::new(serde_json::from_value(config).unwrap(), Arc::clone(&bundle)).unwrap();
    LoadedBundle {
        bundle: Arc::clone(&bundle),
        mapping: Some(mapping),
        backend: Box::new(NativeBackend::new(bundle)),
        origin: Default::default(),
    }
}

fn records_source() -> BundleSource {
    BundleSource::from_dir(&cedar_edge_testkit::repo().join("policies/authzen-search")).unwrap()
}

fn run(
    kind: SearchKind,
    body: &Value,
    active: &LoadedBundle,
    limits: SearchLimits,
) -> Result<Value, SearchError> {
    let types = types();
    let names = Names {
        types: &types,
        action_type: ACTION_TYPE,
    };
    search(
        kind,
        body,
        active,
        &names,
        RequestAttributes::Ignored,
        limits,
    )
}

/// As the interop runner compares: the whole response, results sorted.
fn sorted(response: &Value) -> Value {
    let mut response = response.clone();
    if let Some(results) = response.get_mut("results").and_then(Value::as_array_mut) {
        results.sort_by_key(|item| item.to_string());
    }
    response
}

fn interop_cases(kind: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/authzen-search/{kind}/results.json"));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    file["evaluation"].as_array().unwrap().clone()
}

#[test]
fn the_interop_expectations_all_pass() {
    let active = loaded(&records_source(), "deny");
    let mut failures = Vec::new();
    let mut passed = 0;
    for (file, kind, count) in [
        ("subject", SearchKind::Subject, 60),
        ("resource", SearchKind::Resource, 18),
        ("action", SearchKind::Action, 120),
    ] {
        let cases = interop_cases(file);
        assert_eq!(cases.len(), count, "{file}: the interop file changed");
        for (index, case) in cases.iter().enumerate() {
            let actual = run(kind, &case["request"], &active, SearchLimits::default()).unwrap();
            if sorted(&actual) == sorted(&case["expected"]) {
                passed += 1;
            } else {
                failures.push(format!(
                    "{file} case {}: {}\n  expected {}\n  actual   {}",
                    index + 1,
                    case["request"],
                    case["expected"],
                    actual
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{passed} passed, {} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(passed, 198);
}

/// Every candidate of every interop query, decided one by one the way
/// `/access/v1/evaluation` decides it: the results are exactly the allowed.
#[test]
fn every_result_is_what_an_evaluation_allows() {
    let active = loaded(&records_source(), "deny");
    let bundle = &active.bundle;
    let users: Vec<String> = ["alice", "bob", "carol", "dan", "erin", "felix"]
        .map(String::from)
        .to_vec();
    let records: Vec<String> = (101..=120).map(|id| id.to_string()).collect();
    let actions: Vec<String> = ["view", "edit", "delete"].map(String::from).to_vec();
    let allowed = |user: &str, action: &str, record: &str| {
        let request = Request {
            principal: EntityUid::new("Records::User", user),
            action: EntityUid::new(ACTION_TYPE, action),
            resource: EntityUid::new("Records::Record", record),
            context: ContextInput::Json("{}".into()),
            entities: Vec::new(),
        };
        active
            .mapping
            .as_ref()
            .unwrap()
            .apply_forbid_errors(bundle.authorize(&request).unwrap())
            .is_allowed()
    };
    let ids = |response: Value, key: &str| -> BTreeSet<String> {
        response["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[key].as_str().unwrap().to_owned())
            .collect()
    };
    let mut allows = 0;
    for user in &users {
        for action in &actions {
            let body = json!({"subject": {"type": "user", "id": user}, "action": {"name": action}, "resource": {"type": "record"}});
            let expected: BTreeSet<String> = records
                .iter()
                .filter(|record| allowed(user, action, record))
                .cloned()
                .collect();
            allows += expected.len();
            assert_eq!(
                ids(
                    run(
                        SearchKind::Resource,
                        &body,
                        &active,
                        SearchLimits::default()
                    )
                    .unwrap(),
                    "id"
                ),
                expected
            );
        }
        for record in &records {
            let body = json!({"subject": {"type": "user", "id": user}, "resource": {"type": "record", "id": record}});
            let expected: BTreeSet<String> = actions
                .iter()
                .filter(|action| allowed(user, action, record))
                .cloned()
                .collect();
            assert_eq!(
                ids(
                    run(SearchKind::Action, &body, &active, SearchLimits::default()).unwrap(),
                    "name"
                ),
                expected
            );
        }
    }
    for action in &actions {
        for record in &records {
            let body = json!({"subject": {"type": "user"}, "action": {"name": action}, "resource": {"type": "record", "id": record}});
            let expected: BTreeSet<String> = users
                .iter()
                .filter(|user| allowed(user, action, record))
                .cloned()
                .collect();
            assert_eq!(
                ids(
                    run(SearchKind::Subject, &body, &active, SearchLimits::default()).unwrap(),
                    "id"
                ),
                expected
            );
        }
    }
    assert!(allows > 50 && allows < 6 * 3 * 20, "{allows}");
}

/// Walks every page of a search; returns the results and the pages' sizes.
fn walk(
    kind: SearchKind,
    body: &Value,
    active: &LoadedBundle,
    limit: u64,
) -> (Vec<Value>, Vec<usize>) {
    let mut body = body.clone();
    body["page"] = json!({ "limit": limit });
    let mut results = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..100 {
        let response = run(kind, &body, active, SearchLimits::default()).unwrap();
        let page = response["results"].as_array().unwrap();
        assert_eq!(response["page"]["count"], json!(page.len()));
        sizes.push(page.len());
        results.extend(page.iter().cloned());
        let next = response["page"]["next_token"].as_str().unwrap();
        if next.is_empty() {
            return (results, sizes);
        }
        body["page"]["token"] = json!(next);
    }
    panic!("paging did not end");
}

#[test]
fn paging_walks_to_exactly_the_full_set() {
    let active = loaded(&records_source(), "deny");
    let queries = [
        (
            SearchKind::Resource,
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
        ),
        (
            SearchKind::Resource,
            json!({"subject": {"type": "user", "id": "dan"}, "action": {"name": "edit"}, "resource": {"type": "record"}}),
        ),
        (
            SearchKind::Subject,
            json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "101"}}),
        ),
        (
            SearchKind::Action,
            json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "101"}}),
        ),
    ];
    for (kind, body) in queries {
        let full = run(kind, &body, &active, SearchLimits::default()).unwrap();
        // Everything fits: no `page`, as the interop expects.
        assert!(full.get("page").is_none(), "{full}");
        let full = full["results"].as_array().unwrap().clone();
        assert!(full.len() >= 3, "{body}");
        for limit in [1, 2, 3, 7, 100] {
            let (results, sizes) = walk(kind, &body, &active, limit);
            assert_eq!(results, full, "{body} limit {limit}");
            let limit = limit as usize;
            // Full pages, then the rest; never an empty page after the last.
            assert!(
                sizes.iter().rev().skip(1).all(|size| *size == limit),
                "{sizes:?}"
            );
            assert!(
                sizes
                    .last()
                    .is_some_and(|last| *last >= 1 && *last <= limit),
                "{sizes:?}"
            );
        }
    }

    // Results come in id order, a default page is the default size, and a
    // limit above the maximum is lowered to it.
    let alice_views = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let small = SearchLimits {
        default_page_size: 4,
        max_page_size: 6,
    };
    let first = run(SearchKind::Resource, &alice_views, &active, small).unwrap();
    let ids: Vec<&str> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["101", "102", "103", "104"]);
    assert!(!first["page"]["next_token"].as_str().unwrap().is_empty());
    let mut asked_more = alice_views.clone();
    asked_more["page"] = json!({"limit": 50});
    let lowered = run(SearchKind::Resource, &asked_more, &active, small).unwrap();
    assert_eq!(lowered["page"]["count"], json!(6));

    // A page of none still says whether there is more, and continues from
    // where it stood.
    let mut none = alice_views.clone();
    none["page"] = json!({"limit": 0});
    let empty = run(
        SearchKind::Resource,
        &none,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    assert_eq!(empty["results"], json!([]));
    assert!(!empty["page"]["next_token"].as_str().unwrap().is_empty());
    // Felix, in Accounting, may do nothing to Hamlet, a Legal record.
    let nothing = json!({
        "subject": {"type": "user", "id": "felix"},
        "resource": {"type": "record", "id": "101"},
        "page": {"limit": 0}
    });
    let empty = run(
        SearchKind::Action,
        &nothing,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    assert_eq!(empty["page"], json!({"next_token": "", "count": 0}));
}

fn first_token(active: &LoadedBundle, body: &Value) -> String {
    let response = run(SearchKind::Resource, body, active, SearchLimits::default()).unwrap();
    response["page"]["next_token"].as_str().unwrap().to_owned()
}

fn refusal(active: &LoadedBundle, body: &Value) -> String {
    match run(SearchKind::Resource, body, active, SearchLimits::default()) {
        Err(err @ SearchError::Token(_)) => {
            assert_eq!(err.status_code(), 400);
            err.to_string()
        }
        other => panic!("expected a refused token, got {other:?}"),
    }
}

#[test]
fn a_token_is_bound_to_its_bundle_and_query() {
    let active = loaded(&records_source(), "deny");
    let body = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}, "page": {"limit": 5}});
    let token = first_token(&active, &body);
    let mut next = body.clone();
    next["page"]["token"] = json!(token);
    assert!(
        run(
            SearchKind::Resource,
            &next,
            &active,
            SearchLimits::default()
        )
        .is_ok()
    );

    // Altered anywhere: refused.
    for position in [0, token.len() / 2, token.len() - 1] {
        let mut bytes = token.clone().into_bytes();
        bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
        let mut tampered = body.clone();
        tampered["page"]["token"] = json!(String::from_utf8(bytes).unwrap());
        assert!(refusal(&active, &tampered).contains("altered"));
    }
    let mut garbage = body.clone();
    garbage["page"]["token"] = json!("not a token");
    assert!(refusal(&active, &garbage).contains("altered"));

    // Another query: the action, the subject, the context or the limit changed.
    for (path, value) in [
        (&["action", "name"][..], json!("edit")),
        (&["subject", "id"][..], json!("dan")),
        (&["context"][..], json!({"time": "now"})),
        (&["page", "limit"][..], json!(6)),
    ] {
        let mut changed = next.clone();
        let mut slot = &mut changed;
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value;
        assert!(
            refusal(&active, &changed).contains("another query"),
            "{path:?}"
        );
    }
    // The searched party's id is ignored, so it may change.
    let mut ignored = next.clone();
    ignored["resource"]["id"] = json!("999");
    assert!(
        run(
            SearchKind::Resource,
            &ignored,
            &active,
            SearchLimits::default()
        )
        .is_ok()
    );

    // Another bundle: the same query after a reload.
    let mut changed = records_source();
    changed.policies[0].contents.push_str("\n// reloaded\n");
    let reloaded = loaded(&changed, "deny");
    assert!(refusal(&reloaded, &next).contains("another bundle"));
}

#[test]
fn malformed_requests_name_the_part_at_fault() {
    let active = loaded(&records_source(), "deny");
    let good = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let cases: [(&str, Value, &str); 10] = [
        ("body", json!([1]), "the request body must be a JSON object"),
        (
            "no subject",
            json!({"action": {"name": "view"}, "resource": {"type": "record"}}),
            "`subject` is missing",
        ),
        (
            "subject not an object",
            json!({"subject": "alice", "action": {"name": "view"}, "resource": {"type": "record"}}),
            "`subject` must be an object",
        ),
        (
            "no subject id",
            json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
            "`subject.id` is missing",
        ),
        (
            "no resource type",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {}}),
            "`resource.type` is missing",
        ),
        (
            "empty resource type",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": ""}}),
            "`resource.type` is empty",
        ),
        (
            "action name not a string",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": 3}, "resource": {"type": "record"}}),
            "`action.name` must be a string",
        ),
        (
            "context not an object",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}, "context": []}),
            "`context` must be an object",
        ),
        (
            "negative limit",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}, "page": {"limit": -1}}),
            "`page.limit` must be a non-negative integer",
        ),
        (
            "page not an object",
            json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}, "page": 5}),
            "`page` must be an object",
        ),
    ];
    for (what, body, message) in cases {
        let err = run(
            SearchKind::Resource,
            &body,
            &active,
            SearchLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), message, "{what}");
        assert_eq!(err.status_code(), 400);
    }
    // A type Cedar cannot name refuses the query, naming the part.
    let mut bad_type = good.clone();
    bad_type["resource"]["type"] = json!("no such::type!");
    let err = run(
        SearchKind::Resource,
        &bad_type,
        &active,
        SearchLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, SearchError::Query(_)) && err.to_string().contains("resource"),
        "{err}"
    );

    // Unknown fields anywhere are ignored; the action search ignores an action.
    let mut extra = good.clone();
    extra["unknown"] = json!(1);
    extra["subject"]["nickname"] = json!("al");
    extra["page"] = json!({"properties": {"sort": "title"}, "other": true});
    let plain = run(
        SearchKind::Resource,
        &good,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    let with_extra = run(
        SearchKind::Resource,
        &extra,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    assert_eq!(with_extra["results"], plain["results"]);
    let action_search = json!({"subject": {"type": "user", "id": "alice"}, "action": "anything", "resource": {"type": "record", "id": "101"}});
    let actions = run(
        SearchKind::Action,
        &action_search,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    assert_eq!(actions["results"].as_array().unwrap().len(), 3);
}

/// A forbid whose condition errors: under `on_forbid_error: deny` the
/// search leaves those candidates out, as the evaluation API denies them;
/// under `skip` they are results, as Cedar allows them.
#[test]
fn the_forbid_error_rule_applies_as_in_evaluations() {
    let mut source = records_source();
    source.policies.push(BundleFile {
        path: "sealed.cedar".into(),
        contents: r#"@id("sealed-records") forbid (principal, action, resource) when { resource.title like "*e*" && 1 + 9223372036854775807 > 0 };"#.into(),
    });
    let manager_views = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let ids = |response: Value| -> Vec<String> {
        response["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let skipped = ids(run(
        SearchKind::Resource,
        &manager_views,
        &loaded(&source, "skip"),
        SearchLimits::default(),
    )
    .unwrap());
    let denied = ids(run(
        SearchKind::Resource,
        &manager_views,
        &loaded(&source, "deny"),
        SearchLimits::default(),
    )
    .unwrap());
    assert_eq!(skipped.len(), 20);
    let without_e =
        record_ids_where(|record| !record["attrs"]["title"].as_str().unwrap().contains('e'));
    assert!(
        !without_e.is_empty() && without_e.len() < 20,
        "{without_e:?}"
    );
    assert_eq!(denied, without_e);
}

/// The ids of the example bundle's records that `keep` keeps, in file
/// order: the expected answers, read from the bundle itself.
fn record_ids_where(keep: impl Fn(&Value) -> bool) -> Vec<String> {
    let entities: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(
            cedar_edge_testkit::repo().join("policies/authzen-search/entities.json"),
        )
        .unwrap(),
    )
    .unwrap();
    entities
        .iter()
        .filter(|entity| entity["uid"]["type"] == "Records::Record" && keep(entity))
        .map(|entity| entity["uid"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A subject the bundle lacks, described by `properties`: used only for
/// callers whose attributes are trusted, as in an evaluation, and then
/// searched candidate by candidate with that request-scoped entity.
#[test]
fn properties_of_a_fixed_party_follow_the_request_attributes_setting() {
    let active = loaded(&records_source(), "deny");
    let types = types();
    let names = Names {
        types: &types,
        action_type: ACTION_TYPE,
    };
    let body = json!({
        "subject": {"type": "user", "id": "zoe", "properties": {
            "role": "employee",
            "department": {"__entity": {"type": "Records::Department", "id": "Legal"}}
        }},
        "action": {"name": "view"},
        "resource": {"type": "record"}
    });
    let ids = |attributes| -> Vec<String> {
        let response = search(
            SearchKind::Resource,
            &body,
            &active,
            &names,
            attributes,
            SearchLimits::default(),
        )
        .unwrap();
        response["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(RequestAttributes::Ignored), Vec::<String>::new());
    let legal =
        record_ids_where(|record| record["attrs"]["department"]["__entity"]["id"] == "Legal");
    assert!(legal.len() > 3, "{legal:?}");
    assert_eq!(ids(RequestAttributes::Trusted), legal);
}

/// Without a mapping (a decision service alone), Cedar's own rule: an
/// erroring forbid is skipped.
#[test]
fn without_a_mapping_an_erroring_forbid_is_skipped() {
    let mut source = records_source();
    source.policies.push(BundleFile {
        path: "sealed.cedar".into(),
        contents: r#"@id("sealed-records") forbid (principal, action, resource) when { resource.title like "*e*" && 1 + 9223372036854775807 > 0 };"#.into(),
    });
    let mut active = loaded(&source, "deny");
    active.mapping = None;
    let body = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let response = run(
        SearchKind::Resource,
        &body,
        &active,
        SearchLimits::default(),
    )
    .unwrap();
    assert_eq!(response["results"].as_array().unwrap().len(), 20);
}
