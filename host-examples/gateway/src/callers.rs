//! Who is calling the decision service. Every caller is named in the
//! configuration and proves it with a client certificate, a static bearer
//! secret (configured only as its SHA-256), or a JWT from a configured
//! issuer; anyone else gets 401.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{CallerConfig, CertificateIdentity, IssuerConfig};
use crate::error::GatewayError;
use crate::jwt::Verifier;
use crate::metrics::Metrics;

/// The configured callers and what verifies their credentials.
pub struct Callers {
    callers: Vec<CallerConfig>,
    /// Each static-secret caller's index and SHA-256.
    secrets: Vec<(usize, [u8; 32])>,
    /// The JWT callers' issuers, when there are any.
    tokens: Option<Verifier>,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .callers
            .iter()
            .map(|caller| caller.name.as_str())
            .collect();
        f.debug_struct("Callers").field("names", &names).finish()
    }
}

impl Callers {
    /// Reads the callers; JWT issuers' keys are loaded now, and an issuer
    /// whose keys cannot be loaded stops the start.
    pub async fn new(
        callers: &[CallerConfig],
        leeway_seconds: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GatewayError> {
        let mut secrets = Vec::new();
        for (index, caller) in callers.iter().enumerate() {
            if let Some(hex) = &caller.bearer_sha256 {
                secrets.push((
                    index,
                    decode_sha256(hex).ok_or_else(|| {
                        GatewayError::Field(format!(
                            "`pdp.callers`: `{}`: `bearer_sha256` is not a SHA-256 in hex",
                            caller.name
                        ))
                    })?,
                ));
            }
        }
        // One verifier entry per issuer: callers of one issuer must agree
        // on how its tokens are checked, and tell themselves apart by `sub`.
        let mut issuers: BTreeMap<&str, &IssuerConfig> = BTreeMap::new();
        for caller in callers {
            let Some(jwt) = &caller.jwt else { continue };
            if let Some(earlier) = issuers.insert(&jwt.issuer, jwt)
                && (earlier.audience != jwt.audience
                    || earlier.jwks_file != jwt.jwks_file
                    || earlier.jwks_url != jwt.jwks_url)
            {
                return Err(GatewayError::Field(format!(
                    "`pdp.callers`: `{}`: issuer `{}` is configured differently by another caller",
                    caller.name, jwt.issuer
                )));
            }
        }
        let tokens = if issuers.is_empty() {
            None
        } else {
            let issuers: Vec<IssuerConfig> = issuers.into_values().cloned().collect();
            Some(Verifier::new(&issuers, leeway_seconds, metrics).await?)
        };
        Ok(Self {
            callers: callers.to_vec(),
            secrets,
            tokens,
        })
    }

    /// The caller a request comes from: the one its verified client
    /// certificate names, else the one its bearer credential proves.
    /// `Err` says why not, for the 401.
    pub async fn authenticate(
        &self,
        certificate: &[CertificateIdentity],
        headers: &HeaderMap,
    ) -> Result<&CallerConfig, String> {
        if let Some(caller) = self.callers.iter().find(|caller| {
            caller.mtls.as_ref().is_some_and(|wanted| {
                certificate
                    .iter()
                    .any(|presented| wanted.matches(presented))
            })
        }) {
            return Ok(caller);
        }
        let mut authorization = headers.get_all(hyper::header::AUTHORIZATION).iter();
        let (Some(value), None) = (authorization.next(), authorization.next()) else {
            return Err(if certificate.is_empty() {
                "no credentials: send a client certificate or one `Authorization: Bearer` header"
            } else {
                "the client certificate names no caller"
            }
            .to_owned());
        };
        let credential = value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credential)| credential.trim())
            .filter(|credential| !credential.is_empty())
            .ok_or_else(|| "the `Authorization` header is not `Bearer CREDENTIAL`".to_owned())?;
        let digest: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        // Every secret is compared in full, so timing says nothing about
        // which (if any) came close; the digests are not the secrets anyway.
        let matched = self
            .secrets
            .iter()
            .filter(|(_, secret)| same_digest(secret, &digest))
            .map(|(index, _)| *index)
            .next_back();
        if let Some(caller) = matched.and_then(|index| self.callers.get(index)) {
            return Ok(caller);
        }
        let Some(tokens) = &self.tokens else {
            return Err("the bearer credential names no caller".to_owned());
        };
        if credential.split('.').count() != 3 {
            return Err("the bearer credential names no caller".to_owned());
        }
        let claims = tokens
            .verify(credential)
            .await
            .map_err(|err| format!("the caller's token: {err}"))?;
        let claim = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        self.callers
            .iter()
            .find(|caller| {
                caller.jwt.as_ref().is_some_and(|jwt| {
                    claim("iss") == Some(jwt.issuer.as_str())
                        && caller
                            .jwt_subject
                            .as_deref()
                            .is_none_or(|subject| claim("sub") == Some(subject))
                })
            })
            .ok_or_else(|| "the token's subject is not a caller".to_owned())
    }
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let mut digest = [0_u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

fn same_digest(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter()
        .zip(right)
        .fold(0_u8, |differences, (a, b)| differences | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn digests_decode_and_compare() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let decoded = decode_sha256(hex).unwrap();
        let expected: [u8; 32] = Sha256::digest(b"test").into();
        assert!(same_digest(&decoded, &expected));
        assert!(!same_digest(&decoded, &[0; 32]));
        assert!(decode_sha256("zz").is_none());
        assert!(decode_sha256(&"g".repeat(64)).is_none());
    }
}
