//! Verified claims → the principal, its parents (groups) and attributes.

use base64::Engine as _;
use cedar_edge_core::{Attributes, Bundle, EntityInput, EntityUid};
use serde_json::{Map, Value as Json};

use crate::config::IdentityConfig;
use crate::{Claims, Refusal};

pub(crate) fn from_claims(
    identity: &IdentityConfig,
    bundle: &Bundle,
    claims: &Map<String, Json>,
) -> Result<(EntityUid, Vec<EntityInput>), Refusal> {
    let id = match claim(claims, &identity.principal_id_claim) {
        Some(Json::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => {
            return Err(Refusal::Invalid(format!(
                "claim `{}` is not a non-empty string",
                identity.principal_id_claim
            )));
        }
        None => {
            return Err(Refusal::Invalid(format!(
                "claim `{}` is missing",
                identity.principal_id_claim
            )));
        }
    };
    let uid = EntityUid::new(&identity.principal_type, id);
    // The bundle's own entity wins: it holds what the organisation
    // decided, where claims hold what the IdP says.
    if bundle.has_entity(&uid) {
        return Ok((uid, Vec::new()));
    }
    let mut parents = Vec::new();
    if let Some(groups) = &identity.groups {
        let names: Vec<&str> = match claim(claims, &groups.claim) {
            None => Vec::new(),
            Some(Json::String(name)) => vec![name.as_str()],
            Some(Json::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        Refusal::Invalid(format!("claim `{}` holds a non-string", groups.claim))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "claim `{}` is neither a string nor an array",
                    groups.claim
                )));
            }
        };
        for name in names {
            let name = name
                .strip_prefix(groups.strip_prefix.as_str())
                .unwrap_or(name);
            parents.push(EntityUid::new(&groups.entity_type, name));
        }
    }
    let attributes = identity
        .attributes
        .iter()
        .map(|(name, reference)| {
            crate::context::claim_value(claims, reference)
                .map(|value| (name.clone(), value))
                .map_err(|reason| Refusal::Invalid(format!("attribute `{name}`: {reason}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let entity = EntityInput {
        uid: uid.clone(),
        attrs: Attributes::from_fields(attributes),
        parents,
        tags: Attributes::default(),
    };
    Ok((uid, vec![entity]))
}

/// A claim by name; `a.b` walks into nested objects.
pub(crate) fn claim<'a>(claims: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Reads claims from a trusted header: base64url (padded or not) of a
/// JSON object.
pub fn claims_from_header(value: &[u8]) -> Claims {
    let trimmed: Vec<u8> = value.iter().copied().filter(|byte| *byte != b'=').collect();
    let decoded = match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) {
        Ok(decoded) => decoded,
        Err(err) => return Claims::Invalid(format!("not base64url: {err}")),
    };
    match serde_json::from_slice::<Json>(&decoded) {
        Ok(Json::Object(claims)) => Claims::Present(claims),
        Ok(_) => Claims::Invalid("not a JSON object".to_owned()),
        Err(err) => Claims::Invalid(format!("not JSON: {err}")),
    }
}
