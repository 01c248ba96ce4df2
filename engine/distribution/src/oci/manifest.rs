//! The two manifests this module writes and reads: a bundle's, and its
//! signature's. Each holds exactly one layer and the OCI empty config.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::reference::check_digest;

/// The only manifest format written or accepted.
pub(crate) const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The manifest's `artifactType` for a packed bundle.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.cedar-edge.bundle.v1";
/// The media type of the single layer holding the packed bundle.
pub const BUNDLE_LAYER_MEDIA_TYPE: &str = "application/vnd.cedar-edge.bundle.v1+tar";
/// The manifest's `artifactType` for a bundle's signature.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cedar-edge.bundle.signature.v1";
/// The media type of the single layer holding the signature (base64 text).
pub const SIGNATURE_LAYER_MEDIA_TYPE: &str =
    "application/vnd.cedar-edge.bundle.signature.v1+base64";

/// The OCI empty descriptor's media type: artifacts with no config use it.
pub(crate) const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The OCI empty descriptor's content.
pub(crate) const EMPTY_CONTENT: &[u8] = b"{}";

/// `sha256:HEX` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A manifest ready to push: its exact bytes and their digest.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub layer_digest: String,
}

/// A manifest as written: fields in this declared order, whatever features
/// `serde_json` was built with.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: DescriptorOut<'a>,
    layers: [DescriptorOut<'a>; 1],
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorOut<'a> {
    media_type: &'a str,
    digest: String,
    size: usize,
}

/// Writes the manifest of an artifact with one layer.
///
/// The manifest holds only what the layer determines (no timestamps, no
/// annotations), and its keys are written in the structs' declared order
/// (not a map's, whose order depends on `serde_json`'s features), so the
/// same layer always gives the same manifest digest: pushing a bundle twice
/// moves nothing, and the signature tag stays valid.
pub(crate) fn encode(artifact_type: &str, layer_media_type: &str, layer: &[u8]) -> Encoded {
    let layer_digest = sha256_digest(layer);
    let manifest = ManifestOut {
        schema_version: 2,
        media_type: IMAGE_MANIFEST,
        artifact_type,
        config: DescriptorOut {
            media_type: EMPTY_MEDIA_TYPE,
            digest: sha256_digest(EMPTY_CONTENT),
            size: EMPTY_CONTENT.len(),
        },
        layers: [DescriptorOut {
            media_type: layer_media_type,
            digest: layer_digest.clone(),
            size: layer.len(),
        }],
    };
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    Encoded {
        digest: sha256_digest(&bytes),
        bytes,
        layer_digest,
    }
}

/// A descriptor as read from a manifest. Unknown fields, here and in the
/// manifest, are ignored: other tools add annotations, and nothing here
/// depends on them. The config is not read either: it is never fetched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: Option<String>,
    artifact_type: Option<String>,
    layers: Vec<Descriptor>,
}

/// Reads a manifest from an untrusted registry and returns its single
/// layer, or why it is not an artifact of the expected type.
///
/// The layer's digest is checked for shape here, before it is used in a
/// URL, and its size is returned as declared, for the caller's cap.
pub(crate) fn single_layer(
    bytes: &[u8],
    artifact_type: &str,
    layer_media_type: &str,
) -> Result<Descriptor, String> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|err| format!("the manifest is not an OCI image manifest: {err}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "schema version {}, expected 2",
            manifest.schema_version
        ));
    }
    match manifest.media_type.as_deref() {
        Some(IMAGE_MANIFEST) => {}
        Some(other) => {
            return Err(format!("media type `{other}`, expected `{IMAGE_MANIFEST}`"));
        }
        None => return Err(format!("no media type, expected `{IMAGE_MANIFEST}`")),
    }
    match manifest.artifact_type.as_deref() {
        Some(found) if found == artifact_type => {}
        Some(other) => {
            return Err(format!(
                "artifact type `{other}`, expected `{artifact_type}`"
            ));
        }
        None => return Err(format!("no artifact type, expected `{artifact_type}`")),
    }
    let layer = match <[Descriptor; 1]>::try_from(manifest.layers) {
        Ok([layer]) => layer,
        Err(layers) => {
            return Err(format!("{} layers, expected exactly one", layers.len()));
        }
    };
    if layer.media_type != layer_media_type {
        return Err(format!(
            "layer media type `{}`, expected `{layer_media_type}`",
            layer.media_type
        ));
    }
    check_digest(&layer.digest).map_err(|reason| format!("layer: {reason}"))?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_same_layer_gives_the_same_manifest_and_another_layer_another() {
        let first = encode(BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, b"bundle one");
        let again = encode(BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, b"bundle one");
        let other = encode(BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE, b"bundle two");
        assert_eq!(first.bytes, again.bytes);
        assert_eq!(first.digest, again.digest);
        assert_ne!(first.digest, other.digest);
        assert_eq!(first.digest, sha256_digest(&first.bytes));
        assert_eq!(first.layer_digest, sha256_digest(b"bundle one"));
        let text = String::from_utf8(first.bytes).unwrap();
        assert!(!text.contains("created"), "{text}");
    }

    #[test]
    fn reads_back_what_it_writes() {
        let encoded = encode(SIGNATURE_ARTIFACT_TYPE, SIGNATURE_LAYER_MEDIA_TYPE, b"c2ln");
        let layer = single_layer(
            &encoded.bytes,
            SIGNATURE_ARTIFACT_TYPE,
            SIGNATURE_LAYER_MEDIA_TYPE,
        )
        .unwrap();
        assert_eq!(layer.digest, encoded.layer_digest);
        assert_eq!(layer.size, 4);
        assert_eq!(layer.media_type, SIGNATURE_LAYER_MEDIA_TYPE);
    }

    fn refusal(json: serde_json::Value) -> String {
        let bytes = json.to_string().into_bytes();
        match single_layer(&bytes, BUNDLE_ARTIFACT_TYPE, BUNDLE_LAYER_MEDIA_TYPE) {
            Ok(layer) => panic!("accepted {layer:?}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn refuses_manifests_of_other_shapes() {
        let layer = |media_type: &str, digest: &str| serde_json::json!({"mediaType": media_type, "digest": digest, "size": 3});
        let good_digest = sha256_digest(b"abc");
        let good_layer = layer(BUNDLE_LAYER_MEDIA_TYPE, &good_digest);
        let manifest = |media_type: serde_json::Value,
                        artifact_type: serde_json::Value,
                        layers: Vec<serde_json::Value>| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type,
                "artifactType": artifact_type,
                "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": sha256_digest(b"{}"), "size": 2},
                "layers": layers,
            })
        };
        let cases = [
            (
                manifest(
                    IMAGE_MANIFEST.into(),
                    "application/x-other".into(),
                    vec![good_layer.clone()],
                ),
                "artifact type `application/x-other`",
            ),
            (
                manifest(
                    IMAGE_MANIFEST.into(),
                    serde_json::Value::Null,
                    vec![good_layer.clone()],
                ),
                "no artifact type",
            ),
            (
                manifest(
                    "application/vnd.oci.image.index.v1+json".into(),
                    BUNDLE_ARTIFACT_TYPE.into(),
                    vec![good_layer.clone()],
                ),
                "media type `application/vnd.oci.image.index.v1+json`",
            ),
            (
                manifest(IMAGE_MANIFEST.into(), BUNDLE_ARTIFACT_TYPE.into(), vec![]),
                "0 layers",
            ),
            (
                manifest(
                    IMAGE_MANIFEST.into(),
                    BUNDLE_ARTIFACT_TYPE.into(),
                    vec![good_layer.clone(), good_layer.clone()],
                ),
                "2 layers",
            ),
            (
                manifest(
                    IMAGE_MANIFEST.into(),
                    BUNDLE_ARTIFACT_TYPE.into(),
                    vec![layer(
                        "application/vnd.oci.image.layer.v1.tar",
                        &good_digest,
                    )],
                ),
                "layer media type `application/vnd.oci.image.layer.v1.tar`",
            ),
            (
                manifest(
                    IMAGE_MANIFEST.into(),
                    BUNDLE_ARTIFACT_TYPE.into(),
                    vec![layer(BUNDLE_LAYER_MEDIA_TYPE, "sha256:../../x")],
                ),
                "is not a digest",
            ),
        ];
        for (json, expected) in cases {
            let reason = refusal(json.clone());
            assert!(
                reason.contains(expected),
                "{json}: `{reason}` lacks `{expected}`"
            );
        }
        assert!(
            refusal(serde_json::json!({"schemaVersion": 1})).contains("not an OCI image manifest")
        );
    }
}
