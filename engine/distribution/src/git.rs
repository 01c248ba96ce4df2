//! Git remotes as bundle sources.
