//! What one bundle load costs a host at 10,000 policies, the way the hosts
//! loaded before and the way they load now, in one run:
//!
//! - `three_parses`: the previous gateway reload. The mapping's filter
//!   parsed and validated the bundle after a JSON round trip of the plugin
//!   configuration; `load_bundle` parsed and validated it again (and
//!   dropped the result) before the guest parsed it a third time.
//! - `one_parse`: now. The bundle is parsed and validated once; the mapping
//!   and the native backend share it, and the guest is handed the validated
//!   files.
//! - `one_parse_concurrent`: the same, with the guest parsing on a second
//!   thread while the host validates (`ComponentRuntime::load_with_native`).
//! - `native_only`: the one parse alone, the floor for either.
//!
//! Under `cargo test` this runs once on a small bundle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cedar_edge_benches::generator;
use cedar_edge_core::{Bundle, BundleSource, RequestLimits};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn benching() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The JSON round trip the old reload made: every file into a plugin
/// configuration, serialised, parsed back.
fn json_round_trip(source: &BundleSource) -> BundleSource {
    let files: Vec<(String, String)> = source
        .files()
        .map(|file| (file.path.clone(), file.contents.clone()))
        .collect();
    let text = serde_json::to_string(&files).unwrap();
    let back: Vec<(String, String)> = serde_json::from_str(&text).unwrap();
    let mut copy = source.clone();
    for (file, (_, contents)) in copy
        .policies
        .iter_mut()
        .chain(copy.schema.iter_mut())
        .chain(copy.entities.iter_mut())
        .chain(copy.template_links.iter_mut())
        .zip(back)
    {
        file.contents = contents;
    }
    copy
}

fn loads(c: &mut Criterion) {
    let size = if benching() { 10_000 } else { 100 };
    let source = generator::bundle(size, 7).source;
    let runtime = ComponentRuntime::new(RuntimeConfig::default()).expect("the component compiles");
    let limits = RequestLimits::default();

    let mut group = c.benchmark_group(format!("load_{size}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.bench_function("three_parses", |b| {
        b.iter(|| {
            let mapped = Bundle::load(&json_round_trip(&source), limits).expect("loads");
            let validated_again = Bundle::load(&source, limits).expect("loads");
            drop(validated_again);
            let backend = runtime.load_bundle(&mapped).expect("loads");
            black_box((mapped, backend))
        })
    });
    group.bench_function("one_parse", |b| {
        b.iter(|| {
            let bundle = Arc::new(Bundle::load(&source, limits).expect("loads"));
            let backend = runtime.load_bundle(&bundle).expect("loads");
            black_box((bundle, backend))
        })
    });
    group.bench_function("one_parse_concurrent", |b| {
        b.iter(|| black_box(runtime.load_with_native(&source).expect("loads")))
    });
    group.bench_function("native_only", |b| {
        b.iter(|| black_box(Bundle::load(&source, limits).expect("loads")))
    });
    group.finish();
}

criterion_group!(benches, loads);
criterion_main!(benches);
