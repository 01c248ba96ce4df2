//! Speed at scale, every engine in one run: plain cedar-policy on pre-built
//! requests over the whole policy set, our core natively, and our
//! component, on generated bundles of 10 to 10,000 policies and the same
//! generated requests.
//!
//! Besides criterion's estimates it records, per engine and size, the
//! latency of single calls (p50 and p99), batch against single calls,
//! throughput with one and two threads sharing one engine, and the one-off
//! costs: loading each bundle, deserializing the precompiled component and
//! instantiating it. Everything lands in `target/bench-results/scale.json`,
//! which `benches/scripts/plot_scale.py` turns into the plot in `docs/`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cedar_edge_benches::generator::{Rng, bundle, request, with_claims_entities};
use cedar_edge_benches::{plain_answer, plain_request};
use cedar_edge_core::{Backend, Bundle, NativeBackend, Request, RequestLimits};
use cedar_edge_runtime::{ComponentBackend, ComponentRuntime, RuntimeConfig};
use cedar_policy::Authorizer;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
/// What `cargo test --all-targets` runs: a smoke pass on the small bundles,
/// without the timed phases (cargo passes `--bench` only to real runs).
const SMOKE_SIZES: [usize; 2] = [10, 100];

fn benching() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}
const REQUESTS: usize = 1_000;
/// Single calls timed per engine and size for the percentiles.
const LATENCY_SAMPLES: usize = 5_000;
/// The most time spent timing single calls of one engine at one size.
const LATENCY_BUDGET: Duration = Duration::from_secs(4);
/// How long each throughput measurement runs.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);
/// What a UI asks at once: one principal and action over many resources.
const BATCH: usize = 50;

struct Workload {
    size: usize,
    native: NativeBackend,
    component: ComponentBackend,
    /// The same bundle in a pool of its own, for the principals never seen
    /// before: they would flush the checked entities the other engines'
    /// repeat principals find.
    component_first_seen: ComponentBackend,
    requests: Vec<Request>,
    prebuilt: Vec<cedar_policy::Request>,
    /// The same requests from principals built from token claims: the
    /// principal (and sometimes the resource) comes with the request.
    claims: Vec<Request>,
    /// Those requests as plain Cedar takes them, entities pre-parsed.
    claims_prebuilt: Vec<(cedar_policy::Request, cedar_policy::Entities)>,
    load_native: Duration,
    load_component: Duration,
}

fn workload(runtime: &ComponentRuntime, size: usize) -> Workload {
    let generated = bundle(size, size as u64);
    let started = Instant::now();
    let native = NativeBackend::load(&generated.source, RequestLimits::default()).expect("loads");
    let load_native = started.elapsed();
    let started = Instant::now();
    // Into the component, a host loads the bundle once (the native load
    // above) and hands the validated files to the guest, which parses them.
    let component = runtime.load_bundle(native.bundle()).expect("loads");
    let load_component = load_native + started.elapsed();
    let component_first_seen = runtime.load_bundle(native.bundle()).expect("loads");
    let mut rng = Rng::new(size as u64 * 31 + 7);
    let requests: Vec<Request> = (0..REQUESTS)
        .map(|_| request(generated.tenants, &mut rng))
        .collect();
    let bundle = native.bundle();
    let prebuilt: Vec<_> = requests
        .iter()
        .map(|request| plain_request(bundle, request).expect("a valid request"))
        .collect();
    let claims: Vec<(Request, serde_json::Value)> = requests
        .iter()
        .enumerate()
        .map(|(n, r)| with_claims_entities(r.clone(), n, &mut rng))
        .collect();
    let claims_prebuilt: Vec<(cedar_policy::Request, cedar_policy::Entities)> = claims
        .iter()
        .map(|(request, json)| {
            (
                plain_request(bundle, request).expect("a valid request"),
                cedar_policy::Entities::from_json_value(json.clone(), None).expect("entities"),
            )
        })
        .collect();
    let claims: Vec<Request> = claims.into_iter().map(|(request, _)| request).collect();
    // Every engine must give the same answers before any is timed.
    for (request, plain) in requests.iter().zip(&prebuilt) {
        let ours = bundle.authorize(request).expect("decides");
        let (allowed, reasons, _) = plain_answer(bundle, bundle.entities(), plain);
        assert_eq!(ours.is_allowed(), allowed);
        assert_eq!(ours.determining_policies, reasons);
        assert_eq!(component.authorize(request).expect("decides"), ours);
    }
    // Joining copies the whole store, which is slow at 10,000 policies; a
    // sample suffices here (the tests compare every answer).
    for (request, (plain, own)) in claims.iter().zip(&claims_prebuilt).take(100) {
        let joined = join(bundle, own);
        let ours = component.authorize(request).expect("decides");
        assert_eq!(
            ours.determining_policies,
            plain_answer(bundle, &joined, plain).1
        );
    }
    Workload {
        size,
        native,
        component,
        component_first_seen,
        requests,
        prebuilt,
        claims,
        claims_prebuilt,
        load_native,
        load_component,
    }
}

/// `request` with its principal renamed to one no earlier call used.
fn first_seen(request: &Request, call: usize) -> Request {
    let mut request = request.clone();
    let renamed = format!("{}-{call}", request.principal.id);
    for entity in &mut request.entities {
        if entity.uid == request.principal {
            entity.uid.id.clone_from(&renamed);
        }
    }
    request.principal.id = renamed;
    request
}

/// What a host on plain cedar-policy does with request entities: join them
/// to a copy of the store.
fn join(bundle: &Bundle, own: &cedar_policy::Entities) -> cedar_policy::Entities {
    bundle
        .entities()
        .clone()
        .add_entities(own.clone(), bundle.schema())
        .expect("joins")
}

type Engine<'w> = (&'static str, Box<dyn Fn(usize) + 'w>);

/// The engines, each as "decide the `i`-th request".
fn engines(w: &Workload) -> Vec<Engine<'_>> {
    let authorizer = Authorizer::new();
    let bundle = w.native.bundle();
    vec![
        (
            "cedar_prebuilt",
            Box::new(move |i: usize| {
                black_box(authorizer.is_authorized(
                    &w.prebuilt[i % REQUESTS],
                    w.native.bundle().policies(),
                    w.native.bundle().entities(),
                ));
            }),
        ),
        (
            "core_native",
            Box::new(|i: usize| {
                black_box(w.native.bundle().authorize(&w.requests[i % REQUESTS]).ok());
            }),
        ),
        (
            "component",
            Box::new(|i: usize| {
                black_box(w.component.authorize(&w.requests[i % REQUESTS]).ok());
            }),
        ),
        (
            "cedar_join_request_entities",
            Box::new(move |i: usize| {
                let (request, own) = &w.claims_prebuilt[i % REQUESTS];
                let joined = join(bundle, own);
                black_box(Authorizer::new().is_authorized(request, bundle.policies(), &joined));
            }),
        ),
        (
            "core_native_request_entities",
            Box::new(|i: usize| {
                black_box(w.native.bundle().authorize(&w.claims[i % REQUESTS]).ok());
            }),
        ),
        (
            "component_request_entities",
            Box::new(|i: usize| {
                black_box(w.component.authorize(&w.claims[i % REQUESTS]).ok());
            }),
        ),
        // A principal never seen before on every call, so nothing checked
        // earlier can be reused. Renaming it is part of the time measured.
        (
            "component_request_entities_first_seen",
            Box::new(|i: usize| {
                let request = first_seen(&w.claims[i % REQUESTS], i);
                black_box(w.component_first_seen.authorize(&request).ok());
            }),
        ),
    ]
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted
        .get(rank.min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Times single calls, the engines taking turns in rounds so that drift in
/// the machine's speed hits them alike.
fn latencies(w: &Workload) -> Value {
    let engines = engines(w);
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
    let per_round = 250;
    let mut spent = vec![Duration::ZERO; engines.len()];
    for round in 0..LATENCY_SAMPLES / per_round {
        for (((_, decide), found), spent) in engines.iter().zip(samples.iter_mut()).zip(&mut spent)
        {
            // Slow engines (plain Cedar at 10,000 policies) stop early.
            if *spent > LATENCY_BUDGET {
                continue;
            }
            for call in 0..per_round {
                let i = round * per_round + call;
                let started = Instant::now();
                decide(i);
                let took = started.elapsed();
                *spent += took;
                found.push(took);
            }
        }
    }
    let mut result = serde_json::Map::new();
    for ((name, _), mut found) in engines.iter().zip(samples) {
        found.sort_unstable();
        result.insert(
            (*name).to_owned(),
            json!({
                "p50_us": percentile(&found, 0.50),
                "p99_us": percentile(&found, 0.99),
                "samples": found.len(),
            }),
        );
    }
    Value::Object(result)
}

/// Decisions per second with `threads` threads sharing one engine.
fn throughput(backend: &dyn Backend, requests: &[Request], threads: usize) -> f64 {
    // The component pool makes an instance (and loads the bundle into it)
    // the first time a second caller needs one; that one-off is not part of
    // steady-state throughput.
    let ready = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let ready = &ready;
            scope.spawn(move || {
                ready.wait();
                for request in requests.iter().skip(thread).take(20) {
                    black_box(backend.authorize(request).ok());
                }
            });
        }
    });
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (done, stop) = (&done, &stop);
            scope.spawn(move || {
                let mut i = thread * 97;
                while !stop.load(Ordering::Relaxed) {
                    black_box(backend.authorize(&requests[i % requests.len()]).ok());
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(THROUGHPUT_WINDOW);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The same principal and action over `BATCH` resources, as a UI asks.
fn ui_batch(w: &Workload) -> Vec<Request> {
    let first = &w.requests[0];
    w.requests
        .iter()
        .take(BATCH)
        .map(|other| Request {
            resource: other.resource.clone(),
            ..first.clone()
        })
        .collect()
}

/// `scale.json` for a run of every size; a run of some sizes writes
/// `scale-partial.json`, so it never replaces the full record the plot reads.
fn results_path(every_size: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let name = if every_size {
        "scale.json"
    } else {
        "scale-partial.json"
    };
    target.join("bench-results").join(name)
}

/// Every size, or those `CEDAR_EDGE_SCALE_SIZES` lists (`10,10000`), for a
/// quicker run of a few rows.
fn chosen_sizes() -> Vec<usize> {
    if !benching() {
        return SMOKE_SIZES.to_vec();
    }
    match std::env::var("CEDAR_EDGE_SCALE_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|size| {
                size.trim()
                    .parse()
                    .expect("CEDAR_EDGE_SCALE_SIZES lists numbers")
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn median_of(runs: usize, mut once: impl FnMut() -> Duration) -> f64 {
    let mut times: Vec<Duration> = (0..runs).map(|_| once()).collect();
    times.sort_unstable();
    percentile(&times, 0.5)
}

fn scale(c: &mut Criterion) {
    let started = Instant::now();
    let runtime = ComponentRuntime::new(RuntimeConfig::default()).expect("the component compiles");
    let first_start_ms = started.elapsed().as_secs_f64() * 1e3;
    // Start cost with the precompiled artifact already cached, as every
    // start after the first one is.
    let warm_start_us = median_of(5, || {
        let started = Instant::now();
        black_box(ComponentRuntime::new(RuntimeConfig::default()).expect("starts"));
        started.elapsed()
    });
    let instantiate_us = median_of(200, || {
        let started = Instant::now();
        black_box(runtime.instantiate().expect("instantiates"));
        started.elapsed()
    });

    let sizes = chosen_sizes();
    let workloads: Vec<Workload> = sizes.iter().map(|&n| workload(&runtime, n)).collect();

    let mut group = c.benchmark_group("scale");
    for w in &workloads {
        for (name, decide) in engines(w) {
            group.bench_with_input(BenchmarkId::new(name, w.size), &w.size, |b, _| {
                let mut i = 0;
                b.iter(|| {
                    decide(i);
                    i += 1;
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("batch");
    for w in workloads.iter().filter(|w| w.size == 1_000) {
        let batch = ui_batch(w);
        group.bench_function(format!("component_{BATCH}_single_calls"), |b| {
            b.iter(|| {
                for request in &batch {
                    black_box(w.component.authorize(request).ok());
                }
            })
        });
        group.bench_function(format!("component_one_batch_of_{BATCH}"), |b| {
            b.iter(|| black_box(w.component.authorize_batch(&batch)))
        });
    }
    group.finish();

    if !benching() {
        return;
    }
    let mut sizes = Vec::new();
    for w in &workloads {
        let latency = latencies(w);
        let mut throughputs = serde_json::Map::new();
        for (name, backend) in [
            ("component", &w.component as &dyn Backend),
            ("core_native", &w.native),
        ] {
            let one = throughput(backend, &w.requests, 1);
            let two = throughput(backend, &w.requests, 2);
            throughputs.insert(
                name.to_owned(),
                json!({"threads_1_per_s": one, "threads_2_per_s": two, "scaling": two / one}),
            );
        }
        let batch = ui_batch(w);
        let single_us = median_of(50, || {
            let started = Instant::now();
            for request in &batch {
                black_box(w.component.authorize(request).ok());
            }
            started.elapsed()
        });
        let batched_us = median_of(50, || {
            let started = Instant::now();
            black_box(w.component.authorize_batch(&batch));
            started.elapsed()
        });
        let candidates: Vec<usize> = w
            .requests
            .iter()
            .map(|r| {
                w.native
                    .bundle()
                    .candidate_policies(r)
                    .map_or(0, |ids| ids.len())
            })
            .collect();
        let entry = json!({
            "policies": w.size,
            "latency": latency,
            "throughput": throughputs,
            "batch": {"size": BATCH, "single_calls_us": single_us, "one_batch_us": batched_us},
            "load_ms": {
                "native": w.load_native.as_secs_f64() * 1e3,
                "component": w.load_component.as_secs_f64() * 1e3,
            },
            "candidates_mean": candidates.iter().sum::<usize>() as f64 / candidates.len() as f64,
            "candidates_max": candidates.iter().max().copied().unwrap_or(0),
            "component_peak_memory_bytes": w.component.stats().peak_memory_bytes,
        });
        eprintln!("{}", serde_json::to_string(&entry).unwrap_or_default());
        sizes.push(entry);
    }
    let report = json!({
        "start": {
            "first_start_ms": first_start_ms,
            "warm_start_us": warm_start_us,
            "instantiate_us": instantiate_us,
        },
        "sizes": sizes,
    });
    let path = results_path(workloads.len() == SIZES.len());
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("results folder");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("written");
    eprintln!("results: {}", path.display());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = scale
}
criterion_main!(benches);
