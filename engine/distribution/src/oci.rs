//! OCI registries as bundle stores.
