//! Exit codes. Scripts and CI hooks branch on these, so they never change
//! meaning.

/// The request was allowed (or, for other commands, all went well).
pub const ALLOW: u8 = 0;
/// The request was denied, including a deny because the request was invalid.
pub const DENY: u8 = 2;
/// The command line was wrong: an unknown flag, a malformed uid or JSON.
pub const USAGE: u8 = 64;
/// The bundle could not be read, parsed or validated.
pub const BUNDLE: u8 = 65;
/// The policy component could not be started.
pub const RUNTIME: u8 = 70;
