//! The measuring loop every runner follows, here for the Rust ones; the
//! Node and Python runners in `benches/scripts/peers` do the same steps.
//!
//! 1. One untimed pass over every request, which warms the engine up and
//!    checks each decision against the expected one.
//! 2. Timed passes over every request, one call timed at a time, until
//!    `seconds` have passed or `max_passes` passes are done (at least one).
//!    Every timed decision is checked too, outside the timed span.

use std::time::Instant;

use serde::Serialize;

/// How long to keep measuring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Stop starting passes after this many seconds of timed calls.
    pub seconds: f64,
    /// Never run more passes than this.
    pub max_passes: usize,
}

/// Latency of one engine over the timed calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Timed calls.
    pub calls: usize,
    /// Passes over the requests.
    pub passes: usize,
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// Mean, in nanoseconds.
    pub mean_ns: u64,
    /// Calls per second on one thread, from the mean.
    pub decisions_per_second: f64,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The engine failed a call.
    #[error("request {index}: {message}")]
    Call {
        /// Which request.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// The engine decided differently from our engine.
    #[error("{count} of {total} decisions differ from ours, first at requests {first:?}")]
    Mismatch {
        /// How many differ.
        count: usize,
        /// Out of how many.
        total: usize,
        /// The first few that differ.
        first: Vec<usize>,
    },
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or_default()
}

/// Summarizes samples in nanoseconds.
pub fn summarize(mut samples: Vec<u64>, passes: usize) -> Summary {
    samples.sort_unstable();
    let calls = samples.len();
    let total: u128 = samples.iter().map(|&ns| u128::from(ns)).sum();
    let mean_ns = u64::try_from(total / calls.max(1) as u128).unwrap_or(u64::MAX);
    Summary {
        calls,
        passes,
        p50_ns: percentile(&samples, 0.50),
        p99_ns: percentile(&samples, 0.99),
        mean_ns,
        decisions_per_second: if mean_ns == 0 {
            0.0
        } else {
            1e9 / mean_ns as f64
        },
    }
}

fn check(
    index: usize,
    got: Result<bool, String>,
    expected: &[bool],
    wrong: &mut Vec<usize>,
) -> Result<(), MeasureError> {
    let got = got.map_err(|message| MeasureError::Call { index, message })?;
    if expected.get(index) != Some(&got) {
        wrong.push(index);
    }
    Ok(())
}

fn mismatch(wrong: &[usize], total: usize) -> Result<(), MeasureError> {
    if wrong.is_empty() {
        return Ok(());
    }
    Err(MeasureError::Mismatch {
        count: wrong.len(),
        total,
        first: wrong.iter().take(8).copied().collect(),
    })
}

/// Checks `call` on every request, then times it; `call(i)` decides request
/// `i` and says whether it allowed.
pub fn measure(
    expected: &[bool],
    budget: Budget,
    mut call: impl FnMut(usize) -> Result<bool, String>,
) -> Result<Summary, MeasureError> {
    let total = expected.len();
    let mut wrong = Vec::new();
    for index in 0..total {
        check(index, call(index), expected, &mut wrong)?;
    }
    mismatch(&wrong, total)?;
    let mut samples = Vec::with_capacity(total.saturating_mul(budget.max_passes.min(64)));
    let started = Instant::now();
    let mut passes = 0;
    while passes == 0
        || (passes < budget.max_passes && started.elapsed().as_secs_f64() < budget.seconds)
    {
        for index in 0..total {
            let begun = Instant::now();
            let got = call(index);
            let spent = begun.elapsed();
            samples.push(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX));
            check(index, got, expected, &mut wrong)?;
        }
        passes += 1;
    }
    mismatch(&wrong, total)?;
    Ok(summarize(samples, passes))
}
