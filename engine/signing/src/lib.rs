//! Signatures over packed bundles.
//!
//! The format is cosign's `sign-blob` with a key pair: the signature is the
//! base64 of an ECDSA P-256 / SHA-256 signature (ASN.1 DER) or of an
//! Ed25519 signature over the packed bundle's bytes, and keys are PEM:
//! PKCS#8 private keys, SubjectPublicKeyInfo public keys (cosign's
//! `cosign.pub` is one). A P-256 signature is a signature over the SHA-256
//! of the bundle, which is its id. So a team that already signs with cosign
//! can sign a bundle with `cosign sign-blob --key cosign.key bundle.tar`
//! and trust `cosign.pub` here, and `cosign verify-blob --key` checks a
//! signature made here: no new format, no transparency log needed offline.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use p256::pkcs8::LineEnding;
use sha2::{Digest, Sha256};

/// The largest signature text read: base64 of a DER ECDSA signature is
/// under 100 bytes; this leaves room for whitespace, not for abuse.
pub const MAX_SIGNATURE_BYTES: usize = 4096;

/// A key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256: cosign's default.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl Algorithm {
    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        match text {
            "ecdsa-p256" | "p256" | "ecdsa" => Ok(Self::EcdsaP256),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(KeyError(format!(
                "unknown key algorithm `{other}` (use `ecdsa-p256` or `ed25519`)"
            ))),
        }
    }
}

/// A key that cannot be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A public key that verifies bundle signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
    fingerprint: String,
}

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm().name(), self.fingerprint)
    }
}

impl PublicKey {
    fn new(inner: PublicInner) -> Self {
        let der = match &inner {
            PublicInner::P256(key) => key.to_public_key_der().map(|der| der.into_vec()),
            PublicInner::Ed25519(key) => key.to_public_key_der().map(|der| der.into_vec()),
        };
        let fingerprint = format!("sha256:{}", hex(&Sha256::digest(der.unwrap_or_default())));
        Self { inner, fingerprint }
    }

    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of either algorithm.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(Self::new(PublicInner::P256(key)));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Ok(Self::new(PublicInner::Ed25519(key)));
        }
        Err(KeyError(
            "not a PEM public key (`-----BEGIN PUBLIC KEY-----`) for ECDSA P-256 or Ed25519"
                .to_owned(),
        ))
    }

    /// The key as PEM, as `cedar-edge keygen` writes it.
    pub fn to_pem(&self) -> String {
        let pem = match &self.inner {
            PublicInner::P256(key) => key.to_public_key_pem(LineEnding::LF),
            PublicInner::Ed25519(key) => key.to_public_key_pem(LineEnding::LF),
        };
        pem.unwrap_or_default()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            PublicInner::P256(_) => Algorithm::EcdsaP256,
            PublicInner::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// `sha256:` and the hex SHA-256 of the key's DER encoding: how reports
    /// name a signer whatever the key file was called.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` (raw, not base64) signs `artifact` with this key.
    pub fn verifies(&self, artifact: &[u8], signature: &[u8]) -> bool {
        match &self.inner {
            PublicInner::P256(key) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_der(signature)
                    .is_ok_and(|signature| key.verify(artifact, &signature).is_ok())
            }
            PublicInner::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(artifact, &signature).is_ok()),
        }
    }
}

/// A private key that signs bundles.
#[derive(Clone)]
pub struct SigningKey {
    inner: PrivateInner,
}

#[derive(Clone)]
enum PrivateInner {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "private {:?}", self.public_key())
    }
}

impl SigningKey {
    /// A new key from the operating system's randomness.
    #[cfg(feature = "keygen")]
    pub fn generate(algorithm: Algorithm) -> Self {
        let mut rng = rand_core::OsRng;
        let inner = match algorithm {
            Algorithm::EcdsaP256 => PrivateInner::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::Ed25519 => {
                PrivateInner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng))
            }
        };
        Self { inner }
    }

    /// Reads a PEM `PRIVATE KEY` (unencrypted PKCS#8) of either algorithm.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
            return Ok(Self {
                inner: PrivateInner::P256(key),
            });
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Ok(Self {
                inner: PrivateInner::Ed25519(key),
            });
        }
        let hint = if text.contains("ENCRYPTED") {
            " (an encrypted key: cosign's own key files are; sign with `cosign sign-blob` instead, or export the key unencrypted)"
        } else {
            ""
        };
        Err(KeyError(format!(
            "not an unencrypted PKCS#8 PEM private key for ECDSA P-256 or Ed25519{hint}"
        )))
    }

    /// The key as unencrypted PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        use p256::pkcs8::EncodePrivateKey as _;
        let pem = match &self.inner {
            PrivateInner::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
            PrivateInner::Ed25519(key) => key.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|pem| pem.to_string()).unwrap_or_default()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            PrivateInner::P256(key) => PublicKey::new(PublicInner::P256(*key.verifying_key())),
            PrivateInner::Ed25519(key) => PublicKey::new(PublicInner::Ed25519(key.verifying_key())),
        }
    }

    /// Signs `artifact`: raw signature bytes (DER for ECDSA). ECDSA here is
    /// deterministic (RFC 6979), so one key and one bundle give one
    /// signature.
    pub fn sign(&self, artifact: &[u8]) -> Vec<u8> {
        match &self.inner {
            PrivateInner::P256(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(artifact);
                signature.to_der().as_bytes().to_vec()
            }
            PrivateInner::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(artifact).to_bytes().to_vec()
            }
        }
    }
}

/// A signature as a `.sig` file holds it: base64, one line.
pub fn encode_signature(raw: &[u8]) -> String {
    BASE64.encode(raw)
}

/// Reads a `.sig` file's text: base64 with surrounding whitespace allowed.
pub fn decode_signature(text: &[u8]) -> Result<Vec<u8>, SignatureError> {
    if text.len() > MAX_SIGNATURE_BYTES {
        return Err(SignatureError::Malformed(format!(
            "{} bytes, over the {MAX_SIGNATURE_BYTES}-byte cap",
            text.len()
        )));
    }
    BASE64
        .decode(text.trim_ascii())
        .map_err(|err| SignatureError::Malformed(format!("not base64: {err}")))
}

/// A key the verifier trusts, with the name reports give it.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The name the operator gave it (its file name, or a config key).
    pub name: String,
    /// The key.
    pub key: PublicKey,
}

/// Who signed a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The trusted key's name.
    pub name: String,
    /// The trusted key's fingerprint.
    pub fingerprint: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.fingerprint)
    }
}

/// Why a bundle's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Keys are trusted, and the bundle came without a signature.
    #[error("the bundle {digest} is unsigned, and a signature from a trusted key is required")]
    Missing {
        /// The bundle's id.
        digest: String,
    },
    /// The signature text is not a signature.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// No trusted key verifies the signature.
    #[error(
        "the signature of {digest} verifies with none of the {trusted} trusted key(s): it was made by another key, or the bundle changed after signing"
    )]
    Untrusted {
        /// The bundle's id, as computed from the bytes received.
        digest: String,
        /// How many keys were tried.
        trusted: usize,
    },
}

/// The keys a loader accepts signatures from. Empty means signatures are
/// not required (and not checked).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Trusts one more key.
    pub fn add(&mut self, name: impl Into<String>, key: PublicKey) {
        self.keys.push(TrustedKey {
            name: name.into(),
            key,
        });
    }

    /// Reads PEM public key files, each named by its path.
    pub fn from_files<P: AsRef<std::path::Path>>(
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self, KeyError> {
        let mut trusted = Self::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path)
                .map_err(|err| KeyError(format!("{}: {err}", path.display())))?;
            let key = PublicKey::from_pem(&text)
                .map_err(|err| KeyError(format!("{}: {}", path.display(), err.0)))?;
            trusted.add(path.display().to_string(), key);
        }
        Ok(trusted)
    }

    /// Whether no key is trusted, so no signature is required.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Checks `signature` (a `.sig` file's text) over `artifact` (the
    /// packed bundle's bytes) against every trusted key. Runs before the
    /// bundle is parsed: nothing unsigned is read further.
    pub fn verify(
        &self,
        artifact: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Signer, SignatureError> {
        let digest = || format!("sha256:{}", hex(&Sha256::digest(artifact)));
        let Some(text) = signature else {
            return Err(SignatureError::Missing { digest: digest() });
        };
        let raw = decode_signature(text)?;
        self.keys
            .iter()
            .find(|trusted| trusted.key.verifies(artifact, &raw))
            .map(|trusted| Signer {
                name: trusted.name.clone(),
                fingerprint: trusted.key.fingerprint().to_owned(),
            })
            .ok_or_else(|| SignatureError::Untrusted {
                digest: digest(),
                trusted: self.keys.len(),
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn each_algorithm_signs_verifies_and_round_trips_its_pem() {
        for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let key = SigningKey::generate(algorithm);
            let again = SigningKey::from_pem(&key.to_pem()).unwrap();
            let public = PublicKey::from_pem(&again.public_key().to_pem()).unwrap();
            assert_eq!(public, key.public_key());
            assert_eq!(public.algorithm(), algorithm);
            let artifact = b"a packed bundle";
            let text = encode_signature(&key.sign(artifact));
            let mut trusted = TrustedKeys::default();
            trusted.add("ci", public.clone());
            let signer = trusted.verify(artifact, Some(text.as_bytes())).unwrap();
            assert_eq!(signer.fingerprint, public.fingerprint());

            // One flipped byte of the artifact, or another key: refused.
            let err = trusted
                .verify(b"a packed bundlf", Some(text.as_bytes()))
                .unwrap_err();
            assert!(matches!(err, SignatureError::Untrusted { trusted: 1, .. }));
            let mut stranger = TrustedKeys::default();
            stranger.add("other", SigningKey::generate(algorithm).public_key());
            assert!(stranger.verify(artifact, Some(text.as_bytes())).is_err());
            assert!(matches!(
                trusted.verify(artifact, None),
                Err(SignatureError::Missing { .. })
            ));
        }
    }

    #[test]
    fn malformed_signatures_and_keys_are_named() {
        let mut trusted = TrustedKeys::default();
        trusted.add(
            "ci",
            SigningKey::generate(Algorithm::EcdsaP256).public_key(),
        );
        let err = trusted.verify(b"x", Some(b"%%%")).unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
        let huge = vec![b'A'; MAX_SIGNATURE_BYTES + 1];
        assert!(trusted.verify(b"x", Some(&huge)).is_err());
        let err =
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err();
        assert!(err.0.contains("not a PEM public key"), "{err}");
        let err =
            SigningKey::from_pem("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n").unwrap_err();
        assert!(err.0.contains("cosign"), "{err}");
    }

    /// A P-256 signature made by OpenSSL (as cosign's Go crypto makes them:
    /// DER over SHA-256 of the message) verifies here.
    #[test]
    fn a_signature_made_by_openssl_verifies() {
        let dir = std::env::temp_dir().join(format!("cedar-edge-signing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args:?}");
        };
        std::fs::write(dir.join("bundle.tar"), b"bytes of a bundle").unwrap();
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ]);
        run(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-out", "key.pem",
        ]);
        run(&["pkey", "-in", "key.pem", "-pubout", "-out", "key.pub"]);
        run(&[
            "dgst",
            "-sha256",
            "-sign",
            "key.pem",
            "-out",
            "bundle.der",
            "bundle.tar",
        ]);
        let public =
            PublicKey::from_pem(&std::fs::read_to_string(dir.join("key.pub")).unwrap()).unwrap();
        let raw = std::fs::read(dir.join("bundle.der")).unwrap();
        assert!(public.verifies(b"bytes of a bundle", &raw));
        assert!(!public.verifies(b"bytes of a bundlE", &raw));
        // And the other way: our signature verifies with OpenSSL.
        let ours =
            SigningKey::from_pem(&std::fs::read_to_string(dir.join("key.pem")).unwrap()).unwrap();
        std::fs::write(dir.join("ours.der"), ours.sign(b"bytes of a bundle")).unwrap();
        run(&[
            "dgst",
            "-sha256",
            "-verify",
            "key.pub",
            "-signature",
            "ours.der",
            "bundle.tar",
        ]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
