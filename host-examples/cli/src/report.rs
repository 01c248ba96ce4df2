//! Error reports in miette's style, pointing into the file at fault.

use std::path::Path;

use cedar_edge_engine::{BundleSource, Diagnostic};
use miette::{LabeledSpan, MietteDiagnostic, NamedSource, Report};

/// Prints each bundle problem with the lines around it.
pub fn print_bundle_diagnostics(
    bundle_dir: &Path,
    source: &BundleSource,
    diagnostics: &[Diagnostic],
) {
    let files = source
        .policies
        .iter()
        .chain(source.schema.iter())
        .chain(source.entities.iter())
        .chain(source.template_links.iter());
    let files: Vec<_> = files.collect();
    for diagnostic in diagnostics {
        let mut report = MietteDiagnostic::new(diagnostic.message.clone());
        if let Some(help) = &diagnostic.help {
            report = report.with_help(help.clone());
        }
        let contents = files
            .iter()
            .find(|file| file.path == diagnostic.file)
            .map(|file| file.contents.clone());
        let name = bundle_dir.join(&diagnostic.file).display().to_string();
        let report = match (contents, diagnostic.line) {
            (Some(contents), line) if line > 0 => {
                let span = LabeledSpan::at(
                    diagnostic.offset as usize
                        ..(diagnostic.offset + diagnostic.length.max(1)) as usize,
                    "here",
                );
                Report::new(report.with_label(span))
                    .with_source_code(NamedSource::new(name, contents))
            }
            _ => Report::new(report.with_help(format!("in `{name}`"))),
        };
        eprintln!("{report:?}");
    }
}

/// Prints a usage problem: what was given and why it is wrong.
pub fn print_usage_error(flag: &str, message: &str) {
    let report = MietteDiagnostic::new(format!("invalid `{flag}`: {message}"))
        .with_help("see `cedar-edge authorize --help`");
    eprintln!("{:?}", Report::new(report));
}
