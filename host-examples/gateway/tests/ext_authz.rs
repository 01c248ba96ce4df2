//! The gateway as Envoy's `ext_authz` gRPC service, behind a real Envoy
//! 1.40 on 127.0.0.1: `jwt_authn` checks real RS256 tokens and hands their
//! claims to the gateway with each Check, and a recording upstream shows
//! what Envoy forwarded. The gateway runs `examples/ext-authz.yaml` and
//! Envoy the configuration `examples/envoy-ext-authz.yaml` is rendered from.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use cedar_edge_envoy_e2e::config::{
    EXT_AUTHZ_CLUSTER, JwtProvider, Listener, Ports, Upstream as Route, envoy_yaml_ext_authz,
    ext_authz_filter_yaml, grpc_cluster_yaml,
};
use cedar_edge_envoy_e2e::envoy::{Envoy, free_port, validate};
use cedar_edge_envoy_e2e::stack::{
    AIRFLOW_PEOPLE, AIRFLOW_ROUTES, AUDIENCE, ISSUER, Stack, airflow_plugin, claims,
};
use cedar_edge_gateway::config::GatewayConfig;
use cedar_edge_gateway::ext_authz::ExtAuthzConfig;
use cedar_edge_testkit::http::{self, Reply};
use cedar_edge_testkit::jwt::Issuer;
use cedar_edge_testkit::repo;
use cedar_edge_testkit::upstream::Upstream;
use common::running::Running;
use serde_json::Value;

const RUNS: &str = "/api/v1/dags/etl_daily/dagRuns";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ext-authz")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example(name: &str) -> PathBuf {
    repo().join("host-examples/gateway/examples").join(name)
}

/// The gateway of `examples/ext-authz.yaml` on ports of its own, a real
/// Envoy calling its ext_authz service, and the upstream behind Envoy.
struct ExtAuthzStack {
    gateway: Option<Running>,
    envoy: Envoy,
    upstream: Upstream,
    issuer: Issuer,
    audit_log: PathBuf,
}

impl ExtAuthzStack {
    fn start(name: &str, listener: &Listener) -> Self {
        let dir = scratch(name);
        let mut config = GatewayConfig::read(&example("ext-authz.yaml")).unwrap();
        // Port 0: the test harness binds it and hands the listener over.
        config.ext_authz = Some(ExtAuthzConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        });
        config.audit_log = dir.join("audit.jsonl");
        let audit_log = config.audit_log.clone();
        let gateway = Running::start_with(config);
        let ext_authz_port = gateway.ext_authz_port.unwrap();
        let issuer = Issuer::generate("ext-authz-key");
        let upstream = Upstream::start();
        let ports = Ports {
            listener: free_port(),
            admin: free_port(),
        };
        let yaml = envoy_yaml_ext_authz(
            listener,
            &ports,
            Some(&JwtProvider {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                jwks: issuer.jwks(),
            }),
            &[Route {
                name: "airflow".into(),
                prefix: "/".into(),
                port: upstream.port,
            }],
            ext_authz_port,
        );
        let envoy = Envoy::start(&dir.join("envoy"), &yaml, ports.listener, ports.admin)
            .unwrap_or_else(|(envoy, message)| panic!("{message}\n{}", envoy.log()));
        Self {
            gateway: Some(gateway),
            envoy,
            upstream,
            issuer,
            audit_log,
        }
    }

    fn token(&self, user: &str, groups: &[&str], mfa: bool) -> String {
        self.issuer.sign(&claims(user, groups, mfa, 60))
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Reply {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = extra.to_vec();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        http::get(self.envoy.port, method, path, &headers)
    }

    fn hits(&self) -> usize {
        self.upstream.hits.load(Ordering::Relaxed)
    }

    fn gateway(&self) -> &Running {
        self.gateway.as_ref().unwrap()
    }

    /// Stops the gateway (draining, flushing the audit log) and returns
    /// the audit records it wrote.
    fn stop_gateway(&mut self) -> (u64, Vec<Value>) {
        let summary = self.gateway.take().unwrap().stop();
        let records = std::fs::read_to_string(&self.audit_log)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (summary.audit_records, records)
    }
}

#[test]
fn shipped_ext_authz_config_is_current_and_passes_envoy_validate() {
    let demo_jwks =
        std::fs::read_to_string(repo().join("host-examples/envoy-filter/examples/demo-jwks.json"))
            .unwrap();
    // The port the example gateway's ext_authz service listens on.
    let gateway = GatewayConfig::read(&example("ext-authz.yaml")).unwrap();
    let ext_authz_port = gateway.ext_authz.as_ref().unwrap().listen.port();
    let rendered = envoy_yaml_ext_authz(
        &Listener::default(),
        &Ports {
            listener: 10000,
            admin: 9901,
        },
        Some(&JwtProvider {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks: demo_jwks.trim().to_owned(),
        }),
        &[Route {
            name: "airflow".into(),
            prefix: "/".into(),
            port: 8080,
        }],
        ext_authz_port,
    );
    let path = example("envoy-ext-authz.yaml");
    if std::env::var_os("CEDAR_EDGE_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "envoy-ext-authz.yaml is out of date; regenerate with \
         CEDAR_EDGE_BLESS=1 cargo test --release -p cedar-edge-gateway --test ext_authz shipped"
    );
    let out = validate(&path);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The README shows the filter and its cluster exactly as rendered.
    let readme = std::fs::read_to_string(repo().join("host-examples/gateway/README.md")).unwrap();
    for block in [
        ext_authz_filter_yaml(EXT_AUTHZ_CLUSTER),
        grpc_cluster_yaml(EXT_AUTHZ_CLUSTER, ext_authz_port),
    ] {
        assert!(
            readme.contains(&block),
            "the README's Envoy snippet differs from\n{block}"
        );
    }
}

#[test]
fn an_allowed_request_reaches_the_upstream_with_the_verified_identity() {
    let stack = ExtAuthzStack::start("allow", &Listener::default());
    let bob = stack.token("bob", &[], true);
    let reply = stack.call(
        "GET",
        RUNS,
        Some(&bob),
        &[
            ("x-cedar-principal", r#"Airflow::User::"alice""#),
            ("x-cedar_principal", r#"Airflow::User::"alice""#),
            ("x-cedar-decision-id", "forged"),
            ("x-airflow-user", "admin"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = stack.upstream.last().expect("the upstream got the request");
    assert_eq!(received.target, RUNS);
    assert_eq!(
        received.header_values("x-cedar-principal"),
        [r#"Airflow::User::"bob""#]
    );
    let decision_id = received.header_values("x-cedar-decision-id");
    assert_eq!(decision_id.len(), 1, "{:?}", received.headers);
    assert_ne!(decision_id[0], "forged");
    // Other spellings of the identity headers, and the strip list, are gone.
    for gone in ["x-cedar_principal", "x-airflow-user", "authorization"] {
        assert!(
            received.header_values(gone).is_empty(),
            "{gone} reached the upstream: {:?}",
            received.headers
        );
    }
    // A spelling Envoy normalises is forwarded in the form that was decided.
    let respelt = stack.call("GET", "/api/v1/dags/%65tl_daily/dagRuns", Some(&bob), &[]);
    assert_eq!(respelt.status, 200, "{}", respelt.body);
    assert_eq!(stack.upstream.last().unwrap().target, RUNS);
}

#[test]
fn a_denial_is_a_403_with_a_json_body_and_the_upstream_sees_nothing() {
    let stack = ExtAuthzStack::start("deny", &Listener::default());
    let bob = stack.token("bob", &[], true);
    // A forbid: no manual edits of production DAGs.
    let reply = stack.call("PATCH", "/api/v1/dags/etl_daily", Some(&bob), &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["decision"], "deny");
    assert!(
        body["decision_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    // No token: 401 with a challenge.
    let anonymous = stack.call("GET", RUNS, None, &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(anonymous.json()["decision"], "unauthenticated");
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|challenge| challenge.starts_with("Bearer"))
    );
    // A principal header alone is no identity.
    let forged = stack.call(
        "GET",
        RUNS,
        None,
        &[("x-cedar-principal", r#"Airflow::User::"bob""#)],
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert_eq!(stack.hits(), 0);
}

#[test]
fn with_the_service_stopped_nothing_passes() {
    let mut stack = ExtAuthzStack::start("stopped", &Listener::default());
    let bob = stack.token("bob", &[], true);
    assert_eq!(stack.call("GET", RUNS, Some(&bob), &[]).status, 200);
    let before = stack.hits();
    // Envoy holds its HTTP/2 connection to the service open; a graceful
    // stop still ends well within the drain time (10 s in the example).
    let stopping = std::time::Instant::now();
    stack.stop_gateway();
    let stopped_in = stopping.elapsed();
    assert!(stopped_in.as_secs() < 5, "the stop took {stopped_in:?}");
    for _ in 0..5 {
        let reply = stack.call("GET", RUNS, Some(&bob), &[]);
        assert_eq!(reply.status, 403, "{}", reply.body);
    }
    assert_eq!(stack.hits(), before);
}

#[test]
fn a_target_that_is_not_canonical_is_never_forwarded() {
    // Envoy's own path normalisation off: the service alone must refuse.
    let listener = Listener {
        normalize_paths: false,
        ..Listener::default()
    };
    let stack = ExtAuthzStack::start("canonical", &listener);
    let bob = stack.token("bob", &[], true);
    let bearer = format!("Bearer {bob}");
    let send = |target: &str| {
        http::send(
            stack.envoy.port,
            "GET",
            target,
            &[("authorization", bearer.as_bytes())],
        )
    };
    // The canonical spelling is allowed, so each refusal below is the
    // spelling's doing.
    assert_eq!(send(RUNS).status, 200);
    let before = stack.hits();
    for target in [
        "/api/v1/dags/etl_daily/./dagRuns",
        "/api/v1/dags/other/../etl_daily/dagRuns",
        "/api/v1/dags//etl_daily/dagRuns",
        "/api/v1/dags/%65tl_daily/dagRuns",
        "/api/v1/dags/etl_daily%2FdagRuns",
        "/api/v1/dags/etl_daily/dagRuns;x=1",
        "/api/v1/dags/etl_daily/dagRuns%2e",
        "/api/v1/dags/etl_daily/dagRuns%252e",
    ] {
        let reply = send(target);
        assert_eq!(reply.status, 400, "{target}: {}", reply.body);
        assert!(
            reply.json()["reason"].as_str().is_some(),
            "{target}: {}",
            reply.body
        );
    }
    assert_eq!(stack.hits(), before);
    // Two copies of a header the mapping reads one of.
    let two_ips = http::send(
        stack.envoy.port,
        "GET",
        RUNS,
        &[
            ("authorization", bearer.as_bytes()),
            ("x-real-ip", b"10.0.0.1"),
            ("x-real-ip", b"10.0.0.2"),
        ],
    );
    assert_eq!(two_ips.status, 400, "{}", two_ips.body);
    assert_eq!(stack.hits(), before);
}

/// The status the filter's stack and the ext_authz stack give one request.
fn outcome(reply: &Reply) -> (u16, Option<String>) {
    let principal = (reply.status == 200)
        .then(|| {
            reply.json()["headers"]["x-cedar-principal"]
                .as_str()
                .map(str::to_owned)
        })
        .flatten();
    (reply.status, principal)
}

#[test]
fn decisions_equal_the_envoy_filters() {
    let filter = Stack::start(&scratch("parity-filter"), airflow_plugin());
    let stack = ExtAuthzStack::start("parity", &Listener::default());
    // The filter's own parity list, and two spellings only a canonical
    // check tells apart.
    let people = AIRFLOW_PEOPLE;
    let routes: Vec<(&str, &str)> = AIRFLOW_ROUTES
        .iter()
        .copied()
        .chain([
            ("GET", "/api/v1/dags/etl_daily/dagRuns?limit=5"),
            ("GET", "/api/v1/dags/%65tl_daily/dagRuns"),
        ])
        .collect();
    let mut statuses = BTreeMap::new();
    for (index, ((user, groups), (method, path))) in people
        .iter()
        .flat_map(|person| routes.iter().map(move |route| (person, route)))
        .enumerate()
    {
        // With and without MFA, fresh and old tokens, and no token.
        let (mfa, age) = [(true, 60), (false, 60), (true, 7200)][index % 3];
        let token_claims = claims(user, groups, mfa, age);
        let anonymous = index % 11 == 0;
        let token_for = |issuer: &Issuer| (!anonymous).then(|| issuer.sign(&token_claims));
        let through_filter = filter.call(method, path, token_for(&filter.issuer).as_deref(), &[]);
        let through_service = stack.call(method, path, token_for(&stack.issuer).as_deref(), &[]);
        assert_eq!(
            outcome(&through_service),
            outcome(&through_filter),
            "{user} {method} {path} mfa={mfa} age={age} anonymous={anonymous}: \
             ext_authz {} / filter {}",
            through_service.body,
            through_filter.body
        );
        *statuses.entry(through_service.status).or_insert(0) += 1;
    }
    // The mix really is mixed.
    for status in [200, 401, 403] {
        assert!(
            statuses.get(&status).copied().unwrap_or(0) >= 5,
            "{statuses:?}"
        );
    }
    assert_eq!(stack.hits(), filter.upstream.hits.load(Ordering::Relaxed));
}

#[test]
fn every_check_writes_one_audit_record_and_is_counted() {
    let mut stack = ExtAuthzStack::start("audit", &Listener::default());
    let bob = stack.token("bob", &[], true);
    let mut forwarded_ids = Vec::new();
    let mut denied_ids = Vec::new();
    let mut anonymous: u64 = 0;
    for round in 0..10 {
        let reply = stack.call("GET", RUNS, Some(&bob), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        forwarded_ids.push(
            stack
                .upstream
                .last()
                .unwrap()
                .header_values("x-cedar-decision-id")[0]
                .to_owned(),
        );
        let reply = stack.call("PATCH", "/api/v1/dags/etl_daily", Some(&bob), &[]);
        assert_eq!(reply.status, 403, "{}", reply.body);
        denied_ids.push(reply.json()["decision_id"].as_str().unwrap().to_owned());
        if round % 2 == 0 {
            assert_eq!(stack.call("GET", RUNS, None, &[]).status, 401);
            anonymous += 1;
        }
    }
    let metrics = stack.gateway().admin("/metrics").body;
    for (outcome, count) in [("allow", 10), ("deny", 10), ("unauthenticated", anonymous)] {
        let line = format!("cedar_edge_decisions_total{{outcome=\"{outcome}\"}} {count}\n");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
    let (written, records) = stack.stop_gateway();
    assert_eq!(written, 20 + anonymous);
    assert_eq!(records.len() as u64, 20 + anonymous);
    let by_id: BTreeMap<&str, &Value> = records
        .iter()
        .map(|record| (record["decision_id"].as_str().unwrap(), record))
        .collect();
    assert_eq!(by_id.len(), records.len(), "decision ids repeat");
    for id in &forwarded_ids {
        let record = by_id[id.as_str()];
        assert_eq!(record["decision"], "allow");
        assert_eq!(record["principal"], r#"Airflow::User::"bob""#);
        assert!(
            record["determining_policies"]
                .as_array()
                .is_some_and(|policies| !policies.is_empty()),
            "{record}"
        );
        // The claims jwt_authn verified, from the Check's metadata.
        assert_eq!(record["claims"]["preferred_username"], "bob");
    }
    for id in &denied_ids {
        let record = by_id[id.as_str()];
        assert_eq!(record["decision"], "deny");
        assert_eq!(record["action"], r#"Airflow::Action::"edit""#);
    }
    let unauthenticated = records
        .iter()
        .filter(|record| record["decision"] == "unauthenticated")
        .count();
    assert_eq!(unauthenticated as u64, anonymous);
}
