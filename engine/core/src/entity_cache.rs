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

/// How many distinct entity sets one bundle keeps. When full, the cache
/// starts over: a flood of one-off principals costs a periodic clear, never
/// unbounded memory.
const CAPACITY: usize = 1024;

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

    pub(crate) fn insert(&self, entities: &[EntityInput], checked: Arc<CheckedEntities>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Attributes, EntityUid, Value};

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
}
