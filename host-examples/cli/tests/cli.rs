//! The `cedar-edge` binary, run as a user runs it.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Output;

use common::{cedar_edge, text, write_tree};

const BUNDLE: &str = "policies/airflow-gitlab";
const CONTEXT: &str = "@policies/airflow-gitlab/requests/context-mfa-office.json";

fn authorize(principal: &str, action: &str, resource: &str, extra: &[&str]) -> Output {
    let action = format!("Airflow::Action::\"{action}\"");
    let mut args = vec![
        "authorize",
        "--bundle",
        BUNDLE,
        "--principal",
        principal,
        "--action",
        &action,
        "--resource",
        resource,
        "--context",
        CONTEXT,
    ];
    args.extend_from_slice(extra);
    cedar_edge(&args)
}

#[test]
fn allow_exits_zero_and_names_the_policy() {
    let out = authorize(
        r#"Airflow::User::"bob""#,
        "trigger",
        r#"Airflow::Dag::"etl_daily""#,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ALLOW"), "{stdout}");
    assert!(stdout.contains("operators-trigger-runs"), "{stdout}");
    assert!(stdout.contains("bundle: sha256:"), "{stdout}");
}

#[test]
fn deny_exits_two_and_names_the_forbid() {
    let out = authorize(
        r#"Airflow::User::"bob""#,
        "edit",
        r#"Airflow::Dag::"etl_daily""#,
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("forbid-manual-production-edits"));
}

#[test]
fn json_output_is_the_same_for_both_backends() {
    let run = |backend: &str| {
        let out = authorize(
            r#"Airflow::User::"carol""#,
            "trigger",
            r#"Airflow::Dag::"reporting""#,
            &["--format", "json", "--backend", backend],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let mut json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(json["backend"], backend);
        json.as_object_mut().unwrap().remove("backend");
        json
    };
    let component = run("component");
    assert_eq!(component["decision"], "deny");
    assert!(
        component["bundle_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(component, run("native"));
}

#[test]
fn usage_errors_exit_64() {
    let bad_uid = authorize("bob", "trigger", r#"Airflow::Dag::"etl_daily""#, &[]);
    assert_eq!(bad_uid.status.code(), Some(64));
    assert!(
        text(&bad_uid.stderr).contains("--principal"),
        "{}",
        text(&bad_uid.stderr)
    );
    let bad_json = cedar_edge(&[
        "authorize",
        "--bundle",
        BUNDLE,
        "--principal",
        r#"Airflow::User::"bob""#,
        "--action",
        r#"Airflow::Action::"read""#,
        "--resource",
        r#"Airflow::Dag::"etl_daily""#,
        "--context",
        "{mfa: true}",
    ]);
    assert_eq!(bad_json.status.code(), Some(64));
    assert!(text(&bad_json.stderr).contains("--context"));
    assert_eq!(
        cedar_edge(&["authorize", "--no-such-flag"]).status.code(),
        Some(64)
    );
    assert_eq!(cedar_edge(&["--help"]).status.code(), Some(0));
}

#[test]
fn a_request_the_schema_rejects_is_a_deny_with_the_reason() {
    let out = cedar_edge(&[
        "authorize",
        "--bundle",
        BUNDLE,
        "--principal",
        r#"Airflow::User::"bob""#,
        "--action",
        r#"Airflow::Action::"trigger""#,
        "--resource",
        r#"Airflow::Dag::"etl_daily""#,
        "--context",
        r#"{"mfa": "yes", "source_ip": "10.0.0.1", "token_age_seconds": 1}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("DENY") && stdout.contains("mfa"),
        "{stdout}"
    );
}

#[test]
fn a_broken_bundle_exits_65_pointing_at_the_line() {
    let dir = write_tree(
        "broken-bundle",
        &[
            ("ok.cedar", "permit (principal, action, resource);\n"),
            (
                "bad.cedar",
                "// a comment\n\npermit (principal, action, resource) when { ;\n",
            ),
        ],
    );
    let out = cedar_edge(&[
        "authorize",
        "--bundle",
        dir.to_str().unwrap(),
        "--principal",
        r#"User::"a""#,
        "--action",
        r#"Action::"b""#,
        "--resource",
        r#"Doc::"c""#,
    ]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.cedar:3:"), "{stderr}");
    assert!(stderr.contains("1 problem"), "{stderr}");
}
