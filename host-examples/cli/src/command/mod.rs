//! One module per subcommand.

pub mod authorize;
