//! Context attributes and their sources: the request, its connection and
//! the verified claims.

use cedar_edge_core::{ExtensionKind, Value};
use serde_json::{Map, Value as Json};

use crate::HttpRequest;
use crate::config::{ClaimRef, ContextAttribute, ContextSource, ValueType};

pub(crate) fn claim_value(
    claims: &Map<String, Json>,
    reference: &ClaimRef,
) -> Result<Value, String> {
    match crate::principal::claim(claims, &reference.claim).or(reference.default.as_ref()) {
        Some(value) => json_to_value(value, reference.as_type),
        None => Err(format!("claim `{}` is missing", reference.claim)),
    }
}

pub(crate) fn value(
    attribute: &ContextAttribute,
    http: &HttpRequest,
    canonical_path: &str,
    claims: Option<&Map<String, Json>>,
) -> Result<Value, String> {
    let default = || {
        attribute
            .default
            .as_ref()
            .map(|value| json_to_value(value, attribute.as_type))
    };
    match &attribute.from {
        ContextSource::SourceAddress => {
            let address = http
                .source_address
                .as_deref()
                .ok_or_else(|| "the source address is unknown".to_owned())?;
            Ok(Value::Extension(
                ExtensionKind::Ip,
                strip_port(address).to_owned(),
            ))
        }
        ContextSource::RequestTime => Ok(Value::Long(http.now_seconds)),
        ContextSource::TokenAge => {
            let issued = claims
                .and_then(|claims| claims.get("iat"))
                // Envoy's metadata carries numbers as doubles.
                .and_then(|iat| iat.as_i64().or_else(|| iat.as_f64().map(|f| f as i64)))
                .ok_or_else(|| "the token has no numeric `iat` claim".to_owned())?;
            Ok(Value::Long(http.now_seconds.saturating_sub(issued).max(0)))
        }
        ContextSource::PeerIdentity => Ok(Value::String(
            http.peer_identity.clone().unwrap_or_default(),
        )),
        ContextSource::Method => Ok(Value::String(http.method.clone())),
        ContextSource::Path => Ok(Value::String(canonical_path.to_owned())),
        ContextSource::Header(name) => {
            let raw = http
                .headers
                .iter()
                .find(|(header, _)| header.eq_ignore_ascii_case(name))
                .map(|(_, value)| value);
            match raw {
                Some(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| format!("header `{name}` is not UTF-8"))?;
                    text_to_value(text, attribute.as_type.unwrap_or(ValueType::String))
                }
                None => default().unwrap_or_else(|| Err(format!("header `{name}` is missing"))),
            }
        }
        ContextSource::Claim(name) => {
            match claims.and_then(|claims| crate::principal::claim(claims, name)) {
                Some(value) => json_to_value(value, attribute.as_type),
                None => default().unwrap_or_else(|| Err(format!("claim `{name}` is missing"))),
            }
        }
        ContextSource::ClaimContains { claim: name, value } => {
            let found = match claims.and_then(|claims| crate::principal::claim(claims, name)) {
                Some(Json::String(text)) => text.split(' ').any(|part| part == value),
                Some(Json::Array(items)) => items.iter().any(|item| item.as_str() == Some(value)),
                _ => false,
            };
            Ok(Value::Bool(found))
        }
    }
}

fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        // One colon: IPv4 with a port. More: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => address,
    }
}

fn text_to_value(text: &str, as_type: ValueType) -> Result<Value, String> {
    Ok(match as_type {
        ValueType::String => Value::String(text.to_owned()),
        ValueType::Long => Value::Long(
            text.trim()
                .parse()
                .map_err(|_| format!("`{text}` is not an integer"))?,
        ),
        ValueType::Bool => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not a boolean")),
        },
        ValueType::Ip => Value::Extension(ExtensionKind::Ip, text.trim().to_owned()),
        ValueType::StringSet => Value::Set(
            text.split(',')
                .map(|part| Value::String(part.trim().to_owned()))
                .collect(),
        ),
    })
}

fn json_to_value(value: &Json, as_type: Option<ValueType>) -> Result<Value, String> {
    match (as_type, value) {
        (None, Json::String(text)) => Ok(Value::String(text.clone())),
        (None, Json::Bool(flag)) => Ok(Value::Bool(*flag)),
        (None | Some(ValueType::Long), Json::Number(number)) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            })
            .map(Value::Long)
            .ok_or_else(|| format!("`{number}` is not an integer")),
        (None, Json::Array(items)) => Ok(Value::Set(
            items
                .iter()
                .map(|item| json_to_value(item, None))
                .collect::<Result<_, _>>()?,
        )),
        (Some(ValueType::StringSet), Json::Array(items)) => Ok(Value::Set(
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(|text| Value::String(text.to_owned()))
                        .ok_or_else(|| format!("`{item}` is not a string"))
                })
                .collect::<Result<_, _>>()?,
        )),
        (Some(ValueType::StringSet), Json::String(text)) => Ok(Value::Set(
            text.split(' ')
                .filter(|part| !part.is_empty())
                .map(|part| Value::String(part.to_owned()))
                .collect(),
        )),
        (Some(as_type), Json::String(text)) => text_to_value(text, as_type),
        (Some(ValueType::Bool), Json::Bool(flag)) => Ok(Value::Bool(*flag)),
        (Some(ValueType::String), other) => Ok(Value::String(other.to_string())),
        (_, Json::Object(_)) => {
            Err("objects are not mapped; name a nested claim with `a.b`".to_owned())
        }
        (_, Json::Null) => Err("the value is null".to_owned()),
        (Some(as_type), other) => Err(format!("`{other}` cannot be read as {as_type:?}")),
    }
}
