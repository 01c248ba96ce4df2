//! A throwaway ES256 issuer for trying the gateway: the first run makes a
//! key in DIR and writes DIR/jwks.json; every run prints a token for USER.
//!
//!     cargo run -p cedar-edge-gateway --example demo-issuer -- DIR USER [GROUP ...] [--no-mfa]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

const ISSUER: &str = "https://sso.example.com";
const AUDIENCE: &str = "internal-apps";

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mfa = !args.iter().any(|arg| arg == "--no-mfa");
    args.retain(|arg| arg != "--no-mfa");
    let (dir, user, groups) = match args.as_slice() {
        [dir, user, groups @ ..] => (std::path::PathBuf::from(dir), user.clone(), groups.to_vec()),
        _ => {
            eprintln!("usage: demo-issuer DIR USER [GROUP ...] [--no-mfa]");
            std::process::exit(64);
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("demo-key.pk8");
    let rng = ring::rand::SystemRandom::new();
    if !key_path.exists() {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        std::fs::write(&key_path, pkcs8.as_ref()).unwrap();
    }
    let pkcs8 = std::fs::read(&key_path).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
    let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "demo",
                                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("demo|{user}"), "preferred_username": user,
        "email": format!("{user}@example.com"), "groups": groups,
        "amr": if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) },
        "iat": now, "exp": now + 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("demo".to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
    )
    .unwrap();
    println!("{token}");
}
