//! `cedar-edge pack`: one deterministic archive per bundle, named by its
//! digest.

use std::path::PathBuf;

use cedar_edge_cli::exit_codes;
use cedar_edge_core::{Bundle, FileRole, RequestLimits, packed_id};
use clap::Args;

use super::{BundleOptions, pack_or_report, read_bundle};

/// Arguments of `cedar-edge pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The bundle directory (or a packed file, written again).
    bundle: PathBuf,
    /// Where to write the packed bundle.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    options: BundleOptions,
}

/// Packs a bundle that loads; prints its id alone on standard output.
pub fn run(args: &PackArgs) -> u8 {
    let source = match read_bundle(&args.bundle, &args.options) {
        Ok(source) => source,
        Err(code) => return code,
    };
    // Only a bundle that would serve is packed: nothing ships that every
    // loader would refuse.
    if let Err(err) = Bundle::load(&source, RequestLimits::default()) {
        eprintln!(
            "error: `{}` does not load, so it is not packed: {err}\n(run `cedar-edge validate {}` for details)",
            args.bundle.display(),
            args.bundle.display()
        );
        return exit_codes::BUNDLE;
    }
    let packed = match pack_or_report(&args.bundle, &source) {
        Ok(packed) => packed,
        Err(code) => return code,
    };
    if let Err(err) = std::fs::write(&args.output, &packed) {
        eprintln!("error: cannot write `{}`: {err}", args.output.display());
        return exit_codes::FAILED;
    }
    let manifest = source.manifest();
    let policies = manifest
        .files
        .iter()
        .filter(|file| file.role == FileRole::Policy)
        .count();
    eprintln!(
        "packed {} → {} ({} bytes): {} file(s), {policies} policy file(s), validation {}, Cedar {}",
        args.bundle.display(),
        args.output.display(),
        packed.len(),
        manifest.files.len(),
        manifest.validation,
        manifest.cedar_version
    );
    println!("{}", packed_id(&packed));
    exit_codes::OK
}
