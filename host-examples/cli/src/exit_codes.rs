//! Exit codes. Scripts and CI hooks branch on these, so they never change
//! meaning.

/// The request was allowed, or the command found nothing wrong.
pub const OK: u8 = 0;
/// A check failed: a test case, a denied warning, a file `fmt --check`
/// would change, or a widening under `diff --fail-on-widen`.
pub const FAILED: u8 = 1;
/// The request was denied, including a deny because the request was invalid.
pub const DENY: u8 = 2;
/// The tests passed, but policy coverage is below `--min-coverage`.
pub const COVERAGE: u8 = 3;
/// The command line was wrong: an unknown flag, a malformed uid or JSON.
pub const USAGE: u8 = 64;
/// The bundle could not be read, parsed or validated.
pub const BUNDLE: u8 = 65;
/// A test or request file could not be read or has an error.
pub const SUITE: u8 = 66;
/// A registry or Git remote could not be reached.
pub const UNAVAILABLE: u8 = 69;
/// The policy component could not be started.
pub const RUNTIME: u8 = 70;
/// The bundle is unsigned, or no trusted key signed it.
pub const UNTRUSTED: u8 = 77;
/// `serve`: the configuration is wrong, or the service stopped on an
/// error it could not recover from.
pub const CONFIG: u8 = 78;
