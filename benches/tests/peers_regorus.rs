//! The Rego translation of a generated bundle decides exactly like our
//! engine: decision and determining policies, through regorus's
//! interpreter, and the same decisions through its bytecode VM. The peer
//! comparison (`benches/scripts/peers/run.py`) times regorus only on a
//! translation that passes this.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cedar_edge_benches::peers::model::workload;
use cedar_edge_benches::peers::rego;

#[test]
fn rego_translation_decides_like_our_engine() {
    let workload = workload(100, 17, 400).unwrap();
    let policies = &workload.generated.policies;
    let mut engine = rego::interpreter(policies, &workload.entities).unwrap();
    let data = rego::data_document(&workload.entities);
    let mut vm = rego::virtual_machine(&mut engine, &data).unwrap();
    let (mut allowed, mut forbidden) = (0, 0);
    for (index, request) in workload.requests.iter().enumerate() {
        let input = regorus::Value::from(rego::input(request));
        let (forbids, permits) = rego::satisfied(&mut engine, &input).unwrap();
        let allow = forbids.is_empty() && !permits.is_empty();
        let what = format!("request {index}: {request:?}");
        assert_eq!(allow, request.expects_allow(), "{what}");
        assert_eq!(
            rego::determining(allow, forbids.clone(), permits),
            request.determining,
            "{what}"
        );
        assert_eq!(rego::decide(&mut engine, &input).unwrap(), allow, "{what}");
        assert_eq!(rego::decide_vm(&mut vm, &input).unwrap(), allow, "{what}");
        allowed += usize::from(allow);
        forbidden += usize::from(!forbids.is_empty());
    }
    // The requests must exercise both effects, or the check proves little.
    assert!(allowed > 40, "only {allowed} of 400 allowed");
    assert!(forbidden > 40, "only {forbidden} of 400 hit a forbid");
}

/// The check has teeth: a translation that drops the forbids disagrees.
#[test]
fn a_translation_without_forbids_is_caught() {
    let workload = workload(100, 17, 400).unwrap();
    let permits_only: Vec<_> = workload
        .generated
        .policies
        .iter()
        .filter(|policy| !policy.forbid)
        .cloned()
        .collect();
    let mut engine = rego::interpreter(&permits_only, &workload.entities).unwrap();
    let differing = workload
        .requests
        .iter()
        .filter(|request| {
            let input = regorus::Value::from(rego::input(request));
            rego::decide(&mut engine, &input).unwrap() != request.expects_allow()
        })
        .count();
    assert!(differing > 0, "dropping every forbid changed no decision");
}

/// A 10,000-policy bundle is split into files that regorus accepts with its
/// default limits on one policy file (1 MiB, 20,000 lines).
#[test]
fn large_bundles_are_split_into_files_regorus_accepts() {
    let generated = cedar_edge_benches::generator::bundle(10_000, 3);
    let modules = rego::policy_modules(&generated.policies);
    assert_eq!(modules.len(), 1 + 10_000 / rego::POLICIES_PER_MODULE);
    for module in &modules {
        assert!(module.text.len() < 1 << 20, "{} is too big", module.name);
        assert!(
            module.text.lines().count() < 20_000,
            "{} is too long",
            module.name
        );
    }
    let rules = modules
        .iter()
        .map(|module| module.text.matches(" contains \"p").count())
        .sum::<usize>();
    assert_eq!(rules, 10_000);
}
