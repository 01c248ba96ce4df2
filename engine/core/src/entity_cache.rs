//! Request entities already checked, by their exact input.
//!
//! A principal built from token claims comes back with the same claims on
//! every request its token makes. Building Cedar's entities, checking them
//! against the schema and completing their ancestors through the store
//! gives the same result every time for one bundle, so the result is kept,
//! keyed by the entities exactly as the request sent them. Only successes
//! are kept; what depends on the rest of the request (the context, the
//! policies that apply, the slice of the store) is still done per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cedar_policy::Entities;

use crate::request::EntityInput;
use crate::slice::OwnEntities;
use crate::value::{Attributes, EntityUid, ValueNode};

/// How many distinct entity sets one bundle keeps. When full, the cache
/// starts over: a flood of one-off principals costs a periodic clear, never
/// unbounded memory.
const CAPACITY: usize = 1024;

/// The largest entity set kept, in bytes of text plus a share per value.
/// A principal built from a token is far smaller; without this bound,
/// requests carrying entities at the request limits (a megabyte each)
/// could make the cache hold a gigabyte.
const MAX_KEPT_WEIGHT: usize = 4 * 1024;

/// What one value node is counted as, besides its text.
const NODE_WEIGHT: usize = 32;

/// A request's own entities, checked.
#[derive(Debug)]
pub(crate) struct CheckedEntities {
    /// Cedar's entities, their hierarchy among themselves computed.
    pub(crate) entities: Entities,
    /// The same, ancestors completed through the store, when they can be
    /// sliced in; `None` when they must be joined to the store.
    pub(crate) sliceable: Option<OwnEntities>,
    /// The value nodes they hold, charged to every request that sends them.
    pub(crate) nodes: u32,
}

/// The bundle's checked entity sets.
#[derive(Debug, Default)]
pub(crate) struct EntityCache {
    checked: Mutex<HashMap<Vec<EntityInput>, Arc<CheckedEntities>>>,
}

impl EntityCache {
    pub(crate) fn get(&self, entities: &[EntityInput]) -> Option<Arc<CheckedEntities>> {
        // A poisoned lock only means a panic elsewhere: check afresh.
        self.checked.lock().ok()?.get(entities).cloned()
    }

    /// Keeps `checked` for `entities`, unless the set is too big to keep.
    pub(crate) fn insert(&self, entities: &[EntityInput], checked: Arc<CheckedEntities>) {
        if weight(entities) > MAX_KEPT_WEIGHT {
            return;
        }
        if let Ok(mut kept) = self.checked.lock() {
            if kept.len() >= CAPACITY {
                kept.clear();
            }
            kept.insert(entities.to_vec(), checked);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.checked.lock().map_or(0, |kept| kept.len())
    }
}

/// The memory an entity set takes, roughly: its text, and a share per uid
/// and value node. Stops counting once over the bound.
fn weight(entities: &[EntityInput]) -> usize {
    let uid = |uid: &EntityUid| uid.type_name.len() + uid.id.len() + NODE_WEIGHT;
    let attributes = |attributes: &Attributes| -> usize {
        let names: usize = attributes.fields.iter().map(|(name, _)| name.len()).sum();
        let nodes: usize = attributes
            .nodes
            .iter()
            .map(|node| {
                NODE_WEIGHT
                    + match node {
                        ValueNode::String(text) | ValueNode::Extension(_, text) => text.len(),
                        ValueNode::ExtensionCall(name, args) => name.len() + args.len() * 4,
                        ValueNode::Entity(target) => uid(target),
                        ValueNode::Set(items) => items.len() * 4,
                        ValueNode::Record(fields) => {
                            fields.iter().map(|(name, _)| name.len() + 4).sum()
                        }
                        ValueNode::Bool(_) | ValueNode::Long(_) => 0,
                    }
            })
            .sum();
        names + nodes
    };
    let mut total = 0;
    for entity in entities {
        total += uid(&entity.uid)
            + entity.parents.iter().map(uid).sum::<usize>()
            + attributes(&entity.attrs)
            + attributes(&entity.tags);
        if total > MAX_KEPT_WEIGHT {
            break;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn user(n: usize) -> Vec<EntityInput> {
        vec![EntityInput {
            uid: EntityUid::new("User", format!("u{n}")),
            attrs: Attributes::from_fields([("n".to_owned(), Value::Long(n as i64))]),
            parents: Vec::new(),
            tags: Attributes::default(),
        }]
    }

    fn checked() -> Arc<CheckedEntities> {
        Arc::new(CheckedEntities {
            entities: Entities::empty(),
            sliceable: None,
            nodes: 1,
        })
    }

    #[test]
    fn finds_only_the_exact_entities_and_stays_bounded() {
        let cache = EntityCache::default();
        cache.insert(&user(1), checked());
        assert!(cache.get(&user(1)).is_some());
        assert!(cache.get(&user(2)).is_none());
        let mut other_value = user(1);
        for entity in &mut other_value {
            entity.attrs = Attributes::from_fields([("n".to_owned(), Value::Long(2))]);
        }
        assert!(cache.get(&other_value).is_none(), "an attribute differs");
        for n in 0..CAPACITY * 2 + 7 {
            cache.insert(&user(n), checked());
            assert!(cache.len() <= CAPACITY);
        }
        assert!(
            cache.get(&user(CAPACITY * 2 + 6)).is_some(),
            "the newest is kept"
        );
    }

    #[test]
    fn a_large_entity_set_is_not_kept() {
        let cache = EntityCache::default();
        let mut big = user(1);
        for entity in &mut big {
            entity.attrs = Attributes::from_fields([(
                "bio".to_owned(),
                Value::String("x".repeat(MAX_KEPT_WEIGHT)),
            )]);
        }
        cache.insert(&big, checked());
        assert!(
            cache.get(&big).is_none(),
            "kept {} bytes of text",
            MAX_KEPT_WEIGHT
        );
        cache.insert(&user(1), checked());
        assert_eq!(cache.len(), 1, "a token-sized principal is kept");
    }
}
