//! Times a running Cerbos server on a peer-comparison workload written by
//! `peer-workload`: one `POST /api/check/resources` per request, over one
//! keep-alive loopback connection, with a minimal HTTP/1.1 client so the
//! client adds as little as possible. Each timed call is: write the
//! pre-rendered request, read the answer, parse its JSON. Before timing,
//! every decision is checked against ours. Prints one JSON object on stdout.
//!
//! `benches/scripts/peers/run.py` starts and stops the server.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use cedar_edge_benches::peers::cerbos;
use cedar_edge_benches::peers::model::{ModelEntities, RequestsFile, by_uid};
use cedar_edge_benches::peers::timing::{self, Budget, Summary};
use clap::Parser;
use serde::Serialize;

/// Time a Cerbos server on a workload directory.
#[derive(Debug, Parser)]
struct Args {
    /// The workload directory `peer-workload` wrote.
    #[arg(long)]
    workload: PathBuf,
    /// The server's HTTP address on loopback.
    #[arg(long, default_value = "127.0.0.1:3592")]
    addr: String,
    /// Seconds of timed passes (at least one pass runs).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// At most this many timed passes.
    #[arg(long, default_value_t = 50)]
    max_passes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    engine: &'static str,
    how: &'static str,
    summary: Summary,
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request and returns the answer's body.
    fn exchange(&mut self, request: &[u8]) -> Result<&[u8], String> {
        self.writer
            .write_all(request)
            .map_err(|err| format!("write: {err}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut status = None;
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_line(&mut self.line)
                .map_err(|err| format!("read: {err}"))?;
            if read == 0 {
                return Err("the server closed the connection".to_owned());
            }
            let line = self.line.trim_end();
            if status.is_none() {
                status = line.split(' ').nth(1).map(str::to_owned);
                continue;
            }
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        self.body.clear();
        if chunked {
            self.read_chunks()?;
        } else {
            let length = length.ok_or("an answer without a length")?;
            self.body.resize(length, 0);
            self.reader
                .read_exact(&mut self.body)
                .map_err(|err| format!("read: {err}"))?;
        }
        if status.as_deref() != Some("200") {
            return Err(format!(
                "HTTP {}: {}",
                status.unwrap_or_default(),
                String::from_utf8_lossy(&self.body)
            ));
        }
        Ok(&self.body)
    }

    fn read_chunks(&mut self) -> Result<(), String> {
        loop {
            self.line.clear();
            self.reader
                .read_line(&mut self.line)
                .map_err(|err| format!("read: {err}"))?;
            let size = usize::from_str_radix(self.line.trim(), 16)
                .map_err(|err| format!("chunk size: {err}"))?;
            let start = self.body.len();
            self.body.resize(start + size, 0);
            if let Some(chunk) = self.body.get_mut(start..) {
                self.reader
                    .read_exact(chunk)
                    .map_err(|err| format!("read: {err}"))?;
            }
            self.line.clear();
            self.reader
                .read_line(&mut self.line)
                .map_err(|err| format!("read: {err}"))?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = &args.workload;
    let requests: RequestsFile = serde_json::from_str(
        &fs::read_to_string(dir.join("requests.json")).context("reading requests.json")?,
    )?;
    let model: ModelEntities = serde_json::from_str(
        &fs::read_to_string(dir.join("model.json")).context("reading model.json")?,
    )?;
    let entities = by_uid(&model.entities);
    let wire: Vec<(Vec<u8>, String)> = requests
        .requests
        .iter()
        .enumerate()
        .map(|(index, request)| {
            let body = serde_json::to_string(&cerbos::check_body(request, &entities, index)?)?;
            let head = format!(
                "POST /api/check/resources HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                args.addr,
                body.len()
            );
            Ok(([head.into_bytes(), body.into_bytes()].concat(), request.action.id.clone()))
        })
        .collect::<Result<_>>()?;
    let expected: Vec<bool> = requests
        .requests
        .iter()
        .map(|request| request.expects_allow())
        .collect();
    let mut connection = Connection::open(&args.addr)?;
    let summary = timing::measure(
        &expected,
        Budget {
            seconds: args.seconds,
            max_passes: args.max_passes,
        },
        |index| {
            let (request, action) = wire
                .get(index)
                .ok_or_else(|| format!("no request {index}"))?;
            let body = connection.exchange(request)?;
            let answer: serde_json::Value =
                serde_json::from_slice(body).map_err(|err| format!("answer: {err}"))?;
            cerbos::decision(&answer, action)
                .ok_or_else(|| format!("no effect for `{action}` in {answer}"))
        },
    )
    .context("cerbos")?;
    if summary.calls == 0 {
        bail!("no calls were timed");
    }
    println!(
        "{}",
        serde_json::to_string(&Report {
            engine: "cerbos",
            how: "HTTP/1.1 on loopback, one keep-alive connection, one CheckResources request per call; the time includes the round trip and parsing the answer",
            summary,
        })?
    );
    Ok(())
}
