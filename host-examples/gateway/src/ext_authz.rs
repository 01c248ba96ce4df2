//! Envoy's external authorization API, `envoy.service.auth.v3.Authorization/Check`
//! over gRPC: an Envoy set up for OPA's Envoy plugin can ask the gateway
//! instead, with the same `ext_authz` filter.
//!
//! A Check is read the way the cedar-edge Envoy filter reads a request
//! (method, `:path`, headers, the source address, and the claims
//! `jwt_authn` left in the metadata namespace the mapping names), mapped by
//! the same `cedar-edge-mapping` code, and decided, audited and counted by
//! the gateway's own decision path. Only the canonical path is decided:
//! Envoy forwards the path it sent, so any other spelling is refused.
//! Every failure is a denial.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_edge_mapping::config::ClaimsSource;
use cedar_edge_mapping::{Claims, DecisionKind, HttpRequest, Mapping, Refusal, claims_from_header};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode,
    OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, Metadata, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::google::protobuf::{Value as ProtoValue, value::Kind};
use envoy_types::pb::google::rpc;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::error::GatewayError;
use crate::server::{Gateway, now_seconds};
use crate::state::LoadedBundle;

/// The `ext_authz` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzConfig {
    /// Where the gRPC service listens. Whoever reaches it can ask for any
    /// decision with any claims: only Envoy should.
    pub listen: SocketAddr,
}

/// The running gRPC service.
#[derive(Debug)]
pub struct ExtAuthzServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the service when the configuration has an `ext_authz` section.
/// It refuses to start where it could not decide as the Envoy filter does.
pub async fn start(
    gateway: &Arc<Gateway>,
    listener: Option<TcpListener>,
) -> Result<Option<ExtAuthzServer>, GatewayError> {
    let (Some(_), Some(listener)) = (&gateway.config.ext_authz, listener) else {
        return Ok(None);
    };
    if !gateway.config.authorization {
        return Err(GatewayError::Field(
            "`ext_authz` decides every request; it cannot run with `authorization: false`"
                .to_owned(),
        ));
    }
    if gateway
        .bundles
        .serving()
        .mapping
        .as_ref()
        .is_none_or(|mapping| mapping.config().identity.source.is_none())
    {
        return Err(GatewayError::Field(
            "`ext_authz` reads the claims where the mapping's `identity.source` says \
             (`{\"jwt_metadata\": {\"key\": \"jwt_payload\"}}` for `jwt_authn`); the mapping has none"
                .to_owned(),
        ));
    }
    let address = listener.local_addr().ok();
    let service = AuthorizationServer::new(CheckService {
        gateway: Arc::clone(gateway),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // One service, so no router: the server serves it directly.
        let served = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(service, incoming, async {
                let _ = stopped.await;
            })
            .await;
        // Envoy answers every request 403 while the service is gone
        // (`failure_mode_allow: false`).
        if let Err(err) = served {
            tracing::error!(error = %err, "the ext_authz service stopped");
        }
    });
    tracing::info!(listen = ?address, "ext_authz gRPC service started");
    Ok(Some(ExtAuthzServer { stop, task }))
}

impl ExtAuthzServer {
    /// Stops taking calls, lets the ones in flight finish for at most
    /// `drain`, then cuts the rest. The service's hold on the gateway (and
    /// its audit log) ends here.
    pub async fn stop(self, drain: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(drain, &mut task).await.is_err() {
            tracing::warn!("ext_authz calls did not finish in time; closing them");
            task.abort();
            let _ = task.await;
        }
    }
}

/// The `Authorization` service over the gateway.
struct CheckService {
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for CheckService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.decide(request.into_inner()).await,
        ))
    }
}

impl CheckService {
    /// One Check: one decision id, one audit record, one count.
    async fn decide(&self, check: CheckRequest) -> CheckResponse {
        let gateway = &self.gateway;
        let started = Instant::now();
        let decision_id = gateway.next_decision_id();
        let active = gateway.bundles.serving();
        // The configuration check makes `ext_authz` need a mapping.
        let Some(mapping) = active.mapping.as_ref() else {
            return self.malformed(&active, &decision_id, "no mapping", started);
        };
        let http = match read_check(mapping, check) {
            Ok(http) => http,
            Err(Refusal::NoIdentity) => {
                return self.refuse_unverified(&active, &decision_id, started);
            }
            Err(Refusal::Malformed(reason) | Refusal::Invalid(reason)) => {
                return self.malformed(&active, &decision_id, &reason, started);
            }
        };
        let (kind, request, response) = gateway.decide(&active, &http).await;
        if kind == DecisionKind::Unauthenticated {
            return self.refuse_unverified(&active, &decision_id, started);
        }
        let mut entry = gateway.audit_entry(&decision_id, kind, &active);
        (entry.request, entry.response) = (request, response);
        let principal = entry
            .request
            .as_ref()
            .map(|request| request.principal.to_string());
        // The claims go on to the audit record rather than be copied.
        if let Claims::Present(claims) = http.claims {
            entry.claims = Some(claims);
        }
        gateway.audit_decision(entry, started);
        match (kind, principal) {
            (DecisionKind::Allow, Some(principal)) => {
                allowed(mapping, &http.headers, &principal, &decision_id)
            }
            _ => denied(
                tonic::Code::PermissionDenied,
                HttpStatusCode::Forbidden,
                &json!({"decision": "deny", "decision_id": decision_id}),
                &[],
            ),
        }
    }

    /// No verified identity: 401, audited under the rate limit of
    /// unauthenticated requests, as the proxy does.
    fn refuse_unverified(
        &self,
        active: &LoadedBundle,
        decision_id: &str,
        started: Instant,
    ) -> CheckResponse {
        let entry = self.gateway.refused_entry(
            decision_id,
            DecisionKind::Unauthenticated,
            "no verified identity",
            active,
        );
        self.gateway.audit_decision(entry, started);
        denied(
            tonic::Code::Unauthenticated,
            HttpStatusCode::Unauthorized,
            &json!({"decision": "unauthenticated", "decision_id": decision_id}),
            &[("www-authenticate", "Bearer realm=\"cedar-edge\"")],
        )
    }

    /// A request that could be read two ways: 400 before any decision,
    /// audited under the rate limit of unauthenticated requests, as the
    /// proxy does, since anyone can send it.
    fn malformed(
        &self,
        active: &LoadedBundle,
        decision_id: &str,
        reason: &str,
        started: Instant,
    ) -> CheckResponse {
        let entry = self
            .gateway
            .refused_entry(decision_id, DecisionKind::Error, reason, active);
        if self.gateway.audit_unverified(entry, started) {
            tracing::info!(
                decision_id,
                reason,
                "ext_authz refused an ambiguous request"
            );
        }
        denied(
            tonic::Code::InvalidArgument,
            HttpStatusCode::BadRequest,
            &json!({"error": "bad request", "reason": reason, "decision_id": decision_id}),
            &[],
        )
    }
}

/// The request a Check describes, as the Envoy filter would read it from
/// Envoy; refused when its target or headers could be read two ways.
fn read_check(mapping: &Mapping, check: CheckRequest) -> Result<HttpRequest, Refusal> {
    let malformed = |what: &str| Refusal::Malformed(format!("the check request has no {what}"));
    let AttributeContext {
        source,
        request,
        metadata_context,
        ..
    } = check.attributes.ok_or_else(|| malformed("attributes"))?;
    let http = request
        .and_then(|request| request.http)
        .ok_or_else(|| malformed("HTTP request"))?;
    // Raw values, each header line on its own (`encode_raw_headers: true`);
    // otherwise Envoy's map, where repeats are joined with commas.
    let headers: Vec<(String, Vec<u8>)> = match http.header_map {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .into_iter()
            .map(|header| {
                let value = if header.raw_value.is_empty() {
                    header.value.into_bytes()
                } else {
                    header.raw_value
                };
                (header.key, value)
            })
            .collect(),
        _ => http
            .headers
            .into_iter()
            .map(|(name, value)| (name, value.into_bytes()))
            .collect(),
    };
    mapping.check_headers(&headers)?;
    // Envoy forwards the target it sent here: deciding another spelling of
    // it would decide a request the upstream never gets.
    let target = mapping.target(&http.path)?;
    if target.path_and_query() != http.path {
        return Err(Refusal::Malformed(
            "request target: the path is not in canonical form".to_owned(),
        ));
    }
    let claims = read_claims(mapping, metadata_context.as_ref(), &headers);
    let source_address = source
        .as_ref()
        .and_then(|peer| peer.address.as_ref())
        .and_then(socket_address);
    // The mTLS peer's URI SAN, what the filter reads as
    // `connection.uri_san_peer_certificate`.
    let peer_identity = source
        .map(|peer| peer.principal)
        .filter(|principal| !principal.is_empty());
    Ok(HttpRequest {
        method: http.method,
        path: http.path,
        headers,
        source_address,
        peer_identity,
        now_seconds: now_seconds(),
        claims,
    })
}

/// The verified claims, where the Envoy filter reads them: the mapping's
/// `identity.source`, from the metadata context Envoy sends
/// (`metadata_context_namespaces`) or from a header a trusted filter set.
fn read_claims(
    mapping: &Mapping,
    metadata: Option<&Metadata>,
    headers: &[(String, Vec<u8>)],
) -> Claims {
    match &mapping.config().identity.source {
        None => Claims::Invalid("`identity.source` is not configured".to_owned()),
        Some(ClaimsSource::JwtMetadata { namespace, key }) => {
            let payload = metadata
                .and_then(|metadata| metadata.filter_metadata.get(namespace))
                .and_then(|fields| fields.fields.get(key));
            match payload.map(to_json) {
                None => Claims::Absent,
                Some(Json::Object(claims)) => Claims::Present(claims),
                Some(_) => Claims::Invalid(format!("`{key}` is not an object")),
            }
        }
        Some(ClaimsSource::Header { name }) => headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map_or(Claims::Absent, |(_, value)| claims_from_header(value)),
    }
}

/// Integers beyond this are not exact in a double.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// A protobuf `Value` as JSON. Protobuf has only doubles, so integral
/// values within 2^53 become integers again (`iat`, `exp`), as the
/// filter's decoder does. Nesting is bounded by prost's decoding limit.
fn to_json(value: &ProtoValue) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(number)) => {
            if number.fract() == 0.0 && number.abs() < EXACT_INTEGER_LIMIT {
                Json::from(*number as i64)
            } else {
                serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StringValue(text)) => Json::String(text.clone()),
        Some(Kind::BoolValue(flag)) => Json::Bool(*flag),
        Some(Kind::StructValue(object)) => Json::Object(
            object
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), to_json(value)))
                .collect::<Map<String, Json>>(),
        ),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(to_json).collect()),
    }
}

/// The downstream address as `ip:port`, the form the filter reads from
/// `source.address`.
fn socket_address(peer: &Address) -> Option<String> {
    let Some(address::Address::SocketAddress(socket)) = &peer.address else {
        return None;
    };
    let port = match socket.port_specifier {
        Some(PortSpecifier::PortValue(port)) => u16::try_from(port).ok(),
        _ => None,
    };
    match (socket.address.parse::<IpAddr>(), port) {
        (Ok(ip), Some(port)) => Some(SocketAddr::new(ip, port).to_string()),
        (Ok(ip), None) => Some(ip.to_string()),
        // Not an address: the mapping refuses it where it reads it.
        (Err(_), _) => Some(socket.address.clone()),
    }
}

/// Allow: the upstream gets the verified principal and the decision id,
/// and none of the client's headers the mapping strips, as the gateway
/// would forward it.
fn allowed(
    mapping: &Mapping,
    headers: &[(String, Vec<u8>)],
    principal: &str,
    decision_id: &str,
) -> CheckResponse {
    let upstream = &mapping.config().upstream_headers;
    let set = [
        (upstream.principal.as_str(), principal),
        (upstream.decision_id.as_str(), decision_id),
    ];
    // A client's copy under the very name set here is overwritten; listing
    // it for removal too could remove the value set, whichever order Envoy
    // applies them in.
    let headers_to_remove = mapping
        .headers_to_remove(
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        )
        .into_iter()
        .filter(|name| !set.iter().any(|(set_name, _)| set_name == name))
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: set
                .iter()
                .map(|(name, value)| overwrite(name, value))
                .collect(),
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: None,
    }
}

/// Any refusal: the status and a JSON body, with the gRPC status Envoy
/// reads as "not allowed".
fn denied(
    code: tonic::Code,
    status: HttpStatusCode,
    body: &Json,
    extra_headers: &[(&str, &str)],
) -> CheckResponse {
    let headers = [("content-type", "application/json")]
        .iter()
        .chain(extra_headers)
        .map(|(name, value)| overwrite(name, value))
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers,
            body: body.to_string(),
        })),
        dynamic_metadata: None,
    }
}

/// A header that replaces any copy already there.
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_claims_come_back_as_integers() {
        let number = |value: f64| ProtoValue {
            kind: Some(Kind::NumberValue(value)),
        };
        assert_eq!(to_json(&number(1_700_000_000.0)), json!(1_700_000_000));
        assert_eq!(to_json(&number(1.5)), json!(1.5));
        assert_eq!(to_json(&number(f64::NAN)), Json::Null);
    }
}
