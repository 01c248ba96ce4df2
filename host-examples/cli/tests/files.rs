//! The files the CLI reads and writes, tried as an attacker would: links out
//! of the bundle, directory loops, huge files, `fmt` through a link, and
//! policies nested deep enough to overflow a parser's stack.
#![cfg(unix)]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{cedar_edge, cedar_edge_within, text, write_tree};

/// What a leaked file would show: it must never be printed.
const SECRET: &str = "glpat-DO-NOT-PRINT-7f3a91";

/// A generous cap for a command that must finish at once.
const PROMPTLY: Duration = Duration::from_secs(60);

const POLICY: &str = "permit (principal, action, resource);\n";

const SUITE: &str = r#"
cases:
  - name: anyone
    principal: 'User::"a"'
    action: 'Action::"read"'
    resource: 'Doc::"d"'
    expect: allow
"#;

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// A bundle in `<name>/bundle`, with a secret beside it in `<name>/secret.env`.
fn bundle_beside_a_secret(name: &str, files: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let mut tree: Vec<(String, &str)> = files
        .iter()
        .map(|(file, contents)| (format!("bundle/{file}"), *contents))
        .collect();
    let secret_line = format!("CI_JOB_TOKEN={SECRET}\n");
    tree.push(("secret.env".to_owned(), &secret_line));
    let borrowed: Vec<(&str, &str)> = tree
        .iter()
        .map(|(file, contents)| (file.as_str(), *contents))
        .collect();
    let top = write_tree(name, &borrowed);
    (top.join("bundle"), top.join("secret.env"))
}

fn authorize(bundle: &Path) -> Output {
    cedar_edge_within(
        PROMPTLY,
        &[
            "authorize",
            "--bundle",
            path(bundle),
            "--principal",
            r#"User::"a""#,
            "--action",
            r#"Action::"read""#,
            "--resource",
            r#"Doc::"d""#,
        ],
    )
}

/// Stderr with miette's line wrapping undone: its lines joined, without
/// the gutter.
fn stderr_of(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .map(|line| line.trim_start().trim_start_matches(['│', '×']).trim())
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_no_secret(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(!text(stream).contains(SECRET), "leaked: {}", text(stream));
    }
}

/// `validate`, `test` and `authorize` each refuse the bundle as a bundle
/// error naming `leak.cedar` and why, and none prints the secret.
fn assert_every_command_refuses_the_link(bundle: &Path, why: &str) {
    for out in [
        cedar_edge_within(PROMPTLY, &["validate", path(bundle)]),
        cedar_edge_within(PROMPTLY, &["test", path(bundle)]),
        authorize(bundle),
    ] {
        assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
        let stderr = stderr_of(&out);
        assert!(stderr.contains("leak.cedar"), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_no_secret(&out);
    }
}

#[test]
fn a_link_out_of_the_bundle_is_refused_and_never_printed() {
    let (bundle, _) = bundle_beside_a_secret("leak-bundle", &[("ok.cedar", POLICY)]);
    symlink("../secret.env", bundle.join("leak.cedar")).unwrap();
    assert_every_command_refuses_the_link(&bundle, "outside the bundle");
}

#[test]
fn a_link_into_a_hidden_folder_is_refused_and_never_printed() {
    // A bundle at the root of a CI checkout: `.git/config` is inside the
    // bundle directory and holds the job token.
    let git_config = format!(
        "[remote \"origin\"]\n\turl = https://gitlab-ci-token:{SECRET}@gitlab.example/group/repo.git\n"
    );
    let bundle = write_tree(
        "hidden-link",
        &[("ok.cedar", POLICY), (".git/config", &git_config)],
    );
    symlink(".git/config", bundle.join("leak.cedar")).unwrap();
    assert_every_command_refuses_the_link(&bundle, "hidden");
}

#[test]
fn a_link_out_of_the_suite_is_refused_and_never_printed() {
    let (bundle, _) = bundle_beside_a_secret(
        "leak-suite",
        &[("ok.cedar", POLICY), ("tests/ok.yaml", SUITE)],
    );
    symlink("../../secret.env", bundle.join("tests/leak.yaml")).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["test", path(&bundle)]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("tests/leak.yaml"), "{stderr}");
    assert!(stderr.contains("outside the bundle"), "{stderr}");
    assert_no_secret(&out);
}

#[test]
fn a_link_that_stays_inside_the_bundle_is_read() {
    // The layout of a Kubernetes ConfigMap mount: visible names are links
    // into a hidden folder.
    let bundle = write_tree(
        "inside-link",
        &[("..data/ok.cedar", POLICY), ("tests/ok.yaml", SUITE)],
    );
    symlink("..data/ok.cedar", bundle.join("ok.cedar")).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["test", path(&bundle)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("anyone"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn directory_link_loops_end_with_an_error() {
    // Two loops: a walk that follows them branches without end.
    let bundle = write_tree("loops", &[("ok.cedar", POLICY), ("tests/ok.yaml", SUITE)]);
    symlink(".", bundle.join("again")).unwrap();
    symlink(".", bundle.join("once-more")).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["validate", path(&bundle)]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(
        stderr_of(&out).contains("link to a directory"),
        "{}",
        text(&out.stderr)
    );

    let suite_loops = write_tree(
        "suite-loops",
        &[("ok.cedar", POLICY), ("tests/ok.yaml", SUITE)],
    );
    symlink("..", suite_loops.join("tests/up")).unwrap();
    symlink(".", suite_loops.join("tests/here")).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["test", path(&suite_loops)]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        stderr_of(&out).contains("link to a directory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_oversized_file_is_refused_by_name() {
    let bundle = write_tree(
        "oversized",
        &[("ok.cedar", POLICY), ("tests/ok.yaml", SUITE)],
    );
    // Sparse: 17 MiB on paper, nothing on disk.
    let huge = std::fs::File::create(bundle.join("huge.cedar")).unwrap();
    huge.set_len(17 * 1024 * 1024).unwrap();
    drop(huge);
    let out = cedar_edge_within(PROMPTLY, &["validate", path(&bundle)]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("huge.cedar"), "{stderr}");
    assert!(
        stderr.contains("larger than the limit of 16777216 bytes"),
        "{stderr}"
    );

    std::fs::remove_file(bundle.join("huge.cedar")).unwrap();
    let huge_suite = std::fs::File::create(bundle.join("tests/huge.yaml")).unwrap();
    huge_suite.set_len(17 * 1024 * 1024).unwrap();
    drop(huge_suite);
    let out = cedar_edge_within(PROMPTLY, &["test", path(&bundle)]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("tests/huge.yaml"), "{stderr}");
    assert!(stderr.contains("larger than the limit"), "{stderr}");

    // The cap is a setting.
    std::fs::remove_file(bundle.join("tests/huge.yaml")).unwrap();
    let capped = cedar_edge(&["validate", path(&bundle), "--max-file-bytes", "16"]);
    assert_eq!(capped.status.code(), Some(65), "{}", text(&capped.stderr));
    assert!(
        stderr_of(&capped).contains("ok.cedar"),
        "{}",
        text(&capped.stderr)
    );
    let roomy = cedar_edge(&["validate", path(&bundle), "--max-file-bytes", "4096"]);
    assert_eq!(roomy.status.code(), Some(0), "{}", text(&roomy.stderr));
}

const MESSY: &str = "permit(principal,action,resource)when{true};\n";

#[test]
fn fmt_never_writes_through_a_link() {
    // A link out of the bundle: the bundle is refused, the target untouched.
    let (bundle, outside) = bundle_beside_a_secret("fmt-out", &[("ok.cedar", POLICY)]);
    std::fs::write(&outside, MESSY).unwrap();
    symlink("../secret.env", bundle.join("link.cedar")).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["fmt", path(&bundle)]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), MESSY);

    // A link inside the bundle is read and checked, but not written through.
    let bundle = write_tree("fmt-in", &[("..shared/messy.cedar", MESSY)]);
    symlink("..shared/messy.cedar", bundle.join("messy.cedar")).unwrap();
    let check = cedar_edge_within(PROMPTLY, &["fmt", "--check", path(&bundle)]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    let out = cedar_edge_within(PROMPTLY, &["fmt", path(&bundle)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    let link = bundle.join("messy.cedar");
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(bundle.join("..shared/messy.cedar")).unwrap(),
        MESSY
    );
}

#[test]
fn fmt_replaces_a_regular_file_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;

    let bundle = write_tree("fmt-replace", &[("messy.cedar", MESSY)]);
    let file = bundle.join("messy.cedar");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = cedar_edge_within(PROMPTLY, &["fmt", path(&bundle)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let fixed = std::fs::read_to_string(&file).unwrap();
    assert!(fixed.contains("when { true }"), "{fixed}");
    let mode = file.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["messy.cedar"]);
}

/// A bundle whose one policy holds `condition` on its third line.
fn deep_bundle(name: &str, condition: &str) -> PathBuf {
    let policy =
        format!("// deep\npermit (principal, action, resource) when {{\n{condition}\n}};\n");
    write_tree(name, &[("deep.cedar", &policy), ("tests/ok.yaml", SUITE)])
}

#[test]
fn deep_policies_are_refused_by_every_command_naming_file_and_line() {
    let parens = |depth: usize| format!("{}true{}", "(".repeat(depth), ")".repeat(depth));
    let cases = [
        ("deep-parens-150", parens(150), "levels deep"),
        ("deep-parens-10000", parens(10_000), "levels deep"),
        (
            "deep-not-10000",
            "!".repeat(10_000) + "true",
            "operators deep",
        ),
        (
            "deep-minus-10000",
            "- ".repeat(10_000) + "1 == 1",
            "operators deep",
        ),
        (
            "deep-attributes-10000",
            "context".to_owned() + &".a".repeat(10_000) + " == 1",
            "operators deep",
        ),
        (
            "deep-and-100000",
            vec!["true"; 100_000].join(" && "),
            "operators deep",
        ),
        (
            "deep-if-150",
            "if true then ".repeat(150) + "true" + &" else false".repeat(150),
            "levels deep",
        ),
    ];
    for (name, condition, complaint) in cases {
        let bundle = deep_bundle(name, &condition);
        for out in [
            cedar_edge_within(PROMPTLY, &["validate", path(&bundle)]),
            cedar_edge_within(PROMPTLY, &["test", path(&bundle)]),
            authorize(&bundle),
        ] {
            let stderr = stderr_of(&out);
            let shown = stderr.get(..2000).unwrap_or(&stderr);
            assert_eq!(out.status.code(), Some(65), "{name}: {shown}");
            assert!(stderr.contains("deep.cedar:3:"), "{name}: {shown}");
            assert!(stderr.contains(complaint), "{name}: {shown}");
        }
        let fmt = cedar_edge_within(PROMPTLY, &["fmt", "--check", path(&bundle)]);
        assert_eq!(fmt.status.code(), Some(65), "{name}: {}", text(&fmt.stderr));
    }
}

#[test]
fn policies_at_the_depth_limits_load_and_decide_in_the_component() {
    // The guest parses and evaluates the bundle again, on a 256 KiB stack.
    // `when` and its `{` are two levels of the operator depth, the brace one
    // of the nesting. The last case is at both limits: 16 levels of
    // nesting, and 2 + 14 brackets + 15 links + 15 operators + `!=` = 48.
    let cases = [
        (
            "limit-parens",
            format!("{}true{}", "(".repeat(15), ")".repeat(15)),
        ),
        (
            "limit-ifs",
            "if true then ".repeat(15) + "true" + &" else false".repeat(15),
        ),
        ("limit-operators", vec!["1"; 46].join(" + ") + " > 1"),
        ("limit-links", vec!["1 > 0"; 46].join(" && ")),
        (
            "limit-both",
            format!(
                "{}{}{} != []",
                "[".repeat(15),
                vec![vec!["1"; 15].join(" + ") + " > 0"; 16].join(" && "),
                "]".repeat(15)
            ),
        ),
    ];
    for (name, condition) in cases {
        let bundle = deep_bundle(name, &condition);
        let out = authorize(&bundle);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("deep.cedar#0"),
            "{name}: {}",
            text(&out.stdout)
        );
    }
}
