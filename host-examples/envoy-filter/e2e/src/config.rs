//! Renders plugin configurations (a bundle directory inlined next to a
//! mapping) and Envoy configurations around them. The shipped example
//! configurations are rendered by this same code, and a test fails when
//! they drift from their bundle or mapping.

use std::path::Path;

use cedar_edge_core::BundleSource;
use serde_json::Value;

/// The plugin configuration: the mapping file's JSON with the bundle in
/// `bundle`, inline.
pub fn plugin_config(bundle_dir: &Path, mapping: &Value) -> Value {
    let source = BundleSource::from_dir(bundle_dir).expect("the bundle reads");
    cedar_edge_envoy_filter::config::plugin_config(&source, mapping)
}

/// Where the rendered Envoy configuration listens and sends traffic.
#[derive(Debug, Clone)]
pub struct Ports {
    /// The listener.
    pub listener: u16,
    /// The admin interface.
    pub admin: u16,
}

/// A JWT provider for `jwt_authn`.
#[derive(Debug, Clone)]
pub struct JwtProvider {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// The JWKS, inline.
    pub jwks: String,
}

/// One upstream cluster and the path prefix routed to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The cluster name.
    pub name: String,
    /// The route prefix.
    pub prefix: String,
    /// The port on 127.0.0.1.
    pub port: u16,
}

/// What the connection manager and `jwt_authn` do before the cedar-edge
/// filter runs. The default is what the shipped examples set; tests turn
/// parts off to check that the filter holds on its own.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `normalize_path`, `merge_slashes` and
    /// `path_with_escaped_slashes_action: REJECT_REQUEST`.
    pub normalize_paths: bool,
    /// `xff_num_trusted_hops`: how many proxies in front of Envoy append to
    /// `X-Forwarded-For`.
    pub trusted_hops: u32,
    /// `jwt_authn`'s `forward`: whether the verified `Authorization`
    /// header stays on the request after verification.
    pub forward_token: bool,
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            normalize_paths: true,
            trusted_hops: 0,
            forward_token: false,
        }
    }
}

/// An Envoy configuration as shipped: `jwt_authn` (when a provider is
/// given), then the cedar-edge filter (when a plugin configuration is
/// given), then the router, in front of the upstreams.
pub fn envoy_yaml(
    ports: &Ports,
    jwt: Option<&JwtProvider>,
    plugin: Option<(&str, &Value)>,
    upstreams: &[Upstream],
) -> String {
    envoy_yaml_with(&Listener::default(), ports, jwt, plugin, upstreams)
}

/// [`envoy_yaml`] with the listener's settings chosen.
pub fn envoy_yaml_with(
    listener: &Listener,
    ports: &Ports,
    jwt: Option<&JwtProvider>,
    plugin: Option<(&str, &Value)>,
    upstreams: &[Upstream],
) -> String {
    let authorization = plugin.map_or_else(String::new, |(module, config)| {
        wasm_filter_yaml(module, config)
    });
    envoy_yaml_around(listener, ports, jwt, &authorization, upstreams)
}

/// The cedar-edge filter's entry in `http_filters`: `module` with the
/// plugin configuration `config`.
pub fn wasm_filter_yaml(module: &str, config: &Value) -> String {
    let pretty = serde_json::to_string_pretty(config).expect("JSON");
    format!(
        r#"- name: envoy.filters.http.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: cedar_edge
      root_id: cedar_edge
      fail_open: false
      vm_config:
        vm_id: cedar_edge
        runtime: envoy.wasm.runtime.v8
        code:
          local:
            filename: {module}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
{json}"#,
        module = yaml_string(module),
        json = indent(&pretty, 10),
    )
}

/// An Envoy configuration with `authorization` (entries of
/// `http_filters`, or nothing) between `jwt_authn` and the router.
pub fn envoy_yaml_around(
    listener: &Listener,
    ports: &Ports,
    jwt: Option<&JwtProvider>,
    authorization: &str,
    upstreams: &[Upstream],
) -> String {
    envoy_yaml_with_clusters(listener, ports, jwt, authorization, upstreams, "")
}

/// The cluster the `ext_authz` filter calls.
pub const EXT_AUTHZ_CLUSTER: &str = "cedar_edge_ext_authz";

/// Envoy asking the cedar-edge gateway's `ext_authz` gRPC service on
/// 127.0.0.1:`ext_authz_port` instead of running the filter: `jwt_authn`,
/// then `ext_authz`, then the router, in front of the upstreams.
pub fn envoy_yaml_ext_authz(
    listener: &Listener,
    ports: &Ports,
    jwt: Option<&JwtProvider>,
    upstreams: &[Upstream],
    ext_authz_port: u16,
) -> String {
    envoy_yaml_with_clusters(
        listener,
        ports,
        jwt,
        &ext_authz_filter_yaml(EXT_AUTHZ_CLUSTER),
        upstreams,
        &grpc_cluster_yaml(EXT_AUTHZ_CLUSTER, ext_authz_port),
    )
}

/// The `ext_authz` filter's entry in `http_filters`: a gRPC Check to
/// `cluster` for every request, denied when the service cannot answer.
pub fn ext_authz_filter_yaml(cluster: &str) -> String {
    format!(
        r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service:
      envoy_grpc:
        cluster_name: {cluster}
      timeout: 1s
    # Fail closed: no answer (the service down, slow or erring) is a 403.
    failure_mode_allow: false
    # The claims jwt_authn verified (payload_in_metadata) go with each
    # Check, where cedar-edge's mapping reads them.
    metadata_context_namespaces:
      - envoy.filters.http.jwt_authn
    # Header values as sent, a repeated header as separate entries, so the
    # service can refuse two copies of one.
    encode_raw_headers: true
"#
    )
}

/// A cluster that speaks HTTP/2 (gRPC) to 127.0.0.1:`port`.
pub fn grpc_cluster_yaml(name: &str, port: u16) -> String {
    static_cluster_yaml(name, port, true)
}

/// A static cluster to 127.0.0.1:`port`, over HTTP/2 when `http2` (a gRPC
/// service), otherwise Envoy's default HTTP/1.1.
fn static_cluster_yaml(name: &str, port: u16, http2: bool) -> String {
    let protocol = if http2 {
        r#"  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config:
        http2_protocol_options: {}
"#
    } else {
        ""
    };
    format!(
        r#"- name: {name}
  type: STATIC
  connect_timeout: 1s
{protocol}  load_assignment:
    cluster_name: {name}
    endpoints:
      - lb_endpoints:
          - endpoint:
              address:
                socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"#
    )
}

/// [`envoy_yaml_around`] with more clusters (YAML list entries) after the
/// upstreams', such as the one an `ext_authz` filter calls.
pub fn envoy_yaml_with_clusters(
    listener: &Listener,
    ports: &Ports,
    jwt: Option<&JwtProvider>,
    authorization: &str,
    upstreams: &[Upstream],
    extra_clusters: &str,
) -> String {
    let mut filters = String::new();
    if let Some(provider) = jwt {
        filters.push_str(&format!(
            r#"- name: envoy.filters.http.jwt_authn
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
    providers:
      idp:
        issuer: {issuer}
        audiences: [{audience}]
        local_jwks:
          inline_string: {jwks}
        payload_in_metadata: jwt_payload
        # The verified token is removed before the request goes on, so
        # an upstream never reads a credential other than the one checked.
        forward: {forward}
    rules:
      # A missing token reaches cedar-edge, which answers 401 where identity
      # is required; a bad token is refused here.
      - match: {{ prefix: "/" }}
        requires:
          requires_any:
            requirements:
              - provider_name: idp
              - allow_missing: {{}}
"#,
            issuer = yaml_string(&provider.issuer),
            audience = yaml_string(&provider.audience),
            jwks = yaml_string(&provider.jwks),
            forward = listener.forward_token,
        ));
    }
    filters.push_str(authorization);
    filters.push_str(
        r#"- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
    );
    let routes: String = upstreams
        .iter()
        .map(|upstream| {
            format!(
                "- match: {{ prefix: {} }}\n  route: {{ cluster: {} }}\n",
                yaml_string(&upstream.prefix),
                upstream.name
            )
        })
        .collect();
    let mut clusters: String = upstreams
        .iter()
        .map(|upstream| static_cluster_yaml(&upstream.name, upstream.port, false))
        .collect();
    clusters.push_str(extra_clusters);
    format!(
        r#"# Rendered by cedar-edge-envoy-e2e (src/config.rs); do not edit by hand.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {listener} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                # The client address (cedar-edge's `source_address`) is the
                # socket's peer: a client's own X-Forwarded-For is not
                # believed. Behind N proxies that each append to
                # X-Forwarded-For, set xff_num_trusted_hops: N.
                use_remote_address: true
                xff_num_trusted_hops: {trusted_hops}
                # Envoy makes its own x-request-id; cedar-edge's decision id
                # (x-cedar-decision-id) is the filter's own either way.
                preserve_external_request_id: false
                # One line per request; cedar-edge's decision record (JSON)
                # ends it, `-` when the filter did not decide.
                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: /dev/stdout
                      log_format:
                        text_format_source:
                          inline_string: "[%START_TIME%] %RESPONSE_CODE% %DURATION%ms %FILTER_STATE(wasm.cedar_edge.decision:PLAIN)%\n"
{normalization}                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
{routes}                http_filters:
{filters}  clusters:
{clusters}"#,
        admin = ports.admin,
        listener = ports.listener,
        trusted_hops = listener.trusted_hops,
        normalization = if listener.normalize_paths {
            NORMALIZATION
        } else {
            ""
        },
        routes = indent(&routes, 24),
        filters = indent(&filters, 18),
        clusters = indent(&clusters, 4),
    )
}

/// Path normalisation in the connection manager: one spelling per path
/// before any filter sees it. The cedar-edge filter refuses whatever is
/// still ambiguous, so a configuration without these is refused, not
/// bypassed.
const NORMALIZATION: &str =
    "                # One spelling per path before any filter runs: `.` and `..`
                # resolved, `//` merged, unreserved escapes decoded, `\\`
                # read as `/`, and an encoded `/` or `\\` refused with 400.
                # The cedar-edge filter refuses what is still ambiguous.
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: REJECT_REQUEST
";

/// Indents every non-empty line.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_owned()
            } else {
                format!("{pad}{line}\n")
            }
        })
        .collect()
}

/// A YAML double-quoted scalar: JSON string syntax is valid YAML.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string")
}
