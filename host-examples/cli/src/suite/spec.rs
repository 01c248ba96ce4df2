//! The test-file format, exactly as written in `tests/*.yaml` or `*.json`.
//! Every struct refuses unknown keys: a typo is an error, never a silently
//! skipped expectation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::entities::EntityJson;

/// One test file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// A title for reports; the file name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Named contexts and entities that cases refer to by name.
    #[serde(default)]
    pub fixtures: Fixtures,
    /// What every case and matrix of this file uses unless it says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// Single requests with their expected decisions.
    #[serde(default)]
    pub cases: Vec<CaseSpec>,
    /// Principals × actions × resources with one table of expectations.
    #[serde(default)]
    pub matrices: Vec<MatrixSpec>,
}

/// Named, reusable request parts. Fixtures in a file named `fixtures.yaml`
/// (or `.yml`, `.json`) are shared by every file of the suite.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// Contexts in Cedar's JSON form.
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextSpec>,
    /// Groups of request-scoped entities.
    #[serde(default)]
    pub entities: BTreeMap<String, Vec<EntitySpec>>,
}

/// Per-file defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The context of cases that give none.
    #[serde(default)]
    pub context: Option<ContextSpec>,
    /// The request entities of cases that give none.
    #[serde(default)]
    pub entities: Option<Vec<EntitySpec>>,
}

/// A context: a fixture's name, an inline object, or a list of both merged
/// left to right (later keys win).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ContextSpec {
    /// `context: office`
    Fixture(String),
    /// `context: {mfa: true}`
    Inline(serde_json::Map<String, serde_json::Value>),
    /// `context: [office, {token_age_seconds: 7200}]`
    Merged(Vec<ContextSpec>),
}

/// A request entity, inline or a fixture group's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EntitySpec {
    /// The name of an entity fixture group.
    Fixture(String),
    /// An entity in Cedar's JSON entity format.
    Inline(EntityJson),
}

/// An entity uid: `'Airflow::User::"bob"'` or `{type: Airflow::User, id: bob}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UidSpec {
    /// Cedar's literal form.
    Literal(String),
    /// The parts.
    Parts(UidParts),
}

/// An entity uid by its parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidParts {
    /// The entity type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The entity id.
    pub id: String,
}

/// The decision a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The request is allowed.
    Allow,
    /// The request is denied.
    Deny,
}

/// The determining policies a case expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReasonsSpec {
    /// Exactly these policy ids, in any order.
    Exact(Vec<String>),
    /// At least these.
    Includes(IncludedReasons),
}

/// `reasons: {includes: [...]}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludedReasons {
    /// The ids that must be among the reasons.
    pub includes: Vec<String>,
}

/// An expected evaluation error: the policy id, or the id with a part of the
/// message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ErrorSpec {
    /// The policy whose evaluation errors.
    Policy(String),
    /// The policy and a piece of the message.
    Detailed(DetailedError),
}

/// `{policy: id, contains: text}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedError {
    /// The policy whose evaluation errors.
    pub policy: String,
    /// Text the error message contains.
    pub contains: String,
}

/// One request and its expected decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// The case's name, unique within its file.
    pub name: String,
    /// Who acts.
    pub principal: UidSpec,
    /// What they do.
    pub action: UidSpec,
    /// What they act on.
    pub resource: UidSpec,
    /// The context; the file's default when absent.
    #[serde(default)]
    pub context: Option<ContextSpec>,
    /// Request-scoped entities; the file's default when absent.
    #[serde(default)]
    pub entities: Option<Vec<EntitySpec>>,
    /// The expected decision.
    pub expect: Outcome,
    /// The expected determining policies, when the case checks them.
    #[serde(default)]
    pub reasons: Option<ReasonsSpec>,
    /// The expected evaluation errors, exactly (`[]` for none); unchecked
    /// when absent.
    #[serde(default)]
    pub errors: Option<Vec<ErrorSpec>>,
}

/// A role model in a few lines: every principal, action and resource,
/// named by a short alias, and a table of expected decisions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// The matrix's name; each cell becomes the case `name: p / a / r`.
    pub name: String,
    /// Alias → principal uid.
    pub principals: BTreeMap<String, UidSpec>,
    /// Alias → action uid.
    pub actions: BTreeMap<String, UidSpec>,
    /// Alias → resource uid.
    pub resources: BTreeMap<String, UidSpec>,
    /// The context of every cell; the file's default when absent.
    #[serde(default)]
    pub context: Option<ContextSpec>,
    /// The request entities of every cell; the file's default when absent.
    #[serde(default)]
    pub entities: Option<Vec<EntitySpec>>,
    /// Principal alias → action alias → the outcome for every resource, or
    /// resource alias → outcome. Every cell must be given.
    pub expect: BTreeMap<String, BTreeMap<String, MatrixCell>>,
}

/// One row-and-column entry of a matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MatrixCell {
    /// The same outcome for every resource.
    Every(Outcome),
    /// Resource alias → outcome.
    PerResource(BTreeMap<String, Outcome>),
}

/// A request without an expectation, as `diff --requests FILE` reads them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Who acts.
    pub principal: UidSpec,
    /// What they do.
    pub action: UidSpec,
    /// What they act on.
    pub resource: UidSpec,
    /// The context, in Cedar's JSON form.
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Request-scoped entities, in Cedar's JSON entity format.
    #[serde(default)]
    pub entities: Vec<EntityJson>,
}
