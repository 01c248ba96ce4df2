//! Which policies can apply to a request, decided from their scopes alone,
//! and the evaluation of just those.
//!
//! Cedar evaluates a policy's scope before its conditions and stops at the
//! first part that is false, so a policy whose scope cannot match a request
//! is false for it and never raises an error. Leaving such policies out
//! therefore changes neither the decision nor the determining policies nor
//! the errors; it only saves their evaluation.
//!
//! Each policy is filed once, under the entity its scope is anchored to:
//! the uid in its principal scope (`==`, `in`, `is … in`), else the uid in
//! its resource scope, else the action(s) in its action scope, else in a
//! short list of unanchored policies that every request sees. A request
//! gathers the policies filed under its principal and the principal's
//! ancestors, its resource and the resource's ancestors, and its action and
//! the action's groups. The cost of a request so depends on how many
//! policies are anchored near it, not on the size of the bundle.
//!
//! The candidates are then evaluated one by one with Cedar's own evaluator
//! (the rest of Cedar's authorizer is the simple combination below), so
//! that no policy set has to be built per request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use cedar_policy::{ActionConstraint, PolicySet, PrincipalConstraint, ResourceConstraint};
use cedar_policy_core::ast::{self, EntityUID};
use cedar_policy_core::entities::{Dereference, Entities};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use crate::response::{Decision, PolicyError};

/// FNV-1a: the buckets are looked up several times per request, and SipHash
/// over entity names costs a visible share of a small bundle's decision in
/// wasm. Keys come from the bundle's own policies, not from requests, so
/// hash flooding by a caller is not a concern.
#[derive(Debug, Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Buckets = HashMap<EntityUID, Vec<u32>, BuildHasherDefault<Fnv>>;

/// One policy, ready for Cedar's evaluator.
#[derive(Debug)]
struct IndexedPolicy {
    id: String,
    forbid: bool,
    policy: ast::Policy,
    /// The entity uids written in it, which an evaluation may look up.
    written_uids: Vec<EntityUID>,
}

/// Calls the callback with every ancestor of a uid, from whichever entity
/// store the request is decided against.
pub(crate) type AncestorLookup<'a> = &'a dyn Fn(&EntityUID, &mut dyn FnMut(&EntityUID));

/// The ancestors of `uid` in `store`.
pub(crate) fn store_ancestors(
    store: &Entities,
    uid: &EntityUID,
    found: &mut dyn FnMut(&EntityUID),
) {
    if let Dereference::Data(entity) = store.entity(uid) {
        entity.ancestors().for_each(found);
    }
}

fn core_uid(uid: cedar_policy::EntityUid) -> EntityUID {
    AsRef::<EntityUID>::as_ref(&uid).clone()
}

/// A bundle's policies, filed by the entity their scope is anchored to.
/// Built once per bundle load from the policy set.
#[derive(Debug, Default)]
pub(crate) struct PolicyIndex {
    policies: Vec<IndexedPolicy>,
    by_principal: Buckets,
    by_resource: Buckets,
    by_action: Buckets,
    unanchored: Vec<u32>,
}

/// What evaluating a request's candidate policies found.
#[derive(Debug)]
pub(crate) struct Evaluation {
    pub decision: Decision,
    pub determining_policies: Vec<String>,
    pub errors: Vec<PolicyError>,
}

impl PolicyIndex {
    pub(crate) fn new(all: &PolicySet) -> Self {
        let mut index = Self::default();
        for policy in all.policies() {
            let position = index.policies.len() as u32;
            let core_policy = AsRef::<ast::Policy>::as_ref(policy).clone();
            index.policies.push(IndexedPolicy {
                id: policy.id().to_string(),
                forbid: policy.effect() == cedar_policy::Effect::Forbid,
                written_uids: crate::slice::uids_written_in(&core_policy.condition()),
                policy: core_policy,
            });
            let principal_anchor = match policy.principal_constraint() {
                PrincipalConstraint::Eq(uid)
                | PrincipalConstraint::In(uid)
                | PrincipalConstraint::IsIn(_, uid) => Some(core_uid(uid)),
                PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
            };
            let resource_anchor = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid)
                | ResourceConstraint::In(uid)
                | ResourceConstraint::IsIn(_, uid) => Some(core_uid(uid)),
                ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
            };
            if let Some(uid) = principal_anchor {
                index.by_principal.entry(uid).or_default().push(position);
            } else if let Some(uid) = resource_anchor {
                index.by_resource.entry(uid).or_default().push(position);
            } else {
                match policy.action_constraint() {
                    ActionConstraint::Eq(uid) => index
                        .by_action
                        .entry(core_uid(uid))
                        .or_default()
                        .push(position),
                    ActionConstraint::In(groups) if !groups.is_empty() => {
                        for group in groups {
                            index
                                .by_action
                                .entry(core_uid(group))
                                .or_default()
                                .push(position);
                        }
                    }
                    ActionConstraint::In(_) | ActionConstraint::Any => {
                        index.unanchored.push(position)
                    }
                }
            }
        }
        index
    }

    /// The positions of the policies whose scope can match a request with
    /// these parts, in policy-set order, each once. `ancestors` must know
    /// the request's own entities too, since they can add ancestors.
    pub(crate) fn candidates(
        &self,
        ancestors: AncestorLookup<'_>,
        principal: &EntityUID,
        action: &EntityUID,
        resource: &EntityUID,
    ) -> Vec<u32> {
        let mut found = self.unanchored.clone();
        for (buckets, uid) in [
            (&self.by_principal, principal),
            (&self.by_resource, resource),
            (&self.by_action, action),
        ] {
            if buckets.is_empty() {
                continue;
            }
            if let Some(bucket) = buckets.get(uid) {
                found.extend_from_slice(bucket);
            }
            ancestors(uid, &mut |ancestor| {
                if let Some(bucket) = buckets.get(ancestor) {
                    found.extend_from_slice(bucket);
                }
            });
        }
        found.sort_unstable();
        // An action scope naming two groups of the same action files the
        // policy twice.
        found.dedup();
        found
    }

    /// The ids of the policies at `positions`.
    pub(crate) fn ids<'index>(
        &'index self,
        positions: &'index [u32],
    ) -> impl Iterator<Item = &'index str> + 'index {
        positions
            .iter()
            .filter_map(|position| self.policies.get(*position as usize))
            .map(|entry| entry.id.as_str())
    }

    /// The entity uids written in the policies at `positions`.
    pub(crate) fn written_uids<'index>(
        &'index self,
        positions: &'index [u32],
    ) -> impl Iterator<Item = &'index EntityUID> + 'index {
        positions
            .iter()
            .filter_map(|position| self.policies.get(*position as usize))
            .flat_map(|entry| entry.written_uids.iter())
    }

    /// Every policy, for requests the index must not narrow.
    pub(crate) fn all(&self) -> Vec<u32> {
        (0..self.policies.len() as u32).collect()
    }

    /// Evaluates the policies at `positions` and combines them as Cedar's
    /// authorizer does: any satisfied forbid denies and determines the
    /// decision; otherwise any satisfied permit allows; otherwise deny with
    /// no determining policy. A policy that errors is skipped and reported.
    pub(crate) fn evaluate(
        &self,
        positions: &[u32],
        request: ast::Request,
        entities: &Entities,
    ) -> Evaluation {
        let evaluator = Evaluator::new(request, entities, Extensions::all_available());
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        for position in positions {
            let Some(entry) = self.policies.get(*position as usize) else {
                continue;
            };
            match evaluator.evaluate(&entry.policy) {
                Ok(true) if entry.forbid => forbids.push(entry.id.clone()),
                Ok(true) => permits.push(entry.id.clone()),
                Ok(false) => {}
                Err(err) => errors.push(PolicyError {
                    policy_id: entry.id.clone(),
                    message: err.to_string(),
                }),
            }
        }
        let (decision, mut determining_policies) = if !forbids.is_empty() {
            (Decision::Deny, forbids)
        } else if !permits.is_empty() {
            (Decision::Allow, permits)
        } else {
            (Decision::Deny, Vec::new())
        };
        determining_policies.sort();
        errors.sort();
        Evaluation {
            decision,
            determining_policies,
            errors,
        }
    }
}
