//! What bounds one instance: a memory cap that remembers it was hit, an
//! epoch clock for deadlines, and the naming of a failed call's cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, Trap};

use crate::error::AuthorizeError;

/// Caps linear memory and remembers whether the cap was hit, so that the
/// resulting trap can be reported as what it is.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    pub(crate) limit_bytes: usize,
    pub(crate) used_bytes: usize,
    pub(crate) exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            used_bytes: 0,
            exceeded: false,
        }
    }

    /// Names the reason a call failed, from the trap and this cap's state.
    pub(crate) fn classify(&self, err: wasmtime::Error, deadline: Duration) -> AuthorizeError {
        if self.exceeded {
            AuthorizeError::MemoryLimit {
                limit_bytes: self.limit_bytes,
            }
        } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            AuthorizeError::Timeout(deadline)
        } else {
            AuthorizeError::Trap(format!("{err:#}"))
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if after > self.limit_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached",
                self.limit_bytes
            ));
        }
        self.used_bytes = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Advances the engine's epoch on a fixed tick; deadlines count these ticks.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cedar-edge-epoch".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A duration as epoch ticks, rounded up.
pub(crate) fn ticks(duration: Duration, tick: Duration) -> u64 {
    let tick_nanos = tick.as_nanos().max(1);
    // One extra tick: the current one may be nearly over when the call starts.
    u64::try_from(duration.as_nanos().div_ceil(tick_nanos))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
