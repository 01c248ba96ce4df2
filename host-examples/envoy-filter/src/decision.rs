//! What the filter writes: the 403 and 401 bodies and the one decision log
//! line per request. Tokens and claims never appear; only uids, policy ids
//! and reasons do.

use serde_json::json;

use crate::mapping::{Outcome, Verdict};

/// The JSON body of a 401 or 403.
pub fn refusal_body(outcome: &Outcome, decision_id: &str, with_reasons: bool) -> String {
    let mut body = json!({
        "decision": match outcome.verdict {
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Allow | Verdict::Deny => "deny",
        },
        "decision_id": decision_id,
    });
    if let (true, Some(object)) = (with_reasons, body.as_object_mut()) {
        let reasons = outcome
            .response
            .as_ref()
            .map(|response| response.determining_policies.clone())
            .unwrap_or_default();
        object.insert("reasons".to_owned(), json!(reasons));
    }
    body.to_string()
}

/// The decision log line: one JSON object per request.
pub fn log_line(outcome: &Outcome, decision_id: &str, bundle_id: &str, shadow: bool) -> String {
    let request = outcome.request.as_ref();
    let response = outcome.response.as_ref();
    json!({
        "decision_id": decision_id,
        "decision": match outcome.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Unauthenticated => "unauthenticated",
        },
        "shadow": shadow,
        "principal": request.map(|request| request.principal.to_string()),
        "action": request.map(|request| request.action.to_string()),
        "resource": request.map(|request| request.resource.to_string()),
        "determining_policies": response.map(|response| response.determining_policies.clone()).unwrap_or_default(),
        "errors": response.map(|response| {
            response.errors.iter().map(|error| format!("{}: {}", error.policy_id, error.message)).collect::<Vec<_>>()
        }).unwrap_or_default(),
        "refusal": outcome.error,
        "bundle_id": bundle_id,
    })
    .to_string()
}
