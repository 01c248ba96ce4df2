//! Every kind of bad input gets a clear error or a deny, and the backend
//! keeps serving afterwards.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use cedar_edge_core::Backend;
use cedar_edge_core::{
    Attributes, BundleFile, BundleSource, ContextInput, Decision, RequestError, RequestLimits,
    Value, ValueNode,
};
use cedar_edge_runtime::{AuthorizeError, ComponentRuntime, RuntimeConfig, RuntimeError};
use common::*;

fn load_errors(source: &BundleSource) -> Vec<cedar_edge_core::Diagnostic> {
    match shared_runtime().load_source(source) {
        Err(RuntimeError::Load(err)) => err.diagnostics,
        other => panic!("expected a load error, got {other:?}"),
    }
}

fn replace_policy_file(source: &mut BundleSource, path: &str, contents: &str) {
    let file = source
        .policies
        .iter_mut()
        .find(|file| file.path == path)
        .unwrap();
    file.contents = contents.to_owned();
}

#[test]
fn a_malformed_policy_names_file_and_line() {
    let mut source = example_bundle();
    replace_policy_file(
        &mut source,
        "deploy.cedar",
        "// first line\npermit (principal, action, resource)\nwhen { context.mfa && };\n",
    );
    source.policies.push(BundleFile {
        path: "extra.cedar".to_owned(),
        contents: "forbid (principal, actoin, resource);".to_owned(),
    });
    let diagnostics = load_errors(&source);
    // Both broken files are reported, each at its own place.
    let deploy = diagnostics
        .iter()
        .find(|d| d.file == "deploy.cedar")
        .expect("deploy.cedar is reported");
    assert_eq!(deploy.line, 3, "{deploy}");
    let extra = diagnostics
        .iter()
        .find(|d| d.file == "extra.cedar")
        .expect("extra.cedar is reported");
    assert_eq!((extra.line, extra.column), (1, 20), "{extra}");
    assert!(
        extra.message.contains("actoin") || extra.help.iter().any(|h| h.contains("action")),
        "{extra}"
    );
}

#[test]
fn a_schema_violation_names_file_line_and_policy() {
    let mut source = example_bundle();
    let text = "@id(\"uses-missing-attribute\")\npermit (principal, action == Airflow::Action::\"read\", resource)\nwhen { context.no_such_field };\n";
    source.policies.push(BundleFile {
        path: "typo.cedar".to_owned(),
        contents: text.to_owned(),
    });
    let diagnostics = load_errors(&source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let found = &diagnostics[0];
    assert_eq!(
        (found.file.as_str(), found.line),
        ("typo.cedar", 3),
        "{found}"
    );
    assert!(found.message.contains("uses-missing-attribute"), "{found}");
    assert!(found.message.contains("no_such_field"), "{found}");
}

#[test]
fn a_bad_entity_is_named_with_its_line() {
    let mut source = example_bundle();
    let entities = source.entities.as_mut().unwrap();
    entities.contents = entities.contents.replacen("\"alice@example.com\"", "42", 1);
    let diagnostics = load_errors(&source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].file, "entities.json");
    assert!(
        diagnostics[0].message.contains("alice"),
        "{}",
        diagnostics[0]
    );
    assert!(diagnostics[0].line > 0);
}

#[test]
fn duplicate_policy_ids_are_refused() {
    let mut source = example_bundle();
    source.policies.push(BundleFile {
        path: "copy.cedar".to_owned(),
        contents: "@id(\"viewers-read-dags\")\npermit (principal, action, resource);\n".to_owned(),
    });
    let diagnostics = load_errors(&source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(
        (diagnostics[0].file.as_str(), diagnostics[0].line),
        ("copy.cedar", 1)
    );
    assert!(
        diagnostics[0].message.contains("roles.cedar"),
        "{}",
        diagnostics[0]
    );
}

fn expect_invalid(backend: &dyn Backend, request: &cedar_edge_core::Request, field: &str) {
    match backend.authorize(request) {
        Err(AuthorizeError::Request(RequestError::Invalid {
            field: found,
            message,
        })) => {
            assert!(found.starts_with(field), "field `{found}` ({message})");
        }
        other => panic!("expected an invalid-request error on `{field}`, got {other:?}"),
    }
    // Fail closed: the same request through `decide` is a deny that says why.
    let decided = backend.decide(request);
    assert_eq!(decided.decision, Decision::Deny);
    assert_eq!(decided.errors.len(), 1);
    // And the backend keeps serving.
    assert!(backend.authorize(&allowed_request()).unwrap().is_allowed());
}

fn expect_limit(backend: &dyn Backend, request: &cedar_edge_core::Request, words: &str) {
    match backend.authorize(request) {
        Err(AuthorizeError::Request(RequestError::LimitExceeded { message, .. })) => {
            assert!(message.contains(words), "{message}");
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert_eq!(backend.decide(request).decision, Decision::Deny);
    assert!(backend.authorize(&allowed_request()).unwrap().is_allowed());
}

#[test]
fn an_unknown_entity_type_is_denied_with_a_reason() {
    let component = shared_runtime().load_source(&example_bundle()).unwrap();
    let mut request = allowed_request();
    request.principal = airflow("Robot", "r2");
    expect_invalid(&component, &request, "request");
    let mut request = allowed_request();
    request.resource.type_name = "not a type".to_owned();
    expect_invalid(&component, &request, "resource");
}

#[test]
fn a_context_of_the_wrong_type_is_denied_with_a_reason() {
    let component = shared_runtime().load_source(&example_bundle()).unwrap();
    let mut request = allowed_request();
    request.context = ContextInput::Typed(Attributes::from_fields([
        ("mfa".to_owned(), Value::Long(1)),
        ("source_ip".to_owned(), Value::String("10.0.0.1".to_owned())),
        ("token_age_seconds".to_owned(), Value::Long(1)),
    ]));
    expect_invalid(&component, &request, "request");
    request.context = ContextInput::Json("{\"mfa\": \"yes\"}".to_owned());
    expect_invalid(&component, &request, "context");
    request.context = ContextInput::Json("{\"mfa\": tru".to_owned());
    expect_invalid(&component, &request, "context");
}

/// Sets nested `depth` deep, built flat as a hostile caller would send them.
fn nested(depth: u32) -> Attributes {
    let mut attributes = Attributes::default();
    attributes.nodes.push(ValueNode::Long(1));
    attributes
        .nodes
        .extend((0..depth).map(|child| ValueNode::Set(vec![child])));
    attributes.fields.push(("deep".to_owned(), depth));
    attributes
}

#[test]
fn a_context_nested_ten_thousand_deep_is_refused() {
    let component = shared_runtime().load_source(&example_bundle()).unwrap();
    let mut request = allowed_request();
    request.context = ContextInput::Typed(nested(10_000));
    // Ten thousand levels are also ten thousand values: the cheaper count check refuses it first.
    expect_limit(&component, &request, "more than 10000 values");
    request.context = ContextInput::Typed(nested(1_000));
    expect_limit(&component, &request, "nest deeper");
    request.context = ContextInput::Json(format!(
        "{{\"deep\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    ));
    expect_limit(&component, &request, "nest deeper");
}

#[test]
fn a_ten_megabyte_context_is_refused() {
    let component = shared_runtime().load_source(&example_bundle()).unwrap();
    let big = "x".repeat(10 * 1024 * 1024);
    let mut request = allowed_request();
    request.context = ContextInput::Json(format!("{{\"blob\": \"{big}\"}}"));
    expect_limit(&component, &request, "over the limit");
    request.context = ContextInput::Typed(Attributes::from_fields([(
        "blob".to_owned(),
        Value::String(big),
    )]));
    expect_limit(&component, &request, "over the limit");
}

#[test]
fn shared_value_nodes_cannot_expand_a_small_request() {
    let component = shared_runtime().load_source(&example_bundle()).unwrap();
    // Node 1 uses node 0 twice: allowed, this tree would double at every level.
    let mut attributes = Attributes::default();
    attributes.nodes.push(cedar_edge_core::ValueNode::Long(1));
    attributes
        .nodes
        .push(cedar_edge_core::ValueNode::Set(vec![0, 0]));
    attributes.fields.push(("pair".to_owned(), 1));
    let mut request = allowed_request();
    request.context = ContextInput::Typed(attributes);
    expect_invalid(&component, &request, "context");
}

/// A bundle whose every policy scans a long string with a pattern that makes
/// Cedar backtrack: slow on purpose.
fn slow_bundle() -> BundleSource {
    let policies = (0..200)
        .map(|i| format!("@id(\"scan-{i}\")\npermit (principal, action, resource) when {{ context.text like \"*a*a*a*a*a*b{i}\" }};\n"))
        .collect::<String>();
    BundleSource {
        policies: vec![BundleFile {
            path: "slow.cedar".to_owned(),
            contents: policies,
        }],
        ..BundleSource::default()
    }
}

fn slow_request(text_len: usize) -> cedar_edge_core::Request {
    let mut request = allowed_request();
    request.context = ContextInput::Typed(Attributes::from_fields([(
        "text".to_owned(),
        Value::String("a".repeat(text_len)),
    )]));
    request
}

#[test]
fn a_guest_past_its_deadline_is_interrupted_and_replaced() {
    let config = RuntimeConfig {
        deadline: std::time::Duration::from_millis(20),
        max_instances: 1,
        ..test_config()
    };
    let runtime = ComponentRuntime::new(config).unwrap();
    let backend = runtime.load_source(&slow_bundle()).unwrap();
    // A short text decides in time: the bundle works.
    assert_eq!(
        backend.authorize(&slow_request(10)).unwrap().decision,
        Decision::Deny
    );
    let started = std::time::Instant::now();
    match backend.authorize(&slow_request(200_000)) {
        Err(AuthorizeError::Timeout(deadline)) => {
            assert_eq!(deadline, std::time::Duration::from_millis(20))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Interrupted near the deadline, not after the whole scan.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let timed_out = backend.decide(&slow_request(200_000));
    assert_eq!(timed_out.decision, Decision::Deny);
    assert!(
        timed_out.errors[0].message.contains("deadline"),
        "{:?}",
        timed_out.errors
    );
    // The pool of one replaced its instance and still serves.
    assert_eq!(
        backend.authorize(&slow_request(10)).unwrap().decision,
        Decision::Deny
    );
    let stats = backend.stats();
    assert_eq!(stats.instances_discarded, 2);
    assert_eq!(stats.instances_created, 3);
}

#[test]
fn a_guest_over_its_memory_cap_is_stopped_and_replaced() {
    let config = RuntimeConfig {
        memory_limit_bytes: 48 * 1024 * 1024,
        request_limits: RequestLimits {
            max_context_bytes: u32::MAX,
            ..RequestLimits::default()
        },
        max_instances: 1,
        ..test_config()
    };
    let runtime = ComponentRuntime::new(config).unwrap();
    let backend = runtime.load_source(&example_bundle()).unwrap();
    let mut request = allowed_request();
    request.context = ContextInput::Json(format!(
        "{{\"blob\": \"{}\"}}",
        "x".repeat(64 * 1024 * 1024)
    ));
    match backend.authorize(&request) {
        Err(AuthorizeError::MemoryLimit { limit_bytes }) => {
            assert_eq!(limit_bytes, 48 * 1024 * 1024)
        }
        other => panic!("expected the memory cap, got {other:?}"),
    }
    assert!(backend.authorize(&allowed_request()).unwrap().is_allowed());
    assert_eq!(backend.stats().instances_discarded, 1);
}
