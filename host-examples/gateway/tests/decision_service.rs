//! The AuthZEN decision service on its own TLS listener, over real loopback
//! HTTPS: the official interop files, caller authentication (bearer
//! secrets, client certificates, JWTs), what each caller may see and send,
//! the specification's edges, the caps, and one audit record per item.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_edge_core::{Backend, BundleSource, NativeBackend, RequestLimits};
use cedar_edge_testkit::http::Reply;
use cedar_edge_testkit::jwt::{Issuer, now};
use cedar_edge_testkit::repo;
use common::pki::{Authority, Leaf, https, provider};
use common::running::Running;
use serde_json::{Value, json};

const RUNNER_SECRET: &str = "interop-runner-secret-3f9a";
const CONSOLE_SECRET: &str = "admin-console-secret-81c2";
const CI_ISSUER: &str = "https://gitlab.example.com";
const CI_SUBJECT: &str = "project_path:platform/deployer:ref_type:branch:ref:main";
const PUBLIC_URL: &str = "https://pdp.example.test";
const RICK: &str = "rick@the-citadel.com";
const MORTY: &str = "morty@the-citadel.com";
const RICKS_TODO: &str = "7240d0db-8ff0-41ec-98b2-34a096273b92";
const MORTYS_TODO: &str = "7240d0db-8ff0-41ec-98b2-34a096273b91";

/// A decision service for the todo bundle, with its CA, certificates and
/// callers on disk.
struct Service {
    dir: PathBuf,
    running: Option<Running>,
    authority: Authority,
    edge: Leaf,
    ci: Issuer,
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    cedar_edge_core::hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Writes the configuration; `pdp_extra` goes at the end of the `pdp`
/// section, indented by two spaces.
fn write_config(
    name: &str,
    top_extra: &str,
    pdp_extra: &str,
) -> (PathBuf, Authority, Leaf, Issuer) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("decision-service")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let authority = Authority::new("cedar-edge test callers CA");
    let server = authority.leaf(&["localhost"], &[], true);
    let edge = authority.leaf(
        &["edge.callers.test"],
        &["spiffe://callers.test/edge"],
        false,
    );
    std::fs::write(dir.join("server.pem"), &server.certificate_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &server.key_pem).unwrap();
    std::fs::write(dir.join("callers-ca.pem"), authority.pem()).unwrap();
    let ci = Issuer::generate("ci-key");
    std::fs::write(dir.join("ci-jwks.json"), ci.jwks()).unwrap();
    let config = format!(
        r#"bundle: {bundle}
audit_log: audit.jsonl
{top_extra}
pdp:
  listen: 127.0.0.1:0
  tls:
    certificate: server.pem
    private_key: server-key.pem
    client_ca: callers-ca.pem
  types: {{ user: Todo::User, todo: Todo::Todo }}
  action_type: Todo::Action
  callers:
    - name: interop-runner
      bearer_sha256: {runner}
    - name: admin-console
      bearer_sha256: {console}
      reason_admin: true
      request_attributes: trusted
    - name: edge-proxy
      mtls: {{ dns_name: edge.callers.test }}
    - name: deployer
      jwt: {{ issuer: "{CI_ISSUER}", audience: cedar-edge-pdp, jwks_file: ci-jwks.json }}
      jwt_subject: "{CI_SUBJECT}"
{pdp_extra}"#,
        bundle = repo().join("policies/authzen-todo").display(),
        runner = sha256_hex(RUNNER_SECRET),
        console = sha256_hex(CONSOLE_SECRET),
    );
    std::fs::write(dir.join("pdp.yaml"), config).unwrap();
    (dir, authority, edge, ci)
}

impl Service {
    fn start(name: &str, pdp_extra: &str) -> Self {
        let (dir, authority, edge, ci) = write_config(name, "", pdp_extra);
        let running = Running::start(&dir.join("pdp.yaml"));
        Self {
            dir,
            running: Some(running),
            authority,
            edge,
            ci,
        }
    }

    fn port(&self) -> u16 {
        self.running.as_ref().unwrap().pdp_port.unwrap()
    }

    /// A request over HTTPS with no client certificate.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        https(
            self.port(),
            &self.authority,
            None,
            method,
            path,
            headers,
            body,
        )
        .expect("the TLS exchange")
    }

    /// `POST`s JSON as a caller with a bearer credential.
    fn post_as(&self, secret: &str, path: &str, body: &Value) -> Reply {
        let bearer = format!("Bearer {secret}");
        self.call(
            "POST",
            path,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    fn runner(&self, path: &str, body: &Value) -> Reply {
        self.post_as(RUNNER_SECRET, path, body)
    }

    fn console(&self, path: &str, body: &Value) -> Reply {
        self.post_as(CONSOLE_SECRET, path, body)
    }

    fn metric(&self, series: &str) -> u64 {
        common::metric(self.running.as_ref().unwrap().admin_port, series)
    }

    /// Stops the service and returns its audit records.
    fn stop(mut self) -> Vec<Value> {
        self.running.take().unwrap().stop();
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn evaluation(subject: &str, action: &str, resource: (&str, &str)) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {"type": resource.0, "id": resource.1},
    })
}

fn interop_file(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/authzen-todo")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_official_todo_interop_files_pass_single_and_batch() {
    let service = Service::start("interop", "");
    let mut checked = 0;
    for file in [
        "decisions-authorization-api-1_0-00.json",
        "decisions-authorization-api-1_0-01.json",
        "decisions-authorization-api-1_0-02.json",
    ] {
        let decisions = interop_file(file);
        let singles = decisions["evaluation"].as_array().unwrap();
        // As the runner does: `data.decision || false` against `expected`.
        for case in singles {
            let reply = service.runner("/access/v1/evaluation", &case["request"]);
            assert_eq!(reply.status, 200, "{file}: {}", reply.body);
            let answer = reply.json();
            let decision = answer["decision"].as_bool().unwrap_or(false);
            assert_eq!(
                json!(decision),
                case["expected"],
                "{file}: {}",
                case["request"]
            );
            // Nothing but the decision for a caller without reasons.
            assert_eq!(answer, json!({ "decision": decision }), "{file}");
            checked += 1;
        }
        // The same requests as one batch: the whole array, exactly.
        let items: Vec<Value> = singles.iter().map(|case| case["request"].clone()).collect();
        let expected: Vec<Value> = singles
            .iter()
            .map(|case| json!({ "decision": case["expected"] }))
            .collect();
        let reply = service.runner("/access/v1/evaluations", &json!({ "evaluations": items }));
        assert_eq!(reply.status, 200, "{file}: {}", reply.body);
        assert_eq!(
            reply.json()["evaluations"],
            json!(expected),
            "{file} as a batch"
        );
        checked += singles.len();
        // The file's own batches: `data.evaluations` against `expected`.
        for case in decisions["evaluations"].as_array().into_iter().flatten() {
            let reply = service.runner("/access/v1/evaluations", &case["request"]);
            assert_eq!(reply.status, 200, "{file}: {}", reply.body);
            assert_eq!(reply.json()["evaluations"], case["expected"], "{file}");
            checked += case["expected"].as_array().unwrap().len();
        }
    }
    // 3 × 40 single, 3 × 40 again as batches, and the 02 file's 3 batches.
    assert!(checked >= 240, "{checked}");
    let records = service.stop();
    assert!(records.len() >= checked, "{} records", records.len());
}

#[test]
fn decisions_equal_the_native_core_and_reasons_go_only_to_callers_allowed_them() {
    let service = Service::start("reasons", "");
    let native = NativeBackend::load(
        &BundleSource::from_dir(&repo().join("policies/authzen-todo")).unwrap(),
        RequestLimits::default(),
    )
    .unwrap();
    for (subject, action, todo) in [
        (RICK, "can_delete_todo", MORTYS_TODO),
        (MORTY, "can_update_todo", MORTYS_TODO),
        (MORTY, "can_update_todo", RICKS_TODO),
        ("beth@the-smiths.com", "can_create_todo", "x"),
    ] {
        let body = evaluation(subject, action, ("todo", todo));
        let expected = native
            .authorize(&cedar_edge_core::Request {
                principal: cedar_edge_core::EntityUid::new("Todo::User", subject),
                action: cedar_edge_core::EntityUid::new("Todo::Action", action),
                resource: cedar_edge_core::EntityUid::new("Todo::Todo", todo),
                context: cedar_edge_core::ContextInput::Json("{}".to_owned()),
                entities: Vec::new(),
            })
            .unwrap();
        let plain = service.runner("/access/v1/evaluation", &body).json();
        assert_eq!(plain, json!({ "decision": expected.is_allowed() }));
        let explained = service.console("/access/v1/evaluation", &body).json();
        assert_eq!(explained["decision"], json!(expected.is_allowed()));
        assert_eq!(
            explained["context"]["reason_admin"]["determining_policies"],
            json!(expected.determining_policies),
            "{subject} {action}"
        );
        assert!(explained["context"]["id"].is_string());
    }
    service.stop();
}

#[test]
fn callers_authenticate_with_a_secret_a_certificate_or_a_token_and_strangers_get_401() {
    let service = Service::start("callers", "");
    let body = evaluation(RICK, "can_read_todos", ("todo", "todo-1")).to_string();
    let json_type = ("content-type", "application/json");
    let ask = |client: Option<&Leaf>, authorization: Option<&str>| {
        let mut headers = vec![json_type];
        if let Some(authorization) = authorization {
            headers.push(("authorization", authorization));
        }
        https(
            service.port(),
            &service.authority,
            client,
            "POST",
            "/access/v1/evaluation",
            &headers,
            body.as_bytes(),
        )
    };
    // Strangers: no credentials, a wrong secret, another scheme, two headers.
    for (what, authorization) in [
        ("nothing", None),
        ("a wrong secret", Some("Bearer not-the-secret")),
        ("basic", Some("Basic aW50ZXJvcDpzZWNyZXQ=")),
        ("an empty bearer", Some("Bearer ")),
    ] {
        let reply = ask(None, authorization).unwrap();
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|value| value.starts_with("Bearer")),
            "{what}"
        );
        assert!(!reply.body.contains("decision"), "{what}: {}", reply.body);
    }
    let runner = format!("Bearer {RUNNER_SECRET}");
    let twice = https(
        service.port(),
        &service.authority,
        None,
        "POST",
        "/access/v1/evaluation",
        &[
            json_type,
            ("authorization", &runner),
            ("authorization", &runner),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        twice.status, 401,
        "two Authorization headers: {}",
        twice.body
    );
    // The secret, a certificate with a caller's name, and a caller's token.
    assert_eq!(ask(None, Some(&runner)).unwrap().status, 200);
    assert_eq!(ask(Some(&service.edge), None).unwrap().status, 200);
    let token = |subject: &str, issuer: &Issuer| {
        issuer.sign(&json!({
            "iss": CI_ISSUER, "aud": "cedar-edge-pdp", "sub": subject,
            "iat": now() - 10, "exp": now() + 300,
        }))
    };
    let deployer = format!("Bearer {}", token(CI_SUBJECT, &service.ci));
    assert_eq!(ask(None, Some(&deployer)).unwrap().status, 200);
    // A token of the issuer for another subject, or signed by another key.
    let other_job = format!(
        "Bearer {}",
        token("project_path:x/y:ref_type:branch:ref:dev", &service.ci)
    );
    assert_eq!(ask(None, Some(&other_job)).unwrap().status, 401);
    let forged = format!("Bearer {}", token(CI_SUBJECT, &Issuer::generate("ci-key")));
    assert_eq!(ask(None, Some(&forged)).unwrap().status, 401);
    // A certificate of the right CA naming no caller; one of another CA
    // does not get past the handshake.
    let stranger = service
        .authority
        .leaf(&["stranger.callers.test"], &[], false);
    assert_eq!(ask(Some(&stranger), None).unwrap().status, 401);
    let rogue = Authority::new("rogue").leaf(&["edge.callers.test"], &[], false);
    assert!(
        ask(Some(&rogue), None).is_none_or(|reply| reply.status != 200),
        "a certificate from another CA was accepted"
    );
    // Plain HTTP to the TLS listener gets nothing.
    let plain =
        cedar_edge_testkit::http::try_send(service.port(), "POST", "/access/v1/evaluation", &[]);
    assert!(plain.is_none_or(|reply| reply.status == 0));
    // The metadata is public: callers find the service before they sign in.
    let metadata = service.call("GET", "/.well-known/authzen-configuration", &[], b"");
    assert_eq!(metadata.status, 200);
    let records = service.stop();
    let unauthenticated = records
        .iter()
        .filter(|record| record["decision"] == "unauthenticated")
        .count();
    // Four strangers, two headers, two tokens and a nameless certificate;
    // a certificate of another CA never got past the handshake.
    assert_eq!(unauthenticated, 8, "one record per refused caller");
    let callers: Vec<&str> = records
        .iter()
        .filter_map(|record| record["caller"].as_str())
        .collect();
    assert_eq!(callers, ["interop-runner", "edge-proxy", "deployer"]);
}

#[test]
fn request_attributes_are_ignored_unless_the_caller_is_trusted_with_them() {
    let service = Service::start("attributes", "");
    // A todo the bundle does not hold, said to be Morty's.
    let draft = json!({
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": "draft-9", "properties": {"ownerID": MORTY}},
    });
    assert_eq!(
        service.runner("/access/v1/evaluation", &draft).json(),
        json!({"decision": false}),
        "an untrusted caller's properties must not make Morty the owner"
    );
    assert_eq!(
        service.console("/access/v1/evaluation", &draft).json()["decision"],
        json!(true)
    );
    // The bundle's own entities keep their attributes even for a trusted
    // caller: Rick's todo stays Rick's.
    let claimed = json!({
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": RICKS_TODO, "properties": {"ownerID": MORTY}},
    });
    assert_eq!(
        service.console("/access/v1/evaluation", &claimed).json()["decision"],
        json!(false)
    );
    // Values Cedar has no form for are errors naming the property, not a
    // silent `false`.
    for (value, wording) in [(json!(1.5), "1.5"), (json!(null), "null")] {
        let mut body = draft.clone();
        body["resource"]["properties"] = json!({ "ownerID": MORTY, "score": value });
        let answer = service.console("/access/v1/evaluation", &body).json();
        assert_eq!(answer["decision"], json!(false));
        let message = answer["context"]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("resource.properties")
                && message.contains("score")
                && message.contains(wording),
            "{message}"
        );
        assert_eq!(answer["context"]["error"]["status"], json!(400));
    }
    let mut floaty = evaluation(RICK, "can_read_todos", ("todo", "todo-1"));
    floaty["context"] = json!({"ratio": 0.5});
    let answer = service.runner("/access/v1/evaluation", &floaty).json();
    assert_eq!(answer["decision"], json!(false));
    let message = answer["context"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("ratio"), "{message}");
    service.stop();
}

#[test]
fn evaluations_semantics_short_circuit_and_unknown_ones_are_refused() {
    let service = Service::start("semantics", "");
    let allowed = json!({"resource": {"type": "todo", "id": MORTYS_TODO}});
    let denied = json!({"resource": {"type": "todo", "id": RICKS_TODO}});
    let batch = |semantic: Option<&str>, items: &[&Value]| {
        let mut body = json!({
            "subject": {"type": "user", "id": MORTY},
            "action": {"name": "can_update_todo"},
            "evaluations": items,
        });
        if let Some(semantic) = semantic {
            body["options"] = json!({ "evaluations_semantic": semantic, "another_option": 1 });
        }
        let reply = service.runner("/access/v1/evaluations", &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|answer| answer["decision"].as_bool().unwrap())
            .collect::<Vec<_>>()
    };
    let mixed = [&allowed, &denied, &allowed];
    assert_eq!(batch(None, &mixed), [true, false, true]);
    assert_eq!(batch(Some("execute_all"), &mixed), [true, false, true]);
    assert_eq!(batch(Some("deny_on_first_deny"), &mixed), [true, false]);
    assert_eq!(batch(Some("permit_on_first_permit"), &mixed), [true]);
    assert_eq!(
        batch(
            Some("permit_on_first_permit"),
            &[&denied, &denied, &allowed]
        ),
        [false, false, true]
    );
    assert_eq!(
        batch(Some("deny_on_first_deny"), &[&allowed, &allowed]),
        [true, true]
    );
    let bogus = service.runner(
        "/access/v1/evaluations",
        &json!({"evaluations": [allowed], "options": {"evaluations_semantic": "bogus"}}),
    );
    assert_eq!(bogus.status, 400);
    assert!(
        bogus.body.contains("evaluations_semantic") && bogus.body.contains("bogus"),
        "{}",
        bogus.body
    );
    let records = service.stop();
    // Short-circuited items were never decided, so never audited:
    // 3 + 3 + 2 + 1 + 3 + 2 decisions, and the refused request.
    let decided = records
        .iter()
        .filter(|record| record["refusal"].is_null())
        .count();
    assert_eq!(decided, 14);
}

#[test]
fn the_specification_edges_answer_as_it_says() {
    let service = Service::start("edges", "");
    let single = evaluation(RICK, "can_read_todos", ("todo", "todo-1"));
    // Not objects, or parts of the wrong type: 400 naming the part.
    for (body, part) in [
        (json!([single]), "not a JSON object"),
        (
            json!({"subject": ["user", "rick"], "action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "1"}}),
            "`subject`",
        ),
        (
            json!({"subject": {"type": "user", "id": RICK}, "action": "can_read_todos", "resource": {"type": "todo", "id": "1"}}),
            "`action`",
        ),
        (
            json!({"subject": {"type": "user", "id": RICK}, "action": {"name": "can_read_todos"}, "resource": {"type": "todo"}}),
            "`resource.id`",
        ),
    ] {
        for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
            let reply = service.runner(path, &body);
            assert_eq!(reply.status, 400, "{path} {body}: {}", reply.body);
            assert!(reply.body.contains(part), "{path}: {}", reply.body);
        }
    }
    // No `evaluations`: `/evaluations` answers as `/evaluation` does.
    let bare = json!({"context": {}});
    assert_eq!(service.runner("/access/v1/evaluation", &bare).status, 400);
    assert_eq!(service.runner("/access/v1/evaluations", &bare).status, 400);
    assert_eq!(
        service.runner("/access/v1/evaluations", &single).json(),
        service.runner("/access/v1/evaluation", &single).json()
    );
    let empty = json!({"subject": single["subject"], "action": single["action"], "resource": single["resource"], "evaluations": []});
    assert_eq!(
        service.runner("/access/v1/evaluations", &empty).json(),
        json!({"decision": true})
    );
    // A batch item missing a part is that item's error, not the batch's.
    let partial = service.runner(
        "/access/v1/evaluations",
        &json!({"subject": single["subject"], "evaluations": [
            {"action": single["action"], "resource": single["resource"]},
            {"action": single["action"]},
        ]}),
    );
    let answers = partial.json()["evaluations"].clone();
    assert_eq!(answers[0], json!({"decision": true}));
    assert_eq!(answers[1]["decision"], json!(false));
    assert!(
        answers[1]["context"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("evaluations[1].resource"),
        "{answers}"
    );
    // Wrong methods are 405 with the method to use; unknown paths 404.
    let runner = format!("Bearer {RUNNER_SECRET}");
    let get = service.call(
        "GET",
        "/access/v1/evaluation",
        &[("authorization", &runner)],
        b"",
    );
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    let put = service.call(
        "PUT",
        "/access/v1/evaluations",
        &[("authorization", &runner)],
        b"{}",
    );
    assert_eq!(put.status, 405);
    let post = service.call("POST", "/.well-known/authzen-configuration", &[], b"{}");
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
    assert_eq!(
        service.call("GET", "/metrics", &[], b"").status,
        404,
        "admin paths are not here"
    );
    // A body that is not declared JSON, or is not JSON.
    let form = service.call(
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", &runner),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        single.to_string().as_bytes(),
    );
    assert_eq!(form.status, 415);
    let broken = service.call(
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", &runner),
            ("content-type", "application/json; charset=utf-8"),
        ],
        b"{\"subject\":",
    );
    assert_eq!(broken.status, 400);
    // X-Request-ID comes back on every answer: allowed, refused, strangers.
    for (authorization, status) in [(runner.as_str(), 200), ("Bearer nope", 401)] {
        let reply = service.call(
            "POST",
            "/access/v1/evaluation",
            &[
                ("authorization", authorization),
                ("content-type", "application/json"),
                ("x-request-id", "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"),
            ],
            single.to_string().as_bytes(),
        );
        assert_eq!(reply.status, status);
        assert_eq!(
            reply.header("x-request-id"),
            Some("bfe9eb29-ab87-4ca3-be83-a1d5d8305716")
        );
    }
    let refused = service.call(
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", &runner),
            ("content-type", "application/json"),
            ("x-request-id", "r-400"),
        ],
        b"[]",
    );
    assert_eq!(
        (refused.status, refused.header("x-request-id")),
        (400, Some("r-400"))
    );
    service.stop();
}

#[test]
fn the_metadata_comes_from_the_configuration_never_from_the_host_header() {
    let service = Service::start(
        "metadata",
        &format!("  public_url: {PUBLIC_URL}\n  metadata_max_age_seconds: 600\n"),
    );
    let reply = service.call(
        "GET",
        "/.well-known/authzen-configuration",
        &[
            ("host", "evil.example.com"),
            ("x-forwarded-host", "evil.example.com"),
        ],
        b"",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("public, max-age=600"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let metadata = reply.json();
    assert_eq!(metadata["policy_decision_point"], PUBLIC_URL);
    assert_eq!(
        metadata["access_evaluation_endpoint"],
        format!("{PUBLIC_URL}/access/v1/evaluation")
    );
    assert_eq!(
        metadata["access_evaluations_endpoint"],
        format!("{PUBLIC_URL}/access/v1/evaluations")
    );
    assert!(!reply.body.contains("evil"), "{}", reply.body);
    service.stop();
    // Without a public URL: the listen address, https under TLS.
    let service = Service::start("metadata-default", "");
    let metadata = service
        .call(
            "GET",
            "/.well-known/authzen-configuration",
            &[("host", "evil.example.com")],
            b"",
        )
        .json();
    assert_eq!(
        metadata["policy_decision_point"],
        format!("https://127.0.0.1:{}", service.port())
    );
    service.stop();
}

/// Opens a TLS connection, authenticates, and sends the head of a request
/// whose body never comes: it holds a permit until it is dropped.
fn stalled_request(service: &Service) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(service.authority.der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let stream = TcpStream::connect(("127.0.0.1", service.port())).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, stream);
    write!(
        tls,
        "POST /access/v1/evaluation HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {RUNNER_SECRET}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{"
    )
    .unwrap();
    tls.flush().unwrap();
    tls
}

#[test]
fn batches_and_concurrent_requests_are_capped() {
    let service = Service::start(
        "caps",
        "  limits: { max_batch_items: 5, max_concurrent_requests: 2 }\n",
    );
    let item = evaluation(RICK, "can_read_todos", ("todo", "todo-1"));
    let six = json!({ "evaluations": vec![item.clone(); 6] });
    let over = service.runner("/access/v1/evaluations", &six);
    assert_eq!(over.status, 400);
    assert!(
        over.body.contains("6 items") && over.body.contains("max_batch_items"),
        "{}",
        over.body
    );
    let five = json!({ "evaluations": vec![item.clone(); 5] });
    assert_eq!(service.runner("/access/v1/evaluations", &five).status, 200);
    // Two requests hold both permits; the third is turned away at once.
    let first = stalled_request(&service);
    let second = stalled_request(&service);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = service.runner("/access/v1/evaluation", &item);
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(
        busy.body.contains("max_concurrent_requests"),
        "{}",
        busy.body
    );
    assert_eq!(service.metric("cedar_edge_pdp_busy_total"), 1);
    // Once they are gone, their permits come back.
    drop((first, second));
    let mut status = 0;
    for _ in 0..50 {
        status = service.runner("/access/v1/evaluation", &item).status;
        if status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status, 200);
    // A body over the size limit is refused before it is parsed.
    let huge = json!({ "evaluations": [item], "padding": "x".repeat(300 * 1024) });
    assert_eq!(service.runner("/access/v1/evaluations", &huge).status, 413);
    service.stop();
}

#[test]
fn every_batch_item_gets_an_audit_record_refused_ones_included() {
    let service = Service::start("audit", "");
    let runner = format!("Bearer {RUNNER_SECRET}");
    let body = json!({
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "evaluations": [
            {"resource": {"type": "todo", "id": MORTYS_TODO}},
            {"resource": {"type": "todo", "id": RICKS_TODO}},
            {"subject": {"type": "user", "id": RICK}, "resource": {"type": "todo", "id": RICKS_TODO}},
            {"action": {"name": "can_delete_todo"}},
            {"resource": {"type": "todo", "id": "x"}, "context": {"ratio": 0.5}},
        ],
    });
    let reply = service.call(
        "POST",
        "/access/v1/evaluations",
        &[
            ("authorization", &runner),
            ("content-type", "application/json"),
            ("x-request-id", "batch-7"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let decisions: Vec<Value> = reply.json()["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|answer| answer["decision"].clone())
        .collect();
    assert_eq!(decisions, [true, false, true, false, false]);
    let records = service.stop();
    let ids: Vec<&str> = records
        .iter()
        .map(|record| record["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "batch-7#0",
            "batch-7#1",
            "batch-7#2",
            "batch-7#3",
            "batch-7#4"
        ]
    );
    assert!(
        records
            .iter()
            .all(|record| record["caller"] == "interop-runner")
    );
    assert_eq!(records[2]["principal"], format!("Todo::User::\"{RICK}\""));
    let missing = records[3]["refusal"].as_str().unwrap();
    assert!(missing.contains("evaluations[3].resource"), "{missing}");
    assert_eq!(records[3]["decision"], "error");
    assert_eq!(records[4]["decision"], "error");
    let decision_ids: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|record| record["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(decision_ids.len(), 5, "each item has its own decision id");
}

/// Starts a configuration and returns why it did not start.
fn start_error(config: &Path) -> String {
    let config = match cedar_edge_gateway::config::GatewayConfig::read(config) {
        Ok(config) => config,
        Err(err) => return err.to_string(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listeners = runtime.block_on(async {
        cedar_edge_gateway::Listeners {
            proxy: None,
            pdp: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            admin: None,
            ext_authz: None,
        }
    });
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    match runtime.block_on(cedar_edge_gateway::run(
        config,
        listeners,
        async {},
        reloads,
    )) {
        Ok(_) => "started".to_owned(),
        Err(err) => err.to_string(),
    }
}

#[test]
fn configuration_names_are_checked_against_the_schema_at_start() {
    let cases = [
        (
            "  types: { todo: Todo::Task }\n",
            "`pdp.types.todo`: the schema has no entity type `Todo::Task`",
        ),
        (
            "  action_type: Action\n",
            "`pdp.action_type`: the schema has no action of type `Action`",
        ),
    ];
    for (extra, expected) in cases {
        let (dir, ..) = write_config("names", "", "");
        let text = std::fs::read_to_string(dir.join("pdp.yaml")).unwrap();
        let text = text
            .replace("  types: { user: Todo::User, todo: Todo::Todo }\n", "")
            .replace("  action_type: Todo::Action\n", "");
        std::fs::write(dir.join("pdp.yaml"), format!("{text}{extra}")).unwrap();
        let error = start_error(&dir.join("pdp.yaml"));
        assert!(error.contains(expected), "{error}");
    }
    // Settings that would expose the service are refused with the field.
    let refusals = [
        ("  callers: []\n", "pdp.callers", "`pdp.callers` is empty"),
        (
            "  listen: 0.0.0.0:8443\n",
            "pdp.listen",
            "`pdp.public_url` is needed",
        ),
        (
            "  public_url: http://pdp.example.test\n",
            "",
            "is http://, but the listener serves TLS",
        ),
        (
            "  public_url: https://pdp.example.test/v1?x\n",
            "",
            "no path, query or fragment",
        ),
        (
            "  limits: { max_batch_items: 0 }\n",
            "",
            "`pdp.limits.max_batch_items` must be at least 1",
        ),
    ];
    for (extra, remove, expected) in refusals {
        let (dir, ..) = write_config("refusals", "", "");
        let mut text = std::fs::read_to_string(dir.join("pdp.yaml")).unwrap();
        if remove == "pdp.callers" {
            let start = text.find("  callers:").unwrap();
            text.truncate(start);
        } else if remove == "pdp.listen" {
            text = text.replace("  listen: 127.0.0.1:0\n", "");
        }
        std::fs::write(dir.join("pdp.yaml"), format!("{text}{extra}")).unwrap();
        let error = start_error(&dir.join("pdp.yaml"));
        assert!(error.contains(expected), "{extra}: {error}");
    }
    // A bearer secret in the clear, off loopback, is refused.
    let (dir, ..) = write_config("cleartext", "", "");
    let text = std::fs::read_to_string(dir.join("pdp.yaml")).unwrap();
    let start = text.find("  tls:").unwrap();
    let end = text.find("  types:").unwrap();
    let mut text = format!("{}{}", &text[..start], &text[end..]);
    text = text.replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 10.1.2.3:8443\n  public_url: http://pdp.internal\n",
    );
    let mtls_start = text.find("    - name: edge-proxy").unwrap();
    let mtls_end = text.find("    - name: deployer").unwrap();
    text.replace_range(mtls_start..mtls_end, "");
    std::fs::write(dir.join("pdp.yaml"), text).unwrap();
    let error = start_error(&dir.join("pdp.yaml"));
    assert!(error.contains("needs `pdp.tls`"), "{error}");
}

#[test]
fn the_example_decision_service_configuration_serves_as_documented() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pdp.yaml");
    let running = Running::start(&example);
    let port = running.pdp_port.unwrap();
    let body = evaluation(MORTY, "can_update_todo", ("todo", MORTYS_TODO)).to_string();
    let reply = cedar_edge_testkit::http::send_with_body(
        port,
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", b"Bearer todo-demo-secret"),
            ("content-type", b"application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["decision"], json!(true));
    assert_eq!(
        answer["context"]["reason_admin"]["determining_policies"],
        json!(["editors-change-their-own-todos"])
    );
    assert_eq!(running.admin("/healthz").status, 200);
    running.stop();
}

/// The search interop bundle behind the same callers.
fn start_search_service(name: &str) -> Service {
    let (dir, authority, edge, ci) = write_config(name, "", "");
    let text = std::fs::read_to_string(dir.join("pdp.yaml"))
        .unwrap()
        .replace("policies/authzen-todo", "policies/authzen-search")
        .replace(
            "types: { user: Todo::User, todo: Todo::Todo }",
            "types: { user: Records::User, record: Records::Record }",
        )
        .replace("action_type: Todo::Action", "action_type: Records::Action");
    std::fs::write(dir.join("pdp.yaml"), text).unwrap();
    let running = Running::start(&dir.join("pdp.yaml"));
    Service {
        dir,
        running: Some(running),
        authority,
        edge,
        ci,
    }
}

fn sorted_results(response: &Value) -> Value {
    let mut results = response["results"].as_array().cloned().unwrap_or_default();
    results.sort_by_key(|item| item.to_string());
    Value::Array(results)
}

#[test]
fn search_over_https_answers_the_official_search_interop_files_and_pages() {
    let service = start_search_service("search");
    let mut passed = 0;
    for kind in ["subject", "resource", "action"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/data/authzen-search/{kind}/results.json"));
        let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in file["evaluation"].as_array().unwrap() {
            let reply = service.runner(&format!("/access/v1/search/{kind}"), &case["request"]);
            assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
            // As the interop runner compares: the results, in any order.
            assert_eq!(
                sorted_results(&reply.json()),
                sorted_results(&case["expected"]),
                "{kind}: {}",
                case["request"]
            );
            passed += 1;
        }
    }
    assert_eq!(passed, 198);
    // Paging over HTTP: small pages walk to the same set.
    let query = json!({
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
    });
    let everything = sorted_results(&service.runner("/access/v1/search/resource", &query).json());
    let mut walked = Vec::new();
    let mut page = json!({"limit": 3});
    for _ in 0..20 {
        let mut body = query.clone();
        body["page"] = page.clone();
        let answer = service.runner("/access/v1/search/resource", &body).json();
        walked.extend(answer["results"].as_array().unwrap().iter().cloned());
        match answer["page"]["next_token"].as_str() {
            Some(token) if !token.is_empty() => page = json!({"limit": 3, "token": token}),
            _ => break,
        }
    }
    walked.sort_by_key(|item| item.to_string());
    assert_eq!(Value::Array(walked), everything);
    assert!(everything.as_array().unwrap().len() > 3);
    // Strangers get nothing; the metadata lists the search endpoints.
    let stranger = service.post_as("guess", "/access/v1/search/resource", &query);
    assert_eq!(stranger.status, 401);
    let metadata = service
        .call("GET", "/.well-known/authzen-configuration", &[], b"")
        .json();
    for kind in ["subject", "resource", "action"] {
        assert!(
            metadata[format!("search_{kind}_endpoint")]
                .as_str()
                .unwrap()
                .ends_with(&format!("/access/v1/search/{kind}")),
            "{metadata}"
        );
    }
    let records = service.stop();
    let searches = records
        .iter()
        .filter(|record| record["search"].is_object())
        .count();
    assert!(searches >= 198, "one audit record per search: {searches}");
}
