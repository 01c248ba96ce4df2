//! Checking a request's own entities against the schema with Cedar's own
//! rules, without Cedar's set-up cost on every request.
//!
//! Cedar's conformance checker asks its schema for a description of an
//! entity type each time it meets a uid of that type: the entity itself,
//! each parent, each uid in an attribute or tag. The stock description is
//! built on the spot, by copying the type's attribute map and scanning
//! every type in the schema for possible parents, and each attribute type
//! is converted again on every lookup. For a principal built from token
//! claims that set-up was most of the cost of the request.
//!
//! [`ConformanceCache`] asks Cedar for every description once, when the
//! bundle loads, and keeps what Cedar answered. The checker itself stays
//! Cedar's (`Entities::add_entities` with a schema), so the rules and the
//! error messages are exactly Cedar's; only the answers to its questions
//! are remembered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cedar_internals::ast::{self, Eid, EntityType, EntityUID};
use crate::cedar_internals::{
    CedarTypeDescription, CoreSchema, EntitySchema, EntityTypeDescription, NonEmpty, SchemaType,
    SmolStr, ValidatorSchema,
};

/// What Cedar says about one entity type, asked once.
#[derive(Debug)]
struct CachedType {
    /// Cedar's own description, for the questions that are cheap to ask
    /// again (enum choices, external, open attributes, allowed parents).
    cedar: CedarTypeDescription,
    /// Each declared attribute's type, converted once.
    attr_types: HashMap<SmolStr, SchemaType>,
    tag_type: Option<SchemaType>,
    required_attrs: Vec<SmolStr>,
}

/// A cached description handed to Cedar's checker; cloning it is a
/// reference count.
#[derive(Debug, Clone)]
pub(crate) struct TypeDescription(Arc<CachedType>);

impl EntityTypeDescription for TypeDescription {
    fn entity_type(&self) -> EntityType {
        self.0.cedar.entity_type()
    }

    fn attr_type(&self, attr: &str) -> Option<SchemaType> {
        self.0.attr_types.get(attr).cloned()
    }

    fn tag_type(&self) -> Option<SchemaType> {
        self.0.tag_type.clone()
    }

    fn required_attrs<'s>(&'s self) -> Box<dyn Iterator<Item = SmolStr> + 's> {
        Box::new(self.0.required_attrs.iter().cloned())
    }

    fn allowed_parent_types(&self) -> Arc<HashSet<EntityType>> {
        self.0.cedar.allowed_parent_types()
    }

    fn open_attributes(&self) -> bool {
        self.0.cedar.open_attributes()
    }

    fn enum_entity_eids(&self) -> Option<&NonEmpty<Eid>> {
        self.0.cedar.enum_entity_eids()
    }

    fn is_external(&self) -> bool {
        self.0.cedar.is_external()
    }
}

/// Every entity type's description, built once per bundle.
#[derive(Debug, Default)]
pub(crate) struct ConformanceCache {
    types: HashMap<EntityType, TypeDescription>,
}

impl ConformanceCache {
    pub(crate) fn new(schema: &ValidatorSchema) -> Self {
        let types = schema
            .entity_type_names()
            .filter_map(|name| {
                let cedar = CedarTypeDescription::new(schema, name)?;
                let declared = schema.get_entity_type(name)?;
                let attr_types = declared
                    .attributes()
                    .keys()
                    .filter_map(|attr| Some((attr.clone(), cedar.attr_type(attr)?)))
                    .collect();
                let cached = CachedType {
                    attr_types,
                    tag_type: cedar.tag_type(),
                    required_attrs: cedar.required_attrs().collect(),
                    cedar,
                };
                Some((name.clone(), TypeDescription(Arc::new(cached))))
            })
            .collect();
        Self { types }
    }

    /// The schema Cedar's checker reads, answering from this cache.
    pub(crate) fn schema<'a>(&'a self, schema: &'a ValidatorSchema) -> CachedSchema<'a> {
        CachedSchema {
            cedar: CoreSchema::new(schema),
            types: &self.types,
        }
    }
}

/// Cedar's schema view with entity type descriptions from the cache.
/// Actions and name lookups go to Cedar's view, which answers those from
/// the schema without building anything.
pub(crate) struct CachedSchema<'a> {
    cedar: CoreSchema<'a>,
    types: &'a HashMap<EntityType, TypeDescription>,
}

impl<'a> EntitySchema for CachedSchema<'a> {
    type EntityTypeDescription = TypeDescription;
    type ActionEntityIterator = <CoreSchema<'a> as EntitySchema>::ActionEntityIterator;

    fn entity_type(&self, entity_type: &EntityType) -> Option<TypeDescription> {
        self.types.get(entity_type).cloned()
    }

    fn action(&self, action: &EntityUID) -> Option<Arc<ast::Entity>> {
        self.cedar.action(action)
    }

    fn entity_types_with_basename<'b>(
        &'b self,
        basename: &'b ast::UnreservedId,
    ) -> Box<dyn Iterator<Item = EntityType> + 'b> {
        self.cedar.entity_types_with_basename(basename)
    }

    fn action_entities(&self) -> Self::ActionEntityIterator {
        self.cedar.action_entities()
    }
}
