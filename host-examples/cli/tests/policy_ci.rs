//! `validate`, `fmt`, `test` and `diff`, run as CI runs them, on small
//! bundles whose right answers were worked out by hand.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use common::{cedar_edge, text, write_tree};

const SCHEMA: &str = r#"
entity Group;
entity User in [Group];
entity Doc { owner: User };
action "read", "write", "delete" appliesTo { principal: [User], resource: [Doc] };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
  {"uid": {"type": "User", "id": "ben"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "ana"}}}, "parents": []}
]"#;

/// Four policies; the suite below makes exactly two of them determining.
const POLICIES: &str = r#"@id("staff-read")
permit (principal in Group::"staff", action == Action::"read", resource);

@id("owners-write")
permit (principal, action == Action::"write", resource)
when { resource.owner == principal };

@id("no-deletes")
forbid (principal, action == Action::"delete", resource);

@id("no-ben-writes")
forbid (principal == User::"ben", action == Action::"write", resource);
"#;

const SUITE: &str = r#"
name: hand-checked
cases:
  - name: staff read
    principal: 'User::"ana"'
    action: 'Action::"read"'
    resource: 'Doc::"plan"'
    expect: allow
    reasons: [staff-read]
  - name: nobody deletes
    principal: 'User::"ana"'
    action: 'Action::"delete"'
    resource: 'Doc::"plan"'
    expect: deny
    reasons: [no-deletes]
"#;

fn bundle(name: &str, suite: &str) -> PathBuf {
    write_tree(
        name,
        &[
            ("schema.cedarschema", SCHEMA),
            ("entities.json", ENTITIES),
            ("policies.cedar", POLICIES),
            ("tests/suite.yaml", suite),
        ],
    )
}

fn path(dir: &std::path::Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn coverage_counts_what_the_cases_made_determining() {
    let dir = bundle("coverage", SUITE);
    let out = cedar_edge(&["test", path(&dir), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], 2);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["coverage_percent"], 50.0);
    let covered: Vec<&str> = report["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["covered"] == true)
        .map(|entry| entry["policy_id"].as_str().unwrap())
        .collect();
    assert_eq!(covered, ["no-deletes", "staff-read"]);

    let below = cedar_edge(&["test", path(&dir), "--min-coverage", "51"]);
    assert_eq!(below.status.code(), Some(3), "{}", text(&below.stdout));
    assert!(text(&below.stderr).contains("50.0%"));
    let at = cedar_edge(&["test", path(&dir), "--min-coverage", "50", "--coverage"]);
    assert_eq!(at.status.code(), Some(0));
    let human = text(&at.stdout);
    assert!(human.contains("not covered owners-write"), "{human}");
    assert!(human.contains("2 of 4 policies covered"), "{human}");
    assert!(human.contains("2 passed, 0 failed"), "{human}");
}

#[test]
fn a_wrong_expectation_fails_with_the_whole_story() {
    let suite = SUITE.replace(
        "    resource: 'Doc::\"plan\"'\n    expect: deny",
        "    resource: 'Doc::\"plan\"'\n    expect: allow",
    );
    let dir = bundle("wrong-expectation", &suite);
    for backend in ["component", "native"] {
        let out = cedar_edge(&["test", path(&dir), "--backend", backend]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
        assert!(stdout.contains("FAIL nobody deletes"), "{stdout}");
        assert!(
            stdout.contains(r#"request:  User::"ana" -> Action::"delete" -> Doc::"plan""#),
            "{stdout}"
        );
        assert!(stdout.contains("expected: allow"), "{stdout}");
        assert!(stdout.contains("actual:   deny"), "{stdout}");
        assert!(stdout.contains("reasons:  no-deletes"), "{stdout}");
    }
}

#[test]
fn a_typo_in_a_key_is_an_error_naming_file_and_line() {
    let suite = SUITE.replace("    expect: deny", "    expekt: deny");
    let dir = bundle("typo", &suite);
    let out = cedar_edge(&["test", path(&dir)]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("tests/suite.yaml:"), "{stderr}");
    assert!(stderr.contains("expekt"), "{stderr}");
}

#[test]
fn an_unknown_fixture_and_a_missing_matrix_cell_are_errors() {
    let suite = r#"
cases:
  - name: uses a fixture nobody wrote
    principal: 'User::"ana"'
    action: 'Action::"read"'
    resource: 'Doc::"plan"'
    context: ofice
    expect: allow
matrices:
  - name: half a table
    principals: { ana: 'User::"ana"', ben: 'User::"ben"' }
    actions: { read: 'Action::"read"' }
    resources: { plan: 'Doc::"plan"' }
    expect:
      ana: { read: allow }
"#;
    let dir = bundle("bad-references", suite);
    let out = cedar_edge(&["test", path(&dir)]);
    assert_eq!(out.status.code(), Some(66));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown context fixture `ofice`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no expectation for `ben` / `read` / `plan`"),
        "{stderr}"
    );
}

#[test]
fn junit_xml_parses_and_counts_right() {
    let suite = SUITE.replace("    expect: deny", "    expect: allow");
    let dir = bundle("junit", &suite);
    let out = cedar_edge(&["test", path(&dir), "--format", "junit"]);
    assert_eq!(out.status.code(), Some(1));
    let xml = text(&out.stdout);
    let document = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("2"));
    assert_eq!(root.attribute("failures"), Some("1"));
    let cases: Vec<_> = root
        .descendants()
        .filter(|node| node.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 2);
    let failed: Vec<_> = cases
        .iter()
        .filter(|case| case.children().any(|child| child.has_tag_name("failure")))
        .map(|case| case.attribute("name").unwrap())
        .collect();
    assert_eq!(failed, ["nobody deletes"]);
}

#[test]
fn filter_runs_only_matching_cases() {
    let dir = bundle("filter", SUITE);
    let out = cedar_edge(&["test", path(&dir), "--filter", "staff"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("nobody deletes"), "{stdout}");
}

#[test]
fn diff_finds_a_planted_widening_and_narrowing() {
    let old = bundle("diff-old", SUITE);
    // Widen: staff may now write any doc. Narrow: ana may no longer read.
    let widened = POLICIES.replace(
        r#"@id("no-deletes")"#,
        "@id(\"staff-write\")\npermit (principal in Group::\"staff\", action == Action::\"write\", resource);\n\n@id(\"no-deletes\")",
    ) + "\n@id(\"ana-no-read\")\nforbid (principal == User::\"ana\", action == Action::\"read\", resource);\n";
    let new = write_tree(
        "diff-new",
        &[
            ("schema.cedarschema", SCHEMA),
            ("entities.json", ENTITIES),
            ("policies.cedar", &widened),
            ("tests/suite.yaml", SUITE),
        ],
    );
    let out = cedar_edge(&["diff", path(&old), path(&new), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<(String, String, String, String)> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["kind"].as_str().unwrap().to_owned(),
                change["principal"].as_str().unwrap().to_owned(),
                change["action"].as_str().unwrap().to_owned(),
                change["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // ana owns the plan, so writing it was already allowed: only the reasons change.
    assert!(
        changes.contains(&(
            "narrowed".into(),
            r#"User::"ana""#.into(),
            r#"Action::"read""#.into(),
            r#"Doc::"plan""#.into()
        )),
        "{changes:?}"
    );
    assert!(
        changes.contains(&(
            "reasons-changed".into(),
            r#"User::"ana""#.into(),
            r#"Action::"write""#.into(),
            r#"Doc::"plan""#.into()
        )),
        "{changes:?}"
    );
    assert!(
        !changes.iter().any(|change| change.0 == "widened"),
        "ben is not staff: {changes:?}"
    );

    // A plain widening: everyone reads, so ben, who could not, now can.
    let widening = POLICIES.to_owned()
        + "\n@id(\"everyone-reads\")\npermit (principal, action == Action::\"read\", resource);\n";
    let wider = write_tree(
        "diff-wider",
        &[
            ("schema.cedarschema", SCHEMA),
            ("entities.json", ENTITIES),
            ("policies.cedar", &widening),
        ],
    );
    let out = cedar_edge(&["diff", path(&old), path(&wider), "--fail-on-widen"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let markdown = text(&out.stdout);
    assert!(markdown.contains("#### Widened: now allowed"), "{markdown}");
    assert!(
        markdown.contains(r#"| `User::"ben"` | `Action::"read"` | `Doc::"plan"` | deny | allow (`everyone-reads`) |"#),
        "{markdown}"
    );
    let same = cedar_edge(&["diff", path(&old), path(&old), "--fail-on-widen"]);
    assert_eq!(same.status.code(), Some(0));
    assert!(text(&same.stdout).contains("No decision changed"));
}

#[test]
fn validate_reports_lints_and_deny_warnings_fails() {
    let lints = r#"@id("anything-goes")
permit (principal, action, resource);

@id("no-deletes")
forbid (principal, action == Action::"delete", resource);

@id("staff-delete")
permit (principal in Group::"staff", action == Action::"delete", resource);

@id("docs-act")
permit (principal is Doc, action, resource);
"#;
    let dir = write_tree(
        "lints",
        &[
            ("schema.cedarschema", SCHEMA),
            ("entities.json", ENTITIES),
            ("policies.cedar", lints),
        ],
    );
    let out = cedar_edge(&["validate", path(&dir), "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings alone pass: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String, u64)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            (
                finding["check"].as_str().unwrap().to_owned(),
                finding["policy_id"].as_str().unwrap_or_default().to_owned(),
                finding["line"].as_u64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("unconstrained-permit", "anything-goes", 1),
        ("shadowed-permit", "staff-delete", 7),
        ("scope-never-matches", "docs-act", 10),
    ] {
        assert!(
            found.contains(&(expected.0.into(), expected.1.into(), expected.2)),
            "{expected:?} in {found:?}"
        );
    }
    let denied = cedar_edge(&["validate", path(&dir), "--deny-warnings"]);
    assert_eq!(denied.status.code(), Some(1));

    let gitlab = cedar_edge(&["validate", path(&dir), "--format", "gitlab"]);
    let issues: serde_json::Value = serde_json::from_slice(&gitlab.stdout).unwrap();
    let first = &issues.as_array().unwrap()[0];
    assert!(
        first["location"]["path"]
            .as_str()
            .unwrap()
            .ends_with("policies.cedar")
    );
    assert_eq!(first["fingerprint"].as_str().unwrap().len(), 64);
    assert!(first["location"]["lines"]["begin"].as_u64().unwrap() >= 1);
}

#[test]
fn validate_fails_a_schema_violation_with_its_line() {
    let broken = POLICIES.replace("resource.owner == principal", "resource.owner == 42");
    let dir = write_tree(
        "schema-violation",
        &[
            ("schema.cedarschema", SCHEMA),
            ("entities.json", ENTITIES),
            ("policies.cedar", &broken),
        ],
    );
    let out = cedar_edge(&["validate", path(&dir)]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("policies.cedar:6:"), "{stderr}");
}

#[test]
fn fmt_check_lists_files_and_fmt_fixes_them() {
    let dir = write_tree(
        "fmt",
        &[
            ("tidy.cedar", "permit (principal, action, resource);\n"),
            (
                "messy.cedar",
                "permit(principal,action,resource)when{true};\n",
            ),
        ],
    );
    let check = cedar_edge(&["fmt", "--check", path(&dir)]);
    assert_eq!(check.status.code(), Some(1));
    let stdout = text(&check.stdout);
    assert!(stdout.contains("messy.cedar"), "{stdout}");
    assert!(!stdout.contains("tidy.cedar"), "{stdout}");
    assert_eq!(cedar_edge(&["fmt", path(&dir)]).status.code(), Some(0));
    assert_eq!(
        cedar_edge(&["fmt", "--check", path(&dir)]).status.code(),
        Some(0)
    );
    let fixed = std::fs::read_to_string(dir.join("messy.cedar")).unwrap();
    assert!(fixed.contains("when { true }"), "{fixed}");
}
