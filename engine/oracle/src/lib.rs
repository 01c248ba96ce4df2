//! The oracle: plain cedar-policy, with no cedar-edge code in between.
//!
//! Every differential test (the core's index, the component, generated
//! bundles, the hosts) asks this crate for the answer Cedar itself gives and
//! compares. It depends on `cedar-policy` alone, so that no bug of ours can
//! be on both sides of a comparison.

use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, Schema,
};

/// Cedar's answer, reduced to what cedar-edge reports: the decision, the
/// determining policies and the policies whose evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainAnswer {
    /// Whether Cedar allows.
    pub allowed: bool,
    /// The determining policies' ids.
    pub reasons: BTreeSet<String>,
    /// The ids of the policies that raised an error.
    pub errors: BTreeSet<String>,
}

/// Why the oracle could not build a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleError(pub String);

impl std::fmt::Display for OracleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OracleError {}

/// Decides `request` with Cedar's own authorizer over the whole policy set.
pub fn decide(request: &Request, policies: &PolicySet, entities: &Entities) -> PlainAnswer {
    let answer = Authorizer::new().is_authorized(request, policies, entities);
    PlainAnswer {
        allowed: answer.decision() == Decision::Allow,
        reasons: answer
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect(),
        errors: answer
            .diagnostics()
            .errors()
            .map(|AuthorizationError::PolicyEvaluationError(err)| err.policy_id().to_string())
            .collect(),
    }
}

/// An entity uid from its type and unescaped id, parsed by Cedar.
pub fn uid(type_name: &str, id: &str) -> Result<EntityUid, OracleError> {
    let type_name = EntityTypeName::from_str(type_name)
        .map_err(|err| OracleError(format!("entity type `{type_name}`: {err}")))?;
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(id),
    ))
}

/// A request built the plain way: uids and a JSON context parsed by Cedar,
/// checked against the schema when one is given.
pub fn request(
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context_json: &str,
    schema: Option<&Schema>,
) -> Result<Request, OracleError> {
    let context = Context::from_json_str(context_json, schema.map(|schema| (schema, &action)))
        .map_err(|err| OracleError(format!("context: {err}")))?;
    Request::new(principal, action, resource, context, schema)
        .map_err(|err| OracleError(format!("request: {err}")))
}

/// A request with a context Cedar already holds.
pub fn request_with_context(
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Context,
    schema: Option<&Schema>,
) -> Result<Request, OracleError> {
    Request::new(principal, action, resource, context, schema)
        .map_err(|err| OracleError(format!("request: {err}")))
}

/// Request entities joined to the store the plain way: parsed from Cedar's
/// JSON entity format, then added to a copy of the store, where Cedar checks
/// them against the schema and recomputes the hierarchy.
pub fn join_request_entities(
    store: &Entities,
    json: &str,
    schema: Option<&Schema>,
) -> Result<Entities, OracleError> {
    let own = Entities::from_json_str(json, None)
        .map_err(|err| OracleError(format!("entities: {err}")))?;
    store
        .clone()
        .add_entities(own, schema)
        .map_err(|err| OracleError(with_causes(&err)))
}

/// Whether Cedar accepts request entities when it parses them with the
/// schema's types (what a host that reads them from JSON does).
pub fn schema_parse_accepts(json: &str, schema: &Schema) -> bool {
    Entities::from_json_str(json, Some(schema)).is_ok()
}

/// An error's message and its causes, each cause once, joined by `: `.
fn with_causes(err: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(err.source(), |cause| cause.source());
    causes.fold(err.to_string(), |message, cause| {
        let cause = cause.to_string();
        if message.contains(&cause) {
            message
        } else {
            format!("{message}: {cause}")
        }
    })
}
