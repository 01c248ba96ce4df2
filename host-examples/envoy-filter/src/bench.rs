//! The bench build's stages (feature `bench-stages`): how far the module
//! goes with each request, so `envoy-bench` can break the added latency
//! down. A stage before [`Stage::Full`] forwards every request unchecked,
//! which is why the shipped module is built without this feature.

use serde_json::Value;

/// Where a request stops: each stage does everything the one before does,
/// then one step more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// `Continue` at once.
    Continue,
    /// Reads the request headers.
    Headers,
    /// Reads the verified claims and the other properties the mapping needs.
    Claims,
    /// Maps the request to a Cedar request.
    Mapping,
    /// Decides and acts on the decision, without recording it.
    Decision,
    /// The shipped filter: decides, acts and records.
    Full,
}

impl Stage {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "continue" => Self::Continue,
            "headers" => Self::Headers,
            "claims" => Self::Claims,
            "mapping" => Self::Mapping,
            "decision" => Self::Decision,
            "full" => Self::Full,
            _ => return None,
        })
    }
}

/// Takes `bench_stage` (default `full`) out of a plugin configuration and
/// returns the stage and the configuration without it.
pub fn take_stage(config: &[u8]) -> Result<(Stage, Vec<u8>), String> {
    let mut json: Value = serde_json::from_slice(config).map_err(|err| err.to_string())?;
    let named = json
        .as_object_mut()
        .and_then(|object| object.remove("bench_stage"));
    let stage = match &named {
        None => Stage::Full,
        Some(Value::String(name)) => {
            Stage::parse(name).ok_or_else(|| format!("unknown `bench_stage` `{name}`"))?
        }
        Some(other) => return Err(format!("`bench_stage` is not a string: {other}")),
    };
    Ok((stage, json.to_string().into_bytes()))
}
