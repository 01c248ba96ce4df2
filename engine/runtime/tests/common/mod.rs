//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cedar_edge_core::{
    Attributes, BundleSource, ContextInput, EntityUid, ExtensionKind, Request, Value,
};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn example_bundle() -> BundleSource {
    BundleSource::from_dir(&repo_root().join("policies/airflow-gitlab"))
        .expect("the example bundle reads")
}

/// A config whose compiled-component cache lives in the target directory.
pub fn test_config() -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cwasm-cache")),
        ..RuntimeConfig::default()
    }
}

/// One runtime per test binary: the component is compiled once.
pub fn shared_runtime() -> &'static ComponentRuntime {
    static RUNTIME: OnceLock<ComponentRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| ComponentRuntime::new(test_config()).expect("the component compiles"))
}

pub fn airflow(type_name: &str, id: &str) -> EntityUid {
    EntityUid::new(format!("Airflow::{type_name}"), id)
}

/// The example bundle's context, typed.
pub fn typed_context(mfa: bool, source_ip: &str, token_age_seconds: i64) -> ContextInput {
    ContextInput::Typed(Attributes::from_fields([
        ("mfa".to_owned(), Value::Bool(mfa)),
        (
            "source_ip".to_owned(),
            Value::Extension(ExtensionKind::Ip, source_ip.to_owned()),
        ),
        (
            "token_age_seconds".to_owned(),
            Value::Long(token_age_seconds),
        ),
    ]))
}

/// The same context as Cedar JSON, which the schema types.
pub fn json_context(mfa: bool, source_ip: &str, token_age_seconds: i64) -> ContextInput {
    ContextInput::Json(
        serde_json::json!({ "mfa": mfa, "source_ip": source_ip, "token_age_seconds": token_age_seconds }).to_string(),
    )
}

pub fn airflow_request(
    principal: EntityUid,
    action: &str,
    resource: EntityUid,
    context: ContextInput,
) -> Request {
    Request {
        principal,
        action: airflow("Action", action),
        resource,
        context,
        entities: Vec::new(),
    }
}

/// A request an operator is allowed: used to show a backend still serves.
pub fn allowed_request() -> Request {
    airflow_request(
        airflow("User", "bob"),
        "trigger",
        airflow("Dag", "etl_daily"),
        typed_context(true, "10.1.2.3", 60),
    )
}
