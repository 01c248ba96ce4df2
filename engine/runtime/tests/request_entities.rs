//! Request-scoped entities, differentially: the component, the native
//! backend and plain cedar-policy accept and refuse the same entities with
//! the same messages, and decide the same way with them.
//!
//! The core checks request entities with Cedar's own conformance checker
//! reading entity type descriptions cached at load, so these cases cover
//! what the cache answers: attribute and tag types, required and unexpected
//! attributes, parents, enumerated ids, unknown types, actions, and
//! extension values built by two-argument functions such as `offset`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;

use cedar_edge_core::{
    Attributes, AuthorizeError, Backend, BundleFile, BundleSource, ContextInput, EntityInput,
    EntityUid, NativeBackend, Request, RequestError, RequestLimits, Response, Value,
};
use cedar_edge_oracle::PlainAnswer;
use common::shared_runtime;
use serde_json::{Value as Json, json};

const SCHEMA: &str = r#"
entity Group;
entity Tenant;
entity Color enum ["red", "blue"];
entity User in [Group] {
    level: Long,
    tenant: Tenant,
    since: datetime,
    favourite?: Color,
} tags String;
entity Doc {
    owner: User,
    expires: datetime,
} tags Long;
action view, edit appliesTo {
    principal: [User],
    resource: [Doc],
    context: { now: datetime },
};
"#;

const POLICIES: &str = r#"
@id("team-view") permit (principal in Group::"staff", action == Action::"view", resource)
    when { principal.hasTag("team") && principal.getTag("team") == "data" };
@id("level-view") permit (principal, action == Action::"view", resource)
    when { resource.hasTag("min_level") && principal.level >= resource.getTag("min_level") };
@id("owner-edit") permit (principal, action == Action::"edit", resource)
    when { resource.owner == principal && context.now < resource.expires };
@id("newcomers-wait") forbid (principal, action == Action::"edit", resource)
    when { principal.since.offset(duration("24h")) > context.now };
@id("red-acme-view") permit (principal, action == Action::"view", resource)
    when { principal.tenant == Tenant::"acme" && principal has favourite
           && principal.favourite == Color::"red" };
@id("overflow-view") permit (principal, action == Action::"view", resource)
    when { principal.hasTag("region") && principal.level * 4611686018427387904 > 0 };
"#;

const STORE: &str = r#"[
  {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Tenant", "id": "acme"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "stored"}, "parents": [{"type": "Group", "id": "staff"}],
   "attrs": {"level": 5, "tenant": {"__entity": {"type": "Tenant", "id": "acme"}},
             "since": {"__extn": {"fn": "datetime", "arg": "2020-01-01"}}},
   "tags": {"team": "data"}},
  {"uid": {"type": "Doc", "id": "plan"}, "parents": [],
   "attrs": {"owner": {"__entity": {"type": "User", "id": "new"}},
             "expires": {"__extn": {"fn": "datetime", "arg": "2027-01-01"}}},
   "tags": {"min_level": 2}}
]"#;

fn datetime(text: &str) -> Json {
    json!({"__extn": {"fn": "datetime", "arg": text}})
}

fn duration(text: &str) -> Json {
    json!({"__extn": {"fn": "duration", "arg": text}})
}

fn offset(base: &str, by: &str) -> Json {
    json!({"__extn": {"fn": "offset", "args": [datetime(base), duration(by)]}})
}

/// A user built from token claims, as `attrs` and `tags` say.
fn new_user(attrs: Json, tags: Json, parents: Json) -> Json {
    json!({"uid": {"type": "User", "id": "new"}, "attrs": attrs, "parents": parents, "tags": tags})
}

fn good_attrs() -> Json {
    json!({"level": 3, "tenant": {"__entity": {"type": "Tenant", "id": "acme"}},
           "since": datetime("2026-01-01")})
}

fn staff() -> Json {
    json!([{"type": "Group", "id": "staff"}])
}

/// Each case: a name and the request entities, in Cedar's JSON form.
fn cases() -> Vec<(&'static str, Json)> {
    let with = |field: &str, value: Json| {
        let mut attrs = good_attrs();
        attrs[field] = value;
        attrs
    };
    let without = |field: &str| {
        let mut attrs = good_attrs();
        attrs.as_object_mut().unwrap().remove(field);
        attrs
    };
    vec![
        (
            "conforming user with a tag",
            json!([new_user(good_attrs(), json!({"team": "data"}), staff())]),
        ),
        (
            "user without tags or parents",
            json!([new_user(good_attrs(), json!({}), json!([]))]),
        ),
        (
            "user in the EU",
            json!([new_user(good_attrs(), json!({"region": "eu"}), json!([]))]),
        ),
        (
            "offset datetime, a newcomer",
            json!([new_user(
                with("since", offset("2026-12-04T12:00:00Z", "1h")),
                json!({}),
                staff()
            )]),
        ),
        (
            "offset datetime, a veteran",
            json!([new_user(
                with("since", offset("2020-01-01T00:00:00Z", "-1h")),
                json!({}),
                staff()
            )]),
        ),
        (
            "enumerated id",
            json!([new_user(
                with(
                    "favourite",
                    json!({"__entity": {"type": "Color", "id": "red"}})
                ),
                json!({}),
                json!([])
            )]),
        ),
        (
            "enumerated id not declared",
            json!([new_user(
                with(
                    "favourite",
                    json!({"__entity": {"type": "Color", "id": "green"}})
                ),
                json!({}),
                json!([])
            )]),
        ),
        (
            "tag of the wrong type",
            json!([new_user(good_attrs(), json!({"team": 5}), staff())]),
        ),
        (
            "required attribute missing",
            json!([new_user(without("tenant"), json!({}), staff())]),
        ),
        (
            "attribute the schema lacks",
            json!([new_user(with("nickname", json!("n")), json!({}), staff())]),
        ),
        (
            "attribute of the wrong type",
            json!([new_user(with("level", json!("high")), json!({}), staff())]),
        ),
        (
            "datetime given a duration",
            json!([new_user(with("since", duration("1h")), json!({}), staff())]),
        ),
        (
            "parent of a type the schema forbids",
            json!([new_user(
                good_attrs(),
                json!({}),
                json!([{"type": "Tenant", "id": "acme"}])
            )]),
        ),
        (
            "entity reference of the wrong type",
            json!([new_user(
                with(
                    "tenant",
                    json!({"__entity": {"type": "Group", "id": "staff"}})
                ),
                json!({}),
                json!([])
            )]),
        ),
        (
            "entity of an undeclared type",
            json!([{"uid": {"type": "Robot", "id": "r2"}, "attrs": {}, "parents": []}]),
        ),
        (
            "tags on a type without tags",
            json!([{"uid": {"type": "Tenant", "id": "beta"}, "attrs": {}, "parents": [], "tags": {"x": "y"}}]),
        ),
        (
            "uploaded document with a tag",
            json!([
            new_user(good_attrs(), json!({}), json!([])),
            {"uid": {"type": "Doc", "id": "upload"}, "parents": [],
             "attrs": {"owner": {"__entity": {"type": "User", "id": "new"}}, "expires": offset("2026-12-05", "30d")},
             "tags": {"min_level": 3}}]),
        ),
        (
            "document tag of the wrong type",
            json!([
            {"uid": {"type": "Doc", "id": "upload"}, "parents": [],
             "attrs": {"owner": {"__entity": {"type": "User", "id": "stored"}}, "expires": datetime("2027-01-01")},
             "tags": {"min_level": "three"}}]),
        ),
        (
            "an action the schema declares",
            json!([{"uid": {"type": "Action", "id": "view"}, "attrs": {}, "parents": []}]),
        ),
        (
            "an action with a parent the schema does not give it",
            json!([{"uid": {"type": "Action", "id": "view"}, "attrs": {}, "parents": [{"type": "Action", "id": "edit"}]}]),
        ),
        (
            "offset with a long for a duration",
            json!([new_user(
                with(
                    "since",
                    json!({"__extn": {"fn": "offset", "args": [datetime("2026-01-01"), 5]}})
                ),
                json!({}),
                json!([])
            )]),
        ),
        (
            "an unknown extension function",
            json!([new_user(
                with(
                    "since",
                    json!({"__extn": {"fn": "later", "args": [datetime("2026-01-01")]}})
                ),
                json!({}),
                json!([])
            )]),
        ),
    ]
}

fn source() -> BundleSource {
    let file = |path: &str, contents: &str| BundleFile {
        path: path.to_owned(),
        contents: contents.to_owned(),
    };
    BundleSource {
        policies: vec![file("policies.cedar", POLICIES)],
        schema: Some(file("schema.cedarschema", SCHEMA)),
        entities: Some(file("entities.json", STORE)),
        template_links: None,
        prepared_schema_json: None,
        settings: Default::default(),
    }
}

/// Cedar's JSON entity form turned into the typed inputs hosts send.
fn entity_inputs(json: &Json) -> Result<Vec<EntityInput>, String> {
    let uid =
        |json: &Json| EntityUid::new(json["type"].as_str().unwrap(), json["id"].as_str().unwrap());
    json.as_array()
        .unwrap()
        .iter()
        .map(|entity| {
            let attrs = Attributes::from_json(&entity["attrs"]).map_err(|err| err.to_string())?;
            let tags = match entity.get("tags") {
                Some(tags) => Attributes::from_json(tags).map_err(|err| err.to_string())?,
                None => Attributes::default(),
            };
            Ok(EntityInput {
                uid: uid(&entity["uid"]),
                attrs,
                parents: entity["parents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(uid)
                    .collect(),
                tags,
            })
        })
        .collect()
}

/// The questions asked with each set of entities: (principal, action,
/// resource, now).
fn questions(entities: &Json) -> Vec<(EntityUid, &'static str, EntityUid, &'static str)> {
    let brings_upload = entities
        .as_array()
        .unwrap()
        .iter()
        .any(|entity| entity["uid"]["id"] == "upload");
    let mut docs = vec![EntityUid::new("Doc", "plan")];
    if brings_upload {
        docs.push(EntityUid::new("Doc", "upload"));
    }
    let mut asked = Vec::new();
    for principal in ["new", "stored"] {
        for action in ["view", "edit"] {
            for doc in &docs {
                for now in ["2026-12-05T12:00:00Z", "2027-06-01T00:00:00Z"] {
                    asked.push((EntityUid::new("User", principal), action, doc.clone(), now));
                }
            }
        }
    }
    asked
}

fn plain(answer: &Response) -> PlainAnswer {
    PlainAnswer {
        allowed: answer.is_allowed(),
        reasons: answer.determining_policies.iter().cloned().collect(),
        errors: answer
            .errors
            .iter()
            .map(|err| err.policy_id.clone())
            .collect::<BTreeSet<_>>(),
    }
}

#[test]
fn request_entities_match_plain_cedar() {
    let bundle_source = source();
    let native = NativeBackend::load(&bundle_source, RequestLimits::default()).expect("loads");
    let component = shared_runtime()
        .load_bundle(native.bundle())
        .expect("loads into the component");
    let schema = native.bundle().schema().expect("a schema").clone();
    let store = native.bundle().entities().clone();
    let policies = native.bundle().policies().clone();
    let uid = |uid: &EntityUid| cedar_edge_oracle::uid(&uid.type_name, &uid.id).unwrap();

    let (mut refused_cases, mut accepted_cases) = (0, 0);
    for (name, entities) in cases() {
        let text = entities.to_string();
        let joined = cedar_edge_oracle::join_request_entities(&store, &text, Some(&schema));
        // A host that parses with the schema's types accepts the same.
        assert_eq!(
            cedar_edge_oracle::schema_parse_accepts(&text, &schema),
            joined.is_ok(),
            "{name}: Cedar's two ways of reading entities disagree"
        );
        let inputs = entity_inputs(&entities);
        if joined.is_ok() {
            accepted_cases += 1;
        } else {
            refused_cases += 1;
        }
        for (principal, action, resource, now) in questions(&entities) {
            let request = Request {
                principal: principal.clone(),
                action: EntityUid::new("Action", action),
                resource: resource.clone(),
                context: ContextInput::Typed(Attributes::from_fields([(
                    "now".to_owned(),
                    Value::from_json(&datetime(now)).unwrap(),
                )])),
                entities: inputs.clone().unwrap_or_default(),
            };
            let ours = native.bundle().authorize(&request);
            let through_component = component.authorize(&request).map_err(|err| match err {
                AuthorizeError::Request(err) => err,
                other => panic!("{name}: the component failed: {other}"),
            });
            assert_eq!(
                format!("{ours:?}"),
                format!("{through_component:?}"),
                "{name}: the component and the native backend differ"
            );
            match &joined {
                Ok(joined) => {
                    assert!(
                        inputs.is_ok(),
                        "{name}: Cedar reads what we do not: {inputs:?}"
                    );
                    let plain_request = cedar_edge_oracle::request(
                        uid(&principal),
                        uid(&EntityUid::new("Action", action)),
                        uid(&resource),
                        &json!({ "now": datetime(now) }).to_string(),
                        Some(&schema),
                    )
                    .unwrap();
                    let expected = cedar_edge_oracle::decide(&plain_request, &policies, joined);
                    let ours = ours.unwrap_or_else(|err| panic!("{name}: refused: {err}"));
                    assert_eq!(
                        plain(&ours),
                        expected,
                        "{name}: {principal} {action} {resource} at {now}"
                    );
                }
                Err(plain_error) => {
                    let err = ours.expect_err(&format!("{name}: Cedar refuses, we decided"));
                    match (&err, plain_error.0.strip_prefix("entities: ")) {
                        // Refused while building the entities: the field
                        // names the entity, the wording is ours around Cedar's.
                        (RequestError::Invalid { field, .. }, Some(_)) => {
                            assert!(field.starts_with("entities"), "{name}: {err}");
                        }
                        // Refused by the conformance check: Cedar's message.
                        (RequestError::Invalid { field, message }, None) => {
                            assert_eq!(field, "entities", "{name}");
                            assert_eq!(message, &plain_error.0, "{name}");
                        }
                        (other, _) => panic!("{name}: refused for another reason: {other}"),
                    }
                }
            }
        }
    }
    // Both branches must be taken often, or the comparison proves little.
    assert!(
        refused_cases >= 10 && accepted_cases >= 6,
        "refused {refused_cases} cases, accepted {accepted_cases}"
    );
}

/// The cache answers for the bundle it was built from: a user with a
/// nickname is refused by the bundle whose schema lacks the attribute and
/// accepted by one that declares it.
#[test]
fn each_bundle_checks_against_its_own_schema() {
    let first = NativeBackend::load(&source(), RequestLimits::default()).expect("loads");
    let mut changed = source();
    let schema = changed.schema.as_mut().unwrap();
    schema.contents = schema
        .contents
        .replace("level: Long,", "level: Long, nickname?: String,");
    let second = NativeBackend::load(&changed, RequestLimits::default()).expect("loads");
    let mut attrs = good_attrs();
    attrs["nickname"] = json!("nick");
    let entities = entity_inputs(&json!([new_user(attrs, json!({"team": "data"}), staff())]));
    let request = Request {
        principal: EntityUid::new("User", "new"),
        action: EntityUid::new("Action", "view"),
        resource: EntityUid::new("Doc", "plan"),
        context: ContextInput::Typed(Attributes::from_fields([(
            "now".to_owned(),
            Value::from_json(&datetime("2026-12-05")).unwrap(),
        )])),
        entities: entities.unwrap(),
    };
    let err = first
        .bundle()
        .authorize(&request)
        .expect_err("the first schema has no nickname");
    assert!(err.to_string().contains("nickname"), "{err}");
    let allowed = second
        .bundle()
        .authorize(&request)
        .expect("the second schema declares a nickname");
    assert!(allowed.is_allowed(), "{allowed:?}");
}
