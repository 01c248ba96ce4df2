//! AuthZEN-style search on a generated multi-tenant bundle: 1,000 policies
//! and 10,000 documents (the scale bench's generator, with more documents
//! per folder), decided by our core natively.
//!
//! - `resource/read`: which of the 10,000 documents may one user read? The
//!   typical query: most documents are in other tenants, where no permit's
//!   scope reaches, so they are skipped unevaluated.
//! - `resource/audit`: the same for `audit`, which a global permit grants
//!   on every document (`permit (principal, action == audit, resource)
//!   when { principal.level >= 4 }`): every candidate is authorized, the
//!   worst case for this bundle.
//! - `resource/read-one-by-one`: the baseline, `Bundle::authorize` on each
//!   of the 10,000 documents.
//! - `subject/read`: which of the 240 users may read one document?
//! - `action`: which of the 8 actions may one user take on one document?
//!
//! Before timing, each search's results are checked against
//! `Bundle::authorize` on every candidate. Besides criterion's estimates it
//! prints min, p50 and p90 of 40 full searches of each kind, with the
//! CPU time per search where the 40 take long enough to measure it. Under `cargo
//! test` it runs once on a small bundle.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_edge_benches::generator::bundle_with_docs;
use cedar_edge_core::{Bundle, ContextInput, EntityUid, Request, RequestLimits, SearchSlot};
use criterion::{Criterion, criterion_group, criterion_main};

fn benching() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

const CONTEXT: &str = r#"{"hour": 12, "mfa": true}"#;

fn template(principal: &str, action: &str, resource: &str) -> Request {
    Request {
        principal: EntityUid::new("Saas::User", principal),
        action: EntityUid::new("Saas::Action", action),
        resource: EntityUid::new("Saas::Doc", resource),
        // As the gateway's AuthZEN API passes it.
        context: ContextInput::Json(CONTEXT.to_owned()),
        entities: Vec::new(),
    }
}

/// The allowed candidates' ids, and how many candidates were authorized.
fn full_search(bundle: &Bundle, template: &Request, slot: SearchSlot) -> (Vec<String>, usize) {
    let mut authorized = 0;
    let mut allowed = Vec::new();
    for hit in bundle.search(template, slot, None).unwrap() {
        authorized += 1;
        if hit.outcome.unwrap().is_allowed() {
            allowed.push(hit.uid.id);
        }
    }
    (allowed, authorized)
}

/// `Bundle::authorize` on every candidate, the slow way.
fn one_by_one(
    bundle: &Bundle,
    template: &Request,
    slot: SearchSlot,
    candidates: &[String],
) -> Vec<String> {
    candidates
        .iter()
        .filter(|id| {
            let mut request = template.clone();
            let open = match slot {
                SearchSlot::Principal => &mut request.principal,
                SearchSlot::Action => &mut request.action,
                SearchSlot::Resource => &mut request.resource,
            };
            open.id = (*id).clone();
            bundle.authorize(&request).unwrap().is_allowed()
        })
        .cloned()
        .collect()
}

/// This thread's CPU time so far (user and system), from procfs in clock
/// ticks of 10 ms: only meaningful over many searches. The machine is
/// shared, so wall time includes waiting for a core; CPU time does not.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
    )
}

fn searches(c: &mut Criterion) {
    let (policies, docs) = if benching() {
        (1_000, 10_000)
    } else {
        (100, 1_000)
    };
    let generated = bundle_with_docs(policies, policies as u64, Some(docs));
    let bundle = Bundle::load(&generated.source, RequestLimits::default()).expect("loads");
    assert_eq!(bundle.search_candidate_count("Saas::Doc"), docs);
    let users = bundle.search_candidate_count("Saas::User");

    let started = Instant::now();
    let first = full_search(
        &bundle,
        &template("t0-u0", "read", ""),
        SearchSlot::Resource,
    );
    let first_search = started.elapsed();

    let doc_ids: Vec<String> = {
        // Every document, from a search whose candidates all have a permit
        // in scope (`audit` is granted on every document by a global rule).
        let everything = bundle
            .search(&template("t0-u0", "audit", ""), SearchSlot::Resource, None)
            .unwrap();
        everything.map(|hit| hit.uid.id).collect()
    };
    assert_eq!(doc_ids.len(), docs, "audit reaches every document");
    let user_ids: Vec<String> = (0..generated.tenants)
        .flat_map(|t| {
            (0..cedar_edge_benches::generator::USERS_PER_TENANT).map(move |u| format!("t{t}-u{u}"))
        })
        .collect();
    assert_eq!(user_ids.len(), users);
    // Searches answer in id order.
    let mut user_ids = user_ids;
    user_ids.sort();
    let mut action_ids: Vec<String> = cedar_edge_benches::generator::ACTIONS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    action_ids.sort();

    let cases = [
        (
            "resource/read",
            template("t0-u0", "read", ""),
            SearchSlot::Resource,
            &doc_ids,
        ),
        (
            "resource/audit",
            template("t0-u0", "audit", ""),
            SearchSlot::Resource,
            &doc_ids,
        ),
        (
            "subject/read",
            template("", "read", "t0-f0-d0"),
            SearchSlot::Principal,
            &user_ids,
        ),
        (
            "action",
            template("t0-u0", "", "t0-f0-d0"),
            SearchSlot::Action,
            &action_ids,
        ),
    ];
    // Exact before fast: each search's results against one-by-one.
    for (name, request, slot, candidates) in &cases {
        let (found, _) = full_search(&bundle, request, *slot);
        assert_eq!(
            found,
            one_by_one(&bundle, request, *slot, candidates),
            "{name}"
        );
    }

    let mut report = vec![format!(
        "bundle: {policies} policies, {docs} documents, {users} users; first search (lists the candidates once) {:.2} ms, {} results",
        first_search.as_secs_f64() * 1e3,
        first.0.len()
    )];
    let runs = if benching() { 40 } else { 1 };
    for (name, request, slot, candidates) in &cases {
        let mut times = Vec::with_capacity(runs);
        let mut outcome = (Vec::new(), 0);
        let cpu_before = thread_cpu();
        for _ in 0..runs {
            let started = Instant::now();
            outcome = black_box(full_search(&bundle, request, *slot));
            times.push(started.elapsed());
        }
        let cpu = match (cpu_before, thread_cpu()) {
            (Some(before), Some(after)) if after - before >= Duration::from_millis(300) => {
                format!(
                    ", CPU {:.1} ms per search",
                    (after - before).as_secs_f64() * 1e3 / runs as f64
                )
            }
            _ => String::new(),
        };
        let (min, p50, p90) = percentiles(times);
        report.push(format!(
            "{name}: {} candidates, {} authorized, {} results; wall min {min:.2} ms, p50 {p50:.2} ms, p90 {p90:.2} ms{cpu}",
            candidates.len(),
            outcome.1,
            outcome.0.len()
        ));
    }
    {
        let (_, request, slot, candidates) = &cases[0];
        let mut times = Vec::new();
        for _ in 0..runs.min(5) {
            let started = Instant::now();
            black_box(one_by_one(&bundle, request, *slot, candidates));
            times.push(started.elapsed());
        }
        let (min, p50, _) = percentiles(times);
        report.push(format!(
            "resource/read-one-by-one (Bundle::authorize per document): min {min:.2} ms, p50 {p50:.2} ms"
        ));
    }
    for line in &report {
        println!("{line}");
    }

    let mut group = c.benchmark_group("search");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, request, slot, _) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(full_search(&bundle, request, *slot)))
        });
    }
    group.sample_size(10);
    let (_, request, slot, candidates) = &cases[0];
    group.bench_function("resource/read-one-by-one", |b| {
        b.iter(|| black_box(one_by_one(&bundle, request, *slot, candidates)))
    });
    group.finish();
}

criterion_group!(benches, searches);
criterion_main!(benches);
