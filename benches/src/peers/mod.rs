//! The peer comparison: the generated bundle's meaning, handed to other
//! policy engines in their own languages, and the requests every engine
//! decides.
//!
//! [`model`] reads a generated bundle into facts a translator can use
//! without parsing Cedar: each entity with its transitive ancestors, and
//! each request with the decision our engine made. [`rego`] and [`cerbos`]
//! translate the bundle's [`crate::generator::PolicySpec`]s exactly, under
//! Cedar's rules: a satisfied forbid denies, else a satisfied permit allows,
//! else deny. [`timing`] is the measuring loop every runner shares, so each
//! engine is timed the same way. `benches/scripts/peers/run.py` drives it.

pub mod cerbos;
pub mod model;
pub mod rego;
pub mod timing;
