//! `cedar-edge diff`: the access impact of a policy change.

use std::path::{Path, PathBuf};

use cedar_edge_cli::diff::{ChangeKind, RequestSet, compare, markdown};
use cedar_edge_cli::engines::BackendChoice;
use cedar_edge_cli::exit_codes;
use cedar_edge_cli::suite::TestCase;
use cedar_edge_cli::suite::load::{contexts_by_action, load_requests, load_suites_capped};
use std::sync::Arc;

use cedar_edge_core::Bundle;
use clap::{Args, ValueEnum};

use super::{BundleOptions, load_backend, read_bundle, start_engines};

/// How to print the impact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Markdown, ready to post as a merge-request comment.
    Markdown,
    /// One JSON document.
    Json,
}

/// Arguments of `cedar-edge diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The bundle before the change.
    old_bundle: PathBuf,
    /// The bundle after the change.
    new_bundle: PathBuf,
    /// Replay these requests (YAML or JSON list) instead of the derived set:
    /// both bundles' test requests plus every principal × action × resource
    /// of their entities that the schema allows.
    #[arg(long, value_name = "FILE")]
    requests: Option<PathBuf>,
    /// Exit with a failure when some request is allowed now and was not before.
    #[arg(long)]
    fail_on_widen: bool,
    /// Which engine decides.
    #[arg(long, value_enum, default_value_t = BackendChoice::Component)]
    backend: BackendChoice,
    /// How to print the impact.
    #[arg(long, value_enum, default_value_t = DiffFormat::Markdown)]
    format: DiffFormat,
    #[command(flatten)]
    options: BundleOptions,
}

/// Runs the command and returns its exit code.
pub fn run(args: &DiffArgs) -> u8 {
    let (old_source, new_source) = match (
        read_bundle(&args.old_bundle, &args.options),
        read_bundle(&args.new_bundle, &args.options),
    ) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let engines = match start_engines(args.backend) {
        Ok(engines) => engines,
        Err(code) => return code,
    };
    let (old, new) = match (
        load_backend(&engines, &args.old_bundle, &old_source),
        load_backend(&engines, &args.new_bundle, &new_source),
    ) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let set = match request_set(
        args,
        [
            (&args.old_bundle, &old.bundle),
            (&args.new_bundle, &new.bundle),
        ],
    ) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let report = compare(old.backend.as_ref(), new.backend.as_ref(), &set);
    match args.format {
        DiffFormat::Markdown => print!("{}", markdown(&report)),
        DiffFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    if args.fail_on_widen && report.count(ChangeKind::Widened) > 0 {
        exit_codes::FAILED
    } else {
        exit_codes::OK
    }
}

/// The given request file, or both bundles' test requests and their
/// scope-derived combinations.
fn request_set(args: &DiffArgs, bundles: [(&PathBuf, &Arc<Bundle>); 2]) -> Result<RequestSet, u8> {
    let mut set = RequestSet::default();
    if let Some(path) = &args.requests {
        let requests = load_requests(path).map_err(|err| {
            eprintln!("error: {err}");
            exit_codes::SUITE
        })?;
        requests.into_iter().for_each(|request| set.add(request));
        return Ok(set);
    }
    let mut cases: Vec<TestCase> = Vec::new();
    for (dir, _) in &bundles {
        cases.extend(suite_cases(dir, &args.options)?);
    }
    for case in &cases {
        set.add(case.request.clone());
    }
    let contexts = contexts_by_action(&cases);
    // The bundles the backends decide with: each was loaded once.
    for (_, bundle) in bundles {
        set.add_scope_derived(bundle, &contexts);
    }
    Ok(set)
}

fn suite_cases(dir: &Path, limits: &BundleOptions) -> Result<Vec<TestCase>, u8> {
    load_suites_capped(dir, limits.max_file_bytes).map_err(|errors| {
        for error in &errors {
            eprintln!("error: {}", dir.join(error.to_string()).display());
        }
        exit_codes::SUITE
    })
}
