//! The entities one request can reach, for requests that bring entities of
//! their own (a gateway's principal built from token claims, say).
//!
//! Joining request entities to the bundle's store the plain way copies the
//! store and recomputes the hierarchy over all of it, which costs the size
//! of the store on every request. But Cedar's evaluator only looks up an
//! entity whose uid it already holds: the principal, action and resource,
//! uids in the context, uids written in the policies it evaluates, and uids
//! in the attributes and tags of entities it looked up before. An entity's
//! `in` checks read its own ancestor set, never the ancestors themselves.
//! So a store holding just the entities reachable from those roots, each
//! with its complete ancestor set, gives every evaluation the same answer,
//! and costs only what the request reaches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cedar_internals::Extensions;
use crate::cedar_internals::ast::{
    self, EntityUID, Expr, ExprKind, Literal, PartialValue, ValueKind,
};
use crate::cedar_internals::{CoreEntities as Entities, NoEntitiesSchema, TCComputation};

/// The bundle's entities, shared one by one so that slices are cheap.
#[derive(Debug, Default)]
pub(crate) struct EntityGraph {
    by_uid: HashMap<EntityUID, Arc<ast::Entity>>,
    /// Uids the store names as parents without holding them. A request
    /// entity with such a uid would give store entities new ancestors.
    dangling_parents: HashSet<EntityUID>,
}

impl EntityGraph {
    pub(crate) fn new(store: &Entities) -> Self {
        let by_uid: HashMap<EntityUID, Arc<ast::Entity>> = store
            .iter()
            .map(|entity| (entity.uid().clone(), Arc::new(entity.clone())))
            .collect();
        let dangling_parents = by_uid
            .values()
            .flat_map(|entity| entity.ancestors())
            .filter(|uid| !by_uid.contains_key(*uid))
            .cloned()
            .collect();
        Self {
            by_uid,
            dangling_parents,
        }
    }

    /// Every store entity, shared.
    pub(crate) fn shared_entities(&self) -> impl Iterator<Item = &Arc<ast::Entity>> {
        self.by_uid.values()
    }

    /// The request's own entities, with their ancestor sets completed
    /// through the store, when they can be sliced in: none is already in
    /// the store, none is a parent the store names but lacks, and none is
    /// an action. `None` otherwise; the caller must then join them the
    /// plain way.
    pub(crate) fn own_entities(&self, own: &Entities) -> Option<OwnEntities> {
        let mut completed = HashMap::with_capacity(own.len());
        for entity in own.iter() {
            let uid = entity.uid();
            if self.by_uid.contains_key(uid)
                || self.dangling_parents.contains(uid)
                || uid.entity_type().is_action()
            {
                return None;
            }
            let mut entity = entity.clone();
            let inherited: Vec<EntityUID> = entity
                .ancestors()
                .filter_map(|ancestor| self.by_uid.get(ancestor))
                .flat_map(|ancestor| ancestor.ancestors().cloned())
                .collect();
            for ancestor in inherited {
                entity.add_indirect_ancestor(ancestor);
            }
            completed.insert(uid.clone(), Arc::new(entity));
        }
        Some(OwnEntities(completed))
    }

    fn get<'a>(&'a self, own: &'a OwnEntities, uid: &EntityUID) -> Option<&'a Arc<ast::Entity>> {
        own.0.get(uid).or_else(|| self.by_uid.get(uid))
    }

    /// The entity with this uid: the request's own, or the store's.
    pub(crate) fn entity<'a>(
        &'a self,
        own: &'a OwnEntities,
        uid: &EntityUID,
    ) -> Option<&'a ast::Entity> {
        self.get(own, uid).map(AsRef::as_ref)
    }

    /// The store a request needs: its own entities and every store entity
    /// reachable from `roots` (the request's uids, its context and the uids
    /// written in the policies to evaluate) through attributes and tags.
    pub(crate) fn slice<'a>(
        &self,
        own: &OwnEntities,
        roots: impl IntoIterator<Item = &'a EntityUID>,
        context: Option<&PartialValue>,
    ) -> Result<Entities, String> {
        let mut pending: Vec<EntityUID> = own.0.keys().cloned().collect();
        pending.extend(roots.into_iter().cloned());
        if let Some(context) = context {
            uids_in(context, &mut pending);
        }
        let mut seen: HashSet<EntityUID> = HashSet::with_capacity(pending.len() * 2);
        let mut reached = Vec::with_capacity(pending.len());
        while let Some(uid) = pending.pop() {
            if seen.contains(&uid) {
                continue;
            }
            if let Some(entity) = self.get(own, &uid) {
                for (_, value) in entity.attrs().chain(entity.tags()) {
                    uids_in(value, &mut pending);
                }
                reached.push(Arc::clone(entity));
            }
            seen.insert(uid);
        }
        Entities::new()
            .add_entities(
                reached,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|err| err.to_string())
    }
}

/// A request's own entities, ancestor sets complete.
#[derive(Debug)]
pub(crate) struct OwnEntities(HashMap<EntityUID, Arc<ast::Entity>>);

/// Every entity uid inside a value.
fn uids_in(value: &PartialValue, found: &mut Vec<EntityUID>) {
    let PartialValue::Value(value) = value else {
        return;
    };
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value.value_kind() {
            ValueKind::Lit(Literal::EntityUID(uid)) => found.push(uid.as_ref().clone()),
            ValueKind::Set(set) => stack.extend(set.iter()),
            ValueKind::Record(fields) => stack.extend(fields.values()),
            ValueKind::Lit(_) | ValueKind::ExtensionValue(_) => {}
        }
    }
}

/// Every entity uid written in an expression.
pub(crate) fn uids_written_in(expr: &Expr) -> Vec<EntityUID> {
    let mut found: Vec<EntityUID> = Vec::new();
    for sub in expr.subexpressions() {
        if let ExprKind::Lit(Literal::EntityUID(uid)) = sub.expr_kind()
            && !found.contains(uid.as_ref())
        {
            found.push(uid.as_ref().clone());
        }
    }
    found
}
