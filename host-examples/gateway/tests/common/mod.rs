//! A gateway on loopback for the tests: its bundle copied to a scratch
//! folder (so tests can change it), real RS256 and ES256 issuers, and an
//! echo upstream.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cedar_edge_envoy_e2e::jwt::{Issuer, now};
use cedar_edge_envoy_e2e::repo;
use cedar_edge_envoy_e2e::upstream::Upstream;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub const RSA_ISSUER: &str = "https://gitlab.example.com";
pub const EC_ISSUER: &str = "https://sso.example.com";
pub const AUDIENCE: &str = "airflow";

/// An ES256 issuer.
pub struct EcIssuer {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    pub kid: String,
}

impl EcIssuer {
    pub fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            public: pair.public_key().as_ref().to_vec(),
            pkcs8: pkcs8.as_ref().to_vec(),
            kid: kid.to_owned(),
        }
    }

    pub fn jwks(&self) -> String {
        // Uncompressed point: 0x04, then x and y.
        let (x, y) = self.public[1..].split_at(32);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                         "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
        .to_string()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .unwrap()
    }
}

/// Claims of a user token.
pub fn claims(issuer: &str, user: &str, groups: &[&str], mfa: bool) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": format!("id-{user}"), "preferred_username": user,
        "email": format!("{user}@example.com"), "groups": groups,
        "amr": if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) },
        "iat": now() - 30, "exp": now() + 600,
    })
}

/// Everything a test needs on disk.
pub struct Setup {
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub config: PathBuf,
    pub audit_log: PathBuf,
    pub rsa: Issuer,
    pub ec: EcIssuer,
    pub upstream: Upstream,
}

/// Writes a configuration for the airflow-gitlab bundle behind the gateway.
pub fn setup(name: &str, listen: &str, extra: &str) -> Setup {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("gateway")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = dir.join("bundle");
    copy_dir(&repo().join("policies/airflow-gitlab"), &bundle);
    let rsa = Issuer::generate("rsa-key");
    let ec = EcIssuer::generate("ec-key");
    std::fs::write(dir.join("rsa-jwks.json"), rsa.jwks()).unwrap();
    std::fs::write(dir.join("ec-jwks.json"), ec.jwks()).unwrap();
    let upstream = Upstream::start();
    let mapping = repo().join("host-examples/envoy-filter/examples/airflow-mapping.json");
    let audit_log = dir.join("audit.jsonl");
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: {listen}
bundle: bundle
mapping: {mapping}
upstreams:
  airflow: http://127.0.0.1:{port}
routes:
  - prefix: /api/
    upstream: airflow
issuers:
  - issuer: {RSA_ISSUER}
    audience: {AUDIENCE}
    jwks_file: rsa-jwks.json
  - issuer: {EC_ISSUER}
    audience: {AUDIENCE}
    jwks_file: ec-jwks.json
audit_log: audit.jsonl
redact_claims: [email]
reload_poll_ms: 100
{extra}"#,
            mapping = mapping.display(),
            port = upstream.port,
        ),
    )
    .unwrap();
    Setup {
        dir,
        bundle,
        config,
        audit_log,
        rsa,
        ec,
        upstream,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
