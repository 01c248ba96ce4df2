//! The proxy-wasm glue: only host calls and bookkeeping live here; every
//! decision is made by the shared [`cedar_edge_mapping::Mapping`].
//!
//! No callback panics on its own account: host calls that can fail are
//! handled, and a missing configuration or value denies.

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use cedar_edge_mapping::config::ClaimsSource;
use cedar_edge_mapping::{
    Claims, HttpRequest, MappedDecision, Mapping, Verdict, claims_from_header,
};

use crate::config::Reads;
use crate::decision::{DECISION_PROPERTY, decision_record, refusal_body};
use crate::protobuf::filter_metadata;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Counter ids, defined once per VM. Each request lands in one of
/// `allowed`, `denied`, `shadow_denied` and `malformed`; `errors` counts
/// those whose mapping or evaluation failed, whatever the outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    allowed: u32,
    denied: u32,
    errors: u32,
    shadow_denied: u32,
    malformed: u32,
}

impl Counters {
    fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).unwrap_or(0);
        Self {
            allowed: counter("cedar_edge.allowed"),
            denied: counter("cedar_edge.denied"),
            errors: counter("cedar_edge.errors"),
            shadow_denied: counter("cedar_edge.shadow_denied"),
            malformed: counter("cedar_edge.malformed"),
        }
    }

    fn bump(id: u32) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

#[derive(Default)]
struct Root {
    mapping: Option<Rc<Mapping>>,
    reads: Reads,
    counters: Counters,
    next_id: Cell<u64>,
    /// Random per VM, so that decision ids differ across Envoy's worker
    /// threads (one VM each) and across restarts.
    vm_nonce: u64,
    #[cfg(feature = "bench-stages")]
    stage: Option<crate::bench::Stage>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.counters = Counters::define();
        self.vm_nonce = crate::decision::vm_nonce(now_nanos());
        let bytes = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(Some(bytes)) => bytes,
            Ok(None) | Err(_) => {
                log(
                    LogLevel::Error,
                    "cedar-edge: no plugin configuration; refusing to start",
                );
                return false;
            }
        };
        #[cfg(feature = "bench-stages")]
        let bytes = match crate::bench::take_stage(&bytes) {
            Ok((stage, rest)) => {
                self.stage = Some(stage);
                rest
            }
            Err(err) => {
                log(LogLevel::Error, &format!("cedar-edge: {err}"));
                return false;
            }
        };
        match crate::config::load(&bytes) {
            Ok(mapping) if mapping.config().identity.source.is_none() => {
                log(
                    LogLevel::Error,
                    "cedar-edge: invalid cedar-edge configuration: `identity.source` is required in Envoy",
                );
                false
            }
            Ok(mapping) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "cedar-edge: loaded bundle {} with {} policies{}",
                        mapping.bundle().id(),
                        mapping.bundle().policy_ids().len(),
                        if mapping.config().shadow_mode {
                            " in shadow mode"
                        } else {
                            ""
                        }
                    ),
                );
                self.reads = Reads::of(mapping.config());
                self.mapping = Some(Rc::new(mapping));
                true
            }
            Err(err) => {
                log(LogLevel::Error, &format!("cedar-edge: {err}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let sequence = self.next_id.get().wrapping_add(1);
        self.next_id.set(sequence);
        Some(Box::new(Request {
            mapping: self.mapping.clone(),
            reads: self.reads,
            counters: self.counters,
            decision_id: crate::decision::decision_id(self.vm_nonce, sequence),
            #[cfg(feature = "bench-stages")]
            stage: self.stage.unwrap_or(crate::bench::Stage::Full),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    mapping: Option<Rc<Mapping>>,
    reads: Reads,
    counters: Counters,
    decision_id: String,
    #[cfg(feature = "bench-stages")]
    stage: crate::bench::Stage,
}

impl Request {
    /// Whether the decision is recorded; only a bench build's earlier
    /// stages skip it.
    fn records(&self) -> bool {
        #[cfg(feature = "bench-stages")]
        return self.stage == crate::bench::Stage::Full;
        #[cfg(not(feature = "bench-stages"))]
        true
    }

    /// The bench build's stages before the decision: each does its part
    /// and forwards the request unchecked.
    #[cfg(feature = "bench-stages")]
    fn stop_before_decision(&self, mapping: &Mapping) -> Option<Action> {
        use crate::bench::Stage;
        match self.stage {
            Stage::Continue => {}
            Stage::Headers => drop(hostcalls::get_map_bytes(MapType::HttpRequestHeaders)),
            Stage::Claims => drop(read_request(mapping, self.reads)),
            Stage::Mapping => drop(mapping.map(&read_request(mapping, self.reads))),
            Stage::Decision | Stage::Full => return None,
        }
        Some(Action::Continue)
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(mapping) = self.mapping.clone() else {
            // Unconfigured: fail closed.
            Counters::bump(self.counters.errors);
            respond(
                500,
                "{\"decision\":\"deny\",\"error\":\"cedar-edge is not configured\"}",
            );
            return Action::Pause;
        };
        #[cfg(feature = "bench-stages")]
        if let Some(action) = self.stop_before_decision(&mapping) {
            return action;
        }
        let http = read_request(&mapping, self.reads);
        // The filter's own id: a client's `x-request-id` is the client's
        // word, and the upstream must not take it for this decision's.
        let decision_id = self.decision_id.clone();
        let decision = mapping.decide(&http);
        let config = mapping.config();
        let shadow = config.shadow_mode;
        if self.records() {
            record(&decision_record(
                &decision,
                &decision_id,
                mapping.bundle().id(),
                shadow,
            ));
        }
        if decision.refusal.is_some() {
            Counters::bump(self.counters.errors);
        }
        remove_client_headers(&mapping, &http.headers);
        let forwarded = match decision.verdict {
            // A target or headers that could be read two ways are never
            // forwarded, not even in shadow mode.
            Verdict::Malformed => {
                Counters::bump(self.counters.malformed);
                let body = refusal_body(&decision, &decision_id, config.reasons_in_deny_body);
                respond(400, &body);
                false
            }
            Verdict::Allow => {
                Counters::bump(self.counters.allowed);
                if let Some(request) = &decision.request {
                    set_header(
                        &config.upstream_headers.principal,
                        &request.principal.to_string(),
                    );
                }
                true
            }
            Verdict::Deny | Verdict::Unauthenticated if shadow => {
                Counters::bump(self.counters.shadow_denied);
                true
            }
            Verdict::Deny | Verdict::Unauthenticated => {
                Counters::bump(self.counters.denied);
                let body = refusal_body(&decision, &decision_id, config.reasons_in_deny_body);
                if decision.verdict == Verdict::Unauthenticated {
                    respond_with(401, &body, &[("www-authenticate", "Bearer")]);
                } else {
                    respond(403, &body);
                }
                false
            }
        };
        if !forwarded {
            return Action::Pause;
        }
        // The upstream gets exactly the target that was decided. A request
        // refused before the engine saw it (no identity, in shadow mode)
        // carries no target, so its canonical form is read here.
        let canonical = match &decision.target {
            Some(target) => Ok(target.path_and_query()),
            None => mapping
                .target(&http.path)
                .map(|target| target.path_and_query()),
        };
        match canonical {
            Ok(canonical) => {
                if canonical != http.path {
                    set_header(":path", &canonical);
                }
            }
            Err(refusal) => {
                Counters::bump(self.counters.malformed);
                let refused = MappedDecision::refused(refusal);
                respond(400, &refusal_body(&refused, &decision_id, false));
                return Action::Pause;
            }
        }
        set_header(&config.upstream_headers.decision_id, &decision_id);
        Action::Continue
    }
}

fn read_request(mapping: &Mapping, reads: Reads) -> HttpRequest {
    let headers: Vec<(String, Vec<u8>)> =
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
    let claims = match &mapping.config().identity.source {
        None => Claims::Invalid("`identity.source` is not configured".to_owned()),
        Some(ClaimsSource::JwtMetadata { namespace, key }) => {
            // The whole dynamic metadata comes back as one serialized
            // `Metadata` message; deeper paths come back in Envoy's CEL
            // serialization, which is not protobuf.
            match hostcalls::get_property(vec!["metadata"]) {
                Ok(Some(bytes)) => match filter_metadata(&bytes, namespace) {
                    Ok(Some(mut found)) => match found.remove(key.as_str()) {
                        Some(serde_json::Value::Object(claims)) => Claims::Present(claims),
                        Some(_) => Claims::Invalid(format!("`{key}` is not an object")),
                        None => Claims::Absent,
                    },
                    Ok(None) => Claims::Absent,
                    Err(err) => Claims::Invalid(err.to_string()),
                },
                Ok(None) | Err(_) => Claims::Absent,
            }
        }
        Some(ClaimsSource::Header { name }) => headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map_or(Claims::Absent, |(_, value)| claims_from_header(value)),
    };
    // Each property is a call into Envoy and back; only the ones the
    // mapping reads are fetched.
    let property = |wanted: bool, path: Vec<&str>| {
        wanted
            .then(|| hostcalls::get_property(path).ok().flatten())
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    };
    let now_seconds = if reads.clock {
        i64::try_from(now_nanos() / 1_000_000_000).unwrap_or(i64::MAX)
    } else {
        0
    };
    HttpRequest {
        method: header_text(&headers, ":method").unwrap_or_default(),
        path: header_text(&headers, ":path").unwrap_or_default(),
        source_address: property(reads.source_address, vec!["source", "address"]),
        peer_identity: property(
            reads.peer_identity,
            vec!["connection", "uri_san_peer_certificate"],
        ),
        now_seconds,
        claims,
        headers,
    }
}

/// A header's value, when it is UTF-8.
fn header_text(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| String::from_utf8(value.clone()).ok())
}

/// Client-sent copies of the headers this filter sets, of any header the
/// configuration names (in any spelling), and hop-by-hop headers never
/// reach the upstream.
fn remove_client_headers(mapping: &Mapping, headers: &[(String, Vec<u8>)]) {
    let names = mapping.headers_to_remove(
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice())),
    );
    for name in names {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &name);
    }
}

/// The host's clock, in nanoseconds since the epoch (0 if unreadable).
fn now_nanos() -> u128 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|now| now.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos())
}

fn set_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

fn respond(status: u32, body: &str) {
    respond_with(status, body, &[]);
}

fn respond_with(status: u32, body: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    let _ = hostcalls::send_http_response(status, headers, Some(body.as_bytes()));
}

/// Puts the decision record in the stream's filter state, where Envoy's
/// access log reads it (`%FILTER_STATE(wasm.cedar_edge.decision:PLAIN)%`):
/// Envoy formats and writes it after the response, off the request's path.
fn record(line: &str) {
    let _ = hostcalls::set_property(vec![DECISION_PROPERTY], Some(line.as_bytes()));
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
