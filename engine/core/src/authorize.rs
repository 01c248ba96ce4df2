//! Deciding a request against a loaded bundle.

use std::borrow::Cow;

use cedar_policy::{Context, Entities};
use cedar_policy_core::ast;

use crate::bundle::Bundle;
use crate::request::{
    NodeBudget, Request, RequestError, cedar_entity, cedar_fields, cedar_uid, check_json_context,
};
use crate::response::Response;

/// A request turned into Cedar's terms, with the policies that can apply.
struct Prepared<'bundle> {
    request: cedar_policy::Request,
    entities: Cow<'bundle, Entities>,
    candidates: Vec<u32>,
}

impl Bundle {
    /// Decides one request. An `Err` means the request got no decision at
    /// all; every host must treat it as a deny.
    pub fn authorize(&self, request: &Request) -> Result<Response, RequestError> {
        let prepared = self.prepare(request)?;
        let core_request: &ast::Request = prepared.request.as_ref();
        let evaluation = self.index.evaluate(
            &prepared.candidates,
            core_request.clone(),
            &prepared.entities,
        );
        Ok(Response {
            decision: evaluation.decision,
            determining_policies: evaluation.determining_policies,
            errors: evaluation.errors,
            bundle_id: self.id.clone(),
        })
    }

    /// The ids of the policies whose scope can match `request`: the only
    /// ones [`Bundle::authorize`] evaluates. Sorted.
    pub fn candidate_policies(&self, request: &Request) -> Result<Vec<String>, RequestError> {
        let prepared = self.prepare(request)?;
        let mut ids: Vec<String> = self
            .index
            .ids(&prepared.candidates)
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

        let context = match &request.context {
            crate::ContextInput::Typed(attributes) => {
                let pairs = cedar_fields(attributes, "context", &self.limits, &mut budget)?;
                Context::from_pairs(pairs).map_err(|err| RequestError::invalid("context", err))?
            }
            crate::ContextInput::Json(json) => {
                check_json_context(json, &self.limits)?;
                let schema = self.schema.as_ref().map(|schema| (schema, &action));
                Context::from_json_str(json, schema)
                    .map_err(|err| RequestError::invalid("context", err))?
            }
        };

        let entities = self.entities_with(request, &mut budget)?;
        let cedar_request =
            cedar_policy::Request::new(principal, action, resource, context, self.schema.as_ref())
                .map_err(|err| RequestError::invalid("request", err))?;
        // Request entities that are actions could change the action
        // hierarchy the index files policies under; such requests see every
        // policy.
        let adds_actions = request.entities.iter().any(|entity| {
            entity.uid.type_name == "Action" || entity.uid.type_name.ends_with("::Action")
        });
        let candidates = match (
            adds_actions,
            cedar_request.principal(),
            cedar_request.action(),
            cedar_request.resource(),
        ) {
            (false, Some(principal), Some(action), Some(resource)) => self
                .index
                .candidates(&entities, principal, action, resource),
            _ => self.index.all(),
        };
        Ok(Prepared {
            request: cedar_request,
            entities,
            candidates,
        })
    }

    /// Decides several requests, in order.
    pub fn authorize_batch(&self, requests: &[Request]) -> Vec<Result<Response, RequestError>> {
        requests
            .iter()
            .map(|request| self.authorize(request))
            .collect()
    }

    /// The bundle's entities, joined by the request's own when it has any.
    /// Only then is the store copied: its entries are shared, not deep-cloned.
    fn entities_with(
        &self,
        request: &Request,
        budget: &mut NodeBudget,
    ) -> Result<Cow<'_, Entities>, RequestError> {
        if request.entities.is_empty() {
            return Ok(Cow::Borrowed(&self.entities));
        }
        let extra = request
            .entities
            .iter()
            .enumerate()
            .map(|(position, entity)| cedar_entity(entity, position, &self.limits, budget))
            .collect::<Result<Vec<_>, _>>()?;
        self.entities
            .clone()
            .add_entities(extra, self.schema.as_ref())
            .map(Cow::Owned)
            .map_err(|err| RequestError::invalid("entities", err))
    }
}
