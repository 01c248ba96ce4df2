//! The plugin configuration, natively: the bundle inline beside the
//! mapping, loaded once, with the same id as the bundle directory.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use cedar_edge_core::{Bundle, BundleSource, RequestLimits};
use cedar_edge_envoy_filter::config::{load, plugin_config};
use serde_json::json;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn airflow() -> (BundleSource, serde_json::Value) {
    let source = BundleSource::from_dir(&repo().join("policies/airflow-gitlab")).unwrap();
    let mapping = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("host-examples/envoy-filter/examples/airflow-mapping.json"),
        )
        .unwrap(),
    )
    .unwrap();
    (source, mapping)
}

#[test]
fn an_inline_bundle_has_the_id_of_its_directory() {
    let (source, mapping) = airflow();
    let directory = Bundle::load(&source, RequestLimits::default()).unwrap();
    let config = plugin_config(&source, &mapping);
    let inline = load(config.to_string().as_bytes()).unwrap();
    assert_eq!(inline.bundle().id(), directory.id());
    // Re-serialised JSON is a different file, so a different bundle: the
    // renderer must keep each file's exact text.
    let mut reformatted = config.clone();
    let entities: serde_json::Value =
        serde_json::from_str(config["bundle"]["entities"].as_str().unwrap()).unwrap();
    reformatted["bundle"]["entities"] = entities;
    let other = load(reformatted.to_string().as_bytes()).unwrap();
    assert_ne!(other.bundle().id(), directory.id());
}

#[test]
fn a_broken_bundle_and_a_broken_mapping_are_reported_together() {
    let (source, mapping) = airflow();
    let mut config = plugin_config(&source, &mapping);
    config["bundle"]["policies"]["roles.cedar"] =
        json!("permit (principal, action, resource) when { ;");
    config["routes"]["routes"][1]["resource"]["id"] = json!("{missing}");
    let text = load(config.to_string().as_bytes()).unwrap_err().to_string();
    assert!(text.contains("roles.cedar:1:"), "{text}");
    assert!(text.contains("{missing}"), "{text}");
}

#[test]
fn the_shipped_configuration_refuses_the_bench_stage_key() {
    // Only the bench build (feature `bench-stages`) takes `bench_stage`
    // out before loading; anywhere else the key is unknown, so no
    // configuration can make the shipped module skip its decision.
    let (source, mapping) = airflow();
    let mut config = plugin_config(&source, &mapping);
    config["bench_stage"] = json!("continue");
    let text = load(config.to_string().as_bytes()).unwrap_err().to_string();
    assert!(text.contains("bench_stage"), "{text}");
}

#[test]
fn a_configuration_without_a_bundle_is_refused() {
    let (_, mapping) = airflow();
    let text = load(mapping.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(text.contains("`bundle`"), "{text}");
}

#[test]
fn policies_nested_too_deep_are_refused_with_their_place() {
    let (source, mapping) = airflow();
    let mut config = plugin_config(&source, &mapping);
    for depth in [150, 10_000] {
        config["bundle"]["policies"][format!("deep-{depth}.cedar")] = json!(format!(
            "permit (principal, action, resource)\nwhen {{ {}true{} }};\n",
            "(".repeat(depth),
            ")".repeat(depth)
        ));
    }
    let text = load(config.to_string().as_bytes()).unwrap_err().to_string();
    for file in ["deep-150.cedar:2:", "deep-10000.cedar:2:"] {
        assert!(text.contains(file), "{text}");
    }
    assert!(text.contains("nested more than"), "{text}");
}

#[test]
fn only_the_properties_the_mapping_reads_are_fetched() {
    use cedar_edge_envoy_filter::config::Reads;
    let (_, mapping) = airflow();
    let config = serde_json::from_value(mapping).unwrap();
    // The airflow mapping's context: `source_address` and `token_age`.
    assert_eq!(
        Reads::of(&config),
        Reads {
            source_address: true,
            peer_identity: false,
            clock: true,
        }
    );
    let bare = serde_json::from_value(json!({
        "identity": {"principal_type": "A::User"},
        "routes": {"action_type": "A::Action", "routes": []},
        "context": [{"name": "peer", "from": "peer_identity"}]
    }))
    .unwrap();
    assert_eq!(
        Reads::of(&bare),
        Reads {
            peer_identity: true,
            ..Reads::default()
        }
    );
}

/// A packed, signed bundle as `cedar-edge envoy-config` writes it.
fn signed_config(
    key: &cedar_edge_signing::SigningKey,
    trusted: &[String],
) -> (serde_json::Value, Vec<u8>) {
    let (source, mapping) = airflow();
    let packed = source.pack().unwrap();
    let signature = cedar_edge_signing::encode_signature(&key.sign(&packed));
    let config = cedar_edge_envoy_filter::config::packed_plugin_config(
        &packed,
        Some(&signature),
        trusted,
        &mapping,
    );
    (config, packed)
}

#[test]
fn a_packed_signed_bundle_loads_with_its_directorys_id_and_every_forgery_is_refused() {
    use base64::Engine as _;
    use cedar_edge_signing::{Algorithm, SigningKey};
    let base64 = base64::engine::general_purpose::STANDARD;
    let ci = SigningKey::generate(Algorithm::EcdsaP256);
    let trusted = vec![ci.public_key().to_pem()];
    let (config, packed) = signed_config(&ci, &trusted);
    let (source, _) = airflow();
    let directory = Bundle::load(&source, RequestLimits::default()).unwrap();
    let loaded = load(config.to_string().as_bytes()).unwrap();
    assert_eq!(loaded.bundle().id(), directory.id());
    assert_eq!(config["bundle"]["digest"], directory.id());

    let refused = |config: &serde_json::Value| match load(config.to_string().as_bytes()) {
        Ok(_) => panic!("accepted: {}", config["bundle"]),
        Err(err) => err.to_string(),
    };
    // One flipped byte (the pin dropped, so the signature is what catches it).
    let mut flipped = packed.clone();
    flipped[packed.len() / 2] ^= 0x01;
    let mut tampered = config.clone();
    tampered["bundle"]["packed"] = json!(base64.encode(&flipped));
    tampered["bundle"].as_object_mut().unwrap().remove("digest");
    let err = refused(&tampered);
    assert!(
        err.contains("`bundle.signature`") && err.contains("changed after signing"),
        "{err}"
    );
    // The pin catches it first when present.
    let mut pinned = tampered.clone();
    pinned["bundle"]["digest"] = config["bundle"]["digest"].clone();
    assert!(refused(&pinned).contains("`bundle.digest` pins"));
    // Signed by another key.
    let (strangers, _) = signed_config(&SigningKey::generate(Algorithm::Ed25519), &trusted);
    assert!(refused(&strangers).contains("none of the 1 trusted key"));
    // No signature at all.
    let mut unsigned = config.clone();
    unsigned["bundle"]
        .as_object_mut()
        .unwrap()
        .remove("signature");
    assert!(refused(&unsigned).contains("unsigned"));
    // Inline files carry no signature: refused when keys are trusted.
    let mut inline = plugin_config(&source, &json!({}));
    for (key, value) in config.as_object().unwrap() {
        if key != "bundle" {
            inline[key] = value.clone();
        }
    }
    assert!(refused(&inline).contains("inline files carry no signature"));
    // A key that is not a key is named by its place.
    let mut bad_key = config.clone();
    bad_key["trusted_keys"] = json!(["not a key"]);
    assert!(refused(&bad_key).contains("`trusted_keys[0]`"));
}
