//! Git sources against a real `git daemon` on loopback: a bundle folder is
//! pushed, followed at a branch or tag, and exported alone at a commit;
//! commits off the ref, missing folders, hostile specs, symbolic links and
//! dead servers are refused with errors that name what failed.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cedar_edge_core::BundleSource;
use cedar_edge_distribution::git::{GitError, GitRef, GitSource, SpecPart};
use cedar_edge_testkit::git_server::{GitServer, WorkTree, files_below};

/// Where the bundle sits in the test repository.
const SUBDIR: &str = "bundles/airflow";

fn airflow_bundle() -> PathBuf {
    cedar_edge_testkit::repo().join("policies/airflow-gitlab")
}

/// Every file below `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|relative| {
            let bytes = std::fs::read(dir.join(&relative)).unwrap();
            (relative, bytes)
        })
        .collect()
}

/// A server with repository `policies.git` whose `main` holds the airflow
/// bundle under [`SUBDIR`] and other files beside it; gives the commit.
fn pushed_bundle() -> (GitServer, WorkTree, String) {
    let server = GitServer::start();
    server.create_repo("policies.git");
    let tree = server.work_tree("policies.git");
    let copied = tree.copy_dir(&airflow_bundle(), SUBDIR);
    assert!(copied.len() >= 5, "copied {copied:?}");
    tree.write("README.md", "policies for every gateway\n");
    tree.write(
        "bundles/other/other.cedar",
        "permit(principal, action, resource);\n",
    );
    let commit = tree.commit("airflow bundle");
    tree.push("HEAD:refs/heads/main");
    (server, tree, commit)
}

fn source(server: &GitServer, fragment: &str) -> GitSource {
    let spec = format!("git+{}#{fragment}", server.url("policies.git"));
    GitSource::parse(&spec, server.scratch("cache")).unwrap()
}

#[test]
fn pushed_bundle_is_the_latest_commit_and_exports_alone() {
    let (server, _tree, commit) = pushed_bundle();
    let source = source(&server, &format!("main:{SUBDIR}"));

    assert_eq!(source.latest_commit().unwrap(), commit);

    let checkout = source.checkout(&commit).unwrap();
    assert_eq!(checkout.commit(), commit);
    assert!(checkout.dir().starts_with(source.cache_dir()));
    // Exactly the bundle folder's files, byte for byte: README.md and
    // bundles/other are not there.
    assert_eq!(contents(checkout.dir()), contents(&airflow_bundle()));

    let exported = BundleSource::from_dir(checkout.dir()).unwrap();
    let original = BundleSource::from_dir(&airflow_bundle()).unwrap();
    assert_eq!(exported, original);
    assert!(exported.schema.is_some() && exported.entities.is_some());

    let dir = checkout.dir().to_owned();
    drop(checkout);
    assert!(!dir.exists(), "dropping a checkout removes its files");
}

#[test]
fn root_of_the_repository_is_the_default_folder() {
    let (server, tree, _commit) = pushed_bundle();
    // A path past the 100 bytes of a plain tar header.
    let long = format!("{}/long.cedar", ["nested-folder-name"; 8].join("/"));
    assert!(long.len() > 100);
    tree.write(&long, "// far down\n");
    let commit = tree.commit("a long path");
    tree.push("HEAD:refs/heads/main");

    let source = source(&server, "branch=main");
    assert_eq!(source.subdir(), "");
    let checkout = source.checkout(&commit).unwrap();
    let files = contents(checkout.dir());
    assert_eq!(files["README.md"], b"policies for every gateway\n");
    assert!(files.contains_key(&format!("{SUBDIR}/deploy.cedar")));
    assert_eq!(files[&long], b"// far down\n");
}

#[test]
fn a_later_push_is_seen_and_earlier_commits_of_the_ref_stay_readable() {
    let (server, tree, first) = pushed_bundle();
    let source = source(&server, &format!("refs/heads/main:{SUBDIR}"));
    assert_eq!(source.latest_commit().unwrap(), first);
    let first_checkout = source.checkout(&first).unwrap();

    let changed =
        "// changed in the second commit\npermit(principal, action, resource) when { false };\n";
    tree.write(&format!("{SUBDIR}/deploy.cedar"), changed);
    tree.remove(&format!("{SUBDIR}/template-links.json"));
    let second = tree.commit("second");
    tree.push("HEAD:refs/heads/main");
    assert_ne!(first, second);

    assert_eq!(source.latest_commit().unwrap(), second);
    let second_checkout = source.checkout(&second).unwrap();
    let files = contents(second_checkout.dir());
    assert_eq!(files["deploy.cedar"], changed.as_bytes());
    assert!(!files.contains_key("template-links.json"));

    // The first commit is an ancestor of the ref, so still accepted, with
    // its own files; the earlier export is untouched.
    let again = source.checkout(&first).unwrap();
    assert_eq!(contents(again.dir()), contents(&airflow_bundle()));
    assert_eq!(contents(first_checkout.dir()), contents(&airflow_bundle()));
    assert_ne!(again.dir(), first_checkout.dir());
}

#[test]
fn an_annotated_tag_resolves_to_its_commit() {
    let (server, tree, commit) = pushed_bundle();
    let tag_object = tree.tag("v3", "release 3");
    tree.push("refs/tags/v3");
    assert_ne!(tag_object, commit, "an annotated tag is its own object");
    // Move main on: the tag must still give the tagged commit.
    tree.write(
        &format!("{SUBDIR}/deploy.cedar"),
        "forbid(principal, action, resource);\n",
    );
    let later = tree.commit("after the tag");
    tree.push("HEAD:refs/heads/main");

    for fragment in [format!("tag=v3:{SUBDIR}"), format!("refs/tags/v3:{SUBDIR}")] {
        let source = source(&server, &fragment);
        assert_eq!(source.reference(), &GitRef::Tag("v3".to_owned()));
        assert_eq!(source.latest_commit().unwrap(), commit, "{fragment}");
        let checkout = source.checkout(&commit).unwrap();
        assert_eq!(contents(checkout.dir()), contents(&airflow_bundle()));
        // A commit after the tag is not on it.
        let err = source.checkout(&later).unwrap_err();
        assert!(matches!(err, GitError::NotOnRef { .. }), "{err}");
    }
    // A bare name is a branch, and there is no branch `v3`.
    let err = source(&server, "v3").latest_commit().unwrap_err();
    assert!(
        matches!(&err, GitError::RefNotFound { reference, .. } if reference == "refs/heads/v3"),
        "{err}"
    );
}

#[test]
fn a_commit_not_on_the_ref_is_refused() {
    let (server, tree, first) = pushed_bundle();
    let main = source(&server, &format!("main:{SUBDIR}"));
    let side = source(&server, &format!("branch=side:{SUBDIR}"));

    // A commit of another branch, already in the cache through that branch.
    tree.branch("side", &first);
    tree.write(
        &format!("{SUBDIR}/deploy.cedar"),
        "permit(principal, action, resource);\n",
    );
    let side_commit = tree.commit("side change");
    tree.push("HEAD:refs/heads/side");
    assert_eq!(side.latest_commit().unwrap(), side_commit);
    side.checkout(&side_commit).unwrap();
    let err = main.checkout(&side_commit).unwrap_err();
    match &err {
        GitError::NotOnRef {
            reference, commit, ..
        } => {
            assert_eq!(reference, "refs/heads/main");
            assert_eq!(commit, &side_commit);
        }
        other => panic!("expected NotOnRef, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&side_commit) && message.contains("refs/heads/main"),
        "{message}"
    );

    // A commit that main had until a force-push replaced it.
    main.checkout(&first).unwrap();
    tree.git(&["checkout", "--quiet", "--orphan", "fresh"]);
    tree.write("README.md", "history rewritten\n");
    let rewritten = tree.commit("rewritten history");
    tree.push("+HEAD:refs/heads/main");
    assert_eq!(main.latest_commit().unwrap(), rewritten);
    let err = main.checkout(&first).unwrap_err();
    assert!(matches!(err, GitError::NotOnRef { .. }), "{err}");

    // A commit id the server has never seen.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = main.checkout(unknown).unwrap_err();
    assert!(matches!(err, GitError::NotOnRef { .. }), "{err}");
}

#[test]
fn a_missing_folder_is_refused_naming_it_and_the_commit() {
    let (server, tree, commit) = pushed_bundle();
    let source = source(&server, "main:bundles/nowhere");
    let err = source.checkout(&commit).unwrap_err();
    assert!(matches!(err, GitError::SubdirMissing { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("`bundles/nowhere`") && message.contains(&commit),
        "{message}"
    );

    // A file is not a folder either.
    let file = source_with_subdir(&server, "README.md");
    let err = file.checkout(&commit).unwrap_err();
    assert!(matches!(err, GitError::SubdirMissing { .. }), "{err}");

    // The folder removed by a later commit is missing at that commit only.
    tree.remove(SUBDIR);
    let later = tree.commit("remove the bundle");
    tree.push("HEAD:refs/heads/main");
    let airflow = source_with_subdir(&server, SUBDIR);
    assert!(airflow.checkout(&commit).is_ok());
    let err = airflow.checkout(&later).unwrap_err();
    assert!(err.to_string().contains(&later), "{err}");
}

fn source_with_subdir(server: &GitServer, subdir: &str) -> GitSource {
    source(server, &format!("main:{subdir}"))
}

#[test]
fn a_missing_branch_is_reported_as_such() {
    let (server, _tree, commit) = pushed_bundle();
    let source = source(&server, &format!("branch=release:{SUBDIR}"));
    for err in [
        source.latest_commit().unwrap_err(),
        source.checkout(&commit).unwrap_err(),
    ] {
        assert!(
            matches!(&err, GitError::RefNotFound { reference, .. } if reference == "refs/heads/release"),
            "{err}"
        );
    }
}

#[test]
fn a_stopped_server_is_unreachable() {
    let (mut server, _tree, commit) = pushed_bundle();
    let source = source(&server, &format!("main:{SUBDIR}"));
    server.stop();
    for err in [
        source.latest_commit().unwrap_err(),
        source.checkout(&commit).unwrap_err(),
    ] {
        assert!(matches!(err, GitError::Unreachable { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("remote `{}` unreachable: ", source.url())),
            "{message}"
        );
        assert!(message.contains("127.0.0.1"), "{message}");
    }
}

#[test]
fn a_silent_server_times_out() {
    // Accepts connections (the kernel does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = GitServer::start();
    let spec = format!("git+git://127.0.0.1:{port}/policies.git#main");
    let source = GitSource::parse(&spec, server.scratch("cache"))
        .unwrap()
        .with_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let err = source.latest_commit().unwrap_err();
    assert!(
        matches!(
            err,
            GitError::Timeout {
                action: "ls-remote",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[test]
fn credentials_stay_out_of_messages() {
    let server = GitServer::start();
    let spec = format!(
        "git+http://deploy:s3cret@127.0.0.1:{}/policies.git#main",
        cedar_edge_testkit::free_port()
    );
    let source = GitSource::parse(&spec, server.scratch("cache")).unwrap();
    let err = source.latest_commit().unwrap_err();
    assert!(matches!(err, GitError::Unreachable { .. }), "{err}");
    for shown in [err.to_string(), format!("{source}"), format!("{source:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***@127.0.0.1"), "{shown}");
    }
    // A token in the query string (GitLab's `private_token`) too.
    let spec = format!(
        "git+http://127.0.0.1:{}/policies.git?private_token=t0ken#main",
        cedar_edge_testkit::free_port()
    );
    let source = GitSource::parse(&spec, server.scratch("cache-query")).unwrap();
    let err = source.latest_commit().unwrap_err();
    for shown in [err.to_string(), format!("{source}"), format!("{source:?}")] {
        assert!(!shown.contains("t0ken"), "{shown}");
    }
}

#[test]
fn the_written_form_is_parsed_part_by_part() {
    let cache = std::env::temp_dir();
    let cases = [
        (
            "git+http://h/p.git#main:policies/airflow-gitlab",
            GitRef::Branch("main".into()),
            "policies/airflow-gitlab",
        ),
        (
            "git+https://h/p.git#branch=release/2:b/",
            GitRef::Branch("release/2".into()),
            "b",
        ),
        (
            "git+git://h/p.git#refs/heads/main",
            GitRef::Branch("main".into()),
            "",
        ),
        (
            "git+git://h/p.git#refs/tags/v3:bundle",
            GitRef::Tag("v3".into()),
            "bundle",
        ),
        (
            "git+ssh://git@h/p.git#tag=v3.1:a/b:c",
            GitRef::Tag("v3.1".into()),
            "a/b:c",
        ),
        (
            "git+file:///srv/p.git#main",
            GitRef::Branch("main".into()),
            "",
        ),
    ];
    for (spec, reference, subdir) in cases {
        let source = GitSource::parse(spec, &cache).unwrap_or_else(|err| panic!("{spec}: {err}"));
        assert_eq!(source.reference(), &reference, "{spec}");
        assert_eq!(source.subdir(), subdir, "{spec}");
        assert_eq!(source.url(), spec[4..spec.find('#').unwrap()].to_owned());
    }
    assert_eq!(
        GitSource::parse("git+git://h/p.git#tag=v3:bundle", &cache)
            .unwrap()
            .to_string(),
        "git+git://h/p.git#refs/tags/v3:bundle"
    );
}

#[test]
fn hostile_specs_are_refused_naming_the_part() {
    let cache = std::env::temp_dir();
    let cases = [
        ("http://h/p.git#main", SpecPart::Form),
        ("git+http://h/p.git", SpecPart::Form),
        ("git+ext::sh -c touch% /tmp/x#main", SpecPart::Url),
        ("git+h:p.git#main", SpecPart::Url),
        ("git+-u/x#main", SpecPart::Url),
        ("git+fd::3#main", SpecPart::Url),
        ("git+http://h/p .git#main", SpecPart::Url),
        ("git+http://h/p.git#--upload-pack=touch:b", SpecPart::Ref),
        ("git+http://h/p.git#-x", SpecPart::Ref),
        ("git+http://h/p.git#main..other", SpecPart::Ref),
        ("git+http://h/p.git#HEAD@{1}", SpecPart::Ref),
        ("git+http://h/p.git#main^", SpecPart::Ref),
        ("git+http://h/p.git#ma in", SpecPart::Ref),
        ("git+http://h/p.git#x.lock", SpecPart::Ref),
        ("git+http://h/p.git#.hidden", SpecPart::Ref),
        ("git+http://h/p.git#tag=", SpecPart::Ref),
        ("git+http://h/p.git#refs/notes/x", SpecPart::Ref),
        ("git+http://h/p.git#refs/heads/../x", SpecPart::Ref),
        ("git+http://h/p.git#main\u{7}", SpecPart::Ref),
        ("git+http://h/p.git#main:../outside", SpecPart::Subdir),
        ("git+http://h/p.git#main:a/../../outside", SpecPart::Subdir),
        ("git+http://h/p.git#main:/etc", SpecPart::Subdir),
        ("git+http://h/p.git#main:-rf", SpecPart::Subdir),
        ("git+http://h/p.git#main:a//b", SpecPart::Subdir),
        ("git+http://h/p.git#main:./a", SpecPart::Subdir),
        ("git+http://h/p.git#main:a\\..\\b", SpecPart::Subdir),
        ("git+http://h/p.git#main:", SpecPart::Subdir),
    ];
    for (spec, part) in cases {
        match GitSource::parse(spec, &cache) {
            Ok(source) => panic!("{spec} accepted as {source:?}"),
            Err(err) => {
                assert_eq!(err.part, part, "{spec}: {err}");
                assert!(
                    err.to_string()
                        .starts_with(&format!("invalid git source: {part} `")),
                    "{err}"
                );
            }
        }
    }
    // The same checks hold for a source built from parts.
    let err = GitSource::new("git://h/p.git", GitRef::Tag("-v".into()), "", &cache).unwrap_err();
    assert_eq!(err.part, SpecPart::Ref);
}

#[test]
fn only_full_commit_ids_are_checked_out() {
    let server = GitServer::start();
    let spec = format!("git+{}#main", server.url("policies.git"));
    let source = GitSource::parse(&spec, server.scratch("cache")).unwrap();
    for commit in [
        "HEAD",
        "main",
        "--upload-pack=touch",
        "0123abc",
        "0123456789abcdef0123456789abcdef0123456z",
        "",
    ] {
        let err = source.checkout(commit).unwrap_err();
        assert!(
            matches!(err, GitError::InvalidCommit { .. }),
            "{commit}: {err}"
        );
    }
    // Refused before git ran: no cache repository was made.
    assert!(!source.cache_dir().join("repo.git").exists());
}

#[test]
fn a_symbolic_link_leaving_the_folder_is_refused_by_the_export() {
    let (server, tree, _commit) = pushed_bundle();
    let secret = "SECRET-OUTSIDE-THE-BUNDLE";
    tree.write("private/secret.cedar", format!("// {secret}\n"));
    tree.symlink(
        &format!("{SUBDIR}/leak.cedar"),
        "../../private/secret.cedar",
    );
    let commit = tree.commit("a link out of the bundle");
    tree.push("HEAD:refs/heads/main");

    let source = source(&server, &format!("main:{SUBDIR}"));
    let err = source.checkout(&commit).unwrap_err();
    match &err {
        GitError::Export { path, reason, .. } => {
            assert_eq!(path, "leak.cedar");
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        other => panic!("expected an export error, got {other}"),
    }
    // Nothing of the refused export is left, and the secret was never written.
    let exports = source.cache_dir().join("exports");
    assert_eq!(std::fs::read_dir(&exports).unwrap().count(), 0);
    let grep = Command::new("grep")
        .args(["-r", "-l", secret])
        .arg(&exports)
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty());

    // A link to an absolute path is refused the same way.
    tree.remove(&format!("{SUBDIR}/leak.cedar"));
    tree.symlink(&format!("{SUBDIR}/passwd.cedar"), "/etc/passwd");
    let absolute = tree.commit("an absolute link");
    tree.push("HEAD:refs/heads/main");
    let err = source.checkout(&absolute).unwrap_err();
    assert!(
        matches!(&err, GitError::Export { path, .. } if path == "passwd.cedar"),
        "{err}"
    );
}

#[test]
fn exports_do_not_pile_up() {
    let (server, _tree, commit) = pushed_bundle();
    let source = source(&server, &format!("main:{SUBDIR}"));
    let exports = source.cache_dir().join("exports");
    // Left over by an earlier run of the gateway (another process id).
    let stale = exports.join("4294967295-0-0123456789ab");
    std::fs::create_dir_all(stale.join("nested")).unwrap();
    std::fs::write(stale.join("nested/old.cedar"), "old").unwrap();

    let count = || std::fs::read_dir(&exports).unwrap().count();
    let first = source.checkout(&commit).unwrap();
    assert!(!stale.exists(), "a stale export is removed");
    let second = source.checkout(&commit).unwrap();
    assert_eq!(count(), 2, "both live checkouts keep their files");
    drop(first);
    assert_eq!(count(), 1);
    drop(second);
    assert_eq!(count(), 0);
}

#[test]
fn an_export_larger_than_the_cap_is_refused() {
    let (server, _tree, commit) = pushed_bundle();
    let source = source(&server, &format!("main:{SUBDIR}")).with_max_export_bytes(2048);
    let err = source.checkout(&commit).unwrap_err();
    assert!(
        matches!(&err, GitError::Git { action: "archive", message, .. } if message.contains("2048")),
        "{err}"
    );
}

/// An SSH key pair made with `ssh-keygen`; gives the private key's path
/// and the public key line.
fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_owned())
}

#[test]
fn signed_commits_are_required_when_asked_for() {
    let (server, tree, unsigned) = pushed_bundle();
    let keys = server.scratch("keys");
    let (alice, alice_public) = ssh_key(&keys, "alice");
    let (mallory, _) = ssh_key(&keys, "mallory");
    let allowed = keys.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("alice@cedar-edge.invalid namespaces=\"git\" {alice_public}\n"),
    )
    .unwrap();
    let source = source(&server, &format!("main:{SUBDIR}")).require_signed_commits(&allowed);

    let err = source.checkout(&unsigned).unwrap_err();
    assert!(
        matches!(&err, GitError::Unsigned { commit, .. } if commit == &unsigned),
        "{err}"
    );

    tree.write(
        &format!("{SUBDIR}/signed.cedar"),
        "permit(principal, action, resource);\n",
    );
    let signed = tree.commit_signed("signed by alice", &alice);
    tree.push("HEAD:refs/heads/main");
    let checkout = source.checkout(&signed).unwrap();
    assert_eq!(checkout.signer(), Some("alice@cedar-edge.invalid"));
    assert!(checkout.dir().join("signed.cedar").is_file());
    // Without the requirement nobody is named.
    let plain = source_with_subdir(&server, SUBDIR)
        .checkout(&signed)
        .unwrap();
    assert_eq!(plain.signer(), None);

    tree.write(
        &format!("{SUBDIR}/forged.cedar"),
        "permit(principal, action, resource);\n",
    );
    let forged = tree.commit_signed("signed by an unknown key", &mallory);
    tree.push("HEAD:refs/heads/main");
    let err = source.checkout(&forged).unwrap_err();
    assert!(
        matches!(&err, GitError::Unsigned { commit, .. } if commit == &forged),
        "{err}"
    );
    // The refused commit left no files behind.
    drop((checkout, plain));
    assert_eq!(
        std::fs::read_dir(source.cache_dir().join("exports"))
            .unwrap()
            .count(),
        0
    );
}
