//! `wrk` runs and the figures read from its output.

use std::process::Command;

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Requests per second.
    pub requests_per_second: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
}

/// Loads `url` with `wrk -t1`, a header, for `seconds` over `connections`;
/// panics if any response was not 2xx, since a failing run measures nothing.
pub fn wrk(url: &str, header: &str, seconds: u32, connections: u32) -> Sample {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            header,
            url,
        ])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "some requests failed:\n{text}");
    let field = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"));
        let value = line.trim_start_matches(prefix).trim();
        duration_us(value).unwrap_or_else(|| value.parse().expect("a number"))
    };
    Sample {
        requests_per_second: field("Requests/sec:"),
        p50_us: field("50%"),
        p99_us: field("99%"),
    }
}

fn duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Runs two targets alternately for `rounds` each and prints a markdown
/// table of the averages and their difference (second against first).
pub fn compare(
    targets: [(&str, &str); 2],
    header: &str,
    seconds: u32,
    connections: u32,
    rounds: usize,
) {
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (index, (_, url)) in targets.iter().enumerate() {
            if let Some(slot) = samples.get_mut(index) {
                slot.push(wrk(url, header, seconds, connections));
            }
        }
    }
    let average = |samples: &[Sample], pick: fn(&Sample) -> f64| {
        samples.iter().map(pick).sum::<f64>() / samples.len().max(1) as f64
    };
    println!("wrk -t1 -c{connections} -d{seconds}s, {rounds} alternating rounds each\n");
    println!("| target | requests/s | p50 | p99 |\n| --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for ((name, _), samples) in targets.iter().zip(&samples) {
        let row = (
            average(samples, |s| s.requests_per_second),
            average(samples, |s| s.p50_us),
            average(samples, |s| s.p99_us),
        );
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs |",
            row.0, row.1, row.2
        );
        rows.push(row);
    }
    if let [base, other] = rows.as_slice() {
        println!(
            "| difference | {:+.1}% | {:+.0} µs ({:+.1}%) | {:+.0} µs ({:+.1}%) |",
            100.0 * (other.0 - base.0) / base.0,
            other.1 - base.1,
            100.0 * (other.1 - base.1) / base.1,
            other.2 - base.2,
            100.0 * (other.2 - base.2) / base.2,
        );
    }
}
