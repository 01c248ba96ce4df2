//! The OpenID AuthZEN Access Evaluation API 1.0: single and batch
//! evaluations mapped onto Cedar requests.

use std::str::FromStr;

use cedar_edge_core::{Attributes, ContextInput, EntityInput, EntityUid, Request};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A subject or resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// Its type: a Cedar type name, or a name the config maps to one.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Attributes, in Cedar's JSON value form.
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// An action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action's name, an id of the mapping's action type.
    pub name: String,
    /// Ignored by Cedar; accepted as the specification allows it.
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Who.
    pub subject: Entity,
    /// Does what.
    pub action: Action,
    /// To what.
    pub resource: Entity,
    /// In what context.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// One item of a batch: any part missing comes from the batch's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialEvaluation {
    /// Who.
    #[serde(default)]
    pub subject: Option<Entity>,
    /// Does what.
    #[serde(default)]
    pub action: Option<Action>,
    /// To what.
    #[serde(default)]
    pub resource: Option<Entity>,
    /// In what context.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluations {
    /// Default subject.
    #[serde(default)]
    pub subject: Option<Entity>,
    /// Default action.
    #[serde(default)]
    pub action: Option<Action>,
    /// Default resource.
    #[serde(default)]
    pub resource: Option<Entity>,
    /// Default context.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// The evaluations.
    #[serde(default)]
    pub evaluations: Vec<PartialEvaluation>,
    /// Evaluation options; `evaluations_semantic` is honoured as
    /// `execute_all` (every item is decided).
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
}

impl Evaluations {
    /// Each item with the defaults filled in; an item still missing a part
    /// is an error naming its index.
    pub fn resolve(&self) -> Vec<Result<Evaluation, String>> {
        let items = if self.evaluations.is_empty() {
            vec![PartialEvaluation::default()]
        } else {
            self.evaluations.clone()
        };
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let missing =
                    |part: &str| format!("evaluations[{index}]: no `{part}` and no default");
                Ok(Evaluation {
                    subject: item
                        .subject
                        .or_else(|| self.subject.clone())
                        .ok_or_else(|| missing("subject"))?,
                    action: item
                        .action
                        .or_else(|| self.action.clone())
                        .ok_or_else(|| missing("action"))?,
                    resource: item
                        .resource
                        .or_else(|| self.resource.clone())
                        .ok_or_else(|| missing("resource"))?,
                    context: item.context.or_else(|| self.context.clone()),
                })
            })
            .collect()
    }
}

/// How AuthZEN names become Cedar names.
#[derive(Debug)]
pub struct Names<'a> {
    /// AuthZEN type → Cedar entity type.
    pub types: &'a std::collections::BTreeMap<String, String>,
    /// The Cedar type of actions.
    pub action_type: &'a str,
}

impl Names<'_> {
    fn cedar_type(&self, kind: &str) -> String {
        self.types
            .get(kind)
            .cloned()
            .unwrap_or_else(|| kind.to_owned())
    }

    /// The Cedar request. Properties become the attributes of a
    /// request-scoped entity, unless `known` says the bundle has it.
    pub fn request(
        &self,
        evaluation: &Evaluation,
        known: impl Fn(&EntityUid) -> bool,
    ) -> Result<Request, String> {
        let subject = EntityUid::new(
            self.cedar_type(&evaluation.subject.kind),
            &evaluation.subject.id,
        );
        let resource = EntityUid::new(
            self.cedar_type(&evaluation.resource.kind),
            &evaluation.resource.id,
        );
        // Validates the names early, with the field in the message.
        for (field, uid) in [("subject", &subject), ("resource", &resource)] {
            EntityUid::from_str(&uid.to_string()).map_err(|err| format!("`{field}`: {err}"))?;
        }
        let mut entities = Vec::new();
        for (field, uid, properties) in [
            ("subject", &subject, &evaluation.subject.properties),
            ("resource", &resource, &evaluation.resource.properties),
        ] {
            if let Some(properties) = properties
                && !known(uid)
            {
                let attrs = Attributes::from_json(&Value::Object(properties.clone()))
                    .map_err(|err| format!("`{field}.properties`: {err}"))?;
                entities.push(EntityInput {
                    uid: uid.clone(),
                    attrs,
                    parents: Vec::new(),
                    tags: Attributes::default(),
                });
            }
        }
        let context = evaluation.context.clone().unwrap_or_default();
        Ok(Request {
            principal: subject,
            action: EntityUid::new(self.action_type, &evaluation.action.name),
            resource,
            context: ContextInput::Json(Value::Object(context).to_string()),
            entities,
        })
    }
}

/// A response item: the decision and, in `context`, why.
pub fn answer(decision: bool, decision_id: &str, reasons: &[String], errors: &[String]) -> Value {
    json!({
        "decision": decision,
        "context": {
            "id": decision_id,
            "reason_admin": {
                "determining_policies": reasons,
                "errors": errors,
            }
        }
    })
}
