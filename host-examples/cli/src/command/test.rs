//! `cedar-edge test`: a bundle's test suites, through the component by
//! default.

use std::io::IsTerminal;
use std::path::PathBuf;

use cedar_edge_cli::engines::BackendChoice;
use cedar_edge_cli::exit_codes;
use cedar_edge_cli::suite::load::load_suites_capped;
use cedar_edge_cli::suite::report::{Palette, human, json, junit};
use cedar_edge_cli::suite::run_cases;
use clap::{Args, ValueEnum};

use super::{BundleOptions, load_backend, read_bundle, start_engines};

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    /// One line per case, details for failures, a summary line.
    Human,
    /// One JSON document.
    Json,
    /// JUnit XML, for GitLab's `artifacts:reports:junit`.
    Junit,
}

/// Arguments of `cedar-edge test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The bundle directory; its suites are in `BUNDLE/tests/`.
    bundle: PathBuf,
    /// Which engine decides.
    #[arg(long, value_enum, default_value_t = BackendChoice::Component)]
    backend: BackendChoice,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = ResultsFormat::Human)]
    format: ResultsFormat,
    /// Run only cases whose name or file contains this text.
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// List each policy and whether some case made it determining.
    #[arg(long)]
    coverage: bool,
    /// Fail when fewer than this percentage of policies are covered.
    #[arg(long, value_name = "PCT")]
    min_coverage: Option<f64>,
    /// Also write the JUnit XML report to this file, whatever `--format` is.
    #[arg(long, value_name = "FILE")]
    junit_file: Option<PathBuf>,
    #[command(flatten)]
    options: BundleOptions,
}

/// Runs the command and returns its exit code.
pub fn run(args: &TestArgs) -> u8 {
    let source = match read_bundle(&args.bundle, &args.options) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let cases = match load_suites_capped(&args.bundle, args.options.max_file_bytes) {
        Ok(cases) => cases,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {}", args.bundle.join(error.to_string()).display());
            }
            eprintln!("error: {} problem(s) in the test files", errors.len());
            return exit_codes::SUITE;
        }
    };
    let backend = match start_engines(args.backend)
        .and_then(|engines| load_backend(&engines, &args.bundle, &source))
    {
        Ok(loaded) => loaded.backend,
        Err(code) => return code,
    };
    let report = run_cases(
        backend.as_ref(),
        args.backend.name(),
        cases,
        args.filter.as_deref(),
    );
    match args.format {
        ResultsFormat::Human => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!(
                "{}",
                human(
                    &report,
                    args.coverage || args.min_coverage.is_some(),
                    Palette::new(colour)
                )
            );
        }
        ResultsFormat::Json => println!("{}", json(&report)),
        ResultsFormat::Junit => print!("{}", junit(&report)),
    }
    if let Some(path) = &args.junit_file
        && let Err(err) = std::fs::write(path, junit(&report))
    {
        eprintln!("error: cannot write `{}`: {err}", path.display());
        return exit_codes::FAILED;
    }
    if report.failed() > 0 {
        return exit_codes::FAILED;
    }
    if let Some(minimum) = args.min_coverage {
        let covered = report.coverage_percent();
        if covered + 1e-9 < minimum {
            eprintln!("error: policy coverage {covered:.1}% is below the minimum of {minimum}%");
            return exit_codes::COVERAGE;
        }
    }
    exit_codes::OK
}
