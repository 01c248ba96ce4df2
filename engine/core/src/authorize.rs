//! Deciding a request against a loaded bundle.

use crate::cedar_internals::ast::{self, EntityUID, PartialValue};
use std::collections::HashSet;
use std::sync::Arc;

use crate::cedar_internals::{
    CoreEntities, Dereference, Extensions, NoEntitiesSchema, TCComputation,
};
use cedar_policy::{Context, Entities};

use crate::bundle::Bundle;
use crate::diagnostic::full_message;
use crate::entity_cache::CheckedEntities;
use crate::index::{Parties, Party};
use crate::request::{
    NodeBudget, Request, RequestError, cedar_entity, cedar_fields, cedar_uid, check_json_context,
};
use crate::response::Response;

/// The entity store a request is decided against.
enum Store<'bundle> {
    /// The bundle's own: the request brought no entities.
    Bundle(&'bundle CoreEntities),
    /// The request's entities and what they and the request reach (see
    /// `slice`).
    Slice(CoreEntities),
    /// The request's entities joined to a copy of the whole store, for the
    /// rare requests that change the store's own hierarchy.
    Joined(Entities),
}

impl Store<'_> {
    fn get(&self) -> &CoreEntities {
        match self {
            Self::Bundle(store) => store,
            Self::Slice(store) => store,
            Self::Joined(store) => store.as_ref(),
        }
    }
}

/// A request turned into Cedar's terms, with the policies whose scope
/// matches it.
struct Prepared<'bundle> {
    request: cedar_policy::Request,
    store: Store<'bundle>,
    applicable: Vec<u32>,
}

/// The request's parties, with their entities as `entity` finds them.
pub(crate) fn parties<'a>(
    principal: &'a EntityUID,
    action: &'a EntityUID,
    resource: &'a EntityUID,
    entity: impl Fn(&'a EntityUID) -> Option<&'a ast::Entity>,
) -> Parties<'a> {
    Parties {
        principal: Party {
            uid: principal,
            entity: entity(principal),
        },
        action: Party {
            uid: action,
            entity: entity(action),
        },
        resource: Party {
            uid: resource,
            entity: entity(resource),
        },
    }
}

pub(crate) fn in_store<'a>(store: &'a CoreEntities, uid: &EntityUID) -> Option<&'a ast::Entity> {
    match store.entity(uid) {
        Dereference::Data(entity) => Some(entity),
        Dereference::NoSuchEntity | Dereference::Residual(_) => None,
    }
}

impl Bundle {
    /// Decides one request. An `Err` means the request got no decision at
    /// all; every host must treat it as a deny.
    pub fn authorize(&self, request: &Request) -> Result<Response, RequestError> {
        let prepared = self.prepare(request)?;
        let core_request: &ast::Request = prepared.request.as_ref();
        let evaluation = self.index.evaluate(
            &prepared.applicable,
            core_request.clone(),
            prepared.store.get(),
        );
        Ok(Response {
            decision: evaluation.decision,
            determining_policies: evaluation.determining_policies,
            errors: evaluation.errors,
            bundle_id: self.id.clone(),
        })
    }

    /// The ids of the policies whose scope matches `request`: the only ones
    /// whose conditions [`Bundle::authorize`] evaluates. Sorted.
    pub fn candidate_policies(&self, request: &Request) -> Result<Vec<String>, RequestError> {
        let prepared = self.prepare(request)?;
        let mut ids: Vec<String> = self
            .index
            .ids(&prepared.applicable)
            .map(str::to_owned)
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn prepare(&self, request: &Request) -> Result<Prepared<'_>, RequestError> {
        let principal = cedar_uid(&request.principal, "principal")?;
        let action = cedar_uid(&request.action, "action")?;
        let resource = cedar_uid(&request.resource, "resource")?;
        let mut budget = NodeBudget::new(&self.limits);
        let context = self.cedar_context(&request.context, Some(&action), &mut budget)?;
        let own = self.own_entities(request, &mut budget)?;
        let cedar_request =
            cedar_policy::Request::new(principal, action, resource, context, self.schema.as_ref())
                .map_err(|err| RequestError::invalid("request", err))?;
        let (Some(principal), Some(action), Some(resource)) = (
            cedar_request.principal(),
            cedar_request.action(),
            cedar_request.resource(),
        ) else {
            return Err(RequestError::invalid(
                "request",
                "principal, action and resource must all be known",
            ));
        };
        let (principal, action, resource): (&EntityUID, &EntityUID, &EntityUID) =
            (principal.as_ref(), action.as_ref(), resource.as_ref());

        let Some(own) = own else {
            let store = self.entities.as_ref();
            let parties = parties(principal, action, resource, |uid| in_store(store, uid));
            return Ok(Prepared {
                applicable: self.index.applicable(&parties),
                request: cedar_request,
                store: Store::Bundle(store),
            });
        };

        // Request entities that would change the store's hierarchy, or the
        // action hierarchy the index files policies under, are joined the
        // plain way, and such requests see every policy.
        let Some(completed) = own.sliceable.as_ref() else {
            let joined = self
                .entities
                .clone()
                .add_entities(own.entities.clone(), None) // checked against the schema already
                .map_err(|err| RequestError::invalid("entities", err))?;
            let parties = parties(principal, action, resource, |uid| {
                in_store(joined.as_ref(), uid)
            });
            let applicable = self.index.applicable_without_index(&parties);
            return Ok(Prepared {
                applicable,
                request: cedar_request,
                store: Store::Joined(joined),
            });
        };
        let parties = parties(principal, action, resource, |uid| {
            self.graph.entity(completed, uid)
        });
        let applicable = self.index.applicable(&parties);
        let core_request: &ast::Request = cedar_request.as_ref();
        let context = core_request.context().cloned().map(PartialValue::from);
        let roots = [principal, action, resource]
            .into_iter()
            .chain(self.index.written_uids(&applicable));
        let slice = self
            .graph
            .slice(completed, roots, context.as_ref())
            .map_err(|err| RequestError::invalid("entities", err))?;
        Ok(Prepared {
            applicable,
            request: cedar_request,
            store: Store::Slice(slice),
        })
    }

    /// The request's context in Cedar's terms; a JSON context is typed by
    /// the schema's declaration for `action` (untyped without one).
    pub(crate) fn cedar_context(
        &self,
        context: &crate::ContextInput,
        action: Option<&cedar_policy::EntityUid>,
        budget: &mut NodeBudget,
    ) -> Result<Context, RequestError> {
        match context {
            crate::ContextInput::Typed(attributes) => {
                let pairs = cedar_fields(attributes, "context", &self.limits, budget)?;
                Context::from_pairs(pairs).map_err(|err| RequestError::invalid("context", err))
            }
            crate::ContextInput::Json(json) => {
                check_json_context(json, &self.limits)?;
                let schema = self.schema.as_ref().zip(action);
                Context::from_json_str(json, schema)
                    .map_err(|err| RequestError::invalid("context", err))
            }
        }
    }

    /// Decides several requests, in order.
    pub fn authorize_batch(&self, requests: &[Request]) -> Vec<Result<Response, RequestError>> {
        requests
            .iter()
            .map(|request| self.authorize(request))
            .collect()
    }

    /// The request's own entities, checked against the schema and with
    /// their hierarchy computed; `None` when it has none. Kept per bundle,
    /// so a principal built from the same claims is checked once.
    fn own_entities(
        &self,
        request: &Request,
        budget: &mut NodeBudget,
    ) -> Result<Option<Arc<CheckedEntities>>, RequestError> {
        if request.entities.is_empty() {
            return Ok(None);
        }
        if let Some(checked) = self.entity_cache.get(&request.entities)
            && budget.try_spend(checked.nodes)
        {
            return Ok(Some(checked));
        }
        let budget_before = budget.remaining();
        let entities = self.check_own_entities(request, budget)?;
        let checked = Arc::new(CheckedEntities {
            sliceable: self.graph.own_entities(entities.as_ref()),
            entities,
            nodes: budget_before - budget.remaining(),
        });
        self.entity_cache
            .insert(&request.entities, Arc::clone(&checked));
        Ok(Some(checked))
    }

    /// Builds Cedar's entities from the request's and checks them against
    /// the schema with Cedar's own checker.
    fn check_own_entities(
        &self,
        request: &Request,
        budget: &mut NodeBudget,
    ) -> Result<Entities, RequestError> {
        let own = request
            .entities
            .iter()
            .enumerate()
            .map(|(position, entity)| cedar_entity(entity, position, &self.limits, budget))
            .collect::<Result<Vec<_>, _>>()?;
        // The hierarchy among the request's own entities needs computing
        // only when one names another as a parent; parents in the store
        // are completed later, from the store's ancestor sets.
        let own_uids: HashSet<&EntityUID> = own.iter().map(ast::Entity::uid).collect();
        let tc = if own
            .iter()
            .any(|entity| entity.parents().any(|parent| own_uids.contains(parent)))
        {
            TCComputation::ComputeNow
        } else {
            TCComputation::AssumeAlreadyComputed
        };
        drop(own_uids);
        let own = own.into_iter().map(Arc::new);
        let checked = match &self.schema {
            // Cedar's checker, reading the descriptions cached at load.
            Some(schema) => CoreEntities::new().add_entities(
                own,
                Some(&self.conformance.schema(schema.as_ref())),
                tc,
                Extensions::all_available(),
            ),
            None => CoreEntities::new().add_entities(
                own,
                None::<&NoEntitiesSchema>,
                tc,
                Extensions::all_available(),
            ),
        };
        // Cedar names the entity and attribute at fault in the causes.
        checked
            .map(Entities::from)
            .map_err(|err| RequestError::invalid("entities", full_message(&err)))
    }
}
