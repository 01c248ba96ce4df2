//! `cedar-edge validate`: is the bundle loadable, valid against its schema
//! in strict mode, and free of suspect policies?

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use cedar_edge_cli::lint::{Finding, Severity, lint, load_errors};
use cedar_edge_cli::report::render;
use cedar_edge_core::{
    Bundle, BundleSource, Diagnostic, RequestLimits, SETTINGS_FILE, ValidationMode,
};
use clap::{Args, ValueEnum};
use sha2::{Digest, Sha256};

use super::{BundleOptions, read_bundle};

/// How to print findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindingsFormat {
    /// Source excerpts with the span marked.
    Human,
    /// One JSON object with every finding.
    Json,
    /// GitLab's code-quality report (`artifacts:reports:codequality`).
    Gitlab,
}

/// Arguments of `cedar-edge validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The bundle directory.
    bundle: PathBuf,
    /// Fail on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// How to print findings.
    #[arg(long, value_enum, default_value_t = FindingsFormat::Human)]
    format: FindingsFormat,
    #[command(flatten)]
    options: BundleOptions,
}

/// Runs the command and returns its exit code.
pub fn run(args: &ValidateArgs) -> u8 {
    let source = match read_bundle(&args.bundle, &args.options) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let findings = check(&source);
    print(args, &source, &findings);
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if errors > 0 {
        exit_codes::BUNDLE
    } else if warnings > 0 && args.deny_warnings {
        exit_codes::FAILED
    } else {
        exit_codes::OK
    }
}

/// Load errors when the bundle does not load; lints when it does.
fn check(source: &BundleSource) -> Vec<Finding> {
    let mut findings = match Bundle::load(source, RequestLimits::default()) {
        Ok(bundle) => lint(source, &bundle),
        Err(err) => load_errors(&err.diagnostics),
    };
    // An opt-out of strict validation is the owner's choice, never silent.
    if source.settings.validation != ValidationMode::Strict {
        findings.push(Finding {
            severity: Severity::Warning,
            check: "validation-mode".to_owned(),
            policy_id: None,
            diagnostic: Diagnostic::in_file(
                SETTINGS_FILE,
                format!(
                    "validation is `{}`, not `strict`: policies that Cedar's strict validator refuses are served, and may error or never apply at runtime",
                    source.settings.validation
                ),
            ),
        });
    }
    findings
}

fn print(args: &ValidateArgs, source: &BundleSource, findings: &[Finding]) {
    match args.format {
        FindingsFormat::Human => {
            for finding in findings {
                let severity = match finding.severity {
                    Severity::Error => miette::Severity::Error,
                    Severity::Warning => miette::Severity::Warning,
                };
                eprintln!(
                    "{}",
                    render(
                        &args.bundle,
                        source,
                        &finding.diagnostic,
                        severity,
                        Some(&finding.check)
                    )
                );
            }
            let errors = findings
                .iter()
                .filter(|finding| finding.severity == Severity::Error)
                .count();
            println!(
                "{}: {errors} error(s), {} warning(s)",
                args.bundle.display(),
                findings.len() - errors
            );
        }
        FindingsFormat::Json => {
            let json = serde_json::json!({
                "bundle": args.bundle.display().to_string(),
                "bundle_id": source.content_hash().ok(),
                "findings": findings,
            });
            println!("{json}");
        }
        FindingsFormat::Gitlab => println!("{}", gitlab_code_quality(args, findings)),
    }
}

/// GitLab's code-quality JSON: an array of issues with a stable fingerprint
/// each, so that GitLab can tell new findings from old ones.
fn gitlab_code_quality(args: &ValidateArgs, findings: &[Finding]) -> serde_json::Value {
    let issues: Vec<_> = findings
        .iter()
        .map(|finding| {
            let path = args
                .bundle
                .join(&finding.diagnostic.file)
                .display()
                .to_string();
            let mut hasher = Sha256::new();
            for part in [
                finding.check.as_str(),
                path.as_str(),
                finding.policy_id.as_deref().unwrap_or_default(),
                finding.diagnostic.message.as_str(),
            ] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            let fingerprint: String = hasher
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            serde_json::json!({
                "description": finding.diagnostic.message,
                "check_name": finding.check,
                "fingerprint": fingerprint,
                "severity": match finding.severity {
                    Severity::Error => "blocker",
                    Severity::Warning => "minor",
                },
                "location": {
                    "path": path,
                    "lines": { "begin": finding.diagnostic.line.max(1) },
                },
            })
        })
        .collect();
    serde_json::Value::Array(issues)
}
