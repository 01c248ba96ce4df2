//! The Cerbos translation keeps the shape its exactness rests on (see
//! `cedar_edge_benches::peers::cerbos`): one rule per Cedar policy, every
//! deny rule under all roles, and every request with the principal's roles.
//! Its decisions are checked against a real Cerbos server by
//! `benches/scripts/peers/run.py`, which this test cannot start.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cedar_edge_benches::peers::cerbos;
use cedar_edge_benches::peers::model::{by_uid, workload};

#[test]
fn every_policy_is_one_rule_and_every_deny_applies_to_all_roles() {
    let workload = workload(100, 17, 200).unwrap();
    let policies = &workload.generated.policies;
    let yaml = cerbos::resource_policy(policies);
    let rules: Vec<&str> = yaml.split("\n    - name: ").skip(1).collect();
    assert_eq!(rules.len(), policies.len());
    for (rule, policy) in rules.iter().zip(policies) {
        assert!(rule.starts_with(&format!("\"{}\"\n", policy.id)), "{rule}");
        let deny = rule.contains("effect: EFFECT_DENY");
        assert_eq!(deny, policy.forbid, "{rule}");
        if deny {
            assert!(
                rule.contains("roles: [\"*\"]"),
                "a deny scoped to a role: {rule}"
            );
        }
    }

    let entities = by_uid(&workload.entities);
    for (index, request) in workload.requests.iter().enumerate() {
        let body = cerbos::check_body(request, &entities, index).unwrap();
        let roles = body["principal"]["roles"].as_array().unwrap();
        assert!(!roles.is_empty(), "{body}");
        let anc = body["resources"][0]["resource"]["attr"]["anc"]
            .as_array()
            .unwrap();
        assert!(
            anc.len() >= 3,
            "a document, its folder and its tenant: {body}"
        );
    }
}

#[test]
fn answers_are_read_per_action() {
    let answer = serde_json::json!({
        "results": [{"resource": {"id": "d", "kind": "doc"},
                     "actions": {"read": "EFFECT_ALLOW", "write": "EFFECT_DENY"}}]
    });
    assert_eq!(cerbos::decision(&answer, "read"), Some(true));
    assert_eq!(cerbos::decision(&answer, "write"), Some(false));
    assert_eq!(cerbos::decision(&answer, "share"), None);
}
