//! The host side of `wit/authz.wit`: the crate's only `bindgen!` call.
#![allow(missing_debug_implementations, clippy::all)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy-engine",
});

pub(crate) use cedar_edge::authz::types as wit;
