//! The airflow-gitlab example, decided through the component and natively.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use cedar_edge_core::{Attributes, Decision, EntityInput, RequestLimits, Value};
use cedar_edge_core::{Backend, NativeBackend};
use common::*;

fn backends() -> (cedar_edge_runtime::ComponentBackend, NativeBackend) {
    let source = example_bundle();
    let component = shared_runtime()
        .load_source(&source)
        .expect("the bundle loads in the component");
    let native =
        NativeBackend::load(&source, RequestLimits::default()).expect("the bundle loads natively");
    (component, native)
}

#[test]
fn expected_decisions_with_reasons() {
    let (component, _) = backends();
    let office = || typed_context(true, "10.1.2.3", 60);
    let cases = [
        (
            "bob",
            "trigger",
            "etl_daily",
            Decision::Allow,
            vec!["operators-trigger-runs"],
        ),
        (
            "bob",
            "edit",
            "etl_daily",
            Decision::Deny,
            vec!["forbid-manual-production-edits"],
        ),
        (
            "bob",
            "edit",
            "ml_training",
            Decision::Allow,
            vec!["operators-edit-non-production"],
        ),
        ("carol", "trigger", "reporting", Decision::Deny, vec![]),
        (
            "carol",
            "read",
            "reporting",
            Decision::Allow,
            vec!["viewers-read-dags"],
        ),
        (
            "alice",
            "edit",
            "etl_daily",
            Decision::Deny,
            vec!["forbid-manual-production-edits"],
        ),
        (
            "dave",
            "trigger",
            "ml_training",
            Decision::Allow,
            vec!["ml-team-runs-staging"],
        ),
        ("dave", "trigger", "etl_daily", Decision::Deny, vec![]),
    ];
    for (user, action, dag, decision, reasons) in cases {
        let request = airflow_request(airflow("User", user), action, airflow("Dag", dag), office());
        let response = component.authorize(&request).expect("decided");
        assert_eq!(response.decision, decision, "{user} {action} {dag}");
        assert_eq!(
            response.determining_policies, reasons,
            "{user} {action} {dag}"
        );
        assert_eq!(response.bundle_id, component.bundle_id());
    }
}

#[test]
fn context_decides_mfa_network_and_token_age() {
    let (component, native) = backends();
    let alice_edits = |mfa, ip: &str, age| {
        airflow_request(
            airflow("User", "alice"),
            "edit",
            airflow("Dag", "ml_training"),
            typed_context(mfa, ip, age),
        )
    };
    for backend in [&component as &dyn Backend, &native] {
        assert!(
            backend
                .authorize(&alice_edits(true, "10.9.9.9", 60))
                .unwrap()
                .is_allowed()
        );
        // Outside 10.0.0.0/8 only the operator grant is left, which still allows staging edits with MFA.
        assert!(
            backend
                .authorize(&alice_edits(true, "192.0.2.1", 60))
                .unwrap()
                .is_allowed()
        );
        assert!(
            !backend
                .authorize(&alice_edits(false, "10.9.9.9", 60))
                .unwrap()
                .is_allowed()
        );
        let stale = backend
            .authorize(&alice_edits(true, "10.9.9.9", 7200))
            .unwrap();
        assert_eq!(stale.determining_policies, vec!["forbid-stale-tokens"]);
    }
}

fn ci_job(protected: bool, source: &str) -> EntityInput {
    EntityInput {
        uid: airflow("CiJob", "pipeline-4711"),
        attrs: Attributes::from_fields([
            (
                "project_path".to_owned(),
                Value::String("data-platform/airflow-dags".to_owned()),
            ),
            (
                "git_ref".to_owned(),
                Value::String(if protected { "main" } else { "feature/x" }.to_owned()),
            ),
            ("ref_protected".to_owned(), Value::Bool(protected)),
            (
                "pipeline_source".to_owned(),
                Value::String(source.to_owned()),
            ),
        ]),
        parents: Vec::new(),
        tags: Attributes::default(),
    }
}

#[test]
fn only_a_protected_ci_job_deploys_with_request_scoped_entities() {
    let (component, native) = backends();
    let deploy = |job: EntityInput, age| {
        let mut request = airflow_request(
            job.uid.clone(),
            "deploy",
            airflow("Environment", "production"),
            typed_context(false, "34.1.2.3", age),
        );
        request.entities.push(job);
        request
    };
    for backend in [&component as &dyn Backend, &native] {
        let allowed = backend
            .authorize(&deploy(ci_job(true, "push"), 60))
            .unwrap();
        assert_eq!(
            allowed.determining_policies,
            vec!["ci-deploys-from-protected-branch"]
        );
        assert!(
            !backend
                .authorize(&deploy(ci_job(false, "push"), 60))
                .unwrap()
                .is_allowed()
        );
        assert!(
            !backend
                .authorize(&deploy(ci_job(true, "push"), 1200))
                .unwrap()
                .is_allowed()
        );
        let scheduled = backend
            .authorize(&deploy(ci_job(true, "schedule"), 60))
            .unwrap();
        assert_eq!(
            scheduled.determining_policies,
            vec!["forbid-scheduled-deploys"]
        );
        let human = airflow_request(
            airflow("User", "alice"),
            "deploy",
            airflow("Environment", "production"),
            typed_context(true, "10.1.1.1", 10),
        );
        assert!(!backend.authorize(&human).unwrap().is_allowed());
    }
}

#[test]
fn typed_and_json_contexts_decide_alike() {
    let (component, native) = backends();
    for (mfa, ip, age) in [
        (true, "10.0.0.1", 1),
        (false, "10.0.0.1", 1),
        (true, "8.8.8.8", 5000),
    ] {
        for (user, action, dag) in [
            ("alice", "edit", "ml_training"),
            ("bob", "trigger", "etl_daily"),
        ] {
            let typed = airflow_request(
                airflow("User", user),
                action,
                airflow("Dag", dag),
                typed_context(mfa, ip, age),
            );
            let json = airflow_request(
                airflow("User", user),
                action,
                airflow("Dag", dag),
                json_context(mfa, ip, age),
            );
            let expected = native.authorize(&typed).unwrap();
            assert_eq!(component.authorize(&typed).unwrap(), expected);
            assert_eq!(component.authorize(&json).unwrap(), expected);
            assert_eq!(native.authorize(&json).unwrap(), expected);
        }
    }
}

#[test]
fn batch_answers_match_single_calls_in_order() {
    let (component, native) = backends();
    let requests: Vec<_> = ["read", "trigger", "edit"]
        .iter()
        .flat_map(|action| {
            ["alice", "bob", "carol", "erin"].map(|user| {
                airflow_request(
                    airflow("User", user),
                    action,
                    airflow("Dag", "reporting"),
                    typed_context(true, "10.0.0.1", 1),
                )
            })
        })
        .collect();
    let batch = component.authorize_batch(&requests);
    assert_eq!(batch.len(), requests.len());
    for (request, answer) in requests.iter().zip(batch) {
        assert_eq!(answer.unwrap(), native.authorize(request).unwrap());
    }
}

#[test]
fn async_api_serves_many_tasks_with_native_answers() {
    let (component, native) = backends();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let user = ["alice", "bob", "carol", "dave"][i % 4];
            let dag = ["etl_daily", "ml_training"][i % 2];
            airflow_request(
                airflow("User", user),
                "trigger",
                airflow("Dag", dag),
                typed_context(i % 3 != 0, "10.0.0.1", 1),
            )
        })
        .collect();
    let answers = runtime.block_on(async {
        let tasks: Vec<_> = requests
            .iter()
            .cloned()
            .map(|request| {
                let component = component.clone();
                tokio::spawn(async move { component.authorize_async(&request).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    });
    for (request, answer) in requests.iter().zip(answers) {
        assert_eq!(answer.unwrap(), native.authorize(request).unwrap());
    }
    let stats = component.stats();
    assert!(stats.instances_created <= shared_runtime().config().max_instances as u64);
    assert_eq!(stats.instances_discarded, 0);
}

#[test]
fn threads_share_one_backend_without_exceeding_the_pool() {
    let (component, native) = backends();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let component = &component;
            let native = &native;
            scope.spawn(move || {
                for i in 0..50 {
                    let user = ["alice", "bob", "carol"][(worker + i) % 3];
                    let request = airflow_request(
                        airflow("User", user),
                        "read",
                        airflow("Dag", "etl_daily"),
                        typed_context(true, "10.0.0.1", 1),
                    );
                    assert_eq!(
                        component.authorize(&request).unwrap(),
                        native.authorize(&request).unwrap()
                    );
                }
            });
        }
    });
    let stats = component.stats();
    assert!(stats.instances_created >= 1);
    assert!(stats.instances_created <= shared_runtime().config().max_instances as u64);
}

#[test]
fn the_component_imports_only_harmless_wasi() {
    let imports = shared_runtime().component_imports();
    // Every import is a WASI interface; none grants files, sockets or the environment's contents,
    // since the host's WASI context holds none. The README lists each and why it is harmless.
    let documented = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(!imports.is_empty());
    // Our own types interface declares types only: nothing to call.
    for import in imports
        .iter()
        .filter(|import| !import.starts_with("cedar-edge:authz/types@"))
    {
        assert!(import.starts_with("wasi:"), "unexpected import `{import}`");
        assert!(
            !import.starts_with("wasi:sockets"),
            "the component must not import sockets: `{import}`"
        );
        let interface = import.split('@').next().unwrap();
        assert!(
            documented.contains(interface),
            "README.md does not document the import `{import}`"
        );
    }
}
