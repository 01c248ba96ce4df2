//! The policy index leaves out only policies whose scope cannot match, so
//! every answer equals plain cedar-policy's over the whole policy set: here
//! with action groups from the schema, `is`/`in` scopes and a template link,
//! on every principal × action × resource of the bundle.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use cedar_edge_core::{
    Bundle, BundleFile, BundleSource, ContextInput, EntityUid, Request, RequestLimits,
};

const SCHEMA: &str = r#"
entity Group;
entity User in [Group] { level: Long };
entity Bot;
entity Folder;
entity Doc in [Folder] { level: Long };
action "view", "write" appliesTo { principal: [User, Bot], resource: [Doc, Folder] };
action "read", "list" in ["view"] appliesTo { principal: [User, Bot], resource: [Doc, Folder] };
"#;

const POLICIES: &str = r#"
@id("view-group") permit (principal in Group::"staff", action in Action::"view", resource);
@id("bots-list") permit (principal is Bot, action == Action::"list", resource is Folder);
@id("level") permit (principal is User, action == Action::"read", resource is Doc)
  when { principal.level >= resource.level };
@id("no-secret-writes") forbid (principal, action == Action::"write", resource in Folder::"secret");
@id("errors-for-bots") forbid (principal is Bot, action in [Action::"read", Action::"write"], resource is Doc)
  when { resource.level > 1 + 9223372036854775807 };
@id("writers") permit (principal in ?principal, action == Action::"write", resource in ?resource);
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "ann"}, "attrs": {"level": 3}, "parents": [{"type": "Group", "id": "staff"}]},
  {"uid": {"type": "User", "id": "bo"}, "attrs": {"level": 1}, "parents": []},
  {"uid": {"type": "Bot", "id": "crawler"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Folder", "id": "secret"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Folder", "id": "public"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"level": 2}, "parents": [{"type": "Folder", "id": "secret"}]},
  {"uid": {"type": "Doc", "id": "memo"}, "attrs": {"level": 0}, "parents": [{"type": "Folder", "id": "public"}]}
]"#;

const LINKS: &str = r#"[{"template_id": "writers", "link_id": "staff-write-public",
  "args": {"?principal": "Group::\"staff\"", "?resource": "Folder::\"public\""}}]"#;

fn file(path: &str, contents: &str) -> BundleFile {
    BundleFile {
        path: path.into(),
        contents: contents.into(),
    }
}

#[test]
fn indexed_answers_equal_full_evaluation_everywhere() {
    let source = BundleSource {
        policies: vec![file("p.cedar", POLICIES)],
        schema: Some(file("s.cedarschema", SCHEMA)),
        entities: Some(file("entities.json", ENTITIES)),
        template_links: Some(file("template-links.json", LINKS)),
        prepared_schema_json: None,
        settings: Default::default(),
    };
    let bundle = Bundle::load(&source, RequestLimits::default()).unwrap();
    let principals = [("User", "ann"), ("User", "bo"), ("Bot", "crawler")];
    let actions = ["read", "list", "write", "view"];
    let resources = [
        ("Doc", "plan"),
        ("Doc", "memo"),
        ("Folder", "secret"),
        ("Folder", "public"),
    ];
    let mut reasons_seen = BTreeSet::new();
    let mut errors_seen = 0;
    for (principal_type, principal_id) in principals {
        for action in actions {
            for (resource_type, resource_id) in resources {
                let request = Request {
                    principal: EntityUid::new(principal_type, principal_id),
                    action: EntityUid::new("Action", action),
                    resource: EntityUid::new(resource_type, resource_id),
                    context: ContextInput::Json("{}".into()),
                    entities: Vec::new(),
                };
                let ours = bundle.authorize(&request).unwrap();
                let uid =
                    |type_name: &str, id: &str| cedar_edge_oracle::uid(type_name, id).unwrap();
                let plain_request = cedar_edge_oracle::request(
                    uid(principal_type, principal_id),
                    uid("Action", action),
                    uid(resource_type, resource_id),
                    "{}",
                    bundle.schema(),
                )
                .unwrap();
                let plain =
                    cedar_edge_oracle::decide(&plain_request, bundle.policies(), bundle.entities());
                let (plain_reasons, plain_errors) = (plain.reasons, plain.errors);
                let what = format!("{principal_id} {action} {resource_id}");
                assert_eq!(ours.is_allowed(), plain.allowed, "{what}");
                assert_eq!(
                    ours.determining_policies
                        .iter()
                        .cloned()
                        .collect::<BTreeSet<_>>(),
                    plain_reasons,
                    "{what}"
                );
                assert_eq!(
                    ours.errors
                        .iter()
                        .map(|e| e.policy_id.clone())
                        .collect::<BTreeSet<_>>(),
                    plain_errors,
                    "{what}"
                );
                reasons_seen.extend(plain_reasons);
                errors_seen += plain_errors.len();
            }
        }
    }
    // The bundle exercises what the index must get right.
    for id in [
        "view-group",
        "bots-list",
        "level",
        "no-secret-writes",
        "staff-write-public",
    ] {
        assert!(
            reasons_seen.contains(id),
            "{id} never decided: {reasons_seen:?}"
        );
    }
    assert!(errors_seen > 0, "no evaluation error was exercised");
}

/// A request entity that the store already names as a parent changes the
/// store's own hierarchy: here it puts `ann` in `Org::"acme"`. Such requests
/// must be joined to the whole store, as plain Cedar does, not sliced.
#[test]
fn request_entities_that_reparent_the_store_are_joined_in_full() {
    let source = BundleSource {
        policies: vec![file(
            "p.cedar",
            r#"@id("org-members") permit (principal in Org::"acme", action, resource);"#,
        )],
        schema: None,
        entities: Some(file(
            "entities.json",
            r#"[{"uid": {"type": "User", "id": "ann"}, "attrs": {}, "parents": [{"type": "Team", "id": "ghost"}]},
                {"uid": {"type": "Doc", "id": "memo"}, "attrs": {}, "parents": []}]"#,
        )),
        template_links: None,
        prepared_schema_json: None,
        settings: Default::default(),
    };
    let bundle = Bundle::load(&source, RequestLimits::default()).unwrap();
    let mut request = Request {
        principal: EntityUid::new("User", "ann"),
        action: EntityUid::new("Action", "read"),
        resource: EntityUid::new("Doc", "memo"),
        context: ContextInput::Json("{}".into()),
        entities: Vec::new(),
    };
    assert!(!bundle.authorize(&request).unwrap().is_allowed());
    request.entities.push(cedar_edge_core::EntityInput {
        uid: EntityUid::new("Team", "ghost"),
        attrs: cedar_edge_core::Attributes::default(),
        parents: vec![EntityUid::new("Org", "acme")],
        tags: cedar_edge_core::Attributes::default(),
    });
    let answer = bundle.authorize(&request).unwrap();
    assert!(answer.is_allowed(), "{answer:?}");
    assert_eq!(answer.determining_policies, ["org-members"]);
}

/// A request entity inherits its parents' ancestors from the store: a user
/// built from claims in team `core` is in `Org::"acme"` because the store
/// puts `core` there.
#[test]
fn request_entities_inherit_the_store_hierarchy() {
    let source = BundleSource {
        policies: vec![file(
            "p.cedar",
            r#"@id("org-members") permit (principal in Org::"acme", action, resource)
                 when { principal.boss.level > 1 };"#,
        )],
        schema: None,
        entities: Some(file(
            "entities.json",
            r#"[{"uid": {"type": "Team", "id": "core"}, "attrs": {}, "parents": [{"type": "Org", "id": "acme"}]},
                {"uid": {"type": "User", "id": "boss"}, "attrs": {"level": 3}, "parents": []},
                {"uid": {"type": "Doc", "id": "memo"}, "attrs": {}, "parents": []}]"#,
        )),
        template_links: None,
        prepared_schema_json: None,
        settings: Default::default(),
    };
    let bundle = Bundle::load(&source, RequestLimits::default()).unwrap();
    let claims_user = |parent: &str| cedar_edge_core::EntityInput {
        uid: EntityUid::new("User", "from-claims"),
        attrs: cedar_edge_core::Attributes::from_fields([(
            "boss".to_owned(),
            cedar_edge_core::Value::Entity(EntityUid::new("User", "boss")),
        )]),
        parents: vec![EntityUid::new("Team", parent)],
        tags: cedar_edge_core::Attributes::default(),
    };
    let request = |parent: &str| Request {
        principal: EntityUid::new("User", "from-claims"),
        action: EntityUid::new("Action", "read"),
        resource: EntityUid::new("Doc", "memo"),
        context: ContextInput::Json("{}".into()),
        entities: vec![claims_user(parent)],
    };
    // `boss` is reached only through the request entity's attribute.
    let answer = bundle.authorize(&request("core")).unwrap();
    assert!(answer.is_allowed(), "{answer:?}");
    assert!(answer.errors.is_empty(), "{answer:?}");
    let answer = bundle.authorize(&request("elsewhere")).unwrap();
    assert!(!answer.is_allowed(), "{answer:?}");
}
