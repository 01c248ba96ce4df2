//! Bearer-token verification: RS256 and ES256 only, against each trusted
//! issuer's JWKS, with `iss`, `aud`, `exp` and `nbf` checked.
//!
//! Checked here before the library sees the token: `exp`, `nbf` and `iat`
//! must be numbers it can read (jsonwebtoken 9 skips an `nbf` it cannot
//! parse, GHSA-h395-gr6q-cpjc), a `crit` header refuses the token, and an
//! issuer may list the `typ` values it accepts.
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
use crate::proxy::JwksClient;

/// The shortest time between two JWKS refreshes of one issuer, so that
/// tokens with made-up `kid`s cannot turn the gateway against the IdP.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The most characters of a client-chosen value (an `iss`, a `kid`) that an
/// error quotes: errors reach the client and the audit log.
const MAX_QUOTED_CHARS: usize = 64;

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
    client: Option<JwksClient>,
}

/// Every trusted issuer and its keys.
pub struct Verifier {
    issuers: Vec<Mutex<IssuerKeys>>,
    leeway_seconds: u64,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// Loads every issuer's JWKS, all at once; a JWKS that cannot be
    /// loaded (an endpoint that is down, hangs past the fetch timeout or
    /// sends too much) stops the start with an error that names it.
    pub async fn new(
        issuers: &[IssuerConfig],
        leeway_seconds: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::error::GatewayError> {
        let failed = |issuer: &IssuerConfig, message: String| crate::error::GatewayError::Issuer {
            issuer: issuer.issuer.clone(),
            message,
        };
        let mut fetches = Vec::new();
        for issuer in issuers {
            let client = match &issuer.jwks_url {
                Some(_) => Some(
                    JwksClient::new(issuer.jwks_ca_file.as_deref())
                        .map_err(|message| failed(issuer, message))?,
                ),
                None => None,
            };
            let (config, fetch_client) = (issuer.clone(), client.clone());
            let fetch =
                tokio::spawn(async move { fetch_keys(&config, fetch_client.as_ref()).await });
            fetches.push((issuer, client, fetch));
        }
        let mut loaded = Vec::new();
        for (issuer, client, fetch) in fetches {
            let keys = fetch
                .await
                .map_err(|err| crate::error::GatewayError::Task(err.to_string()))?
                .map_err(|message| failed(issuer, message))?;
            loaded.push(Mutex::new(IssuerKeys {
                config: issuer.clone(),
                keys,
                last_refresh: Some(Instant::now()),
                client,
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
        let header_fields = decode_segment(token, 0)
            .ok_or_else(|| TokenError("malformed token header".to_owned()))?;
        refuse_crit(&header_fields)?;
        let issuer_name = unverified_issuer(token)?;
        let (slot, accepted_types) = self
            .issuers
            .iter()
            .find_map(|slot| {
                let keys = slot.lock().ok()?;
                (keys.config.issuer == issuer_name)
                    .then(|| (slot, keys.config.accepted_types.clone()))
            })
            .ok_or_else(|| {
                TokenError(format!("issuer `{}` is not trusted", quoted(&issuer_name)))
            })?;
        check_type(&header_fields, &accepted_types)?;
        let kid = header.kid.unwrap_or_default();
        let (key, config) = match self.lookup(slot, &kid) {
            Some(found) => found,
            None => {
                self.refresh(slot).await;
                self.lookup(slot, &kid)
                    .ok_or_else(|| TokenError(format!("unknown key `{}`", quoted(&kid))))?
            }
        };
        if key.algorithm != algorithm {
            return Err(TokenError(format!(
                "key `{}` is for {:?}, the token says {algorithm:?}",
                quoted(&kid),
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
        let (config, client) = {
            let Ok(mut keys) = slot.lock() else { return };
            if keys
                .last_refresh
                .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL)
            {
                return;
            }
            keys.last_refresh = Some(Instant::now());
            (keys.config.clone(), keys.client.clone())
        };
        match fetch_keys(&config, client.as_ref()).await {
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
/// issuer whose keys then verify the whole token. Time claims the verifier
/// could not read are refused here: it would skip them, and a string `nbf`
/// would let a token in before its time.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let claims =
        decode_segment(token, 1).ok_or_else(|| TokenError("malformed token payload".to_owned()))?;
    for name in ["exp", "nbf", "iat"] {
        if claims
            .get(name)
            .is_some_and(|value| !is_numeric_date(value))
        {
            return Err(TokenError(format!(
                "`{name}` is not a number of seconds since the epoch"
            )));
        }
    }
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TokenError("the token has no `iss`".to_owned()))
}

/// A time the verifier reads: a non-negative number below 2^64 (it skips
/// anything else, negative integers and `1e30` included).
fn is_numeric_date(value: &Value) -> bool {
    value.as_u64().is_some()
        || value
            .as_f64()
            .is_some_and(|seconds| seconds.is_finite() && (0.0..u64::MAX as f64).contains(&seconds))
}

/// `crit` names extensions that a verifier must understand, and none is
/// supported here, so any `crit` refuses the token (RFC 7515 §4.1.11).
fn refuse_crit(header: &Map<String, Value>) -> Result<(), TokenError> {
    if header.contains_key("crit") {
        return Err(TokenError(
            "the token has a `crit` header, and no extension is supported".to_owned(),
        ));
    }
    Ok(())
}

/// When the issuer lists the accepted `typ` values, the token's must be
/// one of them; case does not count, and `application/` may be left out
/// (RFC 7515 §4.1.9). A token without `typ` is then refused.
fn check_type(header: &Map<String, Value>, accepted_types: &[String]) -> Result<(), TokenError> {
    if accepted_types.is_empty() {
        return Ok(());
    }
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let short = |text: &str| {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => lower,
        }
    };
    if accepted_types
        .iter()
        .any(|accepted| short(accepted) == short(typ))
    {
        Ok(())
    } else {
        Err(TokenError(format!(
            "token type `{}` is not accepted",
            quoted(typ)
        )))
    }
}

/// A client-chosen value, cut to [`MAX_QUOTED_CHARS`].
fn quoted(text: &str) -> String {
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

fn decode_segment(token: &str, index: usize) -> Option<Map<String, Value>> {
    let segment = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn fetch_keys(
    issuer: &IssuerConfig,
    client: Option<&JwksClient>,
) -> Result<HashMap<String, Key>, String> {
    let text = match (&issuer.jwks_file, &issuer.jwks_url, client) {
        (Some(path), _, _) => tokio::fs::read_to_string(path)
            .await
            .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?,
        (None, Some(url), Some(client)) => client
            .fetch_text(url)
            .await
            .map_err(|err| err.to_string())?,
        _ => return Err("no JWKS source".to_owned()),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_times_the_verifier_can_read_pass() {
        for good in [
            serde_json::json!(0),
            serde_json::json!(1_700_000_000),
            serde_json::json!(1.7e9),
        ] {
            assert!(is_numeric_date(&good), "{good}");
        }
        for bad in [
            serde_json::json!("99999999999"),
            serde_json::json!(-1),
            serde_json::json!(1e30),
            serde_json::json!(null),
            serde_json::json!([1]),
        ] {
            assert!(!is_numeric_date(&bad), "{bad}");
        }
    }

    #[test]
    fn quoted_values_are_cut() {
        let long = "x".repeat(10_000);
        assert_eq!(quoted(&long).chars().count(), MAX_QUOTED_CHARS + 1);
        assert_eq!(quoted("short"), "short");
    }
}
