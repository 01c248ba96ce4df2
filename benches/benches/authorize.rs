//! One run, every engine, the same request: native cedar-policy on a
//! pre-built request, native with request building from JSON, our core
//! natively, and the component on the typed and the JSON paths. Plus the
//! one-off costs: instantiation from `InstancePre` and bundle load.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::str::FromStr;

use cedar_edge_benches::{CONTEXT_JSON, example_source, trigger_request, typed_context};
use cedar_edge_core::{Backend, NativeBackend};
use cedar_edge_core::{Bundle, ContextInput, RequestLimits};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};
use cedar_policy::{Authorizer, Context, EntityUid, Request};
use criterion::{Criterion, criterion_group, criterion_main};

fn decisions(c: &mut Criterion) {
    let source = example_source().expect("the example bundle reads");
    let bundle = Bundle::load(&source, RequestLimits::default()).expect("the example bundle loads");
    let schema = bundle.schema().expect("the example has a schema");
    let uid = |text: &str| EntityUid::from_str(text).expect("a uid");
    let (principal, action, resource) = (
        uid(r#"Airflow::User::"bob""#),
        uid(r#"Airflow::Action::"trigger""#),
        uid(r#"Airflow::Dag::"etl_daily""#),
    );
    let authorizer = Authorizer::new();
    let context = Context::from_json_str(CONTEXT_JSON, Some((schema, &action))).expect("context");
    let prebuilt = Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context,
        Some(schema),
    )
    .expect("request");
    assert_eq!(
        authorizer
            .is_authorized(&prebuilt, bundle.policies(), bundle.entities())
            .decision(),
        cedar_policy::Decision::Allow
    );

    let runtime = ComponentRuntime::new(RuntimeConfig::default()).expect("the component compiles");
    let component = runtime
        .load_source(&source)
        .expect("the bundle loads in the component");
    let native = NativeBackend::load(&source, RequestLimits::default()).expect("native load");
    let typed = trigger_request(typed_context());
    let json = trigger_request(ContextInput::Json(CONTEXT_JSON.to_owned()));
    for backend in [&component as &dyn Backend, &native] {
        assert!(backend.authorize(&typed).expect("typed").is_allowed());
        assert!(backend.authorize(&json).expect("json").is_allowed());
    }

    let mut group = c.benchmark_group("decide");
    group.bench_function("cedar_native_prebuilt_request", |b| {
        b.iter(|| {
            authorizer.is_authorized(black_box(&prebuilt), bundle.policies(), bundle.entities())
        })
    });
    group.bench_function("cedar_native_request_from_json", |b| {
        b.iter(|| {
            let context = Context::from_json_str(black_box(CONTEXT_JSON), Some((schema, &action)))
                .expect("context");
            let request = Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
                Some(schema),
            )
            .expect("request");
            authorizer.is_authorized(&request, bundle.policies(), bundle.entities())
        })
    });
    group.bench_function("core_native_typed", |b| {
        b.iter(|| native.authorize(black_box(&typed)))
    });
    group.bench_function("component_typed", |b| {
        b.iter(|| component.authorize(black_box(&typed)))
    });
    group.bench_function("component_json", |b| {
        b.iter(|| component.authorize(black_box(&json)))
    });
    group.finish();

    let mut group = c.benchmark_group("start");
    group.bench_function("instantiate_from_instance_pre", |b| {
        b.iter(|| runtime.instantiate().expect("instantiate"))
    });
    group.bench_function("bundle_load_native", |b| {
        b.iter(|| Bundle::load(black_box(&source), RequestLimits::default()).expect("load"))
    });
    group.bench_function("bundle_load_component", |b| {
        b.iter(|| runtime.load_source(black_box(&source)).expect("load"))
    });
    group.finish();

    let bare = runtime.instantiate().expect("instantiate").memory_bytes();
    let loaded = component.stats().peak_memory_bytes;
    eprintln!(
        "memory: a bare instance holds {bare} bytes of linear memory; with the example bundle loaded and deciding, {loaded} bytes"
    );
}

criterion_group!(benches, decisions);
criterion_main!(benches);
