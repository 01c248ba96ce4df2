//! `validate`'s checks beyond loading: lints that find policies which are
//! legal Cedar but almost certainly not what their author meant.

use std::collections::BTreeMap;

use cedar_edge_core::{Bundle, BundleSource, Diagnostic};
use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityTypeName, EntityUid, Policy, PrincipalConstraint,
    ResourceConstraint, Schema, ValidationMode, ValidationWarning, Validator,
};
use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The bundle cannot be used.
    Error,
    /// The bundle works, but a policy is suspect; `--deny-warnings` fails on it.
    Warning,
}

/// One problem, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, kebab-case name for the check.
    pub check: String,
    /// The policy at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Where, and what.
    #[serde(flatten)]
    pub diagnostic: Diagnostic,
}

/// Load errors, as findings.
pub fn load_errors(diagnostics: &[Diagnostic]) -> Vec<Finding> {
    diagnostics
        .iter()
        .map(|diagnostic| Finding {
            severity: Severity::Error,
            check: "load".to_owned(),
            policy_id: None,
            diagnostic: diagnostic.clone(),
        })
        .collect()
}

/// Every lint over a bundle that loaded.
pub fn lint(source: &BundleSource, bundle: &Bundle) -> Vec<Finding> {
    let locator = Locator { source, bundle };
    let mut findings = Vec::new();
    for policy in bundle.policies().policies() {
        let id = policy.id().to_string();
        if policy.is_static() && policy.annotation("id").is_none() {
            findings.push(locator.finding(
                &id,
                "policy-without-id",
                format!(
                    "policy `{id}` has no `@id(\"...\")` annotation, so its id changes whenever policies above it move"
                ),
            ));
        }
        if is_unconstrained_permit(policy) {
            findings.push(locator.finding(
                &id,
                "unconstrained-permit",
                format!(
                    "policy `{id}` permits every principal every action on every resource, with no condition"
                ),
            ));
        }
        if let Some(schema) = bundle.schema()
            && policy.get_valid_request_envs(schema).next().is_none()
        {
            findings.push(locator.finding(
                &id,
                "scope-never-matches",
                format!(
                    "the scope of policy `{id}` matches no principal, action and resource type that the schema allows together"
                ),
            ));
        }
    }
    findings.extend(shadowed_permits(&locator, bundle.entities()));
    if let Some(schema) = bundle.schema() {
        findings.extend(validator_warnings(&locator, schema));
    }
    findings.sort_by(|a, b| {
        (
            &a.diagnostic.file,
            a.diagnostic.line,
            a.diagnostic.column,
            &a.check,
        )
            .cmp(&(
                &b.diagnostic.file,
                b.diagnostic.line,
                b.diagnostic.column,
                &b.check,
            ))
    });
    findings.dedup();
    findings
}

/// Places policies in their files.
struct Locator<'a> {
    source: &'a BundleSource,
    bundle: &'a Bundle,
}

impl Locator<'_> {
    fn file_text(&self, path: &str) -> Option<&str> {
        self.source
            .policies
            .iter()
            .chain(self.source.template_links.iter())
            .find(|file| file.path == path)
            .map(|file| file.contents.as_str())
    }

    /// A warning pointing at the policy's text (or its link entry).
    fn finding(&self, policy_id: &str, check: &str, message: String) -> Finding {
        let path = self.bundle.policy_file(policy_id).unwrap_or_default();
        let mut diagnostic = Diagnostic::in_file(path, message);
        if let Some(text) = self.file_text(path) {
            let policy = self
                .bundle
                .policies()
                .policy(&cedar_policy::PolicyId::new(policy_id));
            // A static policy prints as its own source text; a link is found by its id.
            let needles = [
                policy
                    .filter(|policy| policy.is_static())
                    .map(ToString::to_string),
                Some(format!("\"{policy_id}\"")),
            ];
            for needle in needles.into_iter().flatten() {
                if let Some(offset) = text.find(&needle) {
                    diagnostic.place(text, offset, needle.len().min(80));
                    break;
                }
            }
        }
        Finding {
            severity: Severity::Warning,
            check: check.to_owned(),
            policy_id: Some(policy_id.to_owned()),
            diagnostic,
        }
    }
}

fn is_unconstrained_permit(policy: &Policy) -> bool {
    policy.effect() == Effect::Permit
        && policy.principal_constraint() == PrincipalConstraint::Any
        && policy.action_constraint() == ActionConstraint::Any
        && policy.resource_constraint() == ResourceConstraint::Any
        && !policy.has_non_scope_constraint()
}

/// Permits that a `forbid` without conditions always overrides: the forbid's
/// scope covers the permit's, so the permit can never decide anything.
fn shadowed_permits(locator: &Locator<'_>, entities: &Entities) -> Vec<Finding> {
    let policies: Vec<&Policy> = locator.bundle.policies().policies().collect();
    let always_forbids: Vec<&Policy> = policies
        .iter()
        .copied()
        .filter(|policy| policy.effect() == Effect::Forbid && !policy.has_non_scope_constraint())
        .collect();
    let mut findings = Vec::new();
    for permit in policies
        .iter()
        .filter(|policy| policy.effect() == Effect::Permit)
    {
        let shadowing = always_forbids.iter().find(|forbid| {
            covers(
                &forbid.principal_constraint().into(),
                &permit.principal_constraint().into(),
                entities,
            ) && action_covers(
                &forbid.action_constraint(),
                &permit.action_constraint(),
                entities,
            ) && covers(
                &forbid.resource_constraint().into(),
                &permit.resource_constraint().into(),
                entities,
            )
        });
        if let Some(forbid) = shadowing {
            let id = permit.id().to_string();
            findings.push(locator.finding(
                &id,
                "shadowed-permit",
                format!(
                    "policy `{id}` can never allow anything: `{}` forbids everything it permits, unconditionally",
                    forbid.id()
                ),
            ));
        }
    }
    findings
}

/// Whether `uid` is `ancestor` or below it in the entity hierarchy.
fn is_in(uid: &EntityUid, ancestor: &EntityUid, entities: &Entities) -> bool {
    uid == ancestor
        || entities
            .ancestors(uid)
            .is_some_and(|mut ancestors| ancestors.any(|found| found == ancestor))
}

/// A principal or resource scope; Cedar gives the two the same shape under
/// different types, and containment works the same for both.
enum EntityScope {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl From<PrincipalConstraint> for EntityScope {
    fn from(constraint: PrincipalConstraint) -> Self {
        match constraint {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(uid) => Self::Eq(uid),
            PrincipalConstraint::In(uid) => Self::In(uid),
            PrincipalConstraint::Is(type_name) => Self::Is(type_name),
            PrincipalConstraint::IsIn(type_name, uid) => Self::IsIn(type_name, uid),
        }
    }
}

impl From<ResourceConstraint> for EntityScope {
    fn from(constraint: ResourceConstraint) -> Self {
        match constraint {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(uid) => Self::Eq(uid),
            ResourceConstraint::In(uid) => Self::In(uid),
            ResourceConstraint::Is(type_name) => Self::Is(type_name),
            ResourceConstraint::IsIn(type_name, uid) => Self::IsIn(type_name, uid),
        }
    }
}

/// The scope `outer` matches every request that the scope `inner` matches.
/// Conservative: `false` whenever containment is not certain.
fn covers(outer: &EntityScope, inner: &EntityScope, entities: &Entities) -> bool {
    use EntityScope as S;
    match (outer, inner) {
        (S::Any, _) => true,
        (S::Eq(a), S::Eq(b)) => a == b,
        (S::In(a), S::Eq(b) | S::In(b) | S::IsIn(_, b)) => is_in(b, a, entities),
        (S::Is(t), S::Is(u) | S::IsIn(u, _)) => t == u,
        (S::Is(t), S::Eq(b)) => b.type_name() == t,
        (S::IsIn(t, a), S::IsIn(u, b)) => t == u && is_in(b, a, entities),
        (S::IsIn(t, a), S::Eq(b)) => b.type_name() == t && is_in(b, a, entities),
        _ => false,
    }
}

fn action_covers(outer: &ActionConstraint, inner: &ActionConstraint, entities: &Entities) -> bool {
    use ActionConstraint as A;
    let outer_holds = |action: &EntityUid| match outer {
        A::Any => true,
        A::Eq(a) => a == action,
        A::In(groups) => groups.iter().any(|group| is_in(action, group, entities)),
    };
    match inner {
        A::Any => matches!(outer, A::Any),
        A::Eq(action) => outer_holds(action),
        // Every action in the inner groups must be covered; only a group
        // itself is checked, so a forbid on its members is not seen.
        A::In(groups) => groups.iter().all(outer_holds),
    }
}

/// Cedar's own validator warnings, such as a policy that is always false.
fn validator_warnings(locator: &Locator<'_>, schema: &Schema) -> Vec<Finding> {
    let result =
        Validator::new(schema.clone()).validate(locator.bundle.policies(), ValidationMode::Strict);
    let mut by_policy: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    for warning in result.validation_warnings() {
        let policy_id = warning.policy_id().to_string();
        let path = locator.bundle.policy_file(&policy_id).unwrap_or_default();
        let text = locator.file_text(path).unwrap_or_default();
        let check = match warning {
            // Our own `scope-never-matches` says this, placed the same way.
            ValidationWarning::InvalidActionApplication(_) => continue,
            ValidationWarning::ImpossiblePolicy(_) => "impossible-policy",
            ValidationWarning::MixedScriptString(_)
            | ValidationWarning::MixedScriptIdentifier(_)
            | ValidationWarning::ConfusableIdentifier(_) => "confusable-text",
            ValidationWarning::BidiCharsInString(_)
            | ValidationWarning::BidiCharsInIdentifier(_) => "bidirectional-text",
            _ => "validator-warning",
        }
        .to_owned();
        by_policy
            .entry(policy_id.clone())
            .or_default()
            .push(Finding {
                severity: Severity::Warning,
                check,
                policy_id: Some(policy_id),
                diagnostic: Diagnostic::from_cedar(path, text, warning),
            });
    }
    by_policy.into_values().flatten().collect()
}
