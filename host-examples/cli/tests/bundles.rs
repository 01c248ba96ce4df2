//! Every bundle in `policies/` passes its own suites with full coverage,
//! through the component and natively, and the two backends give the same
//! answer to every case; one test per bundle, so a failure names it. The
//! same runner serves `cedar-edge test`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cedar_edge_cli::engines::{BackendChoice, Engines};
use cedar_edge_cli::suite::{load_suites, run_cases};
use cedar_edge_core::BundleSource;

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// One component per test binary: it is compiled (or mapped) once.
fn component() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| Engines::new(BackendChoice::Component).expect("the component compiles"))
}

fn passes_on_both_backends(name: &str) {
    let dir = policies().join(name);
    let native = Engines::new(BackendChoice::Native).expect("native");
    let source = BundleSource::from_dir(&dir).expect("reads");
    let cases = load_suites(&dir).unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(cases.len() >= 20, "{name} has only {} cases", cases.len());
    let through_component = run_cases(
        component().load(&source).expect("loads").backend.as_ref(),
        "component",
        cases.clone(),
        None,
    );
    let through_native = run_cases(
        native.load(&source).expect("loads").backend.as_ref(),
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
        assert!(failures.is_empty(), "{name}: {failures:#?}");
        assert_eq!(
            report.coverage_percent(),
            100.0,
            "{name}: {:?}",
            report.coverage
        );
    }
    for (a, b) in through_component
        .results
        .iter()
        .zip(&through_native.results)
    {
        assert_eq!(a.case.name, b.case.name);
        assert_eq!(a.response, b.response, "{name} / {}", a.case.name);
    }
}

/// One `#[test]` per bundle directory.
macro_rules! bundle_tests {
    ($($test:ident => $dir:literal),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                passes_on_both_backends($dir);
            }
        )+

        /// Every bundle directory has its test above: a new bundle cannot
        /// be left out by accident.
        #[test]
        fn every_bundle_directory_has_a_test() {
            let listed = [$($dir),+];
            let mut found: Vec<String> = std::fs::read_dir(policies())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.is_dir())
                .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            found.sort();
            assert_eq!(found, listed, "add the new bundle to `bundle_tests!`");
        }
    };
}

bundle_tests! {
    airflow_gitlab => "airflow-gitlab",
    authzen_search => "authzen-search",
    authzen_todo => "authzen-todo",
    gateway => "gateway",
    gitlab_ci_oauth => "gitlab-ci-oauth",
    looker => "looker",
}
