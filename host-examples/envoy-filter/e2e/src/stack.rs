//! A whole test stack: a real Envoy with `jwt_authn` and the filter in
//! front of a recording echo upstream, an issuer whose key `jwt_authn`
//! trusts, and readers for the filter's decision records in the access log.

use std::path::Path;

use cedar_edge_testkit::http::{self, Reply};
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::upstream::Upstream;
use serde_json::{Value, json};

use crate::config::{JwtProvider, Listener, Ports, envoy_yaml_with, plugin_config};
use crate::envoy::{Envoy, free_port};
use crate::{FILTER_MODULE, repo};

/// The issuer the test tokens carry.
pub const ISSUER: &str = "https://gitlab.example.com";
/// The audience the test tokens carry.
pub const AUDIENCE: &str = "airflow";

/// A mapping file from `host-examples/envoy-filter/examples`.
pub fn example_mapping(name: &str) -> Value {
    let path = repo()
        .join("host-examples/envoy-filter/examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the mapping reads"))
        .expect("the mapping is JSON")
}

/// The shipped Airflow example: its bundle and mapping.
pub fn airflow_plugin() -> Value {
    plugin_config(
        &repo().join("policies/airflow-gitlab"),
        &example_mapping("airflow-mapping.json"),
    )
}

/// The shipped gateway example: its bundle and mapping.
pub fn gateway_plugin() -> Value {
    plugin_config(
        &repo().join("policies/gateway"),
        &example_mapping("gateway-mapping.json"),
    )
}

/// The Airflow example's people: the bundle's own users, then users it
/// lacks, built from the groups in their tokens.
pub const AIRFLOW_PEOPLE: &[(&str, &[&str])] = &[
    ("alice", &[]),
    ("bob", &[]),
    ("carol", &[]),
    ("dave", &[]),
    ("erin", &[]),
    ("frank", &["data-platform/operators"]),
    ("grace", &["data-platform/ml-team"]),
    ("heidi", &["data-platform"]),
];

/// Requests across the Airflow mapping's actions, and one route it lacks.
pub const AIRFLOW_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/dags/etl_daily/dagRuns"),
    ("POST", "/api/v1/dags/etl_daily/dagRuns"),
    ("POST", "/api/v1/dags/ml_training/dagRuns"),
    ("PATCH", "/api/v1/dags/ml_training"),
    ("PATCH", "/api/v1/dags/reporting"),
    ("GET", "/api/v1/dags/feature_backfill"),
    ("DELETE", "/api/v1/dags/reporting"),
    ("GET", "/api/v1/unknown"),
];

/// Claims for `user`, issued `age` seconds ago, good for ten minutes more.
pub fn claims(user: &str, groups: &[&str], mfa: bool, age: i64) -> Value {
    let issued = now() - age;
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("gitlab|{user}"),
        "preferred_username": user, "email": format!("{user}@example.com"),
        "groups": groups, "amr": if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) },
        "iat": issued, "exp": now() + 600,
    })
}

/// Envoy, the upstream behind it, and the key its `jwt_authn` trusts.
pub struct Stack {
    /// The Envoy process.
    pub envoy: Envoy,
    /// The recording echo upstream every route goes to.
    pub upstream: Upstream,
    /// Signs tokens `jwt_authn` accepts.
    pub issuer: Issuer,
    /// The plugin configuration Envoy was given.
    pub plugin: Value,
    /// Why Envoy never became ready, if it did not.
    pub not_ready: Option<String>,
}

impl Stack {
    /// Starts Envoy with `jwt_authn`, `plugin` and one route to a fresh
    /// echo upstream, with `workers` worker threads. A stack whose Envoy
    /// never became ready comes back too, with the reason in
    /// `not_ready`, so that tests of refused configurations can read its
    /// log.
    pub fn launch(dir: &Path, plugin: Value, listener: &Listener, workers: u32) -> Self {
        let issuer = Issuer::generate("test-key");
        let upstream = Upstream::start();
        let ports = Ports {
            listener: free_port(),
            admin: free_port(),
        };
        let yaml = envoy_yaml_with(
            listener,
            &ports,
            Some(&JwtProvider {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                jwks: issuer.jwks(),
            }),
            Some((FILTER_MODULE, &plugin)),
            &[crate::config::Upstream {
                name: "upstream".into(),
                prefix: "/".into(),
                port: upstream.port,
            }],
        );
        let started = Envoy::start_with_workers(dir, &yaml, ports.listener, ports.admin, workers);
        let (envoy, not_ready) = match started {
            Ok(envoy) => (envoy, None),
            Err((envoy, message)) => (envoy, Some(message)),
        };
        Self {
            envoy,
            upstream,
            issuer,
            plugin,
            not_ready,
        }
    }

    /// The stack, once its Envoy is ready; panics with Envoy's log if not.
    pub fn ready(self) -> Self {
        if let Some(message) = &self.not_ready {
            panic!("{message}\n{}", self.envoy.log());
        }
        self
    }

    /// [`Stack::launch`] that must succeed: one worker, as shipped.
    pub fn start(dir: &Path, plugin: Value) -> Self {
        Self::launch(dir, plugin, &Listener::default(), 1).ready()
    }

    /// A request with a bearer token (when given) and text headers.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        http::get(self.envoy.port, method, path, &headers)
    }

    /// A token for these claims.
    pub fn token(&self, claims: &Value) -> String {
        self.issuer.sign(claims)
    }

    /// Every decision record Envoy's access log has written so far.
    pub fn decisions(&self) -> Vec<Value> {
        decision_lines(&self.envoy.access_log())
    }

    /// The decision record with this id, waiting briefly for the access
    /// log to be flushed.
    pub fn decision(&self, decision_id: &str) -> Option<Value> {
        for _ in 0..50 {
            if let Some(found) = self
                .decisions()
                .into_iter()
                .find(|line| line["decision_id"] == decision_id)
            {
                return Some(found);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// The counter `wasmcustom.cedar_edge.<name>`, 0 when never bumped.
    pub fn counter(&self, name: &str) -> u64 {
        self.envoy
            .counter(&format!("wasmcustom.cedar_edge.{name}"))
            .unwrap_or(0)
    }
}

/// The decision records in an access log: the JSON that ends each line.
pub fn decision_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| line.find('{').and_then(|start| line.get(start..)))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|line| line.get("decision_id").is_some())
        .collect()
}
