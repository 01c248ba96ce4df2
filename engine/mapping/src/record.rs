//! The decision record: one JSON object per decided request, the same in
//! every host (the Envoy filter's log line, the gateway's audit log). Only
//! uids, policy ids and reasons appear in it; tokens never do.

use cedar_edge_core::{Request, Response};
use serde_json::{Map, Value as Json, json};

use crate::{MappedDecision, Verdict};

/// How a request ended, as records and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// Allowed by the policies.
    Allow,
    /// Denied by the policies.
    Deny,
    /// Denied because it could not be mapped or decided.
    Error,
    /// No verified identity.
    Unauthenticated,
}

impl DecisionKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [Self; 4] = [Self::Allow, Self::Deny, Self::Error, Self::Unauthenticated];

    /// The label records and metrics use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The kind of an engine answer: a deny that stands in for a failure is
    /// an error, not a policy decision.
    pub fn of_response(response: &Response) -> Self {
        if response.is_allowed() {
            Self::Allow
        } else if response.is_failure() {
            Self::Error
        } else {
            Self::Deny
        }
    }
}

impl MappedDecision {
    /// What the record and the metrics call this decision.
    pub fn kind(&self) -> DecisionKind {
        match (self.verdict, &self.response) {
            (Verdict::Unauthenticated, _) => DecisionKind::Unauthenticated,
            (_, Some(response)) => DecisionKind::of_response(response),
            (_, None) => DecisionKind::Error,
        }
    }
}

/// The longest refusal a record carries. Refusals can quote what a client
/// sent (a token's untrusted `iss`, a path), and a log must not grow by
/// whatever a client chooses to send.
pub const MAX_REFUSAL_CHARS: usize = 256;

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_REFUSAL_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// The fields every host's record carries.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRecord<'a> {
    /// The id the host gave the decision.
    pub decision_id: &'a str,
    /// How the request ended.
    pub kind: DecisionKind,
    /// The Cedar request, when mapping got that far.
    pub request: Option<&'a Request>,
    /// The engine's answer, when it gave one.
    pub response: Option<&'a Response>,
    /// Why the request was refused before evaluation.
    pub refusal: Option<&'a str>,
    /// The bundle that decided (or would have).
    pub bundle_id: &'a str,
}

impl<'a> DecisionRecord<'a> {
    /// The record of a mapped decision.
    pub fn of(decision: &'a MappedDecision, decision_id: &'a str, bundle_id: &'a str) -> Self {
        Self {
            decision_id,
            kind: decision.kind(),
            request: decision.request.as_ref(),
            response: decision.response.as_ref(),
            refusal: decision.refusal.as_deref(),
            bundle_id,
        }
    }

    /// The record of a request refused before it reached the engine.
    pub fn refused(
        decision_id: &'a str,
        kind: DecisionKind,
        reason: &'a str,
        bundle_id: &'a str,
    ) -> Self {
        Self {
            decision_id,
            kind,
            request: None,
            response: None,
            refusal: Some(reason),
            bundle_id,
        }
    }

    /// The record as a JSON object, to which a host adds its own fields.
    pub fn to_json(&self) -> Map<String, Json> {
        let request = self.request;
        let response = self.response;
        let fields = json!({
            "decision_id": self.decision_id,
            "decision": self.kind.label(),
            "principal": request.map(|request| request.principal.to_string()),
            "action": request.map(|request| request.action.to_string()),
            "resource": request.map(|request| request.resource.to_string()),
            "determining_policies": response.map_or(&[][..], |response| &response.determining_policies[..]),
            "errors": response.map(|response| {
                response.errors.iter().map(|error| format!("{}: {}", error.policy_id, error.message)).collect::<Vec<_>>()
            }).unwrap_or_default(),
            "refusal": self.refusal.map(truncate),
            "bundle_id": self.bundle_id,
        });
        match fields {
            Json::Object(map) => map,
            _ => Map::new(),
        }
    }
}
