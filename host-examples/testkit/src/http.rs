//! A raw HTTP/1.1 client over loopback: enough to send exact bytes
//! (including invalid ones) and read status, headers and body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request with raw header bytes and reads the whole reply.
pub fn send(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Reply {
    try_send(port, method, path, headers).expect("connect")
}

/// [`send`], or `None` when nothing accepts the connection or the request
/// cannot be written (a server that was just killed, say).
pub fn try_send(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Option<Reply> {
    try_send_with_body(port, method, path, headers, b"")
}

/// Sends one request with raw header bytes and a body (its
/// `content-length` is added) and reads the whole reply.
pub fn send_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Reply {
    try_send_with_body(port, method, path, headers, body).expect("connect")
}

fn try_send_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Option<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    exchange(stream, method, path, headers, body)
}

/// Writes one request (its `content-length` added) on an open stream, such
/// as a TLS session, and reads the reply; `None` when the request cannot be
/// written.
pub fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Option<Reply> {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n")
            .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).ok()?;
    stream.flush().ok()?;
    // Read up to the end of the body, not to EOF: Envoy waits for the client
    // to close first (its delayed-close timeout is a second).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = complete_length(&raw) {
            raw.truncate(end);
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => raw.extend_from_slice(chunk.get(..read).unwrap_or_default()),
        }
    }
    Some(parse(&raw))
}

/// The length of a complete response in `raw`, once headers and a
/// `content-length` body have arrived.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(raw.get(..head_end)?);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let body = raw.get(head_end..)?;
        let end = body.windows(5).position(|window| window == b"0\r\n\r\n")?;
        return Some(head_end + end + 5);
    }
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    (raw.len() >= head_end + length).then_some(head_end + length)
}

/// Sends a request with text headers.
pub fn get(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let raw: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_bytes()))
        .collect();
    send(port, method, path, &raw)
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    Reply {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
        headers,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(rest.get(..size).unwrap_or_default());
        body = rest
            .get(size..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
    out
}
