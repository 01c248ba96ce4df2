//! Running cases against a backend and judging the answers. The CLI's
//! `test` command and the project's own `cargo test` share this runner.

use std::collections::BTreeSet;

use cedar_edge_core::Backend;
use cedar_edge_core::{Decision, Response};

use super::load::TestCase;
use super::spec::{ErrorSpec, Outcome, ReasonsSpec};

/// How many requests cross into the backend at once.
const BATCH_SIZE: usize = 256;

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: TestCase,
    /// What the backend decided (a deny naming the error if it failed).
    pub response: Response,
    /// Why the case failed; empty when it passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The results of a run, with coverage.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The bundle the cases ran against.
    pub bundle_id: String,
    /// Which backend decided.
    pub backend: String,
    /// Every case, in file order.
    pub results: Vec<CaseResult>,
    /// Every policy and template link of the bundle, and whether some case
    /// made it determining.
    pub coverage: Vec<(String, bool)>,
}

impl RunReport {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|result| result.passed()).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// The share of policies some case made determining, in percent. A
    /// bundle without policies is fully covered.
    pub fn coverage_percent(&self) -> f64 {
        if self.coverage.is_empty() {
            return 100.0;
        }
        let covered = self.coverage.iter().filter(|(_, hit)| *hit).count();
        100.0 * covered as f64 / self.coverage.len() as f64
    }
}

/// Runs the cases whose name or file contains `filter` (all when `None`).
pub fn run_cases(
    backend: &dyn Backend,
    backend_name: &str,
    cases: Vec<TestCase>,
    filter: Option<&str>,
) -> RunReport {
    let cases: Vec<TestCase> = cases
        .into_iter()
        .filter(|case| {
            filter.is_none_or(|pattern| case.name.contains(pattern) || case.file.contains(pattern))
        })
        .collect();
    let mut results = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(BATCH_SIZE) {
        let requests: Vec<_> = chunk.iter().map(|case| case.request.clone()).collect();
        let answers = backend.authorize_batch(&requests);
        for (case, answer) in chunk.iter().zip(answers) {
            // Fail closed, exactly as hosts do: an error is a deny naming it.
            let response = answer.unwrap_or_else(|err| {
                cedar_edge_core::Response::denied_by_error(err.to_string(), backend.bundle_id())
            });
            let failures = judge(case, &response);
            results.push(CaseResult {
                case: case.clone(),
                response,
                failures,
            });
        }
    }
    let determining: BTreeSet<&str> = results
        .iter()
        .flat_map(|result| result.response.determining_policies.iter())
        .map(String::as_str)
        .collect();
    let coverage = backend
        .policy_ids()
        .iter()
        .map(|id| (id.clone(), determining.contains(id.as_str())))
        .collect();
    RunReport {
        bundle_id: backend.bundle_id().to_owned(),
        backend: backend_name.to_owned(),
        results,
        coverage,
    }
}

/// Every way the response differs from what the case expects.
fn judge(case: &TestCase, response: &Response) -> Vec<String> {
    let mut failures = Vec::new();
    let actual = match response.decision {
        Decision::Allow => Outcome::Allow,
        Decision::Deny => Outcome::Deny,
    };
    if actual != case.expect {
        failures.push(format!(
            "expected {}, got {}",
            outcome_name(case.expect),
            outcome_name(actual)
        ));
    }
    let reasons: BTreeSet<&str> = response
        .determining_policies
        .iter()
        .map(String::as_str)
        .collect();
    match &case.reasons {
        Some(ReasonsSpec::Exact(expected)) => {
            let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
            if expected != reasons {
                failures.push(format!(
                    "expected determining policies [{}], got [{}]",
                    join(&expected),
                    join(&reasons)
                ));
            }
        }
        Some(ReasonsSpec::Includes(included)) => {
            let missing: BTreeSet<&str> = included
                .includes
                .iter()
                .map(String::as_str)
                .filter(|id| !reasons.contains(id))
                .collect();
            if !missing.is_empty() {
                failures.push(format!(
                    "expected determining policies to include [{}], got [{}]",
                    join(&missing),
                    join(&reasons)
                ));
            }
        }
        None => {}
    }
    if let Some(expected) = &case.errors {
        failures.extend(judge_errors(expected, response));
    }
    failures
}

fn judge_errors(expected: &[ErrorSpec], response: &Response) -> Vec<String> {
    let mut failures = Vec::new();
    let mut unmatched: Vec<_> = response.errors.iter().collect();
    for spec in expected {
        let (policy, contains) = match spec {
            ErrorSpec::Policy(policy) => (policy.as_str(), None),
            ErrorSpec::Detailed(detail) => (detail.policy.as_str(), Some(detail.contains.as_str())),
        };
        let position = unmatched.iter().position(|error| {
            error.policy_id == policy && contains.is_none_or(|text| error.message.contains(text))
        });
        match position {
            Some(position) => {
                unmatched.remove(position);
            }
            None => failures.push(match contains {
                Some(text) => format!("expected an error in `{policy}` containing `{text}`"),
                None => format!("expected an error in `{policy}`"),
            }),
        }
    }
    for error in unmatched {
        let origin = if error.policy_id.is_empty() {
            "the request".to_owned()
        } else {
            format!("`{}`", error.policy_id)
        };
        failures.push(format!("unexpected error in {origin}: {}", error.message));
    }
    failures
}

/// `allow` or `deny`.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

fn join(ids: &BTreeSet<&str>) -> String {
    ids.iter().copied().collect::<Vec<_>>().join(", ")
}
