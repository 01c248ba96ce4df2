//! Every bundle in `policies/` passes its own suites with full coverage,
//! through the component and natively, and the two backends give the same
//! answer to every case. The same runner serves `cedar-edge test`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cedar_edge_cli::engines::{BackendChoice, Engines};
use cedar_edge_cli::suite::{load_suites, run_cases};
use cedar_edge_engine::BundleSource;

fn bundles() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_bundle_passes_its_suites_on_both_backends_with_equal_answers() {
    let component = Engines::new(BackendChoice::Component).expect("the component compiles");
    let native = Engines::new(BackendChoice::Native).expect("native");
    let all = bundles();
    assert!(all.len() >= 4, "the seed bundles are missing: {all:?}");
    for dir in all {
        let source = BundleSource::from_dir(&dir).expect("reads");
        let cases = load_suites(&dir).unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(
            cases.len() >= 20,
            "{} has only {} cases",
            dir.display(),
            cases.len()
        );
        let through_component = run_cases(
            component.load(&source).expect("loads").as_ref(),
            "component",
            cases.clone(),
            None,
        );
        let through_native = run_cases(
            native.load(&source).expect("loads").as_ref(),
            "native",
            cases,
            None,
        );
        for report in [&through_component, &through_native] {
            let failures: Vec<_> = report
                .results
                .iter()
                .filter(|result| !result.passed())
                .map(|result| (&result.case.name, &result.failures))
                .collect();
            assert!(failures.is_empty(), "{}: {failures:#?}", dir.display());
            assert_eq!(
                report.coverage_percent(),
                100.0,
                "{}: {:?}",
                dir.display(),
                report.coverage
            );
        }
        for (a, b) in through_component
            .results
            .iter()
            .zip(&through_native.results)
        {
            assert_eq!(a.case.name, b.case.name);
            assert_eq!(
                a.response,
                b.response,
                "{} / {}",
                dir.display(),
                a.case.name
            );
        }
    }
}
