//! Heap allocations per decision, counted by a global allocator that wraps
//! the system one: plain cedar-policy (pre-built request, and request built
//! per call as a host must) against our core's typed path, on the generated
//! bundles. The component's guest allocates inside its own linear memory,
//! which no host allocator sees; it runs this same core code.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_edge_benches::generator::{Rng, bundle, request};
use cedar_edge_benches::plain_request;
use cedar_edge_core::{Bundle, RequestLimits};
use cedar_policy::Authorizer;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes per call of `decide` over `calls` calls.
fn per_call(calls: usize, mut decide: impl FnMut(usize)) -> (f64, f64) {
    let (count, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for i in 0..calls {
        decide(i);
    }
    let calls = calls as f64;
    (
        (ALLOCATIONS.load(Ordering::Relaxed) - count) as f64 / calls,
        (BYTES.load(Ordering::Relaxed) - bytes) as f64 / calls,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let authorizer = Authorizer::new();
    let mut rows = Vec::new();
    println!("| policies | engine | allocations per decision | bytes per decision |");
    println!("| ---: | --- | ---: | ---: |");
    // `cargo test --all-targets` runs this without `--bench`: small sizes only.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[usize] = if benching {
        &[10, 100, 1_000, 10_000]
    } else {
        &[10, 100]
    };
    for &size in sizes {
        let generated = bundle(size, size as u64);
        let native = Bundle::load(&generated.source, RequestLimits::default()).expect("loads");
        let mut rng = Rng::new(size as u64 * 31 + 7);
        let requests: Vec<_> = (0..500)
            .map(|_| request(generated.tenants, &mut rng))
            .collect();
        let prebuilt: Vec<_> = requests
            .iter()
            .map(|r| plain_request(&native, r).expect("valid"))
            .collect();
        let calls = requests.len();
        let measured = [
            (
                "cedar, pre-built request",
                per_call(calls, |i| {
                    black_box(authorizer.is_authorized(
                        &prebuilt[i],
                        native.policies(),
                        native.entities(),
                    ));
                }),
            ),
            (
                "cedar, request built per call",
                per_call(calls, |i| {
                    let request = plain_request(&native, &requests[i]).expect("valid");
                    black_box(authorizer.is_authorized(
                        &request,
                        native.policies(),
                        native.entities(),
                    ));
                }),
            ),
            (
                "our core, typed request",
                per_call(calls, |i| {
                    black_box(native.authorize(&requests[i]).ok());
                }),
            ),
        ];
        // The index must keep our allocations below plain Cedar's, which
        // records every policy's outcome.
        assert!(measured[2].1.0 < measured[0].1.0, "{size}: {measured:?}");
        for (engine, (count, bytes)) in measured {
            println!("| {size} | {engine} | {count:.1} | {bytes:.0} |");
            rows.push(serde_json::json!({"policies": size, "engine": engine,
                "allocations": count, "bytes": bytes}));
        }
    }
    if !benching {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-results/allocations.json");
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("folder");
    std::fs::write(&path, serde_json::Value::Array(rows).to_string()).expect("written");
}
