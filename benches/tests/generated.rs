//! On generated multi-tenant bundles, the indexed engine equals plain
//! cedar-policy over the whole policy set, natively and through the
//! component: decision, determining policies and errors.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_edge_benches::generator::{Rng, bundle, request};
use cedar_edge_engine::{Bundle, ContextInput, RequestLimits, Value};
use cedar_edge_runtime::{Backend, ComponentRuntime, RuntimeConfig};

fn plain(
    bundle: &Bundle,
    request: &cedar_edge_engine::Request,
) -> (bool, BTreeSet<String>, BTreeSet<String>) {
    let uid = |uid: &cedar_edge_engine::EntityUid| {
        cedar_policy::EntityUid::from_str(&uid.to_string()).unwrap()
    };
    let ContextInput::Typed(attributes) = &request.context else {
        panic!("typed")
    };
    let pairs: Vec<(String, cedar_policy::RestrictedExpression)> = attributes
        .fields
        .iter()
        .map(|(name, index)| {
            let value = match &attributes.nodes[*index as usize] {
                cedar_edge_engine::ValueNode::Long(n) => {
                    cedar_policy::RestrictedExpression::new_long(*n)
                }
                cedar_edge_engine::ValueNode::Bool(b) => {
                    cedar_policy::RestrictedExpression::new_bool(*b)
                }
                other => panic!("unexpected {other:?}"),
            };
            (name.clone(), value)
        })
        .collect();
    let context = cedar_policy::Context::from_pairs(pairs).unwrap();
    let cedar_request = cedar_policy::Request::new(
        uid(&request.principal),
        uid(&request.action),
        uid(&request.resource),
        context,
        bundle.schema(),
    )
    .unwrap();
    let answer = cedar_policy::Authorizer::new().is_authorized(
        &cedar_request,
        bundle.policies(),
        bundle.entities(),
    );
    (
        answer.decision() == cedar_policy::Decision::Allow,
        answer
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect(),
        answer
            .diagnostics()
            .errors()
            .map(
                |cedar_policy::AuthorizationError::PolicyEvaluationError(err)| {
                    err.policy_id().to_string()
                },
            )
            .collect(),
    )
}

#[test]
fn generated_bundles_decide_like_plain_cedar_everywhere() {
    let runtime = ComponentRuntime::new(RuntimeConfig::default()).unwrap();
    let mut permits_decided = 0;
    let mut forbids_decided = 0;
    for (size, seed) in [(10, 1), (100, 2), (1000, 3)] {
        let generated = bundle(size, seed);
        let native = Bundle::load(&generated.source, RequestLimits::default()).unwrap();
        assert_eq!(native.policy_ids().len(), size);
        let component = runtime.load_bundle(&generated.source).unwrap();
        let mut rng = Rng::new(seed * 7919);
        let requests: Vec<_> = (0..300)
            .map(|_| request(generated.tenants, &mut rng))
            .collect();
        let batched = component.authorize_batch(&requests);
        for (request, batched) in requests.iter().zip(batched) {
            let ours = native.authorize(request).unwrap();
            let (allowed, reasons, errors) = plain(&native, request);
            let what = format!(
                "size {size}: {} {} {}",
                request.principal, request.action, request.resource
            );
            assert_eq!(ours.is_allowed(), allowed, "{what}");
            assert_eq!(
                ours.determining_policies
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
                reasons,
                "{what}"
            );
            assert_eq!(
                ours.errors
                    .iter()
                    .map(|e| e.policy_id.clone())
                    .collect::<BTreeSet<_>>(),
                errors,
                "{what}"
            );
            assert_eq!(component.authorize(request).unwrap(), ours, "{what}");
            assert_eq!(batched.unwrap(), ours, "{what}");
            if ours.is_allowed() {
                permits_decided += 1;
            } else if !ours.determining_policies.is_empty() {
                forbids_decided += 1;
            }
        }
    }
    assert!(permits_decided > 50, "too few allows: {permits_decided}");
    assert!(
        forbids_decided > 20,
        "too few forbids decided: {forbids_decided}"
    );
    let _ = Value::Bool(true);
}
