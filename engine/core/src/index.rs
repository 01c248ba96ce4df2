//! Which policies can apply to a request, decided from their scopes alone.
//!
//! Cedar evaluates a policy's scope before its conditions and stops at the
//! first part that is false, so a policy whose scope cannot match a request
//! is false for it and never raises an error. Leaving such policies out
//! therefore changes neither the decision nor the determining policies nor
//! the errors; it only saves their evaluation. The subsets are keyed by the
//! request's action and its principal and resource types, built on first use
//! and cached.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};

/// More distinct (action, principal type, resource type) keys than this are
/// served uncached, so hostile requests cannot grow the cache without bound.
const MAX_CACHED_SUBSETS: usize = 4096;

type SubsetKey = (EntityUid, EntityTypeName, EntityTypeName);

/// FNV-1a: the cache is looked up on every request, and SipHash over three
/// names costs a visible share of a small bundle's decision in wasm. The
/// cache is bounded, so colliding keys cost at most a bounded scan.
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

type SubsetCache = HashMap<SubsetKey, Arc<PolicySet>, BuildHasherDefault<Fnv>>;

/// The subsets of a bundle's policies, per (action, principal type,
/// resource type), built on first use. The policy set itself stays the
/// source of every scope, so nothing here can drift from it.
#[derive(Debug, Default)]
pub(crate) struct PolicyIndex {
    subsets: Mutex<SubsetCache>,
}

impl PolicyIndex {
    /// The policies that can apply to a request with these parts. `None`
    /// when a subset could not be built, in which case the caller must use
    /// the whole set.
    pub(crate) fn candidates(
        &self,
        all: &PolicySet,
        entities: &Entities,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Option<Arc<PolicySet>> {
        let key = (
            action.clone(),
            principal.type_name().clone(),
            resource.type_name().clone(),
        );
        if let Some(found) = self.subsets.lock().ok()?.get(&key) {
            return Some(Arc::clone(found));
        }
        let subset = Arc::new(Self::build(all, entities, &key)?);
        if let Ok(mut subsets) = self.subsets.lock()
            && subsets.len() < MAX_CACHED_SUBSETS
        {
            subsets.insert(key, Arc::clone(&subset));
        }
        Some(subset)
    }

    fn build(all: &PolicySet, entities: &Entities, key: &SubsetKey) -> Option<PolicySet> {
        let (action, principal_type, resource_type) = key;
        let mut subset = PolicySet::new();
        for policy in all.policies() {
            let fits = principal_type_of(policy).is_none_or(|t| t == *principal_type)
                && resource_type_of(policy).is_none_or(|t| t == *resource_type)
                && action_fits(&policy.action_constraint(), action, entities);
            if !fits {
                continue;
            }
            match policy.template_id() {
                None => subset.add(policy.clone()).ok()?,
                Some(template_id) => {
                    if subset.template(template_id).is_none() {
                        subset
                            .add_template(all.template(template_id)?.clone())
                            .ok()?;
                    }
                    let slots = policy.template_links()?;
                    subset
                        .link(template_id.clone(), policy.id().clone(), slots)
                        .ok()?;
                }
            }
        }
        Some(subset)
    }
}

/// The one principal type a scope allows; `None` for any (`in` reaches
/// every type that can be a descendant).
fn principal_type_of(policy: &Policy) -> Option<EntityTypeName> {
    match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid) => Some(uid.type_name().clone()),
        PrincipalConstraint::Is(type_name) | PrincipalConstraint::IsIn(type_name, _) => {
            Some(type_name)
        }
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => None,
    }
}

/// The one resource type a scope allows; `None` for any.
fn resource_type_of(policy: &Policy) -> Option<EntityTypeName> {
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid) => Some(uid.type_name().clone()),
        ResourceConstraint::Is(type_name) | ResourceConstraint::IsIn(type_name, _) => {
            Some(type_name)
        }
        ResourceConstraint::Any | ResourceConstraint::In(_) => None,
    }
}

/// Whether an action constraint can hold for `action`, given the action
/// hierarchy in the bundle's entities.
fn action_fits(constraint: &ActionConstraint, action: &EntityUid, entities: &Entities) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(expected) => expected == action,
        ActionConstraint::In(groups) => groups.iter().any(|group| {
            group == action
                || entities
                    .ancestors(action)
                    .is_some_and(|mut ancestors| ancestors.any(|ancestor| ancestor == group))
        }),
    }
}
