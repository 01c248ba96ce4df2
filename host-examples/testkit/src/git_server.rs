//! A Git server on loopback for tests.
