//! Request handling: the proxy path (verify, map, decide, forward), and the
//! admin listener's `/healthz` and `/metrics`. What every listener shares
//! (decision ids, audit records, the decision itself) lives on [`Gateway`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cedar_edge_core::{Request, Response as Decision};
use cedar_edge_mapping::{Claims, DecisionKind, HttpRequest, Refusal, fold_header_name};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request as HttpReq, Response, StatusCode};
use serde_json::{Value, json};

use crate::audit::{AuditEntry, AuditLog};
use crate::config::GatewayConfig;
use crate::jwt::Verifier;
use crate::metrics::Metrics;
use crate::proxy::{Body, UpstreamClient, full};
use crate::state::{BundleSlot, LoadedBundle};

/// The forwarding chain, as proxies write it.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// Headers through which a proxy tells its upstream about the client. Only
/// trusted proxies may send them; from anyone else they are dropped, and in
/// a spelling other than this one (`X_Forwarded_For`) they are always
/// dropped, since upstreams that fold `_` would read them as these.
const FORWARDING: [&str; 12] = [
    "forwarded",
    "x-forwarded-for",
    "x-original-forwarded-for",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Everything a request handler needs.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) bundles: Arc<BundleSlot>,
    pub(crate) verifier: Verifier,
    pub(crate) client: UpstreamClient,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) boot: u64,
    pub(crate) sequence: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Handles one proxied request; never fails at the HTTP level.
    pub async fn handle(
        self: Arc<Self>,
        request: HttpReq<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        Ok(self.proxy(request, peer).await)
    }

    /// Handles one request to the admin listener.
    pub async fn admin(
        self: Arc<Self>,
        request: HttpReq<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let response = match request.uri().path() {
            "/healthz" | "/metrics" if request.method() != Method::GET => method_not_allowed("GET"),
            "/healthz" => self.healthz(),
            "/metrics" => text(StatusCode::OK, self.metrics.render()),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        };
        Ok(response)
    }

    pub(crate) fn next_decision_id(&self) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{sequence:x}", self.boot)
    }

    fn healthz(&self) -> Response<Body> {
        let serving = self.bundles.serving();
        json_response(
            StatusCode::OK,
            &json!({
                "status": "ok",
                "bundle_id": serving.bundle_id(),
                "bundle_source": serving.origin.location,
                "bundle_revision": serving.origin.revision,
                "bundle_signer": serving.origin.signer,
            }),
        )
    }

    async fn proxy(&self, request: HttpReq<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let decision_id = self.next_decision_id();
        let active = self.bundles.serving();
        let (mut parts, body) = request.into_parts();
        // The configuration check makes the proxy need a mapping.
        let Some(mapping) = active.mapping.as_ref() else {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "the proxy has no mapping"}),
            );
        };
        // The one copy of the headers: checked as the client sent them,
        // then kept equal to what is forwarded, for the decision.
        let mut headers: Vec<(String, Vec<u8>)> = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        // The one target that is decided and forwarded, and no header that
        // could be read two ways.
        let checked = mapping.check_headers(&headers).and_then(|()| {
            // No path (a CONNECT's authority form): nothing to decide.
            let raw_target = parts
                .uri
                .path_and_query()
                .map(|target| target.as_str())
                .ok_or_else(|| Refusal::Malformed("the request has no path".to_owned()))?;
            let target = mapping.target(raw_target)?;
            let client = self.client_address(&parts.headers, peer)?;
            Ok((target, client))
        });
        let (target, client) = match checked {
            Ok(checked) => checked,
            Err(Refusal::Malformed(reason) | Refusal::Invalid(reason)) => {
                return self.malformed(&decision_id, &reason, &active, started);
            }
            Err(Refusal::NoIdentity) => return unauthorized("no verified identity"),
        };
        // Client-sent identity headers and hop-by-hop headers never reach
        // an upstream, nor forwarding headers an untrusted peer wrote.
        let trusted_peer = self.is_trusted_proxy(peer.ip().to_canonical());
        let remove = mapping
            .headers_to_remove(
                headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice())),
            )
            .into_iter()
            .chain(headers.iter().filter_map(|(name, _)| {
                let folded = fold_header_name(name);
                let forwarding = FORWARDING.contains(&folded.as_str());
                (forwarding && (!trusted_peer || folded != *name)).then(|| name.clone())
            }));
        let removed: Vec<String> = remove.collect();
        for name in &removed {
            parts.headers.remove(name.as_str());
        }
        set_forwarded_for(&mut parts.headers, client, peer);
        // What the decision reads is what is forwarded: the same headers
        // gone, and the chain as rewritten. `HeaderMap` names are lower
        // case, so names compare exactly.
        headers.retain(|(name, _)| name != FORWARDED_FOR && !removed.contains(name));
        headers.extend(
            parts
                .headers
                .get_all(FORWARDED_FOR)
                .iter()
                .map(|value| (FORWARDED_FOR.to_owned(), value.as_bytes().to_vec())),
        );
        let upstream_headers = &mapping.config().upstream_headers;
        let Some((upstream, _)) = self.upstream_for(&target.path) else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "no route"}));
        };
        let token = bearer(&parts.headers);
        let claims = match token {
            None => Err("no bearer token".to_owned()),
            Some(token) => self.verifier.verify(token).await.map_err(|err| err.0),
        };
        let claims = match claims {
            Ok(claims) => claims,
            Err(reason) => {
                let entry = self.refused_entry(
                    &decision_id,
                    DecisionKind::Unauthenticated,
                    &reason,
                    &active,
                );
                self.audit_decision(entry, started);
                return unauthorized(&reason);
            }
        };
        let mut entry = self.audit_entry(&decision_id, DecisionKind::Allow, &active);
        if self.config.authorization {
            let http = HttpRequest {
                method: parts.method.as_str().to_owned(),
                path: target.path_and_query(),
                headers,
                source_address: Some(client.to_string()),
                peer_identity: None,
                now_seconds: now_seconds(),
                claims: Claims::Present(claims),
            };
            (entry.kind, entry.request, entry.response) = self.decide(&active, &http).await;
            // The claims go on to the audit record rather than be copied.
            if let Claims::Present(claims) = http.claims {
                entry.claims = Some(claims);
            }
        } else {
            entry.claims = Some(claims);
        }
        let kind = entry.kind;
        let principal = entry
            .request
            .as_ref()
            .map(|request| request.principal.to_string());
        self.audit_decision(entry, started);
        if kind != DecisionKind::Allow {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"decision": "deny", "decision_id": decision_id}),
            );
        }
        if let Some(principal) = &principal {
            set_header(&mut parts.headers, &upstream_headers.principal, principal);
        }
        set_header(
            &mut parts.headers,
            &upstream_headers.decision_id,
            &decision_id,
        );
        let forwarded = format!(
            "{}{}",
            upstream.trim_end_matches('/'),
            target.path_and_query()
        );
        parts.uri = match forwarded.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    &json!({"error": "bad upstream URL"}),
                );
            }
        };
        // The upstream's own authority, not the client's `Host`: behind a
        // shared ingress, `Host` picks the app that serves the request, and
        // it must be the app that was decided.
        if let Some(authority) = parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        {
            parts.headers.insert(hyper::header::HOST, authority);
        }
        match self.client.request(HttpReq::from_parts(parts, body)).await {
            Ok(response) => response.map(|body| body.boxed()),
            Err(err) => {
                tracing::warn!(error = %err, upstream = %upstream, "upstream failed");
                json_response(
                    StatusCode::BAD_GATEWAY,
                    &json!({"error": "upstream unavailable"}),
                )
            }
        }
    }

    /// Maps and decides; every failure is a deny.
    pub(crate) async fn decide(
        &self,
        active: &LoadedBundle,
        http: &HttpRequest,
    ) -> (DecisionKind, Option<Request>, Option<Decision>) {
        let Some(mapping) = active.mapping.as_ref() else {
            let decision = Decision::denied_by_error("no mapping", active.bundle_id());
            return (DecisionKind::Error, None, Some(decision));
        };
        let request = match mapping.map(http) {
            Ok(request) => request,
            Err(Refusal::NoIdentity) => return (DecisionKind::Unauthenticated, None, None),
            Err(Refusal::Invalid(reason) | Refusal::Malformed(reason)) => {
                let decision = Decision::denied_by_error(reason, active.bundle_id());
                return (DecisionKind::Error, None, Some(decision));
            }
        };
        let decision = match active.backend.authorize_async(&request).await {
            Ok(decision) => mapping.apply_forbid_errors(decision),
            Err(err) => Decision::denied_by_error(err.to_string(), active.bundle_id()),
        };
        (
            DecisionKind::of_response(&decision),
            Some(request),
            Some(decision),
        )
    }

    /// A 400 for a request that could be read two ways: logged, counted
    /// and audited. It comes before any token is checked, so its records
    /// share the rate limit of unauthenticated ones.
    fn malformed(
        &self,
        decision_id: &str,
        reason: &str,
        bundle: &LoadedBundle,
        started: Instant,
    ) -> Response<Body> {
        let entry = self.refused_entry(decision_id, DecisionKind::Error, reason, bundle);
        if self.audit_unverified(entry, started) {
            tracing::info!(decision_id, reason, "refused an ambiguous request");
        }
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad request", "reason": reason, "decision_id": decision_id}),
        )
    }

    fn is_trusted_proxy(&self, address: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(address))
    }

    /// The client's address: the socket's peer, unless that peer is a
    /// trusted proxy; then the right-most `X-Forwarded-For` hop that is not
    /// itself a trusted proxy (hops left of it were written by the client
    /// and are not read), or the left-most hop when every hop is trusted.
    fn client_address(
        &self,
        headers: &hyper::HeaderMap,
        peer: SocketAddr,
    ) -> Result<IpAddr, Refusal> {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted_proxy(peer_ip) {
            return Ok(peer_ip);
        }
        let mut hops = Vec::new();
        for value in headers.get_all(FORWARDED_FOR) {
            let text = value
                .to_str()
                .map_err(|_| Refusal::Malformed("`x-forwarded-for` is not ASCII".to_owned()))?;
            hops.extend(text.split(',').map(str::trim));
        }
        let mut client = peer_ip;
        for hop in hops.iter().rev() {
            client = parse_hop(hop).ok_or_else(|| {
                Refusal::Malformed(format!("`x-forwarded-for` hop `{hop}` is not an address"))
            })?;
            if !self.is_trusted_proxy(client) {
                break;
            }
        }
        Ok(client)
    }

    fn upstream_for(&self, path: &str) -> Option<(&str, &str)> {
        self.config
            .routes
            .iter()
            .filter(|route| path.starts_with(&route.prefix))
            .max_by_key(|route| route.prefix.len())
            .and_then(|route| {
                self.config
                    .upstreams
                    .get(&route.upstream)
                    .map(|url| (url.as_str(), route.prefix.as_str()))
            })
    }

    /// An audit entry for a decision; it gets its time and latency when
    /// it is counted.
    pub(crate) fn audit_entry(
        &self,
        decision_id: &str,
        kind: DecisionKind,
        bundle: &LoadedBundle,
    ) -> AuditEntry {
        AuditEntry {
            decision_id: decision_id.to_owned(),
            kind,
            request: None,
            response: None,
            refusal: None,
            bundle_id: bundle.bundle_id().to_owned(),
            bundle_revision: bundle.origin.revision.clone(),
            claims: None,
            time: UNIX_EPOCH,
            latency_us: 0,
            authorization: self.config.authorization,
            caller: None,
            request_id: None,
            search: None,
        }
    }

    /// The audit entry of a request refused before it reached the engine.
    pub(crate) fn refused_entry(
        &self,
        decision_id: &str,
        kind: DecisionKind,
        reason: &str,
        bundle: &LoadedBundle,
    ) -> AuditEntry {
        AuditEntry {
            refusal: Some(reason.to_owned()),
            ..self.audit_entry(decision_id, kind, bundle)
        }
    }

    /// Counts the decision and queues its audit record: the shared decision
    /// record plus the time, the latency, the redacted claims and whether
    /// authorization was on.
    pub(crate) fn audit_decision(&self, entry: AuditEntry, started: Instant) {
        if entry.kind == DecisionKind::Unauthenticated {
            self.audit_unverified(entry, started);
        } else {
            self.count_and_write(entry, started);
        }
    }

    /// Counts and audits a request refused before any token was verified.
    /// Anyone can send those, so their records are rate-limited so that
    /// they cannot flood the log; a dropped record is counted. Whether the
    /// record was written.
    pub(crate) fn audit_unverified(&self, entry: AuditEntry, started: Instant) -> bool {
        if self.audit.admit_unauthenticated() {
            self.count_and_write(entry, started);
            true
        } else {
            self.metrics.decision(entry.kind, elapsed_micros(started));
            self.metrics.audit_dropped();
            false
        }
    }

    fn count_and_write(&self, mut entry: AuditEntry, started: Instant) {
        entry.latency_us = elapsed_micros(started);
        entry.time = SystemTime::now();
        self.metrics.decision(entry.kind, entry.latency_us);
        self.audit.record(entry);
    }
}

fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(reason: &str) -> Response<Body> {
    // The description is shown to clients: keep it to safe characters.
    let description: String = reason
        .chars()
        .filter(|ch| ch.is_ascii_graphic() || *ch == ' ')
        .filter(|ch| *ch != '"' && *ch != '\\')
        .take(200)
        .collect();
    let challenge = format!(
        "Bearer realm=\"cedar-edge\", error=\"invalid_token\", error_description=\"{description}\""
    );
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "unauthenticated"}),
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// An `X-Forwarded-For` hop: an address, perhaps with a port
/// (`10.0.0.1:3456`, `[2001:db8::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// `X-Forwarded-For` for the upstream: the decided client, the trusted
/// hops after it, then this peer. Hops left of the client were written by
/// the client itself, and upstreams that read the left-most entry would
/// take them for the client.
fn set_forwarded_for(headers: &mut hyper::HeaderMap, client: IpAddr, peer: SocketAddr) {
    let hops: Vec<String> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(',').map(|hop| hop.trim().to_owned()))
        .collect();
    let mut chain: Vec<String> = hops
        .iter()
        .rposition(|hop| parse_hop(hop) == Some(client))
        .and_then(|from| hops.get(from..))
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let peer = peer.ip().to_canonical();
    if chain.is_empty() && client != peer {
        chain.push(client.to_string());
    }
    chain.push(peer.to_string());
    headers.remove(FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert(FORWARDED_FOR, value);
    }
}

fn set_header(headers: &mut hyper::HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// A 405 naming the one method the path takes.
pub(crate) fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": format!("method not allowed; use {allowed}")}),
    );
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allowed));
    response
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

pub(crate) fn elapsed_micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
