//! Bearer-token verification: RS256 and ES256 only, against each trusted
//! issuer's JWKS, with `iss`, `aud`, `exp` and `nbf` checked.
//!
//! `alg: none`, HMAC algorithms (including an HS256 token "signed" with a
//! public key), unknown keys, and a key whose type does not fit the token's
//! algorithm are refused before any signature is checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::IssuerConfig;
use crate::metrics::Metrics;

/// The shortest time between two JWKS refreshes of one issuer, so that
/// tokens with made-up `kid`s cannot turn the gateway against the IdP.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a token was refused; the text goes into `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    algorithm: Algorithm,
}

struct IssuerKeys {
    config: IssuerConfig,
    keys: HashMap<String, Key>,
    last_refresh: Option<Instant>,
}

/// Every trusted issuer and its keys.
pub struct Verifier {
    issuers: Vec<Mutex<IssuerKeys>>,
    leeway_seconds: u64,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// Loads every issuer's JWKS; a JWKS that cannot be loaded stops the start.
    pub async fn new(
        issuers: &[IssuerConfig],
        leeway_seconds: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::error::GatewayError> {
        let mut loaded = Vec::new();
        for issuer in issuers {
            let keys =
                fetch_keys(issuer)
                    .await
                    .map_err(|message| crate::error::GatewayError::Issuer {
                        issuer: issuer.issuer.clone(),
                        message,
                    })?;
            loaded.push(Mutex::new(IssuerKeys {
                config: issuer.clone(),
                keys,
                last_refresh: Some(Instant::now()),
            }));
        }
        Ok(Self {
            issuers: loaded,
            leeway_seconds,
            metrics,
        })
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| TokenError(format!("malformed token: {err}")))?;
        let algorithm = match header.alg {
            Algorithm::RS256 | Algorithm::ES256 => header.alg,
            other => return Err(TokenError(format!("algorithm {other:?} is not accepted"))),
        };
        let issuer_name = unverified_issuer(token)?;
        let slot = self
            .issuers
            .iter()
            .find(|slot| {
                slot.lock()
                    .is_ok_and(|keys| keys.config.issuer == issuer_name)
            })
            .ok_or_else(|| TokenError(format!("issuer `{issuer_name}` is not trusted")))?;
        let kid = header.kid.unwrap_or_default();
        let (key, config) = match self.lookup(slot, &kid) {
            Some(found) => found,
            None => {
                self.refresh(slot).await;
                self.lookup(slot, &kid)
                    .ok_or_else(|| TokenError(format!("unknown key `{kid}`")))?
            }
        };
        if key.algorithm != algorithm {
            return Err(TokenError(format!(
                "key `{kid}` is for {:?}, the token says {algorithm:?}",
                key.algorithm
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.leeway = self.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|err| TokenError(format!("invalid token: {err}")))
    }

    fn lookup(&self, slot: &Mutex<IssuerKeys>, kid: &str) -> Option<(Key, IssuerConfig)> {
        let keys = slot.lock().ok()?;
        let key = if kid.is_empty() && keys.keys.len() == 1 {
            keys.keys.values().next()
        } else {
            keys.keys.get(kid)
        };
        key.map(|key| (key.clone(), keys.config.clone()))
    }

    async fn refresh(&self, slot: &Mutex<IssuerKeys>) {
        let config = {
            let Ok(mut keys) = slot.lock() else { return };
            if keys
                .last_refresh
                .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL)
            {
                return;
            }
            keys.last_refresh = Some(Instant::now());
            keys.config.clone()
        };
        match fetch_keys(&config).await {
            Ok(fresh) => {
                self.metrics.jwks_refresh(true);
                if let Ok(mut keys) = slot.lock() {
                    keys.keys = fresh;
                }
            }
            Err(err) => {
                self.metrics.jwks_refresh(false);
                tracing::warn!(issuer = %config.issuer, error = %err, "JWKS refresh failed; keeping the old keys");
            }
        }
    }
}

/// Reads `iss` from the payload without trusting it: it only picks the
/// issuer whose keys then verify the whole token.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError("malformed token".to_owned()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError("malformed token payload".to_owned()))?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError("malformed token payload".to_owned()))?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TokenError("the token has no `iss`".to_owned()))
}

async fn fetch_keys(issuer: &IssuerConfig) -> Result<HashMap<String, Key>, String> {
    let text = match (&issuer.jwks_file, &issuer.jwks_url) {
        (Some(path), _) => tokio::fs::read_to_string(path)
            .await
            .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?,
        (None, Some(url)) => crate::proxy::fetch_text(url).await?,
        (None, None) => return Err("no JWKS source".to_owned()),
    };
    let set: JwkSet = serde_json::from_str(&text).map_err(|err| format!("JWKS: {err}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            // Other key types are not accepted, so they are not loaded.
            _ => continue,
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|err| format!("JWKS key: {err}"))?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(
            kid,
            Key {
                decoding,
                algorithm,
            },
        );
    }
    if keys.is_empty() {
        return Err("the JWKS holds no RSA or P-256 key".to_owned());
    }
    Ok(keys)
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers.len())
            .field("leeway_seconds", &self.leeway_seconds)
            .finish_non_exhaustive()
    }
}
