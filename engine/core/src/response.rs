//! Decisions and what made them.

use serde::{Deserialize, Serialize};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Some permit applied and no forbid did.
    Allow,
    /// No permit applied, or a forbid did.
    Deny,
}

/// A policy whose evaluation raised an error; Cedar skipped it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyError {
    /// The stable id of the policy.
    pub policy_id: String,
    /// What went wrong.
    pub message: String,
}

/// A decision with its reasons, errors and the bundle that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Allow or deny.
    pub decision: Decision,
    /// The ids of the determining policies, sorted.
    pub determining_policies: Vec<String>,
    /// Policies whose evaluation failed, sorted by id.
    pub errors: Vec<PolicyError>,
    /// The content hash of the bundle that decided.
    pub bundle_id: String,
}

impl Response {
    /// Whether the decision is allow.
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

impl Response {
    /// The deny that stands in for a request that got no decision: a
    /// refused mapping, a rejected request or a failed call. The reason is
    /// the one error, with no policy id, so no caller can mistake a failure
    /// for an allow and every log says why.
    pub fn denied_by_error(reason: impl Into<String>, bundle_id: &str) -> Self {
        Self {
            decision: Decision::Deny,
            determining_policies: Vec::new(),
            errors: vec![PolicyError {
                policy_id: String::new(),
                message: reason.into(),
            }],
            bundle_id: bundle_id.to_owned(),
        }
    }

    /// Whether the deny comes from a failure rather than from the policies.
    pub fn is_failure(&self) -> bool {
        self.errors.iter().any(|error| error.policy_id.is_empty())
    }
}
