//! The AuthZEN decision service on its own listener: callers authenticate
//! before anything of their request is read, each request holds one of a
//! fixed number of permits while it is decided, and every item of a batch
//! gets an audit record, refused ones included.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cedar_edge_core::Response as Decision;
use cedar_edge_mapping::DecisionKind;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request as HttpReq, Response, StatusCode};
use serde_json::{Value, json};

use crate::audit::AuditEntry;
use crate::authzen::{self, Evaluation, Evaluations, Names, Outcome};
use crate::callers::Callers;
use crate::config::{CallerConfig, CertificateIdentity, PdpConfig};
use crate::proxy::{Body, full};
use crate::search::{SearchKind, SearchLimits};
use crate::server::{Gateway, json_response, method_not_allowed};
use crate::state::LoadedBundle;

/// The request identifier header callers may send; it is echoed.
const REQUEST_ID: &str = "x-request-id";

/// What the decision service knows of one connection.
#[derive(Debug, Default)]
pub struct ConnectionInfo {
    /// The names the caller's verified client certificate carries.
    pub certificate: Vec<CertificateIdentity>,
}

/// The decision service.
pub struct Pdp {
    gateway: Arc<Gateway>,
    config: PdpConfig,
    callers: Callers,
    permits: tokio::sync::Semaphore,
    metadata: Bytes,
}

impl std::fmt::Debug for Pdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pdp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The endpoints that decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Evaluation,
    Evaluations,
    Search(SearchKind),
}

impl Pdp {
    /// The service over the gateway's bundle, audit log and metrics.
    pub fn new(gateway: Arc<Gateway>, config: PdpConfig, callers: Callers) -> Self {
        let base = config.identifier();
        let metadata = json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
            "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
            "search_action_endpoint": format!("{base}/access/v1/search/action"),
        });
        Self {
            permits: tokio::sync::Semaphore::new(config.limits.max_concurrent_requests),
            metadata: Bytes::from(metadata.to_string()),
            gateway,
            config,
            callers,
        }
    }

    /// Handles one request; never fails at the HTTP level. The caller's
    /// `X-Request-ID` comes back on every answer.
    pub async fn handle(
        self: Arc<Self>,
        request: HttpReq<Incoming>,
        connection: Arc<ConnectionInfo>,
    ) -> Result<Response<Body>, Infallible> {
        let request_id = request.headers().get(REQUEST_ID).cloned();
        let mut response = self.route(request, &connection, request_id.as_ref()).await;
        if let Some(id) = request_id {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        Ok(response)
    }

    async fn route(
        self: &Arc<Self>,
        request: HttpReq<Incoming>,
        connection: &ConnectionInfo,
        request_id: Option<&HeaderValue>,
    ) -> Response<Body> {
        let endpoint = match request.uri().path() {
            "/.well-known/authzen-configuration" => {
                return match *request.method() {
                    Method::GET | Method::HEAD => self.metadata(),
                    _ => method_not_allowed("GET"),
                };
            }
            "/access/v1/evaluation" => Endpoint::Evaluation,
            "/access/v1/evaluations" => Endpoint::Evaluations,
            "/access/v1/search/subject" => Endpoint::Search(SearchKind::Subject),
            "/access/v1/search/resource" => Endpoint::Search(SearchKind::Resource),
            "/access/v1/search/action" => Endpoint::Search(SearchKind::Action),
            _ => return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        };
        if request.method() != Method::POST {
            return method_not_allowed("POST");
        }
        let started = Instant::now();
        let request_id = request_id
            .and_then(|id| id.to_str().ok())
            .map(str::to_owned);
        // Nothing of a stranger's request is read past its headers.
        let caller = match self
            .callers
            .authenticate(&connection.certificate, request.headers())
            .await
        {
            Ok(caller) => caller,
            Err(reason) => return self.unauthenticated(&reason, request_id, started),
        };
        if !is_json(request.headers()) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be `Content-Type: application/json`",
            );
        }
        // Requests beyond the cap are turned away rather than queued: a
        // queue would only move the overload into memory.
        let Ok(_permit) = self.permits.try_acquire() else {
            self.gateway.metrics.pdp_busy();
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "more than {} requests at once (`pdp.limits.max_concurrent_requests`); retry",
                    self.config.limits.max_concurrent_requests
                ),
            );
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err(response) => return *response,
        };
        let request = Caller {
            config: caller,
            request_id,
            started,
        };
        let active = self.gateway.bundles.serving();
        let answer = match endpoint {
            Endpoint::Evaluation => match authzen::evaluation(&body) {
                Ok(evaluation) => Ok(self.decide(&active, &evaluation, &request, None).await.0),
                Err(bad) => Err(bad),
            },
            Endpoint::Evaluations => {
                match authzen::evaluations(&body, self.config.limits.max_batch_items) {
                    Ok(Evaluations::Single(evaluation)) => {
                        Ok(self.decide(&active, &evaluation, &request, None).await.0)
                    }
                    Ok(Evaluations::Batch(batch)) => {
                        Ok(self.decide_batch(&active, &batch, &request).await)
                    }
                    Err(bad) => Err(bad),
                }
            }
            Endpoint::Search(kind) => self.search(kind, body, &active, &request).await,
        };
        match answer {
            Ok(answer) => json_response(StatusCode::OK, &answer),
            Err(bad) => {
                self.refused_request(&active, &request, &bad.0);
                error(StatusCode::BAD_REQUEST, &bad.0)
            }
        }
    }

    /// A search, off the reactor: it authorizes every candidate the policy
    /// index cannot rule out, which for a large store is milliseconds of
    /// CPU. One audit record says what was asked and how many results went
    /// back.
    async fn search(
        self: &Arc<Self>,
        kind: SearchKind,
        body: Value,
        active: &Arc<LoadedBundle>,
        caller: &Caller<'_>,
    ) -> Result<Value, authzen::BadRequest> {
        let started = Instant::now();
        let attributes = caller.config.request_attributes;
        let limits = SearchLimits {
            default_page_size: self.config.limits.max_search_page,
            max_page_size: self.config.limits.max_search_page,
        };
        // The blocking thread borrows the names from the service itself.
        let (service, bundle) = (Arc::clone(self), Arc::clone(active));
        let searched = tokio::task::spawn_blocking(move || {
            let names = service.names();
            crate::search::search(kind, &body, &bundle, &names, attributes, limits)
        })
        .await;
        let decision_id = self.gateway.next_decision_id();
        let answer = match searched {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(authzen::BadRequest(err.to_string())),
            Err(err) => {
                // A panic in the search: no answer, and nothing to hide it.
                tracing::error!(error = %err, "a search failed");
                return Err(authzen::BadRequest("the search failed".to_owned()));
            }
        };
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let more = answer
            .pointer("/page/next_token")
            .is_some_and(Value::is_string);
        let entry = AuditEntry {
            refusal: None,
            search: Some(json!({
                "kind": kind.name(),
                "results": results,
                "more": more,
            })),
            ..self.entry(active, caller, None, &decision_id, DecisionKind::Allow)
        };
        self.gateway.audit_decision(entry, started);
        Ok(answer)
    }

    /// Items in order; `deny_on_first_deny` and `permit_on_first_permit`
    /// stop after the item that decides, and the answer holds the items
    /// decided so far.
    async fn decide_batch(
        &self,
        active: &LoadedBundle,
        batch: &authzen::Batch<'_>,
        caller: &Caller<'_>,
    ) -> Value {
        let mut answers = Vec::with_capacity(batch.len());
        for index in 0..batch.len() {
            let (answer, allowed) = match batch.item(index) {
                Ok(evaluation) => self.decide(active, &evaluation, caller, Some(index)).await,
                Err(message) => {
                    let decision_id = self.gateway.next_decision_id();
                    let refused = self.refuse(
                        active,
                        caller,
                        Some(index),
                        &decision_id,
                        message,
                        Instant::now(),
                    );
                    (refused, false)
                }
            };
            answers.push(answer);
            if batch.semantic.stops_after(allowed) {
                break;
            }
        }
        json!({ "evaluations": answers })
    }

    /// One evaluation, decided and audited: the caller's answer, and
    /// whether it allows.
    async fn decide(
        &self,
        active: &LoadedBundle,
        evaluation: &Evaluation<'_>,
        caller: &Caller<'_>,
        index: Option<usize>,
    ) -> (Value, bool) {
        let started = Instant::now();
        let decision_id = self.gateway.next_decision_id();
        let request =
            match self
                .names()
                .request(evaluation, caller.config.request_attributes, |uid| {
                    active.bundle.has_entity(uid)
                }) {
                Ok(request) => request,
                Err(message) => {
                    let answer = self.refuse(active, caller, index, &decision_id, message, started);
                    return (answer, false);
                }
            };
        let (answer, allowed, entry) = match active.backend.authorize_async(&request).await {
            Ok(decision) => {
                let decision = match &active.mapping {
                    Some(mapping) => mapping.apply_forbid_errors(decision),
                    None => decision,
                };
                let outcome = Outcome::Decided {
                    allowed: decision.is_allowed(),
                    decision_id: &decision_id,
                    reasons: &decision.determining_policies,
                    errors: decision
                        .errors
                        .iter()
                        .map(|error| format!("{}: {}", error.policy_id, error.message))
                        .collect(),
                };
                let answer = outcome.to_json(caller.config.reason_admin);
                let allowed = outcome.allowed();
                let kind = DecisionKind::of_response(&decision);
                let entry = AuditEntry {
                    request: Some(request),
                    response: Some(decision),
                    ..self.entry(active, caller, index, &decision_id, kind)
                };
                (answer, allowed, entry)
            }
            Err(err) => {
                let outcome = Outcome::failed(&decision_id, &err);
                let answer = outcome.to_json(caller.config.reason_admin);
                let decision = Decision::denied_by_error(err.to_string(), active.bundle_id());
                let entry = AuditEntry {
                    request: Some(request),
                    response: Some(decision),
                    ..self.entry(active, caller, index, &decision_id, DecisionKind::Error)
                };
                (answer, false, entry)
            }
        };
        self.gateway.audit_decision(entry, started);
        (answer, allowed)
    }

    /// An item that could not be decided for its input: a deny with the
    /// error, and its own audit record.
    fn refuse(
        &self,
        active: &LoadedBundle,
        caller: &Caller<'_>,
        index: Option<usize>,
        decision_id: &str,
        message: String,
        started: Instant,
    ) -> Value {
        let outcome = Outcome::Refused {
            decision_id,
            status: 400,
            message,
        };
        let answer = outcome.to_json(caller.config.reason_admin);
        if let Outcome::Refused { message, .. } = outcome {
            self.audit_refusal(active, caller, index, decision_id, message, started);
        }
        answer
    }

    /// A whole request refused as unreadable, from a known caller.
    fn refused_request(&self, active: &LoadedBundle, caller: &Caller<'_>, reason: &str) {
        let decision_id = self.gateway.next_decision_id();
        self.audit_refusal(
            active,
            caller,
            None,
            &decision_id,
            reason.to_owned(),
            caller.started,
        );
    }

    fn audit_refusal(
        &self,
        active: &LoadedBundle,
        caller: &Caller<'_>,
        index: Option<usize>,
        decision_id: &str,
        reason: String,
        started: Instant,
    ) {
        let entry = AuditEntry {
            refusal: Some(reason),
            ..self.entry(active, caller, index, decision_id, DecisionKind::Error)
        };
        self.gateway.audit_decision(entry, started);
    }

    fn entry(
        &self,
        active: &LoadedBundle,
        caller: &Caller<'_>,
        index: Option<usize>,
        decision_id: &str,
        kind: DecisionKind,
    ) -> AuditEntry {
        // A batch item's record says which item it was.
        let request_id = match (&caller.request_id, index) {
            (Some(id), Some(index)) => Some(format!("{id}#{index}")),
            (None, Some(index)) => Some(format!("#{index}")),
            (id, None) => id.clone(),
        };
        AuditEntry {
            caller: Some(caller.config.name.clone()),
            request_id,
            ..self.gateway.audit_entry(decision_id, kind, active)
        }
    }

    /// A 401, audited at the rate that unauthenticated records are kept.
    fn unauthenticated(
        &self,
        reason: &str,
        request_id: Option<String>,
        started: Instant,
    ) -> Response<Body> {
        let decision_id = self.gateway.next_decision_id();
        let serving = self.gateway.bundles.serving();
        let entry = AuditEntry {
            request_id,
            ..self.gateway.refused_entry(
                &decision_id,
                DecisionKind::Unauthenticated,
                reason,
                &serving,
            )
        };
        self.gateway.audit_unverified(entry, started);
        let mut response = error(StatusCode::UNAUTHORIZED, reason);
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"cedar-edge-pdp\""),
        );
        response
    }

    fn names(&self) -> Names<'_> {
        Names {
            types: &self.config.types,
            action_type: &self.config.action_type,
        }
    }

    fn metadata(&self) -> Response<Body> {
        let mut response = Response::new(full(self.metadata.clone()));
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(cache) = HeaderValue::from_str(&format!(
            "public, max-age={}",
            self.config.metadata_max_age_seconds
        )) {
            headers.insert(hyper::header::CACHE_CONTROL, cache);
        }
        response
    }

    async fn read_body(&self, request: HttpReq<Incoming>) -> Result<Value, Box<Response<Body>>> {
        let limit = self.config.limits.max_body_bytes;
        let limited = http_body_util::Limited::new(request.into_body(), limit);
        let bytes = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                let too_large = err.is::<http_body_util::LengthLimitError>();
                return Err(Box::new(if too_large {
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("the body is over {limit} bytes (`pdp.limits.max_body_bytes`)"),
                    )
                } else {
                    error(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read the body: {err}"),
                    )
                }));
            }
        };
        serde_json::from_slice(&bytes).map_err(|err| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {err}"),
            ))
        })
    }
}

/// The authenticated caller of one request.
struct Caller<'a> {
    config: &'a CallerConfig,
    request_id: Option<String>,
    started: Instant,
}

fn is_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// An error answer: the specification's error body is a message string.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}
