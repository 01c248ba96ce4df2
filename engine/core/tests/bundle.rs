//! Bundle reading, ids and hashing, through the core alone.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use cedar_edge_core::{
    Attributes, Bundle, BundleFile, BundleSource, RequestLimits, Value, ValueNode,
};

fn example() -> BundleSource {
    BundleSource::from_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/airflow-gitlab"),
    )
    .unwrap()
}

fn policies_only(files: &[(&str, &str)]) -> BundleSource {
    BundleSource {
        policies: files
            .iter()
            .map(|(path, contents)| BundleFile {
                path: (*path).to_owned(),
                contents: (*contents).to_owned(),
            })
            .collect(),
        ..BundleSource::default()
    }
}

#[test]
fn reading_a_directory_finds_each_role() {
    let source = example();
    let paths: Vec<_> = source
        .policies
        .iter()
        .map(|file| file.path.as_str())
        .collect();
    assert_eq!(paths, ["deploy.cedar", "roles.cedar"]);
    assert_eq!(source.schema.as_ref().unwrap().path, "airflow.cedarschema");
    assert_eq!(source.entities.as_ref().unwrap().path, "entities.json");
    assert_eq!(
        source.template_links.as_ref().unwrap().path,
        "template-links.json"
    );
}

#[test]
fn policy_ids_come_from_annotations_then_file_and_index() {
    let bundle = Bundle::load(&example(), RequestLimits::default()).unwrap();
    assert!(
        bundle
            .policy_ids()
            .contains(&"viewers-read-dags".to_owned())
    );
    assert!(
        bundle
            .policy_ids()
            .contains(&"ml-team-runs-staging".to_owned())
    );
    let plain = policies_only(&[(
        "team/a.cedar",
        "permit (principal, action, resource);\n@id(\"named\") forbid (principal, action, resource);\npermit (principal == ?principal, action, resource);\nforbid (principal, action, resource) when { false };",
    )]);
    let bundle = Bundle::load(&plain, RequestLimits::default()).unwrap();
    // Templates take part in the numbering but are not policies until linked.
    assert_eq!(
        bundle.policy_ids(),
        ["named", "team/a.cedar#0", "team/a.cedar#3"]
    );
    assert!(
        bundle
            .policies()
            .template(&cedar_policy::PolicyId::new("team/a.cedar#2"))
            .is_some()
    );
}

#[test]
fn the_bundle_id_is_a_stable_content_hash() {
    let one = example();
    let id = one.content_hash().unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
    assert_eq!(example().content_hash().unwrap(), id);
    assert_eq!(
        Bundle::load(&one, RequestLimits::default()).unwrap().id(),
        id
    );

    let mut changed = example();
    changed.policies[0].contents.push(' ');
    assert_ne!(changed.content_hash().unwrap(), id);

    // Moving text from one file to the other changes the id too.
    let joined = policies_only(&[(
        "a.cedar",
        "permit (principal, action, resource);forbid (principal, action, resource);",
    )]);
    let split = policies_only(&[
        ("a.cedar", "permit (principal, action, resource);"),
        ("b.cedar", "forbid (principal, action, resource);"),
    ]);
    assert_ne!(
        joined.content_hash().unwrap(),
        split.content_hash().unwrap()
    );
}

#[test]
fn every_broken_file_is_reported_at_once() {
    let source = policies_only(&[
        ("a.cedar", "permit (principal, action, resource)"),
        (
            "b.cedar",
            "\n\npermit (principal, action, resource) when { 1 + };",
        ),
    ]);
    let err = Bundle::load(&source, RequestLimits::default()).unwrap_err();
    let files: Vec<_> = err
        .diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.line))
        .collect();
    assert!(files.contains(&("a.cedar", 1)), "{err}");
    assert!(files.contains(&("b.cedar", 3)), "{err}");
    assert!(err.to_string().contains("b.cedar:3:"), "{err}");
}

#[test]
fn a_bad_template_link_names_the_link() {
    let mut source = example();
    source.template_links.as_mut().unwrap().contents =
        r#"[{"template_id": "no-such-template", "link_id": "broken", "args": {}}]"#.to_owned();
    let err = Bundle::load(&source, RequestLimits::default()).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_eq!(err.diagnostics[0].file, "template-links.json");
    assert!(err.diagnostics[0].message.contains("broken"), "{err}");

    source.template_links.as_mut().unwrap().contents =
        r#"[{"template_id": "x", "link": "y", "args": {}}]"#.to_owned();
    let err = Bundle::load(&source, RequestLimits::default()).unwrap_err();
    assert!(
        err.diagnostics[0].message.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn values_flatten_children_first() {
    let attributes = Attributes::from_fields([(
        "outer".to_owned(),
        Value::Record(vec![(
            "inner".to_owned(),
            Value::Set(vec![Value::Long(1), Value::Bool(true)]),
        )]),
    )]);
    assert_eq!(
        attributes.nodes,
        vec![
            ValueNode::Long(1),
            ValueNode::Bool(true),
            ValueNode::Set(vec![0, 1]),
            ValueNode::Record(vec![("inner".to_owned(), 2)]),
        ]
    );
    assert_eq!(attributes.fields, vec![("outer".to_owned(), 3)]);
    let from_json =
        Attributes::from_json(&serde_json::json!({"outer": {"inner": [1, true]}})).unwrap();
    assert_eq!(from_json, attributes);
    assert!(
        Attributes::from_json(&serde_json::json!({"x": 1.5}))
            .unwrap_err()
            .message
            .contains("`x`")
    );
}
