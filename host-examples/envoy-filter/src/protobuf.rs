//! Decodes a `google.protobuf.Struct` from its wire form into JSON.
//!
//! Envoy hands dynamic metadata to Wasm filters as serialized protobuf, and
//! `jwt_authn` stores the verified JWT payload there as a `Struct`. Only the
//! `Struct`, `Value` and `ListValue` messages are needed, so this small
//! decoder stands in for a protobuf library in the module.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused: no real token payload is nested so
/// deeply, and a bound keeps a hostile payload from exhausting the stack.
const MAX_DEPTH: usize = 32;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed protobuf Struct: {}", self.0)
    }
}

/// Finds `filter_metadata[namespace]` in a serialized
/// `envoy.config.core.v3.Metadata` (what Envoy returns for the `metadata`
/// property) and decodes that `Struct`. `Ok(None)` when the namespace is
/// absent.
pub fn filter_metadata(
    metadata: &[u8],
    namespace: &str,
) -> Result<Option<Map<String, Value>>, DecodeError> {
    let mut reader = Reader::new(metadata);
    while let Some((field, wire)) = reader.key()? {
        if (field, wire) != (1, WireType::Len) {
            reader.skip(wire)?;
            continue;
        }
        // map<string, Struct> filter_metadata = 1: entries {1: key, 2: Struct}.
        let mut entry = Reader::new(reader.bytes()?);
        let mut key: &[u8] = &[];
        let mut value: &[u8] = &[];
        while let Some((entry_field, entry_wire)) = entry.key()? {
            match (entry_field, entry_wire) {
                (1, WireType::Len) => key = entry.bytes()?,
                (2, WireType::Len) => value = entry.bytes()?,
                _ => entry.skip(entry_wire)?,
            }
        }
        if key == namespace.as_bytes() {
            return decode_struct(value).map(Some);
        }
    }
    Ok(None)
}

/// Decodes a serialized `google.protobuf.Struct` into a JSON object.
pub fn decode_struct(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    decode_struct_at(bytes, 0)
}

fn decode_struct_at(bytes: &[u8], depth: usize) -> Result<Map<String, Value>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError(format!("nested more than {MAX_DEPTH} deep")));
    }
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            // map<string, Value> fields = 1: each entry is {1: key, 2: value}.
            (1, WireType::Len) => {
                let entry = reader.bytes()?;
                let (key, value) = decode_entry(entry, depth)?;
                object.insert(key, value);
            }
            _ => reader.skip(wire)?,
        }
    }
    Ok(object)
}

fn decode_entry(bytes: &[u8], depth: usize) -> Result<(String, Value), DecodeError> {
    let mut key = String::new();
    let mut value = Value::Null;
    let mut reader = Reader::new(bytes);
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, WireType::Len) => {
                key = String::from_utf8(reader.bytes()?.to_vec())
                    .map_err(|_| DecodeError("a key is not UTF-8".to_owned()))?;
            }
            (2, WireType::Len) => value = decode_value(reader.bytes()?, depth + 1)?,
            _ => reader.skip(wire)?,
        }
    }
    Ok((key, value))
}

fn decode_value(bytes: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError(format!("nested more than {MAX_DEPTH} deep")));
    }
    let mut value = Value::Null;
    let mut reader = Reader::new(bytes);
    while let Some((field, wire)) = reader.key()? {
        value = match (field, wire) {
            (1, WireType::Varint) => {
                reader.varint()?;
                Value::Null
            }
            (2, WireType::Fixed64) => {
                let number = f64::from_bits(reader.fixed64()?);
                // JSON payloads carry integers (`iat`, `exp`); protobuf only
                // has doubles. Integral values within 2^53 are integers again.
                if number.fract() == 0.0 && number.abs() < 9_007_199_254_740_992.0 {
                    Value::from(number as i64)
                } else {
                    Number::from_f64(number).map_or(Value::Null, Value::Number)
                }
            }
            (3, WireType::Len) => Value::String(
                String::from_utf8(reader.bytes()?.to_vec())
                    .map_err(|_| DecodeError("a string is not UTF-8".to_owned()))?,
            ),
            (4, WireType::Varint) => Value::Bool(reader.varint()? != 0),
            (5, WireType::Len) => Value::Object(decode_struct_at(reader.bytes()?, depth + 1)?),
            (6, WireType::Len) => decode_list(reader.bytes()?, depth + 1)?,
            _ => {
                reader.skip(wire)?;
                continue;
            }
        };
    }
    Ok(value)
}

fn decode_list(bytes: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let mut items = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, WireType::Len) => items.push(decode_value(reader.bytes()?, depth + 1)?),
            _ => reader.skip(wire)?,
        }
    }
    Ok(Value::Array(items))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn key(&mut self) -> Result<Option<(u64, WireType)>, DecodeError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            other => return Err(DecodeError(format!("unsupported wire type {other}"))),
        };
        Ok(Some((key >> 3, wire)))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or_else(|| DecodeError("truncated varint".to_owned()))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("varint longer than 10 bytes".to_owned()))
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if count > self.bytes.len() {
            return Err(DecodeError("truncated field".to_owned()));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let raw = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(raw);
        Ok(u64::from_le_bytes(array))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = usize::try_from(self.varint()?)
            .map_err(|_| DecodeError("field length overflows".to_owned()))?;
        self.take(length)
    }

    fn skip(&mut self, wire: WireType) -> Result<(), DecodeError> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.take(8).map(drop),
            WireType::Len => self.bytes().map(drop),
            WireType::Fixed32 => self.take(4).map(drop),
        }
    }
}

/// Encodes JSON as a `google.protobuf.Struct`, the way Envoy serializes
/// metadata; used by the tests to feed the decoder real wire bytes.
pub fn encode_struct(object: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in object {
        let mut entry = Vec::new();
        put_len(&mut entry, 1, key.as_bytes());
        put_len(&mut entry, 2, &encode_value(value));
        put_len(&mut out, 1, &entry);
    }
    out
}

fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Null => {
            put_varint(&mut out, 1 << 3);
            put_varint(&mut out, 0);
        }
        Value::Number(number) => {
            put_varint(&mut out, (2 << 3) | 1);
            out.extend_from_slice(&number.as_f64().unwrap_or_default().to_bits().to_le_bytes());
        }
        Value::String(text) => put_len(&mut out, 3, text.as_bytes()),
        Value::Bool(flag) => {
            put_varint(&mut out, 4 << 3);
            put_varint(&mut out, u64::from(*flag));
        }
        Value::Object(object) => put_len(&mut out, 5, &encode_struct(object)),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                put_len(&mut list, 1, &encode_value(item));
            }
            put_len(&mut out, 6, &list);
        }
    }
    out
}

fn put_len(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encodes `filter_metadata` as an `envoy.config.core.v3.Metadata`, for tests.
pub fn encode_metadata(namespaces: &[(&str, &Map<String, Value>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (namespace, object) in namespaces {
        let mut entry = Vec::new();
        put_len(&mut entry, 1, namespace.as_bytes());
        put_len(&mut entry, 2, &encode_struct(object));
        put_len(&mut out, 1, &entry);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_jwt_payload_round_trips() {
        let payload = json!({
            "sub": "alice", "iat": 1_790_000_000, "groups": ["a", "b/c"],
            "email_verified": true, "nested": {"x": null}, "amr": []
        });
        let object = payload.as_object().unwrap();
        assert_eq!(decode_struct(&encode_struct(object)).unwrap(), *object);
    }

    #[test]
    fn the_jwt_payload_is_found_in_envoy_metadata() {
        let payload = json!({"sub": "alice", "groups": ["ops"]});
        let namespace = json!({"jwt_payload": payload});
        let other = json!({"x": 1});
        let bytes = encode_metadata(&[
            ("envoy.lb", other.as_object().unwrap()),
            (
                "envoy.filters.http.jwt_authn",
                namespace.as_object().unwrap(),
            ),
        ]);
        let found = filter_metadata(&bytes, "envoy.filters.http.jwt_authn")
            .unwrap()
            .unwrap();
        assert_eq!(found["jwt_payload"], payload);
        assert_eq!(filter_metadata(&bytes, "absent").unwrap(), None);
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error_not_a_panic() {
        let bytes = encode_struct(json!({"sub": "alice"}).as_object().unwrap());
        for cut in 0..bytes.len() {
            // Every prefix either decodes to a smaller object or errors.
            let _ = decode_struct(&bytes[..cut]);
        }
        assert!(decode_struct(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(decode_struct(&[0x0f]).is_err());
        // 40 levels of struct_value.
        let mut deep = json!("leaf");
        for _ in 0..40 {
            deep = json!({ "k": deep });
        }
        let encoded = encode_struct(deep.as_object().unwrap());
        assert!(decode_struct(&encoded).unwrap_err().0.contains("deep"));
    }
}
