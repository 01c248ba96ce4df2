//! The one door to Cedar's internal crate, `cedar-policy-core`.
//!
//! The public `cedar-policy` API re-parses names and rebuilds stores on
//! every call; the core reaches past it in a few places for speed (typed
//! values built from parsed names, the policy index, request slices). Every
//! such use goes through this module, so a Cedar upgrade has one place to
//! check. `cedar-policy-core` is pinned to the exact version `cedar-policy`
//! wraps.

pub(crate) use cedar_policy_core::ast;
pub(crate) use cedar_policy_core::entities::{
    Dereference, Entities as CoreEntities, NoEntitiesSchema, TCComputation,
};
pub(crate) use cedar_policy_core::evaluator::Evaluator;
pub(crate) use cedar_policy_core::extensions::Extensions;
// The schema view Cedar's entity conformance checker reads (`conformance`).
pub(crate) use cedar_policy_core::entities::{
    EntityTypeDescription, Schema as EntitySchema, SchemaType,
};
pub(crate) use cedar_policy_core::pst::{NonEmpty, SmolStr};
pub(crate) use cedar_policy_core::validator::{
    CoreSchema, EntityTypeDescription as CedarTypeDescription, ValidatorEntityTypeKind,
    ValidatorSchema,
};
