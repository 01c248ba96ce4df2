//! Search: the entities of one type that a request, with one of its three
//! parts left open, allows.
//!
//! The candidates are the bundle's own: the store's entities of the
//! searched type and, for actions, the schema's actions and those the
//! policies name, sorted by id. Each candidate that yields a result is
//! decided by a real authorization with the same evaluation
//! [`Bundle::authorize`] runs: the same request check against the schema,
//! the same store, the same policies (those whose scope matches), the same
//! combination. Only the way those policies are found differs, and it finds
//! the same set.
//!
//! What makes a search cheap is what it never evaluates:
//! - the policies whose scope for the two fixed parties does not match, and
//!   those whose open scope is `is` another type, are dropped once per
//!   search (a scope that does not match makes a policy false, never an
//!   error: Cedar's condition is `principal && (action && (resource &&
//!   body))` and `&&` stops at the first false, see
//!   `TemplateBody::condition` and `ExprKind::And` in cedar-policy-core
//!   4.14.1);
//! - a candidate whose matching policies hold no permit is denied whatever
//!   the forbids do, so it is not authorized at all and not yielded; when
//!   no permit fits every candidate, only the candidates under a permit's
//!   anchor are looked at;
//! - the schema's check of the request reads the principal's and
//!   resource's types (their ids only for enumerated types), the action
//!   and the context, so when only the id of a non-enumerated type varies
//!   it is made once (`validate_scope_variables` and `validate_context` in
//!   cedar-policy-core's `validator/coreschema.rs`).
//!
//! A request that brings entities of its own can change the hierarchy the
//! scopes are checked against; such a search authorizes every candidate
//! with [`Bundle::authorize`] itself.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::Context;

use crate::authorize::in_store;
use crate::bundle::Bundle;
use crate::cedar_internals::ast::{self, EntityType, EntityUID};
use crate::cedar_internals::{ValidatorEntityTypeKind, ValidatorSchema};
use crate::index::{Narrowed, OpenSlot};
use crate::index::{Parties, Party};
use crate::request::{NodeBudget, Request, RequestError, cedar_uid};
use crate::response::Response;
use crate::value::EntityUid;

/// Every searchable entity, by type.
pub(crate) type CandidatesByType = HashMap<EntityType, Arc<TypeCandidates>>;

/// The candidates of one type.
#[derive(Debug, Default)]
pub(crate) struct TypeCandidates {
    /// Sorted by id.
    list: Vec<Candidate>,
    /// For each uid, the positions in `list` of the candidates that are it
    /// or descend from it, ascending: the only candidates a permit
    /// anchored there can reach.
    under: HashMap<EntityUID, Vec<u32>>,
}

/// One candidate: its uid, and its entity when the store holds it (an
/// action only the schema or the policies name has none), shared with the
/// store's so that no candidate is looked up again.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    uid: EntityUID,
    entity: Option<Arc<ast::Entity>>,
}

impl Candidate {
    fn id(&self) -> &str {
        self.uid.eid().as_ref()
    }
}

/// The part of a request a search leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSlot {
    /// Which principals may do this?
    Principal,
    /// Which actions may this principal take on this resource?
    Action,
    /// Which resources may this principal act on?
    Resource,
}

impl SearchSlot {
    fn open(self) -> OpenSlot {
        match self {
            Self::Principal => OpenSlot::Principal,
            Self::Action => OpenSlot::Action,
            Self::Resource => OpenSlot::Resource,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Action => "action",
            Self::Resource => "resource",
        }
    }

    fn get(self, request: &Request) -> &EntityUid {
        match self {
            Self::Principal => &request.principal,
            Self::Action => &request.action,
            Self::Resource => &request.resource,
        }
    }

    fn of(self, request: &mut Request) -> &mut EntityUid {
        match self {
            Self::Principal => &mut request.principal,
            Self::Action => &mut request.action,
            Self::Resource => &mut request.resource,
        }
    }
}

/// One candidate and its authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The candidate.
    pub uid: EntityUid,
    /// The decision for the request with the candidate in the open part;
    /// an `Err` is a request the core refused, a deny.
    pub outcome: Result<Response, RequestError>,
}

/// A search in progress: an iterator over the candidates, in id order, that
/// a permit's scope reaches, each with its authorization. A candidate it
/// skips is denied by every authorization. A page ends wherever the caller
/// stops pulling.
pub struct Search<'bundle> {
    bundle: &'bundle Bundle,
    slot: SearchSlot,
    candidates: Arc<TypeCandidates>,
    /// The positions in `candidates` a permit can reach, ascending, when
    /// no permit reaches them all; `None`: every candidate.
    reachable: Option<Vec<u32>>,
    /// The next place in `reachable`, or else in the candidates.
    next: usize,
    plan: Plan<'bundle>,
    /// The applicable policies of the current candidate, reused.
    positions: Vec<u32>,
    /// The schema check's outcome, once made, when it is the same for
    /// every candidate.
    checked: Option<Result<(), RequestError>>,
    /// The searched type's name, written once.
    type_name: String,
}

impl std::fmt::Debug for Search<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("slot", &self.slot)
            .field("candidates", &self.candidates.list.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// How each candidate is decided.
enum Plan<'bundle> {
    /// Against the bundle's store, with the policies narrowed once.
    Narrowed(Box<NarrowedPlan<'bundle>>),
    /// With the request's own entities: [`Bundle::authorize`] on every
    /// candidate.
    Full(Box<Request>),
}

struct NarrowedPlan<'bundle> {
    /// The fixed parties; the open one is `None`.
    principal: Option<cedar_policy::EntityUid>,
    action: Option<cedar_policy::EntityUid>,
    resource: Option<cedar_policy::EntityUid>,
    /// Their entities in the store, looked up once.
    principal_entity: Option<&'bundle ast::Entity>,
    action_entity: Option<&'bundle ast::Entity>,
    resource_entity: Option<&'bundle ast::Entity>,
    /// Built once; `None` when it depends on the candidate action (a JSON
    /// context typed by the schema in an action search).
    context: Option<Context>,
    context_input: crate::ContextInput,
    narrowed: Narrowed,
    /// Whether each candidate's request is checked against the schema.
    /// Cedar's check reads the principal's and resource's types (their ids
    /// only for enumerated types), the action and the context; so when
    /// only the id of a non-enumerated type varies, the first candidate's
    /// check holds for every one.
    check_each: bool,
}

impl Bundle {
    /// Starts a search for the entities that can take the `slot` part of
    /// `template`: that part's type is the searched type, its id is
    /// ignored. `after` continues after the candidate with that id.
    ///
    /// An `Err` is a query that cannot be decided for any candidate: a
    /// fixed uid, the searched type or the context is malformed.
    pub fn search(
        &self,
        template: &Request,
        slot: SearchSlot,
        after: Option<&str>,
    ) -> Result<Search<'_>, RequestError> {
        let open_type = {
            let name = &slot.get(template).type_name;
            let parsed = cedar_policy::EntityTypeName::from_str(name)
                .map_err(|err| RequestError::invalid(slot.field(), err))?;
            AsRef::<EntityType>::as_ref(&parsed).clone()
        };
        let candidates = self
            .search_candidates
            .get_or_init(|| self.candidates_by_type())
            .get(&open_type)
            .cloned()
            .unwrap_or_default();
        let plan = if template.entities.is_empty() {
            Plan::Narrowed(Box::new(self.narrowed_plan(template, slot, &open_type)?))
        } else {
            Plan::Full(Box::new(template.clone()))
        };
        // Without a permit that fits every candidate, only those under a
        // permit's anchor can be allowed: the rest are never looked at.
        let reachable = match &plan {
            Plan::Full(_) => None,
            Plan::Narrowed(plan) => self.index.permit_anchors(&plan.narrowed).map(|anchors| {
                let mut reachable: Vec<u32> = anchors
                    .into_iter()
                    .filter_map(|anchor| candidates.under.get(anchor))
                    .flatten()
                    .copied()
                    .collect();
                reachable.sort_unstable();
                reachable.dedup();
                reachable
            }),
        };
        let id_at = |position: u32| {
            candidates
                .list
                .get(position as usize)
                .map_or("", Candidate::id)
        };
        let next = after.map_or(0, |after| match &reachable {
            Some(reachable) => reachable.partition_point(|position| id_at(*position) <= after),
            None => candidates
                .list
                .partition_point(|candidate| candidate.id() <= after),
        });
        Ok(Search {
            bundle: self,
            slot,
            candidates,
            reachable,
            next,
            plan,
            positions: Vec::new(),
            checked: None,
            type_name: open_type.to_string(),
        })
    }

    /// How many candidates a search of `entity_type` looks at.
    pub fn search_candidate_count(&self, entity_type: &str) -> usize {
        let Ok(parsed) = cedar_policy::EntityTypeName::from_str(entity_type) else {
            return 0;
        };
        self.search_candidates
            .get_or_init(|| self.candidates_by_type())
            .get(AsRef::<EntityType>::as_ref(&parsed))
            .map_or(0, |candidates| candidates.list.len())
    }

    fn candidates_by_type(&self) -> CandidatesByType {
        let mut by_type: HashMap<EntityType, Vec<Candidate>> = HashMap::new();
        let mut add = |uid: &EntityUID, entity: Option<&Arc<ast::Entity>>| {
            by_type
                .entry(uid.entity_type().clone())
                .or_default()
                .push(Candidate {
                    uid: uid.clone(),
                    entity: entity.cloned(),
                });
        };
        for entity in self.graph.shared_entities() {
            add(entity.uid(), Some(entity));
        }
        // Without a schema, an action may exist only in the policies; with
        // one, the store holds every declared action already.
        if let Some(schema) = &self.schema {
            schema.actions().for_each(|uid| add(uid.as_ref(), None));
        }
        for uid in self.index.named_actions() {
            add(uid, None);
        }
        by_type
            .into_iter()
            .map(|(entity_type, mut candidates)| {
                // By id; the store's entry (with its entity) first among
                // equal uids, so that it is the one kept.
                candidates.sort_by(|a, b| {
                    AsRef::<str>::as_ref(a.uid.eid())
                        .cmp(AsRef::<str>::as_ref(b.uid.eid()))
                        .then_with(|| b.entity.is_some().cmp(&a.entity.is_some()))
                });
                candidates.dedup_by(|later, kept| later.uid == kept.uid);
                let mut under: HashMap<EntityUID, Vec<u32>> = HashMap::new();
                for (position, candidate) in candidates.iter().enumerate() {
                    let ancestors = candidate.entity.iter().flat_map(|e| e.ancestors());
                    for uid in std::iter::once(&candidate.uid).chain(ancestors) {
                        under.entry(uid.clone()).or_default().push(position as u32);
                    }
                }
                let list = candidates;
                (entity_type, Arc::new(TypeCandidates { list, under }))
            })
            .collect()
    }

    fn narrowed_plan(
        &self,
        template: &Request,
        slot: SearchSlot,
        open_type: &EntityType,
    ) -> Result<NarrowedPlan<'_>, RequestError> {
        let fixed = |wanted: SearchSlot, uid: &EntityUid| {
            (slot != wanted)
                .then(|| cedar_uid(uid, wanted.field()))
                .transpose()
        };
        let principal = fixed(SearchSlot::Principal, &template.principal)?;
        let action = fixed(SearchSlot::Action, &template.action)?;
        let resource = fixed(SearchSlot::Resource, &template.resource)?;
        // A JSON context is typed by the schema's declaration for the
        // action, so an action search builds it for each action.
        let context = match (&action, &template.context, &self.schema) {
            (None, crate::ContextInput::Json(_), Some(_)) => None,
            // Typed, or untyped by any schema: the same for every action.
            (fixed_action, input, _) => {
                let mut budget = NodeBudget::new(&self.limits);
                Some(self.cedar_context(input, fixed_action.as_ref(), &mut budget)?)
            }
        };
        let store = self.entities.as_ref();
        let entity_of = |uid: &Option<cedar_policy::EntityUid>| {
            uid.as_ref()
                .and_then(|uid| in_store(store, AsRef::<EntityUID>::as_ref(uid)))
        };
        let (principal_entity, action_entity, resource_entity) = (
            entity_of(&principal),
            entity_of(&action),
            entity_of(&resource),
        );
        let narrowed = {
            let core = |uid: &Option<cedar_policy::EntityUid>| {
                uid.as_ref()
                    .map(|uid| AsRef::<EntityUID>::as_ref(uid).clone())
            };
            let (p, a, r) = (core(&principal), core(&action), core(&resource));
            // The open party's place holds any fixed uid: `narrow` ignores it.
            match p.as_ref().or(a.as_ref()).or(r.as_ref()) {
                Some(placeholder) => {
                    let open = Party {
                        uid: placeholder,
                        entity: None,
                    };
                    let fixed_parties = Parties {
                        principal: fixed_or_open(p.as_ref(), principal_entity, open),
                        action: fixed_or_open(a.as_ref(), action_entity, open),
                        resource: fixed_or_open(r.as_ref(), resource_entity, open),
                    };
                    self.index.narrow(slot.open(), &fixed_parties, open_type)
                }
                None => Narrowed::default(),
            }
        };
        let enumerated = self.schema.as_ref().is_some_and(|schema| {
            let validator: &ValidatorSchema = schema.as_ref();
            validator
                .get_entity_type(open_type)
                .is_some_and(|known| matches!(known.kind, ValidatorEntityTypeKind::Enum(_)))
        });
        Ok(NarrowedPlan {
            check_each: slot == SearchSlot::Action || enumerated,
            principal,
            action,
            resource,
            principal_entity,
            action_entity,
            resource_entity,
            context,
            context_input: template.context.clone(),
            narrowed,
        })
    }

    /// The real authorization of one candidate, over the policies whose
    /// scope matches it.
    fn decide_narrowed(
        &self,
        plan: &NarrowedPlan<'_>,
        slot: SearchSlot,
        candidate: &EntityUID,
        positions: &[u32],
        checked: &mut Option<Result<(), RequestError>>,
    ) -> Result<Response, RequestError> {
        let open = cedar_policy::EntityUid::from(candidate.clone());
        let pick = |wanted: SearchSlot, fixed: &Option<cedar_policy::EntityUid>| {
            if slot == wanted {
                Some(open.clone())
            } else {
                fixed.clone()
            }
        };
        let (Some(principal), Some(action), Some(resource)) = (
            pick(SearchSlot::Principal, &plan.principal),
            pick(SearchSlot::Action, &plan.action),
            pick(SearchSlot::Resource, &plan.resource),
        ) else {
            return Err(RequestError::invalid(
                "request",
                "principal, action and resource must all be known",
            ));
        };
        let context = match &plan.context {
            Some(context) => context.clone(),
            None => {
                let mut budget = NodeBudget::new(&self.limits);
                self.cedar_context(&plan.context_input, Some(&action), &mut budget)?
            }
        };
        let schema = match (self.schema.as_ref(), plan.check_each, checked.as_ref()) {
            (Some(_), false, Some(Err(refused))) => return Err(refused.clone()),
            // The same types, action and context as a request already checked.
            (Some(_), false, Some(Ok(()))) => None,
            (schema, _, _) => schema,
        };
        let request = cedar_policy::Request::new(principal, action, resource, context, schema)
            .map_err(|err| RequestError::invalid("request", err));
        if !plan.check_each && schema.is_some() {
            *checked = Some(request.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        let request = request?;
        let core_request: &crate::cedar_internals::ast::Request = request.as_ref();
        let evaluation =
            self.index
                .evaluate(positions, core_request.clone(), self.entities.as_ref());
        Ok(Response {
            decision: evaluation.decision,
            determining_policies: evaluation.determining_policies,
            errors: evaluation.errors,
            bundle_id: self.id.clone(),
        })
    }
}

impl Iterator for Search<'_> {
    type Item = SearchHit;

    fn next(&mut self) -> Option<SearchHit> {
        loop {
            let position = match &self.reachable {
                Some(reachable) => *reachable.get(self.next)? as usize,
                None => self.next,
            };
            let candidate = self.candidates.list.get(position)?;
            self.next += 1;
            let outcome = match &self.plan {
                Plan::Full(template) => {
                    let mut request = (**template).clone();
                    *self.slot.of(&mut request) =
                        EntityUid::new(self.type_name.clone(), candidate.id());
                    self.bundle.authorize(&request)
                }
                Plan::Narrowed(plan) => {
                    let open = Party {
                        uid: &candidate.uid,
                        entity: candidate.entity.as_deref(),
                    };
                    let parties = Parties {
                        principal: fixed_or_open(
                            core(&plan.principal),
                            plan.principal_entity,
                            open,
                        ),
                        action: fixed_or_open(core(&plan.action), plan.action_entity, open),
                        resource: fixed_or_open(core(&plan.resource), plan.resource_entity, open),
                    };
                    // No permit can be satisfied: denied, nothing to confirm.
                    if !self.bundle.index.applicable_narrowed(
                        &plan.narrowed,
                        &parties,
                        self.slot.open(),
                        &mut self.positions,
                    ) {
                        continue;
                    }
                    self.bundle.decide_narrowed(
                        plan,
                        self.slot,
                        &candidate.uid,
                        &self.positions,
                        &mut self.checked,
                    )
                }
            };
            return Some(SearchHit {
                uid: EntityUid::new(self.type_name.clone(), candidate.id()),
                outcome,
            });
        }
    }
}

/// A fixed party's core uid.
fn core(uid: &Option<cedar_policy::EntityUid>) -> Option<&EntityUID> {
    uid.as_ref().map(AsRef::as_ref)
}

/// A fixed party, or the candidate in the open place.
fn fixed_or_open<'a>(
    fixed: Option<&'a EntityUID>,
    entity: Option<&'a ast::Entity>,
    open: Party<'a>,
) -> Party<'a> {
    match fixed {
        Some(uid) => Party { uid, entity },
        None => open,
    }
}
