//! `cedar-edge authorize`: one decision, explained.

use std::path::PathBuf;
use std::str::FromStr;

use cedar_edge_cli::engines::BackendChoice;
use cedar_edge_cli::entities::read_entities_file;
use cedar_edge_cli::exit_codes;
use cedar_edge_cli::report::print_usage_error;
use cedar_edge_core::{ContextInput, EntityUid, Request, Response};
use clap::{Args, ValueEnum};

use super::{BundleOptions, load_backend, read_bundle, start_engines};

/// How to print the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A short summary for people.
    Human,
    /// One JSON object.
    Json,
}

/// Arguments of `cedar-edge authorize`.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The bundle directory: `*.cedar`, an optional schema, `entities.json`.
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// The principal's uid, such as `Airflow::User::"bob"`.
    #[arg(long)]
    principal: String,
    /// The action's uid, such as `Airflow::Action::"trigger"`.
    #[arg(long)]
    action: String,
    /// The resource's uid, such as `Airflow::Dag::"etl_daily"`.
    #[arg(long)]
    resource: String,
    /// The context as Cedar JSON, or `@FILE` to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    context: Option<String>,
    /// Request-scoped entities, in Cedar's JSON entity format.
    #[arg(long, value_name = "FILE")]
    entities: Option<PathBuf>,
    /// Which engine decides.
    #[arg(long, value_enum, default_value_t = BackendChoice::Component)]
    backend: BackendChoice,
    /// How to print the decision.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    format: OutputFormat,
    #[command(flatten)]
    options: BundleOptions,
}

/// Runs the command and returns its exit code.
pub fn run(args: &AuthorizeArgs) -> u8 {
    let request = match build_request(args) {
        Ok(request) => request,
        Err((flag, message)) => {
            print_usage_error("authorize", flag, &message);
            return exit_codes::USAGE;
        }
    };
    let source = match read_bundle(&args.bundle, &args.options) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let backend = match start_engines(args.backend)
        .and_then(|engines| load_backend(&engines, &args.bundle, &source))
    {
        Ok(loaded) => loaded.backend,
        Err(code) => return code,
    };
    // Fail closed: a request the engine cannot decide is a deny with its reason.
    let response = backend.decide(&request);
    print_response(args, &request, &response);
    if response.is_allowed() {
        exit_codes::OK
    } else {
        exit_codes::DENY
    }
}

fn print_response(args: &AuthorizeArgs, request: &Request, response: &Response) {
    let backend = args.backend.name();
    match args.format {
        OutputFormat::Json => {
            let mut json = serde_json::to_value(response).unwrap_or_default();
            if let Some(object) = json.as_object_mut() {
                object.insert("backend".to_owned(), backend.into());
            }
            println!("{json}");
        }
        OutputFormat::Human => {
            let verdict = if response.is_allowed() {
                "ALLOW"
            } else {
                "DENY"
            };
            println!(
                "{verdict}  {} -> {} -> {}",
                request.principal, request.action, request.resource
            );
            if response.determining_policies.is_empty() {
                if response.is_allowed() {
                    println!("  determined by: (none)");
                } else {
                    println!("  determined by: no permit applied (default deny)");
                }
            } else {
                println!(
                    "  determined by: {}",
                    response.determining_policies.join(", ")
                );
            }
            for error in &response.errors {
                if error.policy_id.is_empty() {
                    println!("  error: {}", error.message);
                } else {
                    println!("  error in `{}`: {}", error.policy_id, error.message);
                }
            }
            println!(
                "  bundle: {} ({})",
                response.bundle_id,
                args.bundle.display()
            );
            println!("  backend: {backend}");
        }
    }
}

type UsageError = (&'static str, String);

fn build_request(args: &AuthorizeArgs) -> Result<Request, UsageError> {
    let uid = |flag: &'static str, text: &str| {
        EntityUid::from_str(text).map_err(|message| (flag, message))
    };
    let context = match &args.context {
        None => ContextInput::Json("{}".to_owned()),
        Some(text) => {
            let json = read_arg_or_file(text).map_err(|message| ("--context", message))?;
            // Checked here for a clear usage error; Cedar converts it with the schema.
            serde_json::from_str::<serde_json::Value>(&json)
                .map_err(|err| ("--context", format!("not valid JSON: {err}")))?;
            ContextInput::Json(json)
        }
    };
    let entities = match &args.entities {
        None => Vec::new(),
        Some(path) => read_entities_file(path).map_err(|err| ("--entities", err.to_string()))?,
    };
    Ok(Request {
        principal: uid("--principal", &args.principal)?,
        action: uid("--action", &args.action)?,
        resource: uid("--resource", &args.resource)?,
        context,
        entities,
    })
}

fn read_arg_or_file(text: &str) -> Result<String, String> {
    match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|err| format!("cannot read `{path}`: {err}"))
        }
        None => Ok(text.to_owned()),
    }
}
