//! Request-scoped entities in Cedar's JSON entity format, as the CLI and the
//! test suites accept them.

use cedar_edge_core::{Attributes, EntityInput, EntityUid};
use serde::Deserialize;

/// One entity in Cedar's JSON entity format.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityJson {
    /// The entity's uid, `{"type": ..., "id": ...}`.
    pub uid: EntityUid,
    /// Its attributes, in Cedar's JSON value form.
    #[serde(default)]
    pub attrs: serde_json::Value,
    /// Its parents.
    #[serde(default)]
    pub parents: Vec<EntityUid>,
    /// Its tags, in Cedar's JSON value form, for types whose schema
    /// declares tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
}

/// Request entities that cannot be used, naming the file or the entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(cedar_edge::cli::entities))]
pub struct EntitiesError {
    /// What is wrong, and where.
    pub message: String,
}

impl From<String> for EntitiesError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl EntityJson {
    /// The typed form the engine takes.
    pub fn to_input(&self) -> Result<EntityInput, EntitiesError> {
        let attrs = if self.attrs.is_null() {
            Attributes::default()
        } else {
            Attributes::from_json(&self.attrs)
                .map_err(|err| format!("`{}` attrs: {err}", self.uid))?
        };
        let tags = match &self.tags {
            None => Attributes::default(),
            Some(tags) => {
                Attributes::from_json(tags).map_err(|err| format!("`{}` tags: {err}", self.uid))?
            }
        };
        Ok(EntityInput {
            uid: self.uid.clone(),
            attrs,
            parents: self.parents.clone(),
            tags,
        })
    }
}

/// Reads a JSON array of entities from a file.
pub fn read_entities_file(path: &std::path::Path) -> Result<Vec<EntityInput>, EntitiesError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let entities: Vec<EntityJson> =
        serde_json::from_str(&text).map_err(|err| format!("`{}`: {err}", path.display()))?;
    entities.iter().map(EntityJson::to_input).collect()
}
