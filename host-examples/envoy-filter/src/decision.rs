//! What the filter writes and names: the 400, 401 and 403 bodies, the one
//! decision record per request, which Envoy's access log writes (the
//! shared decision record, plus `shadow` and the canonical `path`
//! decided), and decision ids. Tokens,
//! claims and query strings never appear; only uids, policy ids and
//! reasons do.

use cedar_edge_mapping::{DecisionRecord, MappedDecision, Verdict};
use serde_json::{Value, json};

/// The JSON body of a 400, 401 or 403.
pub fn refusal_body(decision: &MappedDecision, decision_id: &str, with_reasons: bool) -> String {
    let mut body = json!({
        "decision": match decision.verdict {
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Malformed => "bad_request",
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

/// The filter state key the decision record goes to; Envoy adds `wasm.`,
/// so access logs read it as `%FILTER_STATE(wasm.cedar_edge.decision:PLAIN)%`.
pub const DECISION_PROPERTY: &str = "cedar_edge.decision";

/// The decision record: one JSON object per request. `path` is the
/// canonical path that was decided, and so the one forwarded; the query
/// is left out, since it can carry tokens.
pub fn decision_record(
    decision: &MappedDecision,
    decision_id: &str,
    bundle_id: &str,
    shadow: bool,
) -> String {
    let mut record = DecisionRecord::of(decision, decision_id, bundle_id).to_json();
    record.insert("shadow".to_owned(), Value::Bool(shadow));
    record.insert(
        "path".to_owned(),
        decision
            .target
            .as_ref()
            .map_or(Value::Null, |target| Value::String(target.path.clone())),
    );
    Value::Object(record).to_string()
}

/// The per-VM part of decision ids: 64 random bits from the host. Should
/// the host have no randomness, `fallback` (the clock, in nanoseconds) is
/// used, which still differs between VMs started at different instants.
pub fn vm_nonce(fallback: u128) -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        // Folds the 128-bit clock into 64 bits.
        Err(_) => (fallback as u64) ^ ((fallback >> 64) as u64),
    }
}

/// A decision id: the VM's nonce and the request's sequence number within
/// that VM, so ids never repeat across requests, worker threads or
/// restarts, and no client chooses one.
pub fn decision_id(vm_nonce: u64, sequence: u64) -> String {
    format!("cedar-{vm_nonce:016x}-{sequence:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_differ_across_vms_and_requests() {
        let first = vm_nonce(1);
        let second = vm_nonce(1);
        assert_ne!(first, second, "two VMs drew the same nonce");
        assert_ne!(decision_id(first, 1), decision_id(first, 2));
        assert_ne!(decision_id(first, 1), decision_id(second, 1));
        assert_eq!(decision_id(0xab, 0x10), "cedar-00000000000000ab-10");
    }
}
