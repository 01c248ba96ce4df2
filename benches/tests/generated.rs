//! On generated multi-tenant bundles, the indexed engine equals plain
//! cedar-policy over the whole policy set, natively and through the
//! component: decision, determining policies and errors.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use cedar_edge_benches::generator::{Rng, bundle, request, with_claims_entities};
use cedar_edge_benches::{plain_answer, plain_request};
use cedar_edge_core::Backend;
use cedar_edge_core::{Bundle, Request, RequestLimits, Response};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};
use proptest::prelude::*;

fn runtime() -> &'static ComponentRuntime {
    static RUNTIME: OnceLock<ComponentRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| ComponentRuntime::new(RuntimeConfig::default()).unwrap())
}

/// Checks one native answer against plain cedar-policy over the whole set.
fn assert_like_plain(bundle: &Bundle, request: &Request, ours: &Response, what: &str) {
    let plain = plain_request(bundle, request).unwrap();
    let (allowed, reasons, errors) = plain_answer(bundle, bundle.entities(), &plain);
    assert_eq!(ours.is_allowed(), allowed, "{what}");
    assert_eq!(ours.determining_policies, reasons, "{what}");
    let ours_errors: Vec<String> = ours.errors.iter().map(|e| e.policy_id.clone()).collect();
    assert_eq!(ours_errors, errors, "{what}");
}

fn describe(size: usize, request: &Request) -> String {
    format!(
        "size {size}: {} {} {} {:?}",
        request.principal, request.action, request.resource, request.context
    )
}

#[test]
fn generated_bundles_decide_like_plain_cedar_everywhere() {
    let mut permits_decided = 0;
    let mut forbids_decided = 0;
    for (size, seed) in [(10, 1), (100, 2), (1000, 3), (10_000, 4)] {
        let generated = bundle(size, seed);
        let native = Bundle::load(&generated.source, RequestLimits::default()).unwrap();
        assert_eq!(native.policy_ids().len(), size);
        let component = runtime().load_bundle(&native).unwrap();
        let mut rng = Rng::new(seed * 7919);
        let requests: Vec<_> = (0..300)
            .map(|_| request(generated.tenants, &mut rng))
            .collect();
        let batched = component.authorize_batch(&requests);
        for (request, batched) in requests.iter().zip(batched) {
            let what = describe(size, request);
            let ours = native.authorize(request).unwrap();
            assert_like_plain(&native, request, &ours, &what);
            assert_eq!(component.authorize(request).unwrap(), ours, "{what}");
            assert_eq!(batched.unwrap(), ours, "{what}");
            if ours.is_allowed() {
                permits_decided += 1;
            } else if !ours.determining_policies.is_empty() {
                forbids_decided += 1;
            }
        }
    }
    assert!(permits_decided > 200, "too few allows: {permits_decided}");
    assert!(
        forbids_decided > 50,
        "too few forbids decided: {forbids_decided}"
    );
}

/// The index is what keeps a large bundle cheap: a request to a
/// 10,000-policy bundle sees only the policies anchored near its principal
/// and resource, yet every policy that decides or errs is among them.
#[test]
fn the_index_narrows_a_large_bundle_to_the_request_neighbourhood() {
    let generated = bundle(10_000, 5);
    let native = Bundle::load(&generated.source, RequestLimits::default()).unwrap();
    let mut rng = Rng::new(11);
    let mut largest = 0;
    for _ in 0..300 {
        let request = request(generated.tenants, &mut rng);
        let candidates = native.candidate_policies(&request).unwrap();
        largest = largest.max(candidates.len());
        let answer = native.authorize(&request).unwrap();
        for id in answer
            .determining_policies
            .iter()
            .chain(answer.errors.iter().map(|e| &e.policy_id))
        {
            assert!(candidates.binary_search(id).is_ok(), "{id} not a candidate");
        }
    }
    // Two tenants' worth of policies (25 each) and the global rules at most.
    assert!(largest <= 60, "a request saw {largest} of 10,000 policies");
    assert!(largest > 3, "the index found almost nothing: {largest}");
}

/// Request entities are sliced in with what they reach, not joined to a
/// copy of the whole store; the answers must be those of the plain join.
#[test]
fn request_entities_decide_like_a_plain_join_of_the_store() {
    let generated = bundle(1_000, 9);
    let native = Bundle::load(&generated.source, RequestLimits::default()).unwrap();
    let component = runtime().load_bundle(&native).unwrap();
    let mut rng = Rng::new(99);
    let mut allowed_count = 0;
    for n in 0..300 {
        let plain_base = request(generated.tenants, &mut rng);
        let (request, json) = with_claims_entities(plain_base, n, &mut rng);
        let what = describe(1_000, &request);
        let ours = native.authorize(&request).unwrap();
        let own = cedar_policy::Entities::from_json_value(json, None).unwrap();
        let joined = native
            .entities()
            .clone()
            .add_entities(own, native.schema())
            .unwrap();
        let plain = plain_request(&native, &request).unwrap();
        let (allowed, reasons, errors) = plain_answer(&native, &joined, &plain);
        assert_eq!(ours.is_allowed(), allowed, "{what}");
        assert_eq!(ours.determining_policies, reasons, "{what}");
        let ours_errors: Vec<String> = ours.errors.iter().map(|e| e.policy_id.clone()).collect();
        assert_eq!(ours_errors, errors, "{what}");
        assert_eq!(component.authorize(&request).unwrap(), ours, "{what}");
        allowed_count += usize::from(allowed);
    }
    assert!(allowed_count > 30, "too few allows: {allowed_count}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any generated bundle and any generated requests: plain cedar-policy,
    /// our core natively and the component agree.
    #[test]
    fn any_generated_bundle_decides_like_plain_cedar(
        size in 1usize..600,
        seed in any::<u64>(),
        request_seed in any::<u64>(),
    ) {
        let generated = bundle(size, seed);
        let native = Bundle::load(&generated.source, RequestLimits::default()).unwrap();
        let component = runtime().load_bundle(&native).unwrap();
        let mut rng = Rng::new(request_seed);
        let requests: Vec<_> = (0..40).map(|_| request(generated.tenants, &mut rng)).collect();
        let batched = component.authorize_batch(&requests);
        for (request, batched) in requests.iter().zip(batched) {
            let what = describe(size, request);
            let ours = native.authorize(request).unwrap();
            assert_like_plain(&native, request, &ours, &what);
            prop_assert_eq!(&component.authorize(request).unwrap(), &ours, "{}", what);
            prop_assert_eq!(&batched.unwrap(), &ours, "{}", what);
        }
    }
}
