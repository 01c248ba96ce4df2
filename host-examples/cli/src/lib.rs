//! The library behind the `cedar-edge` command. The commands are thin
//! front-ends over these modules, and the project's own tests call the same
//! modules, so a suite passes under `cargo test` exactly when it passes
//! under `cedar-edge test`.

pub mod diff;
pub mod engines;
pub mod entities;
pub mod exit_codes;
pub mod format;
pub mod lint;
pub mod report;
pub mod suite;
