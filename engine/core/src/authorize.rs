//! Deciding a request against a loaded bundle.

use std::borrow::Cow;

use cedar_policy::{Context, Entities};

use crate::bundle::Bundle;
use crate::request::{
    NodeBudget, Request, RequestError, cedar_entity, cedar_fields, cedar_uid, check_json_context,
};
use crate::response::{Decision, PolicyError, Response};

impl Bundle {
    /// Decides one request. An `Err` means the request got no decision at
    /// all; every host must treat it as a deny.
    pub fn authorize(&self, request: &Request) -> Result<Response, RequestError> {
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
        // Request entities that are actions could change the action
        // hierarchy the index was built on; such requests see every policy.
        let adds_actions = request.entities.iter().any(|entity| {
            entity.uid.type_name == "Action" || entity.uid.type_name.ends_with("::Action")
        });
        let candidates = if adds_actions {
            None
        } else {
            self.index.candidates(
                &self.policies,
                &self.entities,
                &principal,
                &action,
                &resource,
            )
        };
        let policies = candidates.as_deref().unwrap_or(&self.policies);
        let cedar_request =
            cedar_policy::Request::new(principal, action, resource, context, self.schema.as_ref())
                .map_err(|err| RequestError::invalid("request", err))?;
        let answer = self
            .authorizer
            .is_authorized(&cedar_request, policies, &entities);

        let diagnostics = answer.diagnostics();
        let mut determining_policies: Vec<String> =
            diagnostics.reason().map(ToString::to_string).collect();
        determining_policies.sort();
        let mut errors: Vec<PolicyError> = diagnostics
            .errors()
            .map(
                |cedar_policy::AuthorizationError::PolicyEvaluationError(err)| PolicyError {
                    policy_id: err.policy_id().to_string(),
                    message: err.inner().to_string(),
                },
            )
            .collect();
        errors.sort();
        Ok(Response {
            decision: match answer.decision() {
                cedar_policy::Decision::Allow => Decision::Allow,
                cedar_policy::Decision::Deny => Decision::Deny,
            },
            determining_policies,
            errors,
            bundle_id: self.id.clone(),
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
