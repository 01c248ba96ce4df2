//! Differential tests: the component, the native backend and plain
//! cedar-policy give the same decisions, reasons and errors.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_edge_core::{
    Attributes, BundleFile, BundleSource, ContextInput, EntityInput, EntityUid, ExtensionKind,
    Request, RequestLimits, Value,
};
use cedar_edge_core::{Backend, NativeBackend};
use common::*;
use proptest::prelude::*;
use serde_json::json;

const ACTIONS: [&str; 3] = ["view", "edit", "delete"];
const IPS: [&str; 3] = ["10.1.2.3", "192.168.0.9", "2001:db8::1"];

/// One generated policy, as choices that shrink well.
#[derive(Debug, Clone)]
struct PolicySpec {
    permit: bool,
    principal: (u8, u8),
    action: (u8, u8),
    resource: (u8, u8),
    condition: (u8, i64),
}

impl PolicySpec {
    fn to_cedar(&self, index: usize) -> String {
        let (p_kind, p_n) = self.principal;
        let principal = match p_kind % 5 {
            0 => "principal".to_owned(),
            1 => format!("principal == User::\"u{}\"", p_n % 4),
            2 => format!("principal in Group::\"g{}\"", p_n % 3),
            3 => "principal is User".to_owned(),
            _ => format!("principal is User in Group::\"g{}\"", p_n % 3),
        };
        let (a_kind, a_n) = self.action;
        let action = match a_kind % 3 {
            0 => "action".to_owned(),
            1 => format!("action == Action::\"{}\"", ACTIONS[a_n as usize % 3]),
            _ => format!(
                "action in [Action::\"{}\", Action::\"{}\"]",
                ACTIONS[a_n as usize % 3],
                ACTIONS[(a_n as usize + 1) % 3]
            ),
        };
        let (r_kind, r_n) = self.resource;
        let resource = match r_kind % 4 {
            0 => "resource".to_owned(),
            1 => format!("resource == Doc::\"d{}\"", r_n % 4),
            2 => "resource is Doc".to_owned(),
            _ => format!("resource in Folder::\"f{}\"", r_n % 2),
        };
        let (c_kind, k) = self.condition;
        let condition = match c_kind % 10 {
            0 => String::new(),
            1 => "when { resource.public }".to_owned(),
            // Errors when the principal is a group, which has no level.
            2 => "when { principal.level >= resource.level }".to_owned(),
            3 => "when { resource.owner == principal }".to_owned(),
            4 => format!("when {{ context.n > {k} }}"),
            5 => "unless { context.flag }".to_owned(),
            // Errors for users without a department.
            6 => "when { principal.dept == \"eng\" }".to_owned(),
            // Overflows, an evaluation error, when n is large.
            7 => "when { context.n + 9223372036854775800 > 0 }".to_owned(),
            8 => "when { context.ip.isInRange(ip(\"10.0.0.0/8\")) }".to_owned(),
            _ => "when { principal in resource.owner || context has missing }".to_owned(),
        };
        let effect = if self.permit { "permit" } else { "forbid" };
        format!("@id(\"p{index}\")\n{effect} ({principal}, {action}, {resource})\n{condition};\n")
    }
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        any::<bool>(),
        (0u8..5, 0u8..4),
        (0u8..3, 0u8..3),
        (0u8..4, 0u8..4),
        (0u8..10, -2i64..10),
    )
        .prop_map(
            |(permit, principal, action, resource, condition)| PolicySpec {
                permit,
                principal,
                action,
                resource,
                condition,
            },
        )
}

/// The entities of a generated bundle, in Cedar's JSON entity form.
#[derive(Debug, Clone)]
struct EntitySpec {
    user_levels: Vec<i64>,
    user_groups: Vec<u8>,
    user_has_dept: Vec<bool>,
    group_parents: Vec<bool>,
    doc_public: Vec<bool>,
    doc_levels: Vec<i64>,
    doc_owners: Vec<u8>,
    doc_folders: Vec<u8>,
}

fn entity_spec() -> impl Strategy<Value = EntitySpec> {
    (
        proptest::collection::vec(0i64..5, 4),
        proptest::collection::vec(0u8..8, 4),
        proptest::collection::vec(any::<bool>(), 4),
        proptest::collection::vec(any::<bool>(), 3),
        proptest::collection::vec(any::<bool>(), 4),
        proptest::collection::vec(0i64..5, 4),
        proptest::collection::vec(0u8..4, 4),
        proptest::collection::vec(0u8..3, 4),
    )
        .prop_map(
            |(
                user_levels,
                user_groups,
                user_has_dept,
                group_parents,
                doc_public,
                doc_levels,
                doc_owners,
                doc_folders,
            )| {
                EntitySpec {
                    user_levels,
                    user_groups,
                    user_has_dept,
                    group_parents,
                    doc_public,
                    doc_levels,
                    doc_owners,
                    doc_folders,
                }
            },
        )
}

fn uid_json(type_name: &str, id: String) -> serde_json::Value {
    json!({ "type": type_name, "id": id })
}

impl EntitySpec {
    fn to_json(&self) -> String {
        let mut entities = Vec::new();
        for user in 0..4 {
            // A bit mask picks the user's groups.
            let groups: Vec<_> = (0..3)
                .filter(|g| self.user_groups[user] & (1 << g) != 0)
                .map(|g| uid_json("Group", format!("g{g}")))
                .collect();
            let mut attrs = json!({ "level": self.user_levels[user] });
            if self.user_has_dept[user] {
                attrs["dept"] = json!(if user % 2 == 0 { "eng" } else { "ops" });
            }
            entities.push(json!({ "uid": uid_json("User", format!("u{user}")), "attrs": attrs, "parents": groups }));
        }
        // Groups nest only upwards, so the hierarchy has no cycle.
        for group in 0..3 {
            let parents: Vec<_> = if group < 2 && self.group_parents[group] {
                vec![uid_json("Group", format!("g{}", group + 1))]
            } else {
                vec![]
            };
            entities.push(json!({ "uid": uid_json("Group", format!("g{group}")), "attrs": {}, "parents": parents }));
        }
        for folder in 0..2 {
            entities.push(json!({ "uid": uid_json("Folder", format!("f{folder}")), "attrs": {}, "parents": [] }));
        }
        for doc in 0..4 {
            let folders: Vec<_> = (0..2)
                .filter(|f| self.doc_folders[doc] & (1 << f) != 0)
                .map(|f| uid_json("Folder", format!("f{f}")))
                .collect();
            let attrs = json!({
                "public": self.doc_public[doc],
                "level": self.doc_levels[doc],
                "owner": { "__entity": uid_json("User", format!("u{}", self.doc_owners[doc])) },
            });
            entities.push(json!({ "uid": uid_json("Doc", format!("d{doc}")), "attrs": attrs, "parents": folders }));
        }
        serde_json::to_string_pretty(&entities).unwrap()
    }
}

/// A generated request: principal index 0..4 are users, 4..7 groups, 7 is a
/// request-scoped user.
#[derive(Debug, Clone)]
struct RequestSpec {
    principal: u8,
    action: u8,
    resource: u8,
    n: i64,
    flag: bool,
    ip: u8,
    extra_user_group: u8,
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    (
        0u8..8,
        0u8..3,
        0u8..4,
        -3i64..12,
        any::<bool>(),
        0u8..3,
        0u8..3,
    )
        .prop_map(
            |(principal, action, resource, n, flag, ip, extra_user_group)| RequestSpec {
                principal,
                action,
                resource,
                n,
                flag,
                ip,
                extra_user_group,
            },
        )
}

impl RequestSpec {
    fn principal(&self) -> EntityUid {
        match self.principal {
            p @ 0..4 => EntityUid::new("User", format!("u{p}")),
            p @ 4..7 => EntityUid::new("Group", format!("g{}", p - 4)),
            _ => EntityUid::new("User", "visitor"),
        }
    }

    fn context_json(&self) -> serde_json::Value {
        json!({
            "n": self.n,
            "flag": self.flag,
            "ip": { "__extn": { "fn": "ip", "arg": IPS[self.ip as usize] } },
        })
    }

    /// The request for our backends, with a typed or a JSON context.
    fn to_request(&self, typed: bool) -> Request {
        let context = if typed {
            ContextInput::Typed(Attributes::from_fields([
                ("n".to_owned(), Value::Long(self.n)),
                ("flag".to_owned(), Value::Bool(self.flag)),
                (
                    "ip".to_owned(),
                    Value::Extension(ExtensionKind::Ip, IPS[self.ip as usize].to_owned()),
                ),
            ]))
        } else {
            ContextInput::Json(self.context_json().to_string())
        };
        let entities = if self.principal == 7 {
            vec![EntityInput {
                uid: self.principal(),
                attrs: Attributes::from_fields([("level".to_owned(), Value::Long(self.n))]),
                parents: vec![EntityUid::new(
                    "Group",
                    format!("g{}", self.extra_user_group),
                )],
                tags: Attributes::default(),
            }]
        } else {
            Vec::new()
        };
        Request {
            principal: self.principal(),
            action: EntityUid::new("Action", ACTIONS[self.action as usize]),
            resource: EntityUid::new("Doc", format!("d{}", self.resource)),
            context,
            entities,
        }
    }
}

/// Decides with cedar-policy directly, built from the same text with no code
/// of ours in between, and renames its default ids `policyN` to our `pN`.
fn plain_cedar(
    policies: &str,
    entities_json: &str,
    spec: &RequestSpec,
) -> (bool, BTreeSet<String>, BTreeSet<String>) {
    let policy_set = cedar_policy::PolicySet::from_str(policies).unwrap();
    let mut entities = cedar_policy::Entities::from_json_str(entities_json, None).unwrap();
    if spec.principal == 7 {
        let visitor = json!([{
            "uid": uid_json("User", "visitor".to_owned()),
            "attrs": { "level": spec.n },
            "parents": [uid_json("Group", format!("g{}", spec.extra_user_group))],
        }]);
        let extra = cedar_policy::Entities::from_json_value(visitor, None).unwrap();
        entities = entities.add_entities(extra.iter().cloned(), None).unwrap();
    }
    let principal = spec.principal();
    let uid = |type_name: &str, id: &str| cedar_edge_oracle::uid(type_name, id).unwrap();
    let request = cedar_edge_oracle::request(
        uid(&principal.type_name, &principal.id),
        uid("Action", ACTIONS[spec.action as usize]),
        uid("Doc", &format!("d{}", spec.resource)),
        &spec.context_json().to_string(),
        None,
    )
    .unwrap();
    let answer = cedar_edge_oracle::decide(&request, &policy_set, &entities);
    let rename = |ids: BTreeSet<String>| {
        ids.into_iter()
            .map(|id| id.replace("policy", "p"))
            .collect()
    };
    (
        answer.allowed,
        rename(answer.reasons),
        rename(answer.errors),
    )
}

fn bundle(policies: &str, entities: &str) -> BundleSource {
    BundleSource {
        policies: vec![BundleFile {
            path: "random.cedar".to_owned(),
            contents: policies.to_owned(),
        }],
        entities: Some(BundleFile {
            path: "entities.json".to_owned(),
            contents: entities.to_owned(),
        }),
        ..BundleSource::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bundles_decide_alike_everywhere(
        policies in proptest::collection::vec(policy_spec(), 1..10),
        entities in entity_spec(),
        requests in proptest::collection::vec(request_spec(), 1..12),
    ) {
        let policy_text: String = policies.iter().enumerate().map(|(i, p)| p.to_cedar(i)).collect();
        let entities_json = entities.to_json();
        let source = bundle(&policy_text, &entities_json);
        let native = NativeBackend::load(&source, RequestLimits::default()).unwrap();
        let component = shared_runtime().load_bundle(native.bundle()).unwrap();
        let typed: Vec<_> = requests.iter().map(|spec| spec.to_request(true)).collect();
        let batch = component.authorize_batch(&typed);
        for ((spec, request), batched) in requests.iter().zip(&typed).zip(batch) {
            let expected = native.authorize(request).unwrap();
            prop_assert_eq!(&component.authorize(request).unwrap(), &expected);
            prop_assert_eq!(&batched.unwrap(), &expected);
            prop_assert_eq!(&component.authorize(&spec.to_request(false)).unwrap(), &expected);

            let (allowed, reasons, errors) = plain_cedar(&policy_text, &entities_json, spec);
            prop_assert_eq!(expected.is_allowed(), allowed);
            prop_assert_eq!(expected.determining_policies.iter().cloned().collect::<BTreeSet<_>>(), reasons);
            prop_assert_eq!(expected.errors.iter().map(|e| e.policy_id.clone()).collect::<BTreeSet<_>>(), errors);
        }
    }

    #[test]
    fn example_bundle_decides_alike_on_random_requests(
        user in 0usize..6,
        action in 0usize..4,
        dag in 0usize..4,
        mfa in any::<bool>(),
        ip in 0usize..3,
        age in 0i64..5000,
    ) {
        let source = example_bundle();
        let native = NativeBackend::load(&source, RequestLimits::default()).unwrap();
        let component = example_component();
        let users = ["alice", "bob", "carol", "dave", "erin", "nobody"];
        let actions = ["read", "trigger", "edit", "deploy"];
        let dags = ["etl_daily", "reporting", "ml_training", "feature_backfill"];
        let ips = ["10.4.4.4", "192.0.2.8", "::1"];
        for context in [typed_context(mfa, ips[ip], age), json_context(mfa, ips[ip], age)] {
            let request = airflow_request(airflow("User", users[user]), actions[action], airflow("Dag", dags[dag]), context);
            let expected = native.authorize(&request);
            let actual = component.authorize(&request);
            match (expected, actual) {
                (Ok(expected), Ok(actual)) => prop_assert_eq!(actual, expected),
                // A request the schema rejects (deploy on a DAG) is rejected alike.
                (Err(expected), Err(actual)) => prop_assert_eq!(actual.to_string(), expected.to_string()),
                (expected, actual) => prop_assert!(false, "native {expected:?} but component {actual:?}"),
            }
        }
    }
}

fn example_component() -> &'static cedar_edge_runtime::ComponentBackend {
    static BACKEND: std::sync::OnceLock<cedar_edge_runtime::ComponentBackend> =
        std::sync::OnceLock::new();
    BACKEND.get_or_init(|| shared_runtime().load_source(&example_bundle()).unwrap())
}
