//! A generated bundle as facts that translators use without parsing Cedar:
//! entities with their transitive ancestors, and requests with the decision
//! our engine made on them.

use std::collections::{BTreeMap, BTreeSet};

use cedar_edge_core::{
    Attributes, Bundle, ContextInput, Decision, EntityUid, Request, RequestLimits, Value, ValueNode,
};
use serde::{Deserialize, Serialize};

use crate::generator::{self, GeneratedPolicy, Rng};

/// Why a workload could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The generated bundle did not load.
    #[error("the generated bundle does not load: {0}")]
    Load(String),
    /// The entities are not Cedar's entity JSON.
    #[error("the entities are not Cedar entity JSON: {0}")]
    Entities(String),
    /// Our engine refused a generated request.
    #[error("our engine refused request {index}: {message}")]
    Request {
        /// Which request.
        index: usize,
        /// What it said.
        message: String,
    },
    /// A request's context is not the generated `{hour, mfa}`.
    #[error("request {0} has no typed `hour` and `mfa` context")]
    Context(usize),
}

/// An entity's key in every translation: `Saas::Folder::t3-f1`. The
/// generated ids never contain `::`, so the key is unambiguous.
pub fn key(uid: &EntityUid) -> String {
    format!("{}::{}", uid.type_name, uid.id)
}

/// One entity as a translator needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityFacts {
    /// Its uid.
    pub uid: EntityUid,
    /// Every ancestor, transitively, without the entity itself; sorted.
    pub ancestors: Vec<EntityUid>,
    /// Its attributes in Cedar's JSON value form.
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// The generated request context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    /// `context.hour`.
    pub hour: i64,
    /// `context.mfa`.
    pub mfa: bool,
}

/// One request with the answer our engine gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRequest {
    /// Who acts.
    pub principal: EntityUid,
    /// What they do.
    pub action: EntityUid,
    /// What they act on.
    pub resource: EntityUid,
    /// The context.
    pub context: RequestContext,
    /// Our native engine's decision.
    pub expected: Decision,
    /// Our native engine's determining policies.
    pub determining: Vec<String>,
}

impl WorkloadRequest {
    /// Whether the expected decision is allow.
    pub fn expects_allow(&self) -> bool {
        self.expected == Decision::Allow
    }

    /// The request as our engine takes it.
    pub fn to_request(&self) -> Request {
        Request {
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context: ContextInput::Typed(Attributes::from_fields([
                ("hour".to_owned(), Value::Long(self.context.hour)),
                ("mfa".to_owned(), Value::Bool(self.context.mfa)),
            ])),
            entities: Vec::new(),
        }
    }
}

/// `requests.json` of a workload directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestsFile {
    /// How many policies the bundle has.
    pub policies: usize,
    /// The generator seed.
    pub seed: u64,
    /// The requests, in order.
    pub requests: Vec<WorkloadRequest>,
}

/// `model.json` of a workload directory, as written.
#[derive(Debug, Serialize)]
pub struct ModelFile<'a> {
    /// How many policies the bundle has.
    pub policies: usize,
    /// The generator seed.
    pub seed: u64,
    /// How many tenants the bundle has.
    pub tenants: usize,
    /// What every policy means, in bundle order.
    pub specs: &'a [GeneratedPolicy],
    /// Every entity with its ancestors.
    pub entities: &'a [EntityFacts],
}

/// The part of `model.json` that runners read back.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntities {
    /// Every entity with its ancestors.
    pub entities: Vec<EntityFacts>,
}

/// A generated bundle, its entities as facts, and requests decided by our
/// native engine.
#[derive(Debug)]
pub struct Workload {
    /// The bundle and its policy model.
    pub generated: generator::Generated,
    /// The bundle, loaded by our engine.
    pub native: Bundle,
    /// Every entity of the bundle.
    pub entities: Vec<EntityFacts>,
    /// The requests, as our engine takes them.
    pub engine_requests: Vec<Request>,
    /// The same requests with their expected answers.
    pub requests: Vec<WorkloadRequest>,
}

/// Generates a bundle of `policies` policies and `count` requests against
/// it, and decides them with our native engine.
pub fn workload(policies: usize, seed: u64, count: usize) -> Result<Workload, ModelError> {
    let generated = generator::bundle(policies, seed);
    let native = Bundle::load(&generated.source, RequestLimits::default())
        .map_err(|err| ModelError::Load(err.to_string()))?;
    let entities_json = generated
        .source
        .entities
        .as_ref()
        .map_or("[]", |file| file.contents.as_str());
    let entities = entity_facts(entities_json)?;
    // The request stream gets its own seed, so it does not shift when the
    // generator draws a different number of values for the bundle.
    let mut rng = Rng::new(seed ^ 0x7065_6572);
    let engine_requests: Vec<Request> = (0..count)
        .map(|_| generator::request(generated.tenants, &mut rng))
        .collect();
    let requests = engine_requests
        .iter()
        .enumerate()
        .map(|(index, request)| {
            let response = native
                .authorize(request)
                .map_err(|err| ModelError::Request {
                    index,
                    message: err.to_string(),
                })?;
            Ok(WorkloadRequest {
                principal: request.principal.clone(),
                action: request.action.clone(),
                resource: request.resource.clone(),
                context: context_of(request).ok_or(ModelError::Context(index))?,
                expected: response.decision,
                determining: response.determining_policies,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Workload {
        generated,
        native,
        entities,
        engine_requests,
        requests,
    })
}

/// The `{hour, mfa}` of a generated request.
pub fn context_of(request: &Request) -> Option<RequestContext> {
    let ContextInput::Typed(attributes) = &request.context else {
        return None;
    };
    let field = |name: &str| {
        attributes
            .fields
            .iter()
            .find(|(field, _)| field == name)
            .and_then(|(_, index)| attributes.nodes.get(*index as usize))
    };
    match (field("hour")?, field("mfa")?) {
        (ValueNode::Long(hour), ValueNode::Bool(mfa)) => Some(RequestContext {
            hour: *hour,
            mfa: *mfa,
        }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct EntityJson {
    uid: EntityUid,
    #[serde(default)]
    attrs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    parents: Vec<EntityUid>,
}

/// Reads Cedar entity JSON and computes each entity's transitive ancestors,
/// as Cedar does once when it loads entities.
pub fn entity_facts(entities_json: &str) -> Result<Vec<EntityFacts>, ModelError> {
    let entities: Vec<EntityJson> =
        serde_json::from_str(entities_json).map_err(|err| ModelError::Entities(err.to_string()))?;
    let parents: BTreeMap<&EntityUid, &[EntityUid]> = entities
        .iter()
        .map(|entity| (&entity.uid, entity.parents.as_slice()))
        .collect();
    Ok(entities
        .iter()
        .map(|entity| {
            let mut seen: BTreeSet<&EntityUid> = BTreeSet::new();
            let mut todo: Vec<&EntityUid> = entity.parents.iter().collect();
            while let Some(next) = todo.pop() {
                if seen.insert(next) {
                    todo.extend(parents.get(next).copied().unwrap_or_default());
                }
            }
            EntityFacts {
                uid: entity.uid.clone(),
                ancestors: seen.into_iter().cloned().collect(),
                attrs: entity.attrs.clone(),
            }
        })
        .collect())
}

/// The entity an attribute refers to, if it is Cedar's `__entity` escape.
pub fn entity_ref(value: &serde_json::Value) -> Option<EntityUid> {
    let entity = value.get("__entity")?;
    Some(EntityUid::new(
        entity.get("type")?.as_str()?,
        entity.get("id")?.as_str()?,
    ))
}

/// An entity's attributes with entity references written as their keys,
/// the flat form both translations use.
pub fn keyed_attrs(entity: &EntityFacts) -> serde_json::Map<String, serde_json::Value> {
    entity
        .attrs
        .iter()
        .map(|(name, value)| {
            let value = entity_ref(value)
                .map_or_else(|| value.clone(), |uid| serde_json::Value::String(key(&uid)));
            (name.clone(), value)
        })
        .collect()
}

/// Entities by uid, for translators that look up a request's entities.
pub fn by_uid(entities: &[EntityFacts]) -> BTreeMap<&EntityUid, &EntityFacts> {
    entities
        .iter()
        .map(|entity| (&entity.uid, entity))
        .collect()
}
