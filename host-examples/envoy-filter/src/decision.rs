//! What the filter writes: the 403 and 401 bodies and the one decision log
//! line per request (the shared decision record, plus `shadow`). Tokens and
//! claims never appear; only uids, policy ids and reasons do.

use cedar_edge_mapping::{DecisionRecord, MappedDecision, Verdict};
use serde_json::{Value, json};

/// The JSON body of a 401 or 403.
pub fn refusal_body(decision: &MappedDecision, decision_id: &str, with_reasons: bool) -> String {
    let mut body = json!({
        "decision": match decision.verdict {
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Allow | Verdict::Deny => "deny",
        },
        "decision_id": decision_id,
    });
    if let (true, Some(object)) = (with_reasons, body.as_object_mut()) {
        let reasons = decision
            .response
            .as_ref()
            .map(|response| response.determining_policies.clone())
            .unwrap_or_default();
        object.insert("reasons".to_owned(), json!(reasons));
    }
    body.to_string()
}

/// The decision log line: one JSON object per request.
pub fn log_line(
    decision: &MappedDecision,
    decision_id: &str,
    bundle_id: &str,
    shadow: bool,
) -> String {
    let mut record = DecisionRecord::of(decision, decision_id, bundle_id).to_json();
    record.insert("shadow".to_owned(), Value::Bool(shadow));
    Value::Object(record).to_string()
}
