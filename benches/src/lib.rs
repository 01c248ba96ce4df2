//! Shared inputs for the benchmarks: the example bundle and the requests
//! every engine is timed on, so all of them decide exactly the same thing.

pub mod generator;

use std::path::Path;

use cedar_edge_engine::{
    Attributes, BundleSource, ContextInput, EntityUid, ExtensionKind, Request, Value,
};

/// The bundle the benchmarks decide against.
pub const EXAMPLE_BUNDLE: &str = "policies/airflow-gitlab";

/// Reads the example bundle from the repository.
pub fn example_source() -> Result<BundleSource, cedar_edge_engine::BundleReadError> {
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
