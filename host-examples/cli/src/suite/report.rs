//! Printing a run: for people (with colour on a terminal), as JSON, and as
//! JUnit XML for GitLab's `artifacts:reports:junit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use super::run::{CaseResult, RunReport, outcome_name};

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// Colour when `enabled` (a terminal without `NO_COLOR`).
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// The human report: one line per case, details for each failure, the
/// coverage table when asked, and the summary line.
pub fn human(report: &RunReport, show_coverage: bool, palette: Palette) -> String {
    let mut out = String::new();
    let mut current_suite = None;
    for result in &report.results {
        if current_suite != Some(&result.case.suite) {
            current_suite = Some(&result.case.suite);
            let _ = writeln!(out, "{}", palette.bold(&result.case.suite));
        }
        let mark = if result.passed() {
            palette.green("ok  ")
        } else {
            palette.red("FAIL")
        };
        let _ = writeln!(out, "  {mark} {}", result.case.name);
    }
    for result in report.results.iter().filter(|result| !result.passed()) {
        out.push('\n');
        out.push_str(&failure_details(result, palette));
    }
    if show_coverage {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            palette.bold("coverage (policies made determining by some case)")
        );
        for (id, hit) in &report.coverage {
            let mark = if *hit {
                palette.green("covered    ")
            } else {
                palette.red("not covered")
            };
            let _ = writeln!(out, "  {mark} {id}");
        }
        let covered = report.coverage.iter().filter(|(_, hit)| *hit).count();
        let _ = writeln!(
            out,
            "  {covered} of {} policies covered ({:.1}%)",
            report.coverage.len(),
            report.coverage_percent()
        );
    }
    out.push('\n');
    let summary = format!("{} passed, {} failed", report.passed(), report.failed());
    let summary = if report.failed() == 0 {
        palette.green(&summary)
    } else {
        palette.red(&summary)
    };
    let _ = writeln!(
        out,
        "{summary} ({} backend, bundle {})",
        report.backend, report.bundle_id
    );
    out
}

/// What a failing case asked, expected and got.
fn failure_details(result: &CaseResult, palette: Palette) -> String {
    let case = &result.case;
    let mut out = String::new();
    let _ = writeln!(out, "{} {} ({})", palette.red("FAIL"), case.name, case.file);
    let _ = writeln!(
        out,
        "  request:  {} -> {} -> {}",
        case.request.principal, case.request.action, case.request.resource
    );
    if let cedar_edge_core::ContextInput::Json(context) = &case.request.context {
        let _ = writeln!(out, "  context:  {context}");
    }
    if !case.request.entities.is_empty() {
        let uids: Vec<String> = case
            .request
            .entities
            .iter()
            .map(|entity| entity.uid.to_string())
            .collect();
        let _ = writeln!(out, "  entities: {}", uids.join(", "));
    }
    let _ = writeln!(out, "  expected: {}", outcome_name(case.expect));
    let _ = writeln!(out, "  actual:   {}", decision_name(result));
    let reasons = if result.response.determining_policies.is_empty() {
        "(none)".to_owned()
    } else {
        result.response.determining_policies.join(", ")
    };
    let _ = writeln!(out, "  reasons:  {reasons}");
    for error in &result.response.errors {
        let origin = if error.policy_id.is_empty() {
            "request"
        } else {
            &error.policy_id
        };
        let _ = writeln!(out, "  error:    {origin}: {}", error.message);
    }
    for failure in &result.failures {
        let _ = writeln!(out, "  {} {failure}", palette.red("-"));
    }
    out
}

fn decision_name(result: &CaseResult) -> &'static str {
    if result.response.is_allowed() {
        "allow"
    } else {
        "deny"
    }
}

/// The whole run as one JSON document.
pub fn json(report: &RunReport) -> serde_json::Value {
    let cases: Vec<_> = report
        .results
        .iter()
        .map(|result| {
            json!({
                "file": result.case.file,
                "suite": result.case.suite,
                "name": result.case.name,
                "passed": result.passed(),
                "principal": result.case.request.principal.to_string(),
                "action": result.case.request.action.to_string(),
                "resource": result.case.request.resource.to_string(),
                "expected": outcome_name(result.case.expect),
                "actual": decision_name(result),
                "determining_policies": result.response.determining_policies,
                "errors": result.response.errors,
                "failures": result.failures,
            })
        })
        .collect();
    let coverage: Vec<_> = report
        .coverage
        .iter()
        .map(|(id, hit)| json!({"policy_id": id, "covered": hit}))
        .collect();
    json!({
        "bundle_id": report.bundle_id,
        "backend": report.backend,
        "passed": report.passed(),
        "failed": report.failed(),
        "coverage_percent": report.coverage_percent(),
        "coverage": coverage,
        "cases": cases,
    })
}

/// JUnit XML: one `testsuite` per test file, one `testcase` per case.
pub fn junit(report: &RunReport) -> String {
    let mut by_file: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for result in &report.results {
        by_file.entry(&result.case.file).or_default().push(result);
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"cedar-edge\" tests=\"{}\" failures=\"{}\">",
        report.results.len(),
        report.failed()
    );
    for (file, results) in by_file {
        let failures = results.iter().filter(|result| !result.passed()).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
            escape(file),
            results.len()
        );
        for result in results {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&result.case.suite),
                escape(&result.case.name)
            );
            if result.passed() {
                xml.push_str("/>\n");
            } else {
                let message = result.failures.join("; ");
                let _ = writeln!(
                    xml,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(&message),
                    escape(&failure_details(result, Palette::new(false)))
                );
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0
/// cannot carry at all.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            ch if (ch as u32) < 0x20 => {}
            ch => out.push(ch),
        }
    }
    out
}
