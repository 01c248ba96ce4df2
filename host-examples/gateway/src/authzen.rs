//! The OpenID AuthZEN Authorization API 1.0, as data: reading evaluation
//! requests, mapping them onto Cedar requests, and writing decisions.
//!
//! Requests are read from the parsed JSON in place, so a batch's defaults
//! are borrowed by every item rather than copied into each. Unknown fields
//! are ignored, as the specification requires of receivers; a part of the
//! wrong JSON type is a [`BadRequest`] naming where it is.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_edge_core::{
    Attributes, AuthorizeError, Bundle, ContextInput, EntityInput, EntityUid, Request,
};
use serde_json::{Map, Value, json};

use crate::config::RequestAttributes;

/// A request the PDP cannot read: a 400, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// A subject or resource.
#[derive(Debug, Clone, Copy)]
pub struct Entity<'a> {
    /// Its type: a Cedar type name, or a name the config maps to one.
    pub kind: &'a str,
    /// Its id.
    pub id: &'a str,
    /// Attributes the caller sent, in Cedar's JSON value form.
    pub properties: Option<&'a Map<String, Value>>,
}

/// An action: an id of the configured action type.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    /// Its name.
    pub name: &'a str,
}

/// One complete evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    /// Who.
    pub subject: Entity<'a>,
    /// Does what.
    pub action: Action<'a>,
    /// To what.
    pub resource: Entity<'a>,
    /// In what context.
    pub context: Option<&'a Map<String, Value>>,
}

/// The parts an object gives, each perhaps missing.
#[derive(Debug, Clone, Copy, Default)]
struct Parts<'a> {
    subject: Option<Entity<'a>>,
    action: Option<Action<'a>>,
    resource: Option<Entity<'a>>,
    context: Option<&'a Map<String, Value>>,
}

/// How a batch is run (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    /// Every item is decided.
    ExecuteAll,
    /// Items are decided in order up to the first that is not allowed.
    DenyOnFirstDeny,
    /// Items are decided in order up to the first that is allowed.
    PermitOnFirstPermit,
}

impl Semantic {
    /// Whether the batch stops after an item with this decision.
    pub fn stops_after(self, allowed: bool) -> bool {
        match self {
            Self::ExecuteAll => false,
            Self::DenyOnFirstDeny => !allowed,
            Self::PermitOnFirstPermit => allowed,
        }
    }
}

/// `POST /access/v1/evaluations`, read.
#[derive(Debug)]
pub struct Batch<'a> {
    defaults: Parts<'a>,
    items: Vec<Parts<'a>>,
    /// How the items are run.
    pub semantic: Semantic,
}

/// What `/access/v1/evaluations` was asked.
#[derive(Debug)]
pub enum Evaluations<'a> {
    /// No `evaluations` (or an empty list): one evaluation, answered as
    /// `/access/v1/evaluation` answers it.
    Single(Evaluation<'a>),
    /// A batch.
    Batch(Batch<'a>),
}

/// Reads `POST /access/v1/evaluation`.
pub fn evaluation(body: &Value) -> Result<Evaluation<'_>, BadRequest> {
    let object = body
        .as_object()
        .ok_or_else(|| BadRequest("the body is not a JSON object".to_owned()))?;
    complete(read_parts(object, "")?, "").map_err(BadRequest)
}

/// Reads `POST /access/v1/evaluations`; a batch of more than `max_items`
/// is refused whole.
pub fn evaluations(body: &Value, max_items: usize) -> Result<Evaluations<'_>, BadRequest> {
    let object = body
        .as_object()
        .ok_or_else(|| BadRequest("the body is not a JSON object".to_owned()))?;
    let semantic = read_semantic(object)?;
    let items = match present(object, "evaluations") {
        None => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(BadRequest("`evaluations` is not an array".to_owned())),
    };
    if items.is_empty() {
        return evaluation(body).map(Evaluations::Single);
    }
    if items.len() > max_items {
        return Err(BadRequest(format!(
            "`evaluations` has {} items; at most {max_items} are accepted (`pdp.limits.max_batch_items`)",
            items.len()
        )));
    }
    let defaults = read_parts(object, "")?;
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let at = format!("evaluations[{index}].");
            let item = item.as_object().ok_or_else(|| {
                BadRequest(format!("`evaluations[{index}]` is not a JSON object"))
            })?;
            read_parts(item, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Evaluations::Batch(Batch {
        defaults,
        items,
        semantic,
    }))
}

impl<'a> Batch<'a> {
    /// How many items the batch has.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch has no items (never, once read).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Item `index` with the defaults filled in, or why it cannot be
    /// decided (a part missing from it and from the defaults).
    pub fn item(&self, index: usize) -> Result<Evaluation<'a>, String> {
        let item = self
            .items
            .get(index)
            .ok_or_else(|| format!("`evaluations[{index}]` does not exist"))?;
        let merged = Parts {
            subject: item.subject.or(self.defaults.subject),
            action: item.action.or(self.defaults.action),
            resource: item.resource.or(self.defaults.resource),
            context: item.context.or(self.defaults.context),
        };
        complete(merged, &format!("evaluations[{index}]."))
            .map_err(|message| format!("{message}, and the request gives no default"))
    }
}

fn read_semantic(object: &Map<String, Value>) -> Result<Semantic, BadRequest> {
    let Some(options) = present(object, "options") else {
        return Ok(Semantic::ExecuteAll);
    };
    let options = options
        .as_object()
        .ok_or_else(|| BadRequest("`options` is not a JSON object".to_owned()))?;
    match present(options, "evaluations_semantic") {
        None => Ok(Semantic::ExecuteAll),
        Some(Value::String(name)) => match name.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(BadRequest(format!(
                "`options.evaluations_semantic` `{other}` is not one of `execute_all`, `deny_on_first_deny`, `permit_on_first_permit`"
            ))),
        },
        Some(_) => Err(BadRequest(
            "`options.evaluations_semantic` is not a string".to_owned(),
        )),
    }
}

/// A field's value; `null` counts as absent, as the specification asks
/// senders to omit nulls rather than send them.
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

fn read_parts<'a>(object: &'a Map<String, Value>, at: &str) -> Result<Parts<'a>, BadRequest> {
    Ok(Parts {
        subject: read_entity(object, "subject", at)?,
        action: present(object, "action")
            .map(|action| {
                let action = action
                    .as_object()
                    .ok_or_else(|| BadRequest(format!("`{at}action` is not a JSON object")))?;
                read_object(action, "properties", &format!("{at}action."))?;
                Ok(Action {
                    name: read_string(action, "name", &format!("{at}action."))?,
                })
            })
            .transpose()?,
        resource: read_entity(object, "resource", at)?,
        context: read_object(object, "context", at)?,
    })
}

fn read_entity<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<Entity<'a>>, BadRequest> {
    let Some(value) = present(object, key) else {
        return Ok(None);
    };
    let at = format!("{at}{key}");
    let entity = value
        .as_object()
        .ok_or_else(|| BadRequest(format!("`{at}` is not a JSON object")))?;
    let at = format!("{at}.");
    Ok(Some(Entity {
        kind: read_string(entity, "type", &at)?,
        id: read_string(entity, "id", &at)?,
        properties: read_object(entity, "properties", &at)?,
    }))
}

fn read_string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, BadRequest> {
    match present(object, key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(BadRequest(format!("`{at}{key}` is not a string"))),
        None => Err(BadRequest(format!("`{at}{key}` is missing"))),
    }
}

fn read_object<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a Map<String, Value>>, BadRequest> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(BadRequest(format!("`{at}{key}` is not a JSON object"))),
    }
}

fn complete<'a>(parts: Parts<'a>, at: &str) -> Result<Evaluation<'a>, String> {
    let missing = |part: &str| format!("`{at}{part}` is missing");
    Ok(Evaluation {
        subject: parts.subject.ok_or_else(|| missing("subject"))?,
        action: parts.action.ok_or_else(|| missing("action"))?,
        resource: parts.resource.ok_or_else(|| missing("resource"))?,
        context: parts.context,
    })
}

/// How AuthZEN names become Cedar names.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// AuthZEN type → Cedar entity type.
    pub types: &'a BTreeMap<String, String>,
    /// The Cedar type of actions.
    pub action_type: &'a str,
}

impl Names<'_> {
    /// The Cedar type an AuthZEN type names.
    pub fn cedar_type<'k>(&'k self, kind: &'k str) -> &'k str {
        self.types.get(kind).map_or(kind, String::as_str)
    }

    /// Checks every name the configuration gives against the bundle's
    /// schema, so that a typo is an error at start (or a refused reload),
    /// not a silent deny on every request. A bundle without a schema has
    /// nothing to check against.
    pub fn check(&self, bundle: &Bundle) -> Result<(), String> {
        if let Some(types) = bundle.schema_entity_types() {
            for (authzen, cedar) in self.types {
                if !types.iter().any(|known| known == cedar) {
                    return Err(format!(
                        "`pdp.types.{authzen}`: the schema has no entity type `{cedar}`"
                    ));
                }
            }
        }
        if let Some(actions) = bundle.schema_actions()
            && !actions
                .iter()
                .any(|action| action.type_name == self.action_type)
        {
            let mut kinds: Vec<&str> = actions
                .iter()
                .map(|action| action.type_name.as_str())
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            return Err(format!(
                "`pdp.action_type`: the schema has no action of type `{}` (its action types: {})",
                self.action_type,
                kinds.join(", ")
            ));
        }
        Ok(())
    }

    /// The Cedar request. With `Trusted` attributes, `properties` become
    /// the attributes of a request-scoped entity when the bundle lacks it
    /// (`known` says whether it has it); with `Ignored`, entities come from
    /// the bundle only.
    pub fn request(
        &self,
        evaluation: &Evaluation<'_>,
        attributes: RequestAttributes,
        known: impl Fn(&EntityUid) -> bool,
    ) -> Result<Request, String> {
        let subject = self.uid("subject", &evaluation.subject)?;
        let resource = self.uid("resource", &evaluation.resource)?;
        let action = EntityUid::new(self.action_type, evaluation.action.name);
        EntityUid::from_str(&action.to_string()).map_err(|err| format!("`action.name`: {err}"))?;
        let mut entities = Vec::new();
        if attributes == RequestAttributes::Trusted {
            for (field, uid, properties) in [
                ("subject", &subject, evaluation.subject.properties),
                ("resource", &resource, evaluation.resource.properties),
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
        }
        let context = evaluation.context.map_or_else(
            || "{}".to_owned(),
            |context| Value::from(context.clone()).to_string(),
        );
        Ok(Request {
            principal: subject,
            action,
            resource,
            context: ContextInput::Json(context),
            entities,
        })
    }

    fn uid(&self, field: &str, entity: &Entity<'_>) -> Result<EntityUid, String> {
        let uid = EntityUid::new(self.cedar_type(entity.kind), entity.id);
        // Validates the type name early, with the field in the message.
        EntityUid::from_str(&uid.to_string()).map_err(|err| format!("`{field}.type`: {err}"))?;
        Ok(uid)
    }
}

/// One item's outcome, ready to be written for a caller.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Cedar decided.
    Decided {
        /// Whether it allowed.
        allowed: bool,
        /// The decision id, as audited.
        decision_id: &'a str,
        /// The determining policies.
        reasons: &'a [String],
        /// Evaluation errors, each naming its policy.
        errors: Vec<String>,
    },
    /// The item could not be decided: a deny, with why.
    Refused {
        /// The decision id, as audited.
        decision_id: &'a str,
        /// HTTP-like status: 400 for the caller's input, 500 otherwise.
        status: u16,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl Outcome<'_> {
    /// Whether access is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Decided { allowed: true, .. })
    }

    /// The outcome of a failed authorization: a request the core refused
    /// is the caller's to fix; anything else (a trap, a timeout) is ours,
    /// and its details are only for callers who may see reasons.
    pub fn failed<'d>(decision_id: &'d str, error: &AuthorizeError) -> Outcome<'d> {
        match error {
            AuthorizeError::Request(error) => Outcome::Refused {
                decision_id,
                status: 400,
                message: error.to_string(),
            },
            other => Outcome::Refused {
                decision_id,
                status: 500,
                message: other.to_string(),
            },
        }
    }

    /// The AuthZEN decision. Without `reason_admin` it is `{"decision": …}`
    /// plus, for an item that could not be decided, the error: exactly
    /// what interop runners compare.
    pub fn to_json(&self, reason_admin: bool) -> Value {
        match self {
            Self::Decided {
                allowed,
                decision_id,
                reasons,
                errors,
            } => {
                if reason_admin {
                    json!({
                        "decision": allowed,
                        "context": {
                            "id": decision_id,
                            "reason_admin": {
                                "determining_policies": reasons,
                                "errors": errors,
                            }
                        }
                    })
                } else {
                    json!({ "decision": allowed })
                }
            }
            Self::Refused {
                decision_id,
                status,
                message,
            } => {
                // Our own failures say no more than that to other callers.
                let shown = if *status >= 500 && !reason_admin {
                    "the decision failed"
                } else {
                    message.as_str()
                };
                let mut context = json!({ "error": { "status": status, "message": shown } });
                if reason_admin && let Some(context) = context.as_object_mut() {
                    context.insert("id".to_owned(), Value::from(*decision_id));
                }
                json!({ "decision": false, "context": context })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_nulls_are_absent() {
        let body = json!({
            "subject": {"type": "user", "id": "rick", "identity": "x", "_note": 1},
            "action": {"name": "read", "extra": true},
            "resource": {"type": "todo", "id": "1", "ownerID": "rick"},
            "context": null,
            "whatever": [1, 2],
        });
        let read = evaluation(&body).unwrap();
        assert_eq!(
            (read.subject.id, read.action.name, read.resource.id),
            ("rick", "read", "1")
        );
        assert!(read.context.is_none());
    }

    #[test]
    fn wrong_types_name_the_part() {
        let cases = [
            (json!([1]), "the body is not a JSON object"),
            (
                json!({"subject": ["user", "rick"], "action": {"name": "a"}, "resource": {"type": "t", "id": "1"}}),
                "`subject` is not a JSON object",
            ),
            (
                json!({"subject": {"type": "user", "id": 7}, "action": {"name": "a"}, "resource": {"type": "t", "id": "1"}}),
                "`subject.id` is not a string",
            ),
            (
                json!({"subject": {"type": "user", "id": "r"}, "action": {"name": "a"}, "resource": {"type": "t", "id": "1", "properties": [1]}}),
                "`resource.properties` is not a JSON object",
            ),
            (
                json!({"subject": {"type": "user", "id": "r"}, "action": {"name": "a"}}),
                "`resource` is missing",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(evaluation(&body).unwrap_err().0, expected, "{body}");
        }
    }

    #[test]
    fn batches_borrow_defaults_and_report_missing_parts_per_item() {
        let body = json!({
            "subject": {"type": "user", "id": "rick"},
            "action": {"name": "read"},
            "evaluations": [
                {"resource": {"type": "todo", "id": "1"}},
                {"action": {"name": "write"}},
            ],
        });
        let Evaluations::Batch(batch) = evaluations(&body, 100).unwrap() else {
            panic!("a batch")
        };
        assert_eq!(batch.item(0).unwrap().action.name, "read");
        assert_eq!(
            batch.item(1).unwrap_err(),
            "`evaluations[1].resource` is missing, and the request gives no default"
        );
    }

    #[test]
    fn options_and_caps_are_checked() {
        let item = json!({"subject": {"type": "u", "id": "1"}, "action": {"name": "a"}, "resource": {"type": "t", "id": "1"}});
        let bogus = json!({"evaluations": [item], "options": {"evaluations_semantic": "bogus"}});
        assert!(evaluations(&bogus, 100).unwrap_err().0.contains("`bogus`"));
        let many = json!({"evaluations": vec![item.clone(); 3]});
        let refused = evaluations(&many, 2).unwrap_err().0;
        assert!(refused.contains("3 items") && refused.contains("max_batch_items"));
        let empty = json!({"evaluations": []});
        assert_eq!(
            evaluations(&empty, 2).unwrap_err().0,
            "`subject` is missing"
        );
        let single = json!({"evaluations": [], "subject": item["subject"], "action": item["action"], "resource": item["resource"]});
        assert!(matches!(
            evaluations(&single, 2).unwrap(),
            Evaluations::Single(_)
        ));
    }
}
