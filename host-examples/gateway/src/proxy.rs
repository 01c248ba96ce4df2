//! The HTTP client side: forwarding to upstreams, and fetching JWKS.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Every response body the gateway sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The pooled client for upstreams.
pub type UpstreamClient = Client<HttpConnector, Incoming>;

/// A keep-alive client for upstream traffic.
pub fn upstream_client() -> UpstreamClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// GETs a URL and returns the body as text (for JWKS).
pub async fn fetch_text(url: &str) -> Result<String, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().map_err(|err| format!("`{url}`: {err}"))?;
    let response = client
        .get(uri)
        .await
        .map_err(|err| format!("`{url}`: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("`{url}` answered {}", response.status()));
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("`{url}`: {err}"))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("`{url}`: not UTF-8"))
}
