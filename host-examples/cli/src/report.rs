//! Error reports in miette's style, pointing into the file at fault.

use std::path::Path;

use cedar_edge_engine::{BundleSource, Diagnostic};
use miette::{LabeledSpan, MietteDiagnostic, NamedSource, Report, Severity};

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
    let mut report = MietteDiagnostic::new(diagnostic.message.clone()).with_severity(severity);
    if let Some(code) = code {
        report = report.with_code(code);
    }
    if let Some(help) = &diagnostic.help {
        report = report.with_help(help.clone());
    }
    let contents = source
        .policies
        .iter()
        .chain(source.schema.iter())
        .chain(source.entities.iter())
        .chain(source.template_links.iter())
        .find(|file| file.path == diagnostic.file)
        .map(|file| file.contents.clone());
    let name = bundle_dir.join(&diagnostic.file).display().to_string();
    let report = match (contents, diagnostic.line) {
        (Some(contents), line) if line > 0 => {
            let start = diagnostic.offset as usize;
            let span = LabeledSpan::at(start..start + diagnostic.length.max(1) as usize, "here");
            Report::new(report.with_label(span)).with_source_code(NamedSource::new(name, contents))
        }
        _ => Report::new(report.with_help(format!("in `{name}`"))),
    };
    format!("{report:?}")
}

/// Prints a usage problem: what was given and why it is wrong.
pub fn print_usage_error(command: &str, flag: &str, message: &str) {
    let report = MietteDiagnostic::new(format!("invalid `{flag}`: {message}"))
        .with_help(format!("see `cedar-edge {command} --help`"));
    eprintln!("{:?}", Report::new(report));
}
