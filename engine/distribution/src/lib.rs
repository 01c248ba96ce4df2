//! Shipping bundles to enforcement points: packed artifacts pushed to and
//! pulled from OCI registries, and bundle folders read from Git remotes at a
//! commit. Nothing here decides; every source hands back bytes or files that
//! the core loads and checks like any local bundle.

pub mod git;
pub mod oci;
pub mod verify;
