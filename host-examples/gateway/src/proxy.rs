//! The HTTP client side: forwarding to upstreams, and fetching JWKS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

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

/// How long a JWKS endpoint may take to accept the connection.
const FETCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole JWKS fetch may take: connection, TLS, headers and body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS body read: real ones are a few KiB.
pub const FETCH_MAX_BYTES: usize = 1024 * 1024;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}`: {reason}")]
pub struct FetchError {
    /// What was fetched.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Fetches JWKS documents: `https://` through rustls (with the ring
/// provider), or plain `http://` where the configuration allowed it
/// (loopback only). Each fetch is bounded in time and size, so a hanging
/// or endless endpoint fails instead of stalling start-up or filling
/// memory, and nothing of it outlives the fetch.
#[derive(Clone)]
pub struct JwksClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for JwksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksClient").finish_non_exhaustive()
    }
}

impl JwksClient {
    /// A client that trusts the CAs in `ca_file` (PEM), or the public web
    /// roots when there is none.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let roots = match ca_file {
            Some(path) => crate::tls::read_roots(path)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
        };
        let provider = crate::tls::provider();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: Arc::new(tls) })
    }

    /// GETs a URL and returns the body as text, within [`FETCH_TIMEOUT`]
    /// and [`FETCH_MAX_BYTES`].
    pub async fn fetch_text(&self, url: &str) -> Result<String, FetchError> {
        let fail = |reason: String| FetchError {
            url: url.to_owned(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|err| fail(format!("{err}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail("is not an http(s) URL".to_owned())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| fail("has no host".to_owned()))?
            .to_string();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let request = hyper::Request::get(uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|err| fail(err.to_string()))?;
        let fetch = async {
            let tcp = tokio::time::timeout(
                FETCH_CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| format!("no connection within {} s", FETCH_CONNECT_TIMEOUT.as_secs()))?
            .map_err(|err| format!("cannot connect: {err}"))?;
            if https {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|err| format!("TLS: {err}"))?;
                exchange(TokioIo::new(tls), request).await
            } else {
                exchange(TokioIo::new(tcp), request).await
            }
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                fail(format!(
                    "no complete answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })?
            .map_err(fail)
    }
}

/// One request on a fresh connection; the connection is driven here, so
/// it ends with the fetch (or with the caller's timeout).
async fn exchange<I>(io: I, request: hyper::Request<Empty<Bytes>>) -> Result<String, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| err.to_string())?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let bytes = http_body_util::Limited::new(response.into_body(), FETCH_MAX_BYTES)
            .collect()
            .await
            .map_err(|err| format!("{err} (the cap is {FETCH_MAX_BYTES} bytes)"))?
            .to_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    };
    let mut answer = std::pin::pin!(answer);
    let mut connection = std::pin::pin!(connection);
    let mut driving = true;
    loop {
        tokio::select! {
            result = &mut answer => return result,
            // The connection may end first (`connection: close`); the body
            // already read is still delivered.
            _ = &mut connection, if driving => driving = false,
        }
    }
}
