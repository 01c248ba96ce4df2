//! Search answers equal brute force: on generated bundles with group and
//! folder hierarchies, action groups, forbids, `unless`, `is` scopes and
//! conditions that raise errors, every subject, resource and action search
//! finds exactly the candidates plain cedar-policy allows when each is
//! authorized over the whole policy set. Every candidate a search yields
//! carries Cedar's own decision, reasons and errors; every one it skips is
//! one Cedar denies.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use cedar_edge_core::{
    Attributes, Bundle, BundleFile, BundleSource, ContextInput, EntityInput, EntityUid, Request,
    RequestLimits, SearchSlot, Value,
};
use cedar_edge_oracle::PlainAnswer;
use serde_json::json;

/// SplitMix64: the same bundles on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % bound as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const USERS: usize = 8;
const DOCS: usize = 12;
const ACTIONS: [&str; 4] = ["read", "write", "delete", "share"];

fn uid(kind: &str, id: &str) -> serde_json::Value {
    json!({"type": kind, "id": id})
}

/// Groups and folders nest two deep; users and docs sit below them; some
/// attributes are missing, so conditions that read them raise errors.
fn entities(rng: &mut Rng) -> String {
    let mut all = vec![
        json!({"uid": uid("Group", "g0"), "attrs": {}, "parents": []}),
        json!({"uid": uid("Group", "g1"), "attrs": {}, "parents": [uid("Group", "g0")]}),
        json!({"uid": uid("Group", "g2"), "attrs": {}, "parents": []}),
        json!({"uid": uid("Group", "g3"), "attrs": {}, "parents": [uid("Group", "g2")]}),
        json!({"uid": uid("Folder", "f0"), "attrs": {}, "parents": []}),
        json!({"uid": uid("Folder", "f1"), "attrs": {}, "parents": [uid("Folder", "f0")]}),
        json!({"uid": uid("Folder", "f2"), "attrs": {}, "parents": []}),
        json!({"uid": uid("Folder", "f3"), "attrs": {}, "parents": [uid("Folder", "f2")]}),
        json!({"uid": uid("Action", "readers"), "attrs": {}, "parents": [uid("Action", "all")]}),
        json!({"uid": uid("Action", "all"), "attrs": {}, "parents": []}),
        json!({"uid": uid("Action", "read"), "attrs": {}, "parents": [uid("Action", "readers")]}),
        json!({"uid": uid("Action", "share"), "attrs": {}, "parents": [uid("Action", "readers")]}),
        json!({"uid": uid("Action", "write"), "attrs": {}, "parents": [uid("Action", "all")]}),
        json!({"uid": uid("Action", "delete"), "attrs": {}, "parents": []}),
    ];
    for user in 0..USERS {
        let parents: Vec<_> = (0..rng.below(3))
            .map(|_| uid("Group", &format!("g{}", rng.below(4))))
            .collect();
        let mut attrs = json!({"dept": rng.pick(&["a", "b"])});
        if rng.below(4) != 0 {
            attrs["level"] = json!(rng.below(5));
        }
        all.push(
            json!({"uid": uid("User", &format!("u{user}")), "attrs": attrs, "parents": parents}),
        );
    }
    for doc in 0..DOCS {
        let mut attrs = json!({
            "dept": rng.pick(&["a", "b"]),
            "owner": {"__entity": uid("User", &format!("u{}", rng.below(USERS)))},
        });
        if rng.below(4) != 0 {
            attrs["level"] = json!(rng.below(5));
        }
        let parents = vec![uid("Folder", &format!("f{}", rng.below(4)))];
        all.push(
            json!({"uid": uid("Doc", &format!("d{doc}")), "attrs": attrs, "parents": parents}),
        );
    }
    serde_json::Value::Array(all).to_string()
}

fn policy(rng: &mut Rng) -> String {
    let effect = if rng.below(10) < 3 {
        "forbid"
    } else {
        "permit"
    };
    let principal = match rng.below(7) {
        0 | 1 => "principal".to_owned(),
        2 => format!("principal == User::\"u{}\"", rng.below(USERS)),
        3 => format!("principal in Group::\"g{}\"", rng.below(4)),
        4 => "principal is User".to_owned(),
        5 => format!("principal is User in Group::\"g{}\"", rng.below(4)),
        _ => "principal is Doc".to_owned(),
    };
    let action = match rng.below(4) {
        0 => "action".to_owned(),
        1 => format!("action == Action::\"{}\"", rng.pick(&ACTIONS)),
        2 => format!(
            "action in [Action::\"{}\", Action::\"{}\"]",
            rng.pick(&ACTIONS),
            rng.pick(&["readers", "all", "delete"])
        ),
        _ => format!("action in Action::\"{}\"", rng.pick(&["readers", "all"])),
    };
    let resource = match rng.below(7) {
        0 | 1 => "resource".to_owned(),
        2 => format!("resource == Doc::\"d{}\"", rng.below(DOCS)),
        3 => format!("resource in Folder::\"f{}\"", rng.below(4)),
        4 => "resource is Doc".to_owned(),
        5 => format!("resource is Doc in Folder::\"f{}\"", rng.below(4)),
        _ => "resource is Folder".to_owned(),
    };
    let condition = rng.pick(&[
        "",
        "",
        "when { principal.level >= resource.level }",
        "unless { resource.owner == principal }",
        "when { resource.dept == principal.dept }",
        "unless { principal.level > 2 }",
        "when { context.flag }",
        "when { resource has level && resource.level > 1 }",
        "when { resource.owner in principal.friends }",
    ]);
    format!("{effect} ({principal}, {action}, {resource}) {condition};\n")
}

fn generated(seed: u64) -> Bundle {
    let mut rng = Rng(seed);
    let count = 10 + rng.below(20);
    let policies: String = (0..count).map(|_| policy(&mut rng)).collect();
    let source = BundleSource {
        policies: vec![BundleFile {
            path: "p.cedar".into(),
            contents: policies,
        }],
        schema: None,
        entities: Some(BundleFile {
            path: "entities.json".into(),
            contents: entities(&mut rng),
        }),
        template_links: None,
        prepared_schema_json: None,
        settings: Default::default(),
    };
    Bundle::load(&source, RequestLimits::default()).expect("generated bundle loads")
}

fn plain(
    bundle: &Bundle,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    context: &str,
) -> PlainAnswer {
    let parse = |uid: &EntityUid| cedar_edge_oracle::uid(&uid.type_name, &uid.id).unwrap();
    let request = cedar_edge_oracle::request(
        parse(principal),
        parse(action),
        parse(resource),
        context,
        bundle.schema(),
    )
    .unwrap();
    cedar_edge_oracle::decide(&request, bundle.policies(), bundle.entities())
}

#[derive(Default)]
struct Seen {
    searches: usize,
    allowed: usize,
    skipped: usize,
    errors: usize,
    forbidden: usize,
}

/// Runs one search and holds it to brute force over every candidate.
fn check(
    bundle: &Bundle,
    template: &Request,
    slot: SearchSlot,
    candidates: &[EntityUid],
    seen: &mut Seen,
) {
    let context = match &template.context {
        ContextInput::Json(json) => json.clone(),
        ContextInput::Typed(_) => panic!("the test uses JSON contexts"),
    };
    let hits: Vec<_> = bundle.search(template, slot, None).unwrap().collect();
    let mut found = BTreeSet::new();
    let mut yielded = BTreeSet::new();
    for hit in &hits {
        yielded.insert(hit.uid.id.clone());
        let response = hit
            .outcome
            .as_ref()
            .expect("every generated request is valid");
        if response.is_allowed() {
            found.insert(hit.uid.id.clone());
        }
    }
    let mut expected = BTreeSet::new();
    for candidate in candidates {
        let mut request = template.clone();
        match slot {
            SearchSlot::Principal => request.principal = candidate.clone(),
            SearchSlot::Action => request.action = candidate.clone(),
            SearchSlot::Resource => request.resource = candidate.clone(),
        }
        let answer = plain(
            bundle,
            &request.principal,
            &request.action,
            &request.resource,
            &context,
        );
        let what = format!("{slot:?} search {template:?}: candidate {candidate}");
        if answer.allowed {
            expected.insert(candidate.id.clone());
        }
        match hits.iter().find(|hit| &hit.uid == candidate) {
            Some(hit) => {
                let response = hit.outcome.as_ref().unwrap();
                let reasons: BTreeSet<String> =
                    response.determining_policies.iter().cloned().collect();
                let errors: BTreeSet<String> = response
                    .errors
                    .iter()
                    .map(|error| error.policy_id.clone())
                    .collect();
                assert_eq!(response.is_allowed(), answer.allowed, "{what}");
                assert_eq!(reasons, answer.reasons, "{what}");
                assert_eq!(errors, answer.errors, "{what}");
                seen.errors += errors.len();
                if !answer.allowed && !answer.reasons.is_empty() {
                    seen.forbidden += 1;
                }
            }
            None => {
                assert!(!answer.allowed, "{what}: skipped, but Cedar allows it");
                seen.skipped += 1;
            }
        }
    }
    assert_eq!(found, expected, "{slot:?} search {template:?}");
    // Every hit is a candidate, in id order, once.
    let order: Vec<&str> = hits.iter().map(|hit| hit.uid.id.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted);
    assert!(
        yielded
            .iter()
            .all(|id| candidates.iter().any(|uid| &uid.id == id))
    );

    // Continuing after any found id yields exactly the rest.
    if let Some(middle) = found.iter().nth(found.len() / 2) {
        let rest: BTreeSet<String> = bundle
            .search(template, slot, Some(middle))
            .unwrap()
            .filter(|hit| {
                hit.outcome
                    .as_ref()
                    .is_ok_and(|response| response.is_allowed())
            })
            .map(|hit| hit.uid.id)
            .collect();
        let expected_rest: BTreeSet<String> = found
            .iter()
            .filter(|id| id.as_str() > middle.as_str())
            .cloned()
            .collect();
        assert_eq!(rest, expected_rest);
    }
    seen.searches += 1;
    seen.allowed += found.len();
}

fn request(principal: EntityUid, action: EntityUid, resource: EntityUid, flag: bool) -> Request {
    Request {
        principal,
        action,
        resource,
        context: ContextInput::Json(json!({ "flag": flag }).to_string()),
        entities: Vec::new(),
    }
}

#[test]
fn searches_equal_brute_force_on_generated_bundles() {
    let users: Vec<EntityUid> = (0..USERS)
        .map(|n| EntityUid::new("User", format!("u{n}")))
        .collect();
    let docs: Vec<EntityUid> = (0..DOCS)
        .map(|n| EntityUid::new("Doc", format!("d{n}")))
        .collect();
    let folders: Vec<EntityUid> = (0..4)
        .map(|n| EntityUid::new("Folder", format!("f{n}")))
        .collect();
    let actions: Vec<EntityUid> = ["all", "delete", "read", "readers", "share", "write"]
        .iter()
        .map(|name| EntityUid::new("Action", *name))
        .collect();
    let placeholder = |kind: &str| EntityUid::new(kind, "");
    let mut seen = Seen::default();
    for seed in 0..40_u64 {
        let bundle = generated(seed);
        let flag = seed % 2 == 0;
        for user in &users {
            for action in &actions {
                let resource_search =
                    request(user.clone(), action.clone(), placeholder("Doc"), flag);
                check(
                    &bundle,
                    &resource_search,
                    SearchSlot::Resource,
                    &docs,
                    &mut seen,
                );
                let folder_search =
                    request(user.clone(), action.clone(), placeholder("Folder"), flag);
                check(
                    &bundle,
                    &folder_search,
                    SearchSlot::Resource,
                    &folders,
                    &mut seen,
                );
            }
            for doc in docs.iter().step_by(3) {
                let action_search = request(user.clone(), placeholder("Action"), doc.clone(), flag);
                check(
                    &bundle,
                    &action_search,
                    SearchSlot::Action,
                    &actions,
                    &mut seen,
                );
            }
        }
        for action in &actions {
            for doc in &docs {
                let subject_search =
                    request(placeholder("User"), action.clone(), doc.clone(), flag);
                check(
                    &bundle,
                    &subject_search,
                    SearchSlot::Principal,
                    &users,
                    &mut seen,
                );
            }
        }
    }
    eprintln!(
        "searches {} allowed {} skipped {} errors {} forbidden {}",
        seen.searches, seen.allowed, seen.skipped, seen.errors, seen.forbidden
    );
    // The generated bundles exercise what the search must get right.
    assert!(seen.allowed > 10_000, "too few allows: {}", seen.allowed);
    assert!(
        seen.skipped > 2_000,
        "the index pruned too little: {}",
        seen.skipped
    );
    assert!(
        seen.errors > 10_000,
        "too few evaluation errors: {}",
        seen.errors
    );
    assert!(
        seen.forbidden > 5_000,
        "too few forbids decided: {}",
        seen.forbidden
    );
    assert_eq!(seen.searches, 8_000);
}

/// A request that brings its own principal is authorized candidate by
/// candidate, with that principal's groups; still Cedar's answers.
#[test]
fn a_principal_from_the_request_is_searched_exactly() {
    let bundle = generated(7);
    let docs: Vec<EntityUid> = (0..DOCS)
        .map(|n| EntityUid::new("Doc", format!("d{n}")))
        .collect();
    let newcomer = EntityUid::new("User", "newcomer");
    for action in ACTIONS {
        let template = Request {
            principal: newcomer.clone(),
            action: EntityUid::new("Action", action),
            resource: EntityUid::new("Doc", ""),
            context: ContextInput::Json("{\"flag\": true}".into()),
            entities: vec![EntityInput {
                uid: newcomer.clone(),
                attrs: Attributes::from_fields([
                    ("level".to_owned(), Value::Long(3)),
                    ("dept".to_owned(), Value::String("a".into())),
                ]),
                parents: vec![EntityUid::new("Group", "g1")],
                tags: Attributes::default(),
            }],
        };
        let found: BTreeSet<String> = bundle
            .search(&template, SearchSlot::Resource, None)
            .unwrap()
            .filter(|hit| {
                hit.outcome
                    .as_ref()
                    .is_ok_and(|response| response.is_allowed())
            })
            .map(|hit| hit.uid.id)
            .collect();
        let own = json!([{"uid": uid("User", "newcomer"), "attrs": {"level": 3, "dept": "a"},
                          "parents": [uid("Group", "g1")]}]);
        let joined =
            cedar_edge_oracle::join_request_entities(bundle.entities(), &own.to_string(), None)
                .unwrap();
        let expected: BTreeSet<String> = docs
            .iter()
            .filter(|doc| {
                let parse =
                    |uid: &EntityUid| cedar_edge_oracle::uid(&uid.type_name, &uid.id).unwrap();
                let request = cedar_edge_oracle::request(
                    parse(&newcomer),
                    parse(&EntityUid::new("Action", action)),
                    parse(doc),
                    "{\"flag\": true}",
                    None,
                )
                .unwrap();
                cedar_edge_oracle::decide(&request, bundle.policies(), &joined).allowed
            })
            .map(|doc| doc.id.clone())
            .collect();
        assert_eq!(found, expected, "{action}");
    }
}

/// A malformed searched type or fixed uid refuses the query itself.
#[test]
fn a_malformed_query_is_refused() {
    let bundle = generated(1);
    // (principal, action, resource, the open slot, the part named)
    let malformed = [
        (
            ("User", "u1"),
            "Action",
            ("Doc Type", ""),
            SearchSlot::Resource,
            "resource",
        ),
        (
            ("User", ""),
            "Bad Action",
            ("Doc", "d1"),
            SearchSlot::Principal,
            "action",
        ),
    ];
    for ((principal_type, principal), action_type, (resource_type, resource), slot, part) in
        malformed
    {
        let template = request(
            EntityUid::new(principal_type, principal),
            EntityUid::new(action_type, "read"),
            EntityUid::new(resource_type, resource),
            true,
        );
        let refused = bundle.search(&template, slot, None).unwrap_err();
        assert!(refused.to_string().contains(part), "{part}: {refused}");
    }
    // A type the store does not hold has no candidates.
    let template = request(
        EntityUid::new("User", "u1"),
        EntityUid::new("Action", "read"),
        EntityUid::new("Nothing", ""),
        true,
    );
    assert_eq!(
        bundle
            .search(&template, SearchSlot::Resource, None)
            .unwrap()
            .count(),
        0
    );
    assert_eq!(bundle.search_candidate_count("Doc"), DOCS);
}

const TYPED_SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group] { level: Long };
entity Folder in [Folder];
entity Doc in [Folder] { level: Long, owner: User };
action "read", "write" appliesTo { principal: [User], resource: [Doc, Folder], context: { flag: Bool } };
action "purge" appliesTo { principal: [User], resource: [Doc], context: { flag: Bool } };
"#;

const TYPED_POLICIES: &str = r#"
permit (principal, action, resource) when { context.flag };
permit (principal in Group::"g0", action == Action::"read", resource in Folder::"f0");
permit (principal, action == Action::"purge", resource) when { principal.level > 2 };
forbid (principal, action == Action::"write", resource is Doc) unless { resource.owner == principal };
permit (principal, action, resource is Doc) when { resource.level + 9223372036854775807 > principal.level };
"#;

const TYPED_ENTITIES: &str = r#"[
  {"uid": {"type": "Group", "id": "g0"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Group", "id": "g1"}, "attrs": {}, "parents": [{"type": "Group", "id": "g0"}]},
  {"uid": {"type": "User", "id": "ann"}, "attrs": {"level": 3}, "parents": [{"type": "Group", "id": "g1"}]},
  {"uid": {"type": "User", "id": "bo"}, "attrs": {"level": 1}, "parents": []},
  {"uid": {"type": "Folder", "id": "f0"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Folder", "id": "f1"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f0"}]},
  {"uid": {"type": "Folder", "id": "f2"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Doc", "id": "a"}, "attrs": {"level": 0, "owner": {"__entity": {"type": "User", "id": "ann"}}}, "parents": [{"type": "Folder", "id": "f1"}]},
  {"uid": {"type": "Doc", "id": "b"}, "attrs": {"level": 1, "owner": {"__entity": {"type": "User", "id": "bo"}}}, "parents": [{"type": "Folder", "id": "f2"}]},
  {"uid": {"type": "Doc", "id": "c"}, "attrs": {"level": 2, "owner": {"__entity": {"type": "User", "id": "bo"}}}, "parents": [{"type": "Folder", "id": "f0"}]}
]"#;

/// With a schema: each candidate's outcome is exactly `Bundle::authorize`'s,
/// refusals included (`purge` does not apply to folders), and the allowed
/// set is plain cedar-policy's.
#[test]
fn with_a_schema_every_outcome_is_the_authorization_of_that_candidate() {
    let source = BundleSource {
        policies: vec![BundleFile {
            path: "p.cedar".into(),
            contents: TYPED_POLICIES.into(),
        }],
        schema: Some(BundleFile {
            path: "s.cedarschema".into(),
            contents: TYPED_SCHEMA.into(),
        }),
        entities: Some(BundleFile {
            path: "entities.json".into(),
            contents: TYPED_ENTITIES.into(),
        }),
        template_links: None,
        prepared_schema_json: None,
        settings: Default::default(),
    };
    let bundle = Bundle::load(&source, RequestLimits::default()).unwrap();
    let users = ["ann", "bo"].map(|id| EntityUid::new("User", id));
    let docs = ["a", "b", "c"].map(|id| EntityUid::new("Doc", id));
    let folders = ["f0", "f1", "f2"].map(|id| EntityUid::new("Folder", id));
    let actions = ["purge", "read", "write"].map(|id| EntityUid::new("Action", id));
    let mut refused = 0;
    let mut allowed = 0;
    for flag in [false, true] {
        let mut searches: Vec<(Request, SearchSlot, Vec<EntityUid>)> = Vec::new();
        for user in &users {
            for action in &actions {
                for (kind, candidates) in [("Doc", &docs), ("Folder", &folders)] {
                    let template =
                        request(user.clone(), action.clone(), EntityUid::new(kind, ""), flag);
                    searches.push((template, SearchSlot::Resource, candidates.to_vec()));
                }
            }
            for resource in docs.iter().chain(&folders) {
                let template = request(
                    user.clone(),
                    EntityUid::new("Action", ""),
                    resource.clone(),
                    flag,
                );
                searches.push((template, SearchSlot::Action, actions.to_vec()));
            }
        }
        for action in &actions {
            for resource in docs.iter().chain(&folders) {
                let template = request(
                    EntityUid::new("User", ""),
                    action.clone(),
                    resource.clone(),
                    flag,
                );
                searches.push((template, SearchSlot::Principal, users.to_vec()));
            }
        }
        for (template, slot, candidates) in searches {
            let hits: Vec<_> = bundle.search(&template, slot, None).unwrap().collect();
            for candidate in &candidates {
                let mut one = template.clone();
                match slot {
                    SearchSlot::Principal => one.principal = candidate.clone(),
                    SearchSlot::Action => one.action = candidate.clone(),
                    SearchSlot::Resource => one.resource = candidate.clone(),
                }
                let authorized = bundle.authorize(&one);
                let what = format!("{slot:?} {template:?}: {candidate}");
                match hits.iter().find(|hit| &hit.uid == candidate) {
                    Some(hit) => assert_eq!(hit.outcome, authorized, "{what}"),
                    None => assert!(!authorized.as_ref().is_ok_and(|r| r.is_allowed()), "{what}"),
                }
                let context = json!({ "flag": flag }).to_string();
                let parse =
                    |uid: &EntityUid| cedar_edge_oracle::uid(&uid.type_name, &uid.id).unwrap();
                let plain = cedar_edge_oracle::request(
                    parse(&one.principal),
                    parse(&one.action),
                    parse(&one.resource),
                    &context,
                    bundle.schema(),
                )
                .map(|plain| {
                    cedar_edge_oracle::decide(&plain, bundle.policies(), bundle.entities()).allowed
                });
                let ours = authorized.as_ref().is_ok_and(|r| r.is_allowed());
                assert_eq!(ours, plain.clone().unwrap_or(false), "{what}");
                refused += usize::from(authorized.is_err());
                allowed += usize::from(ours);
            }
        }
    }
    assert!(refused > 10, "{refused}");
    assert!(allowed > 20, "{allowed}");
}
