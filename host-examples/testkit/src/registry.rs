//! An OCI registry on loopback for tests.
