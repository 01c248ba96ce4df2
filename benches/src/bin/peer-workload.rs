//! Writes one peer-comparison workload and times our own engines on it.
//!
//! For a policy count and seed it writes, under `--out`:
//! - `bundle/`: the generated Cedar bundle (`generated.cedar`,
//!   `saas.cedarschema`, `entities.json`), and `saas.cedarschema.json`;
//! - `requests.json`: the requests with our native engine's answers;
//! - `model.json`: every policy's meaning and every entity with its
//!   transitive ancestors, for translators;
//! - `rego/` (modules and the data document) and `cerbos/`: the bundle
//!   translated for those peers;
//! - `ours.json`: our native core and our component, timed per call on
//!   exactly those requests (see `cedar_edge_benches::peers::timing`).
//!
//! `benches/scripts/peers/run.py` runs it; see `docs/peers.md`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use cedar_edge_benches::peers::model::{self, ModelFile, RequestsFile};
use cedar_edge_benches::peers::timing::{self, Budget, Summary};
use cedar_edge_benches::peers::{cerbos, rego};
use cedar_edge_core::Backend;
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};
use clap::Parser;
use serde::Serialize;

/// Write a peer-comparison workload and time our engines on it.
#[derive(Debug, Parser)]
struct Args {
    /// How many policies the generated bundle has.
    #[arg(long)]
    policies: usize,
    /// The generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How many requests to generate.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// The workload directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Seconds of timed passes per engine (at least one pass runs).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// At most this many timed passes per engine.
    #[arg(long, default_value_t = 50)]
    max_passes: usize,
    /// Write the workload without timing our engines.
    #[arg(long)]
    no_timing: bool,
}

/// One timed engine in `ours.json`.
#[derive(Debug, Serialize)]
struct Timed {
    engine: &'static str,
    how: &'static str,
    summary: Summary,
}

#[derive(Debug, Serialize)]
struct Ours {
    policies: usize,
    seed: u64,
    requests: usize,
    load_ms: Load,
    engines: Vec<Timed>,
}

#[derive(Debug, Serialize)]
struct Load {
    native: f64,
    component: f64,
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let workload = model::workload(args.policies, args.seed, args.requests)?;
    let source = &workload.generated.source;
    let out = &args.out;

    for file in source
        .policies
        .iter()
        .chain(source.schema.as_ref())
        .chain(source.entities.as_ref())
    {
        write(&out.join("bundle").join(&file.path), &file.contents)?;
    }
    let schema_text = source
        .schema
        .as_ref()
        .map(|file| file.contents.as_str())
        .context("the generated bundle has a schema")?;
    let (fragment, _warnings) = cedar_policy::SchemaFragment::from_cedarschema_str(schema_text)
        .context("the generated schema parses")?;
    write(
        &out.join("saas.cedarschema.json"),
        &fragment.to_json_string().context("the schema as JSON")?,
    )?;

    let requests = RequestsFile {
        policies: args.policies,
        seed: args.seed,
        requests: workload.requests.clone(),
    };
    write(
        &out.join("requests.json"),
        &serde_json::to_string(&requests)?,
    )?;
    let model_file = ModelFile {
        policies: args.policies,
        seed: args.seed,
        tenants: workload.generated.tenants,
        specs: &workload.generated.policies,
        entities: &workload.entities,
    };
    write(
        &out.join("model.json"),
        &serde_json::to_string(&model_file)?,
    )?;

    let policies = &workload.generated.policies;
    // A rerun must not keep module files of an earlier, larger bundle.
    let rego_dir = out.join("rego");
    if rego_dir.exists() {
        fs::remove_dir_all(&rego_dir)
            .with_context(|| format!("removing {}", rego_dir.display()))?;
    }
    for module in rego::policy_modules(policies) {
        write(&out.join("rego").join(&module.name), &module.text)?;
    }
    write(
        &out.join("rego").join("data.json"),
        &serde_json::to_string(&rego::data_document(&workload.entities))?,
    )?;
    write(
        &out.join("cerbos").join("policies").join("doc.yaml"),
        &cerbos::resource_policy(policies),
    )?;

    let allows = workload
        .requests
        .iter()
        .filter(|r| r.expects_allow())
        .count();
    eprintln!(
        "workload: {} policies, {} tenants, {} entities, {} requests ({allows} allowed) in {}",
        args.policies,
        workload.generated.tenants,
        workload.entities.len(),
        workload.requests.len(),
        out.display()
    );
    if args.no_timing {
        return Ok(());
    }

    let expected: Vec<bool> = workload
        .requests
        .iter()
        .map(|r| r.expects_allow())
        .collect();
    let budget = Budget {
        seconds: args.seconds,
        max_passes: args.max_passes,
    };
    let started = std::time::Instant::now();
    let native = cedar_edge_core::Bundle::load(source, cedar_edge_core::RequestLimits::default())
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let native_load = started.elapsed().as_secs_f64() * 1e3;
    let runtime = ComponentRuntime::new(RuntimeConfig::default())?;
    let started = std::time::Instant::now();
    let component = runtime.load_source(source)?;
    let component_load = started.elapsed().as_secs_f64() * 1e3;

    let calls = &workload.engine_requests;
    let call = |index: usize,
                decide: &dyn Fn(&cedar_edge_core::Request) -> Result<bool, String>| {
        calls
            .get(index)
            .ok_or_else(|| format!("no request {index}"))
            .and_then(decide)
    };
    let native_summary = timing::measure(&expected, budget, |index| {
        call(index, &|request| {
            native
                .authorize(request)
                .map(|response| response.is_allowed())
                .map_err(|err| err.to_string())
        })
    })
    .context("our native core")?;
    let component_summary = timing::measure(&expected, budget, |index| {
        call(index, &|request| {
            component
                .authorize(request)
                .map(|response| response.is_allowed())
                .map_err(|err| err.to_string())
        })
    })
    .context("our component")?;
    if native_summary.calls == 0 || component_summary.calls == 0 {
        bail!("no calls were timed");
    }
    let ours = Ours {
        policies: args.policies,
        seed: args.seed,
        requests: expected.len(),
        load_ms: Load {
            native: native_load,
            component: component_load,
        },
        engines: vec![
            Timed {
                engine: "cedar-edge native core",
                how: "in-process Rust: Bundle::authorize on a pre-built typed Request",
                summary: native_summary,
            },
            Timed {
                engine: "cedar-edge component",
                how: "in-process wasmtime: ComponentBackend::authorize, typed Request across the WIT boundary, pooled instance",
                summary: component_summary,
            },
        ],
    };
    write(
        &out.join("ours.json"),
        &serde_json::to_string_pretty(&ours)?,
    )?;
    println!("{}", serde_json::to_string(&ours)?);
    Ok(())
}
