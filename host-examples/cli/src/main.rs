//! `cedar-edge`: Cedar decisions from the command line, through the same
//! WebAssembly component that production hosts load.
//!
//! This file only parses arguments and dispatches; each command lives in
//! `command/`.

mod command;
mod exit;
mod report;

use clap::{Parser, Subcommand};

/// Cedar policy decisions, through the cedar-edge WebAssembly component.
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
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit::USAGE.into()
            } else {
                exit::ALLOW.into()
            };
        }
    };
    let code = match cli.command {
        Command::Authorize(args) => command::authorize::run(&args),
    };
    code.into()
}
