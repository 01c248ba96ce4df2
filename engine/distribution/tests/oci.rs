//! Bundles through a real OCI registry (the CNCF distribution registry on
//! loopback, one per test): round trips by tag and by digest, signatures,
//! tag moves, and a registry that lies, tampers, serves the wrong thing or
//! goes away.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cedar_edge_distribution::oci::{
    self, BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, OciError, Reference, RegistryOptions,
};
use cedar_edge_testkit::registry::Registry;
use sha2::{Digest as _, Sha256};

fn options(registry: &Registry) -> RegistryOptions {
    RegistryOptions::default().with_plain_http(registry.host())
}

fn reference(registry: &Registry, path: &str) -> Reference {
    format!("oci://{}/{path}", registry.host())
        .parse()
        .expect("a valid reference")
}

/// Bytes standing in for a packed bundle: `len` bytes derived from `seed`,
/// so two seeds give two different artifacts.
fn artifact(seed: &str, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while bytes.len() < len {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    bytes.truncate(len);
    bytes
}

fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn flip_byte_at(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read the stored blob");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write the stored blob");
}

#[tokio::test]
async fn push_then_pull_by_tag_and_by_digest_gives_the_same_bytes() {
    let registry = Registry::start();
    let options = options(&registry);
    let bundle = artifact("round trip", 70_000);
    let v1 = reference(&registry, "team/policies:v1");

    let pushed = oci::push(&v1, &bundle, None, &options).await.unwrap();
    assert_eq!(pushed.bundle_id, sha256_id(&bundle));
    assert_eq!(pushed.signature, None);

    let by_tag = oci::pull(&v1, &options).await.unwrap();
    assert_eq!(by_tag.artifact, bundle);
    assert_eq!(by_tag.bundle_id, sha256_id(&by_tag.artifact));
    assert_eq!(by_tag.manifest_digest, pushed.manifest_digest);
    assert_eq!(by_tag.signature, None);

    let pinned = v1.with_digest(&pushed.manifest_digest).unwrap();
    let by_digest = oci::pull(&pinned, &options).await.unwrap();
    assert_eq!(by_digest, by_tag);
    assert_eq!(
        oci::resolve(&v1, &options).await.unwrap(),
        pushed.manifest_digest
    );

    // The same artifact again, to the same tag and to another: one digest.
    let again = oci::push(&v1, &bundle, None, &options).await.unwrap();
    let elsewhere = reference(&registry, "other/repo:copy");
    let copied = oci::push(&elsewhere, &bundle, None, &options)
        .await
        .unwrap();
    assert_eq!(again, pushed);
    assert_eq!(copied.manifest_digest, pushed.manifest_digest);
    // Pushing by that digest is the same manifest, so it is accepted.
    oci::push(&pinned, &bundle, None, &options).await.unwrap();

    // A different artifact is a different manifest, and cannot be pushed
    // under the first one's digest.
    let other = artifact("another bundle", 70_000);
    let other_pushed = oci::push(&elsewhere, &other, None, &options).await.unwrap();
    assert_ne!(other_pushed.manifest_digest, pushed.manifest_digest);
    let err = oci::push(&pinned, &other, None, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::ManifestDigestMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_signature_travels_with_its_bundle_and_only_with_it() {
    let registry = Registry::start();
    let options = options(&registry);
    let bundle = artifact("signed", 3_000);
    let signature = b"MEUCIQDx0Qm2xq1Xb1+fake+signature+base64+text==".to_vec();
    let signed = reference(&registry, "policies:signed");

    let pushed = oci::push(&signed, &bundle, Some(&signature), &options)
        .await
        .unwrap();
    let hex = pushed.manifest_digest.trim_start_matches("sha256:");
    assert_eq!(
        pushed.signature.as_ref().map(ToString::to_string),
        Some(format!(
            "oci://{}/policies:sha256-{hex}.sig",
            registry.host()
        ))
    );
    let pulled = oci::pull(&signed, &options).await.unwrap();
    assert_eq!(pulled.artifact, bundle);
    assert_eq!(pulled.signature.as_deref(), Some(signature.as_slice()));
    let by_digest = signed.with_digest(&pushed.manifest_digest).unwrap();
    assert_eq!(
        oci::pull(&by_digest, &options).await.unwrap().signature,
        Some(signature.clone())
    );

    // Another artifact, unsigned, under the same tag: the old signature
    // belongs to the old manifest and is not handed out with the new one.
    let unsigned = artifact("unsigned", 3_000);
    oci::push(&signed, &unsigned, None, &options).await.unwrap();
    let pulled = oci::pull(&signed, &options).await.unwrap();
    assert_eq!(pulled.artifact, unsigned);
    assert_eq!(pulled.signature, None);

    // A signature over the cap is refused before anything is pushed.
    let huge = vec![b'A'; 64 * 1024 + 1];
    let err = oci::push(&signed, &bundle, Some(&huge), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                what: "signature",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        oci::pull(&signed, &options).await.unwrap().artifact,
        unsigned
    );
}

#[tokio::test]
async fn resolve_follows_a_moving_tag() {
    let registry = Registry::start();
    let options = options(&registry);
    let live = reference(&registry, "policies:live");

    let first = oci::push(&live, &artifact("first", 500), None, &options)
        .await
        .unwrap();
    let before = oci::resolve(&live, &options).await.unwrap();
    assert_eq!(before, first.manifest_digest);

    let second = oci::push(&live, &artifact("second", 500), None, &options)
        .await
        .unwrap();
    let after = oci::resolve(&live, &options).await.unwrap();
    assert_ne!(after, before);
    assert_eq!(after, second.manifest_digest);
    assert_eq!(
        oci::pull(&live, &options).await.unwrap().artifact,
        artifact("second", 500)
    );

    let missing = reference(&registry, "policies:never-pushed");
    let err = oci::resolve(&missing, &options).await.unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    let err = oci::pull(&missing, &options).await.unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("manifest `{missing}` not found"),
        "{err}"
    );
}

#[tokio::test]
async fn a_tampered_layer_is_refused() {
    let registry = Registry::start();
    let options = options(&registry);
    let tagged = reference(&registry, "policies:v1");
    let bundle = artifact("tampered", 10_000);
    let pushed = oci::push(&tagged, &bundle, None, &options).await.unwrap();
    oci::pull(&tagged, &options).await.unwrap();

    flip_byte_at(&registry.blob_file(&pushed.bundle_id), 5_000);
    let err = oci::pull(&tagged, &options).await.unwrap_err();
    let OciError::LayerDigestMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected a layer digest mismatch, got {err:?}");
    };
    assert_eq!(expected, &pushed.bundle_id);
    let mut flipped = bundle.clone();
    flipped[5_000] ^= 0x01;
    assert_eq!(actual, &sha256_id(&flipped));
    assert!(err.to_string().contains("layer digest mismatch"), "{err}");
}

#[tokio::test]
async fn a_tampered_manifest_is_refused() {
    let registry = Registry::start();
    let options = options(&registry);
    let tagged = reference(&registry, "policies:v1");
    let pushed = oci::push(&tagged, &artifact("manifest", 100), None, &options)
        .await
        .unwrap();
    let pinned = tagged.with_digest(&pushed.manifest_digest).unwrap();
    oci::pull(&pinned, &options).await.unwrap();

    // Change one letter inside a string of the stored manifest, so it is
    // still JSON the registry serves, but no longer what the digest names.
    let file = registry.blob_file(&pushed.manifest_digest);
    let stored = std::fs::read(&file).unwrap();
    let at = stored
        .windows(b"cedar-edge".len())
        .position(|window| window == b"cedar-edge")
        .expect("the manifest names its artifact type");
    flip_byte_at(&file, at);

    for asked in [&pinned, &tagged] {
        let err = oci::pull(asked, &options).await.unwrap_err();
        assert!(
            matches!(err, OciError::ManifestDigestMismatch { .. }),
            "{asked}: {err:?}"
        );
        assert!(
            err.to_string().contains("manifest digest mismatch"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_artifact_over_the_cap_is_refused_before_downloading() {
    let registry = Registry::start();
    let options = options(&registry);
    let tagged = reference(&registry, "policies:big");
    let pushed = oci::push(&tagged, &artifact("big", 4_096), None, &options)
        .await
        .unwrap();

    // With the blob gone from storage, any attempt to download it would
    // fail differently: the refusal must come from the manifest alone.
    std::fs::remove_file(registry.blob_file(&pushed.bundle_id)).unwrap();
    let small = RegistryOptions {
        max_artifact_bytes: 4_095,
        ..options.clone()
    };
    let err = oci::pull(&tagged, &small).await.unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                what: "bundle",
                size: 4_096,
                limit: 4_095,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    // At the cap it is accepted, and then the download is attempted.
    let exact = RegistryOptions {
        max_artifact_bytes: 4_096,
        ..options.clone()
    };
    let err = oci::pull(&tagged, &exact).await.unwrap_err();
    assert!(!matches!(err, OciError::TooLarge { .. }), "{err:?}");

    // Pushing over the cap is refused too.
    let err = oci::push(&tagged, &artifact("big", 4_096), None, &small)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn manifests_of_other_artifacts_are_not_bundles() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
    use oci_client::secrets::RegistryAuth;

    let registry = Registry::start();
    let options = options(&registry);
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.host()]),
        ..Default::default()
    });
    let empty_config = || {
        Config::new(
            b"{}".to_vec(),
            "application/vnd.oci.empty.v1+json".to_owned(),
            None,
        )
    };
    let layer =
        |data: &[u8], media_type: &str| ImageLayer::new(data.to_vec(), media_type.to_owned(), None);
    let image_layer = || ImageLayer::oci_v1(b"not a bundle".to_vec(), None);
    // (tag, layers, config, manifest media type, artifact type, expected reason)
    let cases = [
        (
            "image",
            vec![image_layer()],
            Config::oci_v1(b"{}".to_vec(), None),
            Some(OCI_IMAGE_MEDIA_TYPE),
            None,
            "no artifact type".to_owned(),
        ),
        (
            "untyped",
            vec![image_layer()],
            Config::oci_v1(b"{}".to_vec(), None),
            None,
            None,
            "no media type".to_owned(),
        ),
        (
            "wasm",
            vec![layer(b"\0asm", "application/vnd.example.wasm.v1+wasm")],
            empty_config(),
            Some(OCI_IMAGE_MEDIA_TYPE),
            Some("application/vnd.example.wasm.v1"),
            "artifact type `application/vnd.example.wasm.v1`".to_owned(),
        ),
        (
            "twice",
            vec![
                layer(b"one half", BUNDLE_LAYER_MEDIA_TYPE),
                layer(b"other half", BUNDLE_LAYER_MEDIA_TYPE),
            ],
            empty_config(),
            Some(OCI_IMAGE_MEDIA_TYPE),
            Some(BUNDLE_ARTIFACT_TYPE),
            "2 layers, expected exactly one".to_owned(),
        ),
        (
            "container-layer",
            vec![image_layer()],
            empty_config(),
            Some(OCI_IMAGE_MEDIA_TYPE),
            Some(BUNDLE_ARTIFACT_TYPE),
            "layer media type `application/vnd.oci.image.layer.v1.tar`".to_owned(),
        ),
    ];
    for (tag, layers, config, media_type, artifact_type, expected) in cases {
        let at = reference(&registry, &format!("other:{tag}"));
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = media_type.map(str::to_owned);
        manifest.artifact_type = artifact_type.map(str::to_owned);
        let target: oci_client::Reference =
            format!("{}/other:{tag}", registry.host()).parse().unwrap();
        client
            .push(
                &target,
                &layers,
                config,
                &RegistryAuth::Anonymous,
                Some(manifest),
            )
            .await
            .unwrap();
        let err = oci::pull(&at, &options).await.unwrap_err();
        assert!(matches!(err, OciError::NotABundle { .. }), "{tag}: {err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("`{at}` is not a cedar-edge bundle: ")),
            "{message}"
        );
        assert!(
            message.contains(&expected),
            "{tag}: `{message}` lacks `{expected}`"
        );
    }
}

#[tokio::test]
async fn a_registry_that_goes_away_is_unreachable_until_it_is_back() {
    let mut registry = Registry::start();
    let options = options(&registry);
    let tagged = reference(&registry, "policies:v1");
    let bundle = artifact("down and back", 2_000);
    let pushed = oci::push(&tagged, &bundle, None, &options).await.unwrap();

    registry.stop();
    let err = oci::pull(&tagged, &options).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("registry `{}` unreachable: ", registry.host())),
        "{err}"
    );
    let err = oci::resolve(&tagged, &options).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");

    registry.restart();
    let pulled = oci::pull(&tagged, &options).await.unwrap();
    assert_eq!(pulled.artifact, bundle);
    assert_eq!(pulled.manifest_digest, pushed.manifest_digest);
}

#[tokio::test]
async fn plain_http_is_used_only_when_asked() {
    let registry = Registry::start();
    let tagged = reference(&registry, "policies:v1");
    let https_only = RegistryOptions::default();
    let err = oci::push(&tagged, &artifact("tls", 100), None, &https_only)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    let err = oci::pull(&tagged, &https_only).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    // The same registry answers once plain HTTP is allowed for it.
    oci::push(&tagged, &artifact("tls", 100), None, &options(&registry))
        .await
        .unwrap();
}
