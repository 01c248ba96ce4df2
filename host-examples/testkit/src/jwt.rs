//! RS256 and ES256 keys and tokens, generated per test run.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use sha2::Sha256;

/// A signing key and its JWKS.
pub struct Issuer {
    key: SigningKey<Sha256>,
    public: rsa::RsaPublicKey,
    /// The key id in token headers and the JWKS.
    pub kid: String,
}

impl Issuer {
    /// A fresh 2048-bit RSA key.
    pub fn generate(kid: &str) -> Self {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("an RSA key");
        let public = private.to_public_key();
        Self {
            key: SigningKey::<Sha256>::new(private),
            public,
            kid: kid.to_owned(),
        }
    }

    /// The JWKS document with the public key.
    pub fn jwks(&self) -> String {
        serde_json::json!({
            "keys": [{
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": self.kid,
                "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
            }]
        })
        .to_string()
    }

    /// A signed RS256 token with these claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        self.sign_with_header(&header, claims)
    }

    /// A signed RS256 token with a header of the test's choosing (for
    /// tokens that are validly signed yet must be refused).
    pub fn sign_with_header(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        let signing_input = signing_input(header, claims);
        let signature = self.key.sign(signing_input.as_bytes()).to_vec();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn signing_input(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An ES256 (P-256) signing key and its JWKS.
pub struct EcIssuer {
    pair: ring::signature::EcdsaKeyPair,
    /// The key id in token headers and the JWKS.
    pub kid: String,
}

impl EcIssuer {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Self {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the key just made");
        Self {
            pair,
            kid: kid.to_owned(),
        }
    }

    /// The JWKS document with the public key.
    pub fn jwks(&self) -> String {
        use ring::signature::KeyPair as _;
        // An uncompressed point: 0x04, then x and y.
        let point = self.pair.public_key().as_ref();
        let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
        .to_string()
    }

    /// A signed ES256 token with these claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signing_input = signing_input(&header, claims);
        let rng = ring::rand::SystemRandom::new();
        // The fixed encoding (r ‖ s) is JWS's.
        let signature = self
            .pair
            .sign(&rng, signing_input.as_bytes())
            .expect("signing");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}
