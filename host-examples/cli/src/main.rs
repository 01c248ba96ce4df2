//! `cedar-edge`: Cedar decisions and policy checks from the command line,
//! through the same WebAssembly component that production hosts load.
//!
//! This file only parses arguments and dispatches; each command lives in
//! `command/`.

mod command;

use cedar_edge_cli::exit_codes;
use clap::{Parser, Subcommand};

/// Cedar policy decisions and policy-as-code checks, through the cedar-edge
/// WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "cedar-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decide one request against a policy bundle.
    Authorize(command::authorize::AuthorizeArgs),
    /// Check a bundle: parse errors, strict schema validation, and lints.
    Validate(command::validate::ValidateArgs),
    /// Format a bundle's Cedar files the way Cedar's formatter does.
    Fmt(command::fmt::FmtArgs),
    /// Run a bundle's test suites (`BUNDLE/tests/*.yaml`).
    Test(command::test::TestArgs),
    /// Show which decisions change between two versions of a bundle.
    Diff(command::diff::DiffArgs),
    /// Run the decision service: AuthZEN for authenticated callers.
    Serve(command::serve::ServeArgs),
    /// Pack a bundle into one deterministic archive; prints its id.
    Pack(command::pack::PackArgs),
    /// Make a key pair for signing bundles.
    Keygen(command::keys::KeygenArgs),
    /// Sign a packed bundle (cosign `sign-blob` format).
    Sign(command::keys::SignArgs),
    /// Verify a bundle's signature against trusted keys; prints its id.
    Verify(command::keys::VerifyArgs),
    /// Push a packed bundle and its signature to an OCI registry.
    Push(command::registry::PushArgs),
    /// Pull a bundle from an OCI registry, verified when keys are trusted.
    Pull(command::registry::PullArgs),
    /// Render the Envoy filter's plugin configuration for a packed bundle.
    EnvoyConfig(command::envoy_config::EnvoyConfigArgs),
}

/// The stack the commands run on. Cedar's parsers recurse per nesting level
/// of a policy; the core refuses text nested deeper than it allows before
/// parsing, and this stack leaves that limit a wide margin.
const COMMAND_STACK_BYTES: usize = 64 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit_codes::USAGE.into()
            } else {
                exit_codes::OK.into()
            };
        }
    };
    let spawned = std::thread::Builder::new()
        .name("cedar-edge".to_owned())
        .stack_size(COMMAND_STACK_BYTES)
        .spawn(move || run(cli));
    let code = match spawned.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        // The panic has printed its message.
        Ok(Err(_)) => exit_codes::RUNTIME,
        Err(err) => {
            eprintln!("error: cannot start the command's thread: {err}");
            exit_codes::RUNTIME
        }
    };
    code.into()
}

fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Authorize(args) => command::authorize::run(&args),
        Command::Validate(args) => command::validate::run(&args),
        Command::Fmt(args) => command::fmt::run(&args),
        Command::Test(args) => command::test::run(&args),
        Command::Diff(args) => command::diff::run(&args),
        Command::Serve(args) => command::serve::run(&args),
        Command::Pack(args) => command::pack::run(&args),
        Command::Keygen(args) => command::keys::keygen(&args),
        Command::Sign(args) => command::keys::sign(&args),
        Command::Verify(args) => command::keys::verify(&args),
        Command::Push(args) => command::registry::push(&args),
        Command::Pull(args) => command::registry::pull(&args),
        Command::EnvoyConfig(args) => command::envoy_config::run(&args),
    }
}
