//! Shared inputs for the benchmarks: the example bundle and the requests
//! every engine is timed on, so all of them decide exactly the same thing.

pub mod generator;
pub mod peers;

use std::path::Path;

use cedar_edge_core::{
    Attributes, BundleSource, ContextInput, EntityUid, ExtensionKind, Request, Value,
};

/// The bundle the benchmarks decide against.
pub const EXAMPLE_BUNDLE: &str = "policies/airflow-gitlab";

/// Reads the example bundle from the repository.
pub fn example_source() -> Result<BundleSource, cedar_edge_core::BundleReadError> {
    BundleSource::from_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(EXAMPLE_BUNDLE),
    )
}

/// The benchmark request: an operator triggering a production DAG run,
/// allowed by one permit after every forbid has been checked.
pub fn trigger_request(context: ContextInput) -> Request {
    Request {
        principal: EntityUid::new("Airflow::User", "bob"),
        action: EntityUid::new("Airflow::Action", "trigger"),
        resource: EntityUid::new("Airflow::Dag", "etl_daily"),
        context,
        entities: Vec::new(),
    }
}

/// The context as typed values.
pub fn typed_context() -> ContextInput {
    ContextInput::Typed(Attributes::from_fields([
        ("mfa".to_owned(), Value::Bool(true)),
        (
            "source_ip".to_owned(),
            Value::Extension(ExtensionKind::Ip, "10.20.30.40".to_owned()),
        ),
        ("token_age_seconds".to_owned(), Value::Long(120)),
    ]))
}

/// The same context as the JSON a host would receive.
pub const CONTEXT_JSON: &str =
    r#"{"mfa": true, "source_ip": "10.20.30.40", "token_age_seconds": 120}"#;

/// A request exactly as plain cedar-policy takes it: uids parsed, context
/// built from the typed values and checked against the bundle's schema.
/// Covers the scalar context values the benchmark requests use.
pub fn plain_request(
    bundle: &cedar_edge_core::Bundle,
    request: &Request,
) -> Result<cedar_policy::Request, String> {
    use cedar_edge_core::ValueNode;
    use cedar_policy::RestrictedExpression;
    let uid = |uid: &EntityUid| {
        cedar_edge_oracle::uid(&uid.type_name, &uid.id).map_err(|err| err.to_string())
    };
    let ContextInput::Typed(attributes) = &request.context else {
        return Err("plain requests are built from typed contexts".to_owned());
    };
    let pairs = attributes
        .fields
        .iter()
        .map(|(name, index)| {
            let value = match attributes.nodes.get(*index as usize) {
                Some(ValueNode::Long(n)) => RestrictedExpression::new_long(*n),
                Some(ValueNode::Bool(b)) => RestrictedExpression::new_bool(*b),
                Some(ValueNode::String(s)) => RestrictedExpression::new_string(s.clone()),
                other => return Err(format!("context field `{name}` holds {other:?}")),
            };
            Ok((name.clone(), value))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let context = cedar_policy::Context::from_pairs(pairs).map_err(|err| err.to_string())?;
    cedar_edge_oracle::request_with_context(
        uid(&request.principal)?,
        uid(&request.action)?,
        uid(&request.resource)?,
        context,
        bundle.schema(),
    )
    .map_err(|err| err.to_string())
}

/// Plain cedar-policy's answer (the oracle) over the bundle's whole policy
/// set and the given entities: whether it allows, the determining policies
/// and the policies that erred, sorted.
pub fn plain_answer(
    bundle: &cedar_edge_core::Bundle,
    entities: &cedar_policy::Entities,
    request: &cedar_policy::Request,
) -> (bool, Vec<String>, Vec<String>) {
    let answer = cedar_edge_oracle::decide(request, bundle.policies(), entities);
    (
        answer.allowed,
        answer.reasons.into_iter().collect(),
        answer.errors.into_iter().collect(),
    )
}
