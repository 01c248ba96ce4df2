//! Typed values as they cross the component boundary.
//!
//! WIT has no recursive types, so a nested value is stored as a flat list of
//! nodes in which every child comes before its parent. [`Value`] is the
//! ordinary recursive form that Rust callers build; [`Attributes`] is the
//! flat form that travels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Cedar entity uid such as `Airflow::Dag::"etl"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityUid {
    /// The entity type, with its namespace: `Airflow::Dag`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The entity id, unescaped: `etl`.
    pub id: String,
}

impl EntityUid {
    /// A uid from its type name and unescaped id.
    pub fn new(type_name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            id: id.into(),
        }
    }
}

impl FromStr for EntityUid {
    type Err = String;

    /// Parses Cedar's literal form, `Type::"id"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uid = cedar_policy::EntityUid::from_str(text).map_err(|err| {
            format!("`{text}` is not an entity uid like `User::\"alice\"`: {err}")
        })?;
        Ok(Self::new(uid.type_name().to_string(), uid.id().unescaped()))
    }
}

impl fmt::Display for EntityUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::\"{}\"", self.type_name, self.id.escape_debug())
    }
}

/// The Cedar extension types a typed value can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtensionKind {
    /// `ip("10.0.0.0/8")`
    Ip,
    /// `decimal("1.25")`
    Decimal,
    /// `datetime("2026-11-22T10:00:00Z")`
    Datetime,
    /// `duration("1h30m")`
    Duration,
}

impl ExtensionKind {
    /// The name of the Cedar constructor for this kind.
    pub fn function_name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Decimal => "decimal",
            Self::Datetime => "datetime",
            Self::Duration => "duration",
        }
    }

    fn from_function_name(name: &str) -> Option<Self> {
        match name {
            "ip" => Some(Self::Ip),
            "decimal" => Some(Self::Decimal),
            "datetime" => Some(Self::Datetime),
            "duration" => Some(Self::Duration),
            _ => None,
        }
    }
}

/// One node of a flat value tree; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueNode {
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Long(i64),
    /// A string.
    String(String),
    /// A reference to an entity.
    Entity(EntityUid),
    /// An extension value, as the string its constructor takes.
    Extension(ExtensionKind, String),
    /// A call of the named Cedar extension function on the nodes at these
    /// indices, such as `offset` of a datetime and a duration.
    ExtensionCall(String, Vec<u32>),
    /// A set of the nodes at these indices.
    Set(Vec<u32>),
    /// A record whose fields hold the nodes at these indices.
    Record(Vec<(String, u32)>),
}

/// A flat record of named values: a context or an entity's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Every node, children before parents.
    pub nodes: Vec<ValueNode>,
    /// The top-level fields and the index of each one's value.
    pub fields: Vec<(String, u32)>,
}

/// A value in ordinary recursive form, for callers to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Long(i64),
    /// A string.
    String(String),
    /// A reference to an entity.
    Entity(EntityUid),
    /// An extension value, as the string its constructor takes.
    Extension(ExtensionKind, String),
    /// A call of the named Cedar extension function on these arguments,
    /// such as `offset(datetime("…"), duration("1h"))`. Cedar checks the
    /// name and the arguments' types.
    ExtensionCall(String, Vec<Value>),
    /// A set.
    Set(Vec<Value>),
    /// A record.
    Record(Vec<(String, Value)>),
}

/// A JSON value that has no Cedar value, with the path to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(cedar_edge::value::invalid))]
pub struct ValueError {
    /// What is wrong, naming the field (`` `a`: `b`: … ``) when nested.
    pub message: String,
}

impl From<String> for ValueError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl Value {
    /// Reads Cedar's JSON value form: plain JSON scalars, arrays and objects,
    /// plus `{"__entity": {"type", "id"}}`, `{"__extn": {"fn", "arg"}}` and
    /// `{"__extn": {"fn", "args": [...]}}`.
    ///
    /// Without a schema these escapes are the only way to mark an entity or an
    /// extension value, exactly as in Cedar's own JSON format.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ValueError> {
        Self::read_json(json).map_err(ValueError::from)
    }

    fn read_json(json: &serde_json::Value) -> Result<Self, String> {
        use serde_json::Value as Json;
        Ok(match json {
            Json::Bool(b) => Self::Bool(*b),
            Json::Number(n) => Self::Long(
                n.as_i64()
                    .ok_or_else(|| format!("`{n}` is not a 64-bit integer; Cedar has no floats"))?,
            ),
            Json::String(s) => Self::String(s.clone()),
            Json::Array(items) => Self::Set(
                items
                    .iter()
                    .map(Self::read_json)
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(map) => {
                if let (1, Some(entity)) = (map.len(), map.get("__entity")) {
                    let field = |name: &str| {
                        entity
                            .get(name)
                            .and_then(Json::as_str)
                            .map(str::to_owned)
                            .ok_or_else(|| format!("`__entity` needs a string `{name}`"))
                    };
                    return Ok(Self::Entity(EntityUid::new(field("type")?, field("id")?)));
                }
                if let (1, Some(extension)) = (map.len(), map.get("__extn")) {
                    let name = extension
                        .get("fn")
                        .and_then(Json::as_str)
                        .unwrap_or_default();
                    if let Some(args) = extension.get("args") {
                        let args = args
                            .as_array()
                            .ok_or_else(|| "`__extn` needs `args` as a list".to_owned())?
                            .iter()
                            .map(Self::read_json)
                            .collect::<Result<_, _>>()?;
                        return Ok(Self::ExtensionCall(name.to_owned(), args));
                    }
                    let kind = ExtensionKind::from_function_name(name)
                        .ok_or_else(|| format!("unknown extension function `{name}`"))?;
                    let arg = extension
                        .get("arg")
                        .and_then(Json::as_str)
                        .ok_or_else(|| "`__extn` needs a string `arg`".to_owned())?;
                    return Ok(Self::Extension(kind, arg.to_owned()));
                }
                Self::Record(
                    map.iter()
                        .map(|(key, value)| Ok((key.clone(), Self::read_json(value)?)))
                        .collect::<Result<_, String>>()?,
                )
            }
            Json::Null => return Err("`null` has no Cedar value".to_owned()),
        })
    }
}

impl Attributes {
    /// Flattens named values into the form that crosses the boundary.
    pub fn from_fields(fields: impl IntoIterator<Item = (String, Value)>) -> Self {
        let mut attributes = Self::default();
        for (name, value) in fields {
            let index = attributes.push(value);
            attributes.fields.push((name, index));
        }
        attributes
    }

    /// Reads a JSON object in Cedar's value form; see [`Value::from_json`].
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ValueError> {
        let object = json
            .as_object()
            .ok_or_else(|| ValueError::from("expected a JSON object of named values".to_owned()))?;
        let fields = object
            .iter()
            .map(|(key, value)| {
                Value::read_json(value)
                    .map(|value| (key.clone(), value))
                    .map_err(|err| ValueError::from(format!("`{key}`: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_fields(fields))
    }

    /// Appends a value and its children in post-order, returning its index.
    fn push(&mut self, value: Value) -> u32 {
        let node = match value {
            Value::Bool(b) => ValueNode::Bool(b),
            Value::Long(n) => ValueNode::Long(n),
            Value::String(s) => ValueNode::String(s),
            Value::Entity(uid) => ValueNode::Entity(uid),
            Value::Extension(kind, arg) => ValueNode::Extension(kind, arg),
            Value::ExtensionCall(name, args) => {
                ValueNode::ExtensionCall(name, args.into_iter().map(|arg| self.push(arg)).collect())
            }
            Value::Set(items) => {
                ValueNode::Set(items.into_iter().map(|item| self.push(item)).collect())
            }
            Value::Record(fields) => ValueNode::Record(
                fields
                    .into_iter()
                    .map(|(name, value)| (name, self.push(value)))
                    .collect(),
            ),
        };
        self.nodes.push(node);
        // A tree too big for u32 indices is refused by the node limit long before.
        u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}
