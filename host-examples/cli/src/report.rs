//! Error reports in miette's style, pointing into the file at fault.

use std::path::Path;

use cedar_edge_core::{BundleSource, Diagnostic, SourcedProblem};
use miette::{MietteDiagnostic, Report, Severity};

/// Prints each bundle problem as an error, with the lines around it.
pub fn print_bundle_diagnostics(
    bundle_dir: &Path,
    source: &BundleSource,
    diagnostics: &[Diagnostic],
) {
    for diagnostic in diagnostics {
        eprintln!(
            "{}",
            render(bundle_dir, source, diagnostic, Severity::Error, None)
        );
    }
}

/// Renders one problem: its message, the source lines with the span marked
/// when it has a position, and otherwise the file's name.
pub fn render(
    bundle_dir: &Path,
    source: &BundleSource,
    diagnostic: &Diagnostic,
    severity: Severity,
    code: Option<&str>,
) -> String {
    let mut problem = SourcedProblem::new(diagnostic, source, bundle_dir);
    if let Some(code) = code {
        problem = problem.with_kind(severity, code);
    } else if severity != Severity::Error {
        problem = problem.with_kind(severity, "cedar_edge::bundle::problem");
    }
    format!("{:?}", Report::new(problem))
}

/// Prints a usage problem: what was given and why it is wrong.
pub fn print_usage_error(command: &str, flag: &str, message: &str) {
    let report = MietteDiagnostic::new(format!("invalid `{flag}`: {message}"))
        .with_help(format!("see `cedar-edge {command} --help`"));
    eprintln!("{:?}", Report::new(report));
}
