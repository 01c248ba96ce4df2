//! Which policies can apply to a request, decided from their scopes, and
//! the evaluation of just those.
//!
//! Cedar evaluates a policy's scope before its conditions and stops at the
//! first part that is false, so a policy whose scope does not match a
//! request is false for it and never raises an error. Leaving such policies
//! out therefore changes neither the decision nor the determining policies
//! nor the errors; it only saves their evaluation.
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
//! Each candidate's scope is then checked here, with the same rules as
//! Cedar's (`==` is equality, `in` is equality or membership in the
//! entity's ancestor set, `is` compares the type; a scope cannot err), and
//! only the `when`/`unless` body of a policy whose scope matches goes to
//! Cedar's own evaluator. Combining the results is the simple rule of
//! Cedar's authorizer, in [`PolicyIndex::evaluate`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::cedar_internals::CoreEntities as Entities;
use crate::cedar_internals::Evaluator;
use crate::cedar_internals::Extensions;
use crate::cedar_internals::ast::{self, EntityType, EntityUID};
use cedar_policy::{ActionConstraint, PolicySet, PrincipalConstraint, ResourceConstraint};

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

/// A principal or resource scope, slots already filled by the link.
#[derive(Debug)]
enum Scope {
    Any,
    Eq(EntityUID),
    In(EntityUID),
    Is(EntityType),
    IsIn(EntityType, EntityUID),
}

impl Scope {
    fn anchor(&self) -> Option<&EntityUID> {
        match self {
            Self::Eq(uid) | Self::In(uid) | Self::IsIn(_, uid) => Some(uid),
            Self::Any | Self::Is(_) => None,
        }
    }

    fn matches(&self, party: &Party<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(uid) => party.uid == uid,
            Self::In(group) => party.is_in(group),
            Self::Is(entity_type) => party.uid.entity_type() == entity_type,
            Self::IsIn(entity_type, group) => {
                party.uid.entity_type() == entity_type && party.is_in(group)
            }
        }
    }
}

impl From<PrincipalConstraint> for Scope {
    fn from(constraint: PrincipalConstraint) -> Self {
        match constraint {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(uid) => Self::Eq(core_uid(&uid)),
            PrincipalConstraint::In(uid) => Self::In(core_uid(&uid)),
            PrincipalConstraint::Is(t) => Self::Is(core_type(&t)),
            PrincipalConstraint::IsIn(t, uid) => Self::IsIn(core_type(&t), core_uid(&uid)),
        }
    }
}

impl From<ResourceConstraint> for Scope {
    fn from(constraint: ResourceConstraint) -> Self {
        match constraint {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(uid) => Self::Eq(core_uid(&uid)),
            ResourceConstraint::In(uid) => Self::In(core_uid(&uid)),
            ResourceConstraint::Is(t) => Self::Is(core_type(&t)),
            ResourceConstraint::IsIn(t, uid) => Self::IsIn(core_type(&t), core_uid(&uid)),
        }
    }
}

/// An action scope.
#[derive(Debug)]
enum ActionScope {
    Any,
    Eq(EntityUID),
    In(Vec<EntityUID>),
}

impl ActionScope {
    fn matches(&self, action: &Party<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(uid) => action.uid == uid,
            Self::In(groups) => groups.iter().any(|group| action.is_in(group)),
        }
    }
}

fn core_uid(uid: &cedar_policy::EntityUid) -> EntityUID {
    AsRef::<EntityUID>::as_ref(uid).clone()
}

fn core_type(entity_type: &cedar_policy::EntityTypeName) -> EntityType {
    AsRef::<EntityType>::as_ref(entity_type).clone()
}

/// One policy, ready to be checked and evaluated.
#[derive(Debug)]
struct IndexedPolicy {
    id: String,
    forbid: bool,
    principal: Scope,
    action: ActionScope,
    resource: Scope,
    /// The whole policy, for Cedar's own evaluation in the one case the
    /// body alone cannot answer exactly (a body that is not a bool).
    policy: ast::Policy,
    /// The `when`/`unless` conditions as one expression; `None` if none.
    body: Option<ast::Expr>,
    /// The entity uids written in the conditions, which an evaluation may
    /// look up.
    written_uids: Vec<EntityUID>,
}

/// A request's principal, action or resource, with its entity when the
/// store the request is decided against holds one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Party<'a> {
    pub uid: &'a EntityUID,
    pub entity: Option<&'a ast::Entity>,
}

impl Party<'_> {
    /// Cedar's `in`: the same entity, or one of its ancestors. An entity the
    /// store does not hold has no ancestors.
    fn is_in(&self, group: &EntityUID) -> bool {
        self.uid == group
            || self
                .entity
                .is_some_and(|entity| entity.is_descendant_of(group))
    }
}

/// The three parties of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parties<'a> {
    pub principal: Party<'a>,
    pub action: Party<'a>,
    pub resource: Party<'a>,
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
            let body = core_policy.non_scope_constraints().cloned();
            let action = match policy.action_constraint() {
                ActionConstraint::Any => ActionScope::Any,
                ActionConstraint::Eq(uid) => ActionScope::Eq(core_uid(&uid)),
                ActionConstraint::In(groups) => {
                    ActionScope::In(groups.iter().map(core_uid).collect())
                }
            };
            let entry = IndexedPolicy {
                id: policy.id().to_string(),
                forbid: policy.effect() == cedar_policy::Effect::Forbid,
                principal: policy.principal_constraint().into(),
                action,
                resource: policy.resource_constraint().into(),
                written_uids: body
                    .as_ref()
                    .map(crate::slice::uids_written_in)
                    .unwrap_or_default(),
                body,
                policy: core_policy,
            };
            if let Some(uid) = entry.principal.anchor() {
                index
                    .by_principal
                    .entry(uid.clone())
                    .or_default()
                    .push(position);
            } else if let Some(uid) = entry.resource.anchor() {
                index
                    .by_resource
                    .entry(uid.clone())
                    .or_default()
                    .push(position);
            } else {
                match &entry.action {
                    ActionScope::Eq(uid) => {
                        index
                            .by_action
                            .entry(uid.clone())
                            .or_default()
                            .push(position);
                    }
                    ActionScope::In(groups) if !groups.is_empty() => {
                        for group in groups {
                            index
                                .by_action
                                .entry(group.clone())
                                .or_default()
                                .push(position);
                        }
                    }
                    ActionScope::In(_) | ActionScope::Any => index.unanchored.push(position),
                }
            }
            index.policies.push(entry);
        }
        index
    }

    /// The positions of the policies whose scope matches a request, in
    /// policy-set order: only the policies filed near its parties are
    /// looked at.
    pub(crate) fn applicable(&self, parties: &Parties<'_>) -> Vec<u32> {
        let mut found = self.unanchored.clone();
        for (buckets, party) in [
            (&self.by_principal, &parties.principal),
            (&self.by_resource, &parties.resource),
            (&self.by_action, &parties.action),
        ] {
            if buckets.is_empty() {
                continue;
            }
            let ancestors = party.entity.into_iter().flat_map(ast::Entity::ancestors);
            for uid in std::iter::once(party.uid).chain(ancestors) {
                if let Some(bucket) = buckets.get(uid) {
                    found.extend_from_slice(bucket);
                }
            }
        }
        found.sort_unstable();
        // An action scope naming two groups of the same action files the
        // policy twice.
        found.dedup();
        self.matching(found, parties)
    }

    /// The same, looking at every policy: for requests whose own entities
    /// could change the hierarchy the policies are filed under.
    pub(crate) fn applicable_without_index(&self, parties: &Parties<'_>) -> Vec<u32> {
        self.matching(0..self.policies.len() as u32, parties)
    }

    fn matching(
        &self,
        positions: impl IntoIterator<Item = u32>,
        parties: &Parties<'_>,
    ) -> Vec<u32> {
        positions
            .into_iter()
            .filter(|position| {
                self.policies
                    .get(*position as usize)
                    .is_some_and(|entry| entry.scope_matches(parties))
            })
            .collect()
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

    /// Evaluates the policies at `positions`, whose scopes must match the
    /// request (see [`PolicyIndex::applicable`]), and combines them as
    /// Cedar's authorizer does: any satisfied forbid denies and determines
    /// the decision; otherwise any satisfied permit allows; otherwise deny
    /// with no determining policy. A policy that errors is skipped and
    /// reported.
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
            let satisfied = match &entry.body {
                None => Ok(true),
                Some(body) => match evaluator.interpret(body, entry.policy.env()) {
                    Ok(value) => match value.value_kind() {
                        ast::ValueKind::Lit(ast::Literal::Bool(satisfied)) => Ok(*satisfied),
                        // Cedar's `&&` after the scope rejects a body that is
                        // not a bool; its own call gives that exact error.
                        _ => evaluator.evaluate(&entry.policy),
                    },
                    Err(err) => Err(err),
                },
            };
            match satisfied {
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

/// The request part a search leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenSlot {
    Principal,
    Action,
    Resource,
}

/// The policies that can apply to a search's requests: those whose scopes
/// for the two fixed parties match, filed by the open party's scope so that
/// each candidate looks up only its own uid and ancestors.
#[derive(Debug, Default)]
pub(crate) struct Narrowed {
    /// Open scope `Any`, or `is` the searched type.
    always: Vec<u32>,
    /// Open scope anchored at a uid (`==`, `in`, `is … in`; each group of
    /// an action `in [...]`).
    by_anchor: Buckets,
}

impl PolicyIndex {
    /// Narrows the policies to those a search can need. `fixed` holds the
    /// two fixed parties; its open party is ignored. A policy left out has
    /// a fixed scope that does not match, or an open scope that no entity
    /// of `open_type` can match (`is` another type), so it is false for
    /// every candidate without an error.
    pub(crate) fn narrow(
        &self,
        open: OpenSlot,
        fixed: &Parties<'_>,
        open_type: &EntityType,
    ) -> Narrowed {
        let mut narrowed = Narrowed::default();
        for (position, entry) in self.policies.iter().enumerate() {
            let position = position as u32;
            let fixed_match = match open {
                OpenSlot::Principal => {
                    entry.action.matches(&fixed.action) && entry.resource.matches(&fixed.resource)
                }
                OpenSlot::Action => {
                    entry.principal.matches(&fixed.principal)
                        && entry.resource.matches(&fixed.resource)
                }
                OpenSlot::Resource => {
                    entry.principal.matches(&fixed.principal) && entry.action.matches(&fixed.action)
                }
            };
            if !fixed_match {
                continue;
            }
            let mut file_under = |uid: &EntityUID| {
                narrowed
                    .by_anchor
                    .entry(uid.clone())
                    .or_default()
                    .push(position);
            };
            let scope = match open {
                OpenSlot::Principal => &entry.principal,
                OpenSlot::Resource => &entry.resource,
                OpenSlot::Action => {
                    match &entry.action {
                        ActionScope::Any => narrowed.always.push(position),
                        ActionScope::Eq(uid) => file_under(uid),
                        ActionScope::In(groups) => groups.iter().for_each(&mut file_under),
                    }
                    continue;
                }
            };
            // `is` another type: no candidate of the searched type matches.
            match scope {
                Scope::Any => narrowed.always.push(position),
                Scope::Is(entity_type) => {
                    if entity_type == open_type {
                        narrowed.always.push(position);
                    }
                }
                Scope::IsIn(entity_type, uid) => {
                    if entity_type == open_type {
                        file_under(uid);
                    }
                }
                Scope::Eq(uid) | Scope::In(uid) => file_under(uid),
            }
        }
        narrowed
    }

    /// Fills `found` with the positions of the policies whose scope matches
    /// a search's request for one candidate (the open party of `parties`):
    /// the same set [`PolicyIndex::applicable`] finds, gathered from the
    /// narrowed policies. Returns whether one of them is a permit; when
    /// none is, `found` may hold more than the matching policies, since a
    /// candidate no permit can reach needs no evaluation.
    pub(crate) fn applicable_narrowed(
        &self,
        narrowed: &Narrowed,
        parties: &Parties<'_>,
        open: OpenSlot,
        found: &mut Vec<u32>,
    ) -> bool {
        let party = match open {
            OpenSlot::Principal => &parties.principal,
            OpenSlot::Action => &parties.action,
            OpenSlot::Resource => &parties.resource,
        };
        found.clear();
        found.extend_from_slice(&narrowed.always);
        if !narrowed.by_anchor.is_empty() {
            let ancestors = party.entity.into_iter().flat_map(ast::Entity::ancestors);
            for uid in std::iter::once(party.uid).chain(ancestors) {
                if let Some(bucket) = narrowed.by_anchor.get(uid) {
                    found.extend_from_slice(bucket);
                }
            }
        }
        // Cheap first: most candidates of a large store have no permit near.
        if !self.any_permit(found) {
            return false;
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|position| {
            self.policies
                .get(*position as usize)
                .is_some_and(|entry| entry.scope_matches(parties))
        });
        self.any_permit(found)
    }

    /// The anchors under which a narrowed search files a permit, or `None`
    /// when a permit fits every candidate of the searched type. A candidate
    /// that is none of these anchors and descends from none of them gathers
    /// no permit in [`PolicyIndex::applicable_narrowed`], so it is denied.
    pub(crate) fn permit_anchors<'narrowed>(
        &self,
        narrowed: &'narrowed Narrowed,
    ) -> Option<Vec<&'narrowed EntityUID>> {
        if self.any_permit(&narrowed.always) {
            return None;
        }
        Some(
            narrowed
                .by_anchor
                .iter()
                .filter(|(_, bucket)| self.any_permit(bucket))
                .map(|(uid, _)| uid)
                .collect(),
        )
    }

    /// Whether any policy at `positions` is a permit: without one, Cedar
    /// denies whatever the others evaluate to.
    pub(crate) fn any_permit(&self, positions: &[u32]) -> bool {
        positions.iter().any(|position| {
            self.policies
                .get(*position as usize)
                .is_some_and(|entry| !entry.forbid)
        })
    }

    /// The action uids the policies' action scopes name.
    pub(crate) fn named_actions(&self) -> impl Iterator<Item = &EntityUID> {
        self.policies.iter().flat_map(|entry| match &entry.action {
            ActionScope::Any => [].iter(),
            ActionScope::Eq(uid) => std::slice::from_ref(uid).iter(),
            ActionScope::In(groups) => groups.iter(),
        })
    }
}

impl IndexedPolicy {
    fn scope_matches(&self, parties: &Parties<'_>) -> bool {
        self.principal.matches(&parties.principal)
            && self.action.matches(&parties.action)
            && self.resource.matches(&parties.resource)
    }
}
