//! Times regorus on a peer-comparison workload written by `peer-workload`.
//!
//! The Rego modules and the data document (entities with their ancestors)
//! are loaded once; each call sets the input and evaluates `allow`. Two
//! ways are timed: regorus's interpreter (`Engine::eval_rule`) and the same
//! module compiled to its bytecode VM (`RegoVM::execute`). Before timing,
//! every decision is checked against ours, and with the interpreter the
//! satisfied policies of the first `--reason-checks` requests are checked
//! against our determining policies too.
//! Prints one JSON object on stdout.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use cedar_edge_benches::peers::model::RequestsFile;
use cedar_edge_benches::peers::rego;
use cedar_edge_benches::peers::timing::{self, Budget, Summary};
use clap::Parser;
use serde::Serialize;

/// Time regorus on a workload directory.
#[derive(Debug, Parser)]
struct Args {
    /// The workload directory `peer-workload` wrote.
    #[arg(long)]
    workload: PathBuf,
    /// Seconds of timed passes per variant (at least one pass runs).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// At most this many timed passes per variant.
    #[arg(long, default_value_t = 50)]
    max_passes: usize,
    /// Check the satisfied policies against our determining policies on
    /// this many requests (every decision is checked regardless).
    #[arg(long, default_value_t = 200)]
    reason_checks: usize,
    /// Skip the bytecode VM.
    #[arg(long)]
    no_vm: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    variant: &'static str,
    how: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    load_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    engine: &'static str,
    rows: Vec<Row>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = &args.workload;
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("rego"))
        .context("reading rego/")?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|path| path.extension().is_some_and(|ext| ext == "rego"));
    paths.sort();
    let modules = paths
        .iter()
        .map(|path| {
            Ok(rego::Module {
                name: path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text: fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let data: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("rego").join("data.json"))
            .context("reading rego/data.json")?,
    )?;
    let requests: RequestsFile = serde_json::from_str(
        &fs::read_to_string(dir.join("requests.json")).context("reading requests.json")?,
    )?;
    let inputs: Vec<regorus::Value> = requests
        .requests
        .iter()
        .map(|request| regorus::Value::from(rego::input(request)))
        .collect();
    let expected: Vec<bool> = requests
        .requests
        .iter()
        .map(|request| request.expects_allow())
        .collect();
    let budget = Budget {
        seconds: args.seconds,
        max_passes: args.max_passes,
    };

    let started = std::time::Instant::now();
    let mut engine = rego::interpreter_from_modules(&modules, &data)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;

    // The satisfied policies must be exactly our determining ones.
    for (index, (request, input)) in requests
        .requests
        .iter()
        .zip(&inputs)
        .enumerate()
        .take(args.reason_checks)
    {
        let (forbids, permits) = rego::satisfied(&mut engine, input)?;
        let allowed = forbids.is_empty() && !permits.is_empty();
        let determining = rego::determining(allowed, forbids, permits);
        if allowed != request.expects_allow() || determining != request.determining {
            bail!(
                "request {index}: regorus says {} by {determining:?}, ours {:?} by {:?}",
                if allowed { "allow" } else { "deny" },
                request.expected,
                request.determining
            );
        }
    }

    let summary = timing::measure(&expected, budget, |index| {
        let input = inputs
            .get(index)
            .ok_or_else(|| format!("no input {index}"))?;
        rego::decide(&mut engine, input).map_err(|err| err.to_string())
    })
    .context("regorus interpreter")?;
    let mut rows = vec![Row {
        variant: "interpreter",
        how: "in-process Rust: Engine::set_input + eval_rule(\"data.cedar.allow\"), module and data loaded once",
        summary: Some(summary),
        error: None,
        load_ms,
    }];

    if !args.no_vm {
        let started = std::time::Instant::now();
        let row = match rego::virtual_machine(&mut engine, &data) {
            Ok(mut vm) => {
                let load_ms = started.elapsed().as_secs_f64() * 1e3;
                let summary = timing::measure(&expected, budget, |index| {
                    let input = inputs
                        .get(index)
                        .ok_or_else(|| format!("no input {index}"))?;
                    rego::decide_vm(&mut vm, input).map_err(|err| err.to_string())
                })
                .context("regorus VM")?;
                Row {
                    variant: "rvm",
                    how: "in-process Rust: the module compiled once to regorus's bytecode VM; RegoVM::set_input + execute",
                    summary: Some(summary),
                    error: None,
                    load_ms,
                }
            }
            Err(err) => Row {
                variant: "rvm",
                how: "the module compiled to regorus's bytecode VM",
                summary: None,
                error: Some(err.to_string()),
                load_ms: 0.0,
            },
        };
        rows.push(row);
    }
    println!(
        "{}",
        serde_json::to_string(&Report {
            engine: "regorus",
            rows
        })?
    );
    Ok(())
}
