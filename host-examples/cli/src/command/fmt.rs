//! `cedar-edge fmt`: Cedar files in Cedar's own layout.

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use cedar_edge_cli::format::format_bundle;
use clap::Args;

use super::read_bundle;

/// Arguments of `cedar-edge fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The bundle directory.
    bundle: PathBuf,
    /// Write nothing; list the files that would change and fail if any would.
    #[arg(long)]
    check: bool,
}

/// Runs the command and returns its exit code.
pub fn run(args: &FmtArgs) -> u8 {
    let source = match read_bundle(&args.bundle) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let (formatted, errors) = format_bundle(&args.bundle, &source);
    for error in &errors {
        eprintln!(
            "{:?}",
            miette::Report::msg(format!("`{}`: {}", error.path.display(), error.message))
        );
    }
    let changed: Vec<_> = formatted.iter().filter(|file| file.changed).collect();
    if args.check {
        for file in &changed {
            println!("would reformat {}", file.path.display());
        }
    } else {
        for file in &changed {
            if let Err(err) = std::fs::write(&file.path, &file.text) {
                eprintln!("error: cannot write `{}`: {err}", file.path.display());
                return exit_codes::FAILED;
            }
            println!("formatted {}", file.path.display());
        }
    }
    if !errors.is_empty() {
        exit_codes::BUNDLE
    } else if args.check && !changed.is_empty() {
        exit_codes::FAILED
    } else {
        exit_codes::OK
    }
}
