//! `wrk` runs and the figures read from its output, and the CPU time a
//! process spent serving them.

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
    /// Requests completed.
    pub requests: u64,
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
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    Sample {
        requests_per_second: field("Requests/sec:"),
        p50_us: field("50%"),
        p99_us: field("99%"),
        requests,
    }
}

/// The CPU time (user and system, all threads) a process has used so far,
/// in microseconds, from `/proc/<pid>/stat`.
pub fn process_cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("cannot read /proc/{pid}/stat: {err}"));
    // The command name, in parentheses, may hold spaces: count fields
    // after its closing parenthesis, where `state` is field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |field: usize| -> f64 {
        fields
            .get(field - 3)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no field {field} in /proc/{pid}/stat: {stat}"))
    };
    (ticks(14) + ticks(15)) * 1e6 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
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
/// Each target is served by its own process (by pid): the table adds that
/// process's CPU time per request, read before and after each round, so it
/// counts only the requests wrk completed.
pub fn compare_with_cpu(
    targets: [(&str, &str, u32); 2],
    header: &str,
    seconds: u32,
    connections: u32,
    rounds: usize,
) {
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_us = [0.0_f64; 2];
    for _ in 0..rounds {
        for (index, (_, url, pid)) in targets.iter().enumerate() {
            let before = process_cpu_us(*pid);
            let sample = wrk(url, header, seconds, connections);
            if let Some(total) = cpu_us.get_mut(index) {
                *total += process_cpu_us(*pid) - before;
            }
            if let Some(slot) = samples.get_mut(index) {
                slot.push(sample);
            }
        }
    }
    let average = |samples: &[Sample], pick: fn(&Sample) -> f64| {
        samples.iter().map(pick).sum::<f64>() / samples.len().max(1) as f64
    };
    let rows: Vec<Row> = samples
        .iter()
        .zip(cpu_us)
        .map(|(samples, cpu)| {
            let requests: u64 = samples.iter().map(|sample| sample.requests).sum();
            Row {
                requests_per_second: average(samples, |s| s.requests_per_second),
                p50_us: average(samples, |s| s.p50_us),
                p99_us: average(samples, |s| s.p99_us),
                cpu_us: cpu / requests.max(1) as f64,
            }
        })
        .collect();
    println!("wrk -t1 -c{connections} -d{seconds}s, {rounds} alternating rounds each\n");
    println!(
        "| target | requests/s | p50 | p99 | CPU per request |\n| --- | --- | --- | --- | --- |"
    );
    for ((name, _, _), row) in targets.iter().zip(&rows) {
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs |",
            row.requests_per_second, row.p50_us, row.p99_us, row.cpu_us
        );
    }
    if let [base, other] = rows.as_slice() {
        println!(
            "| difference | {:+.1}% | {:+.0} µs ({:+.1}%) | {:+.0} µs ({:+.1}%) | {:+.1} µs |",
            100.0 * (other.requests_per_second - base.requests_per_second)
                / base.requests_per_second,
            other.p50_us - base.p50_us,
            100.0 * (other.p50_us - base.p50_us) / base.p50_us,
            other.p99_us - base.p99_us,
            100.0 * (other.p99_us - base.p99_us) / base.p99_us,
            other.cpu_us - base.cpu_us,
        );
    }
}

/// One target's averages over its rounds.
struct Row {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU microseconds per completed request.
    cpu_us: f64,
}
