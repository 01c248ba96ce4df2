//! One bundle decided through a pool of instances that have loaded it.
//! Each call takes an idle instance (or makes one, up to the cap), under the
//! per-call deadline; an instance whose call failed is dropped, so a trap
//! can never leave bad state behind.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_edge_core::{Backend, BoxFuture, Request, Response};
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::bindings::{PolicyEngine, wit};
use crate::block_on::block_on;
use crate::convert;
use crate::error::{AuthorizeError, RuntimeError};
use crate::runtime::{InstanceState, RuntimeInner};

/// One pooled instance with the bundle loaded.
pub(crate) struct Slot {
    pub(crate) store: Store<InstanceState>,
    pub(crate) bindings: PolicyEngine,
    pub(crate) bundle: ResourceAny,
}

struct BackendShared {
    runtime: Arc<RuntimeInner>,
    source: wit::BundleSource,
    bundle_id: String,
    policy_ids: Vec<String>,
    idle: Mutex<Vec<Slot>>,
    permits: Semaphore,
    created: AtomicU64,
    discarded: AtomicU64,
    peak_memory_bytes: AtomicUsize,
}

/// Counters that show how the instance pool behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances made, the first included.
    pub instances_created: u64,
    /// Instances thrown away after a trap, timeout or memory exhaustion.
    pub instances_discarded: u64,
    /// Instances waiting for work now.
    pub instances_idle: usize,
    /// The most linear memory any instance has held.
    pub peak_memory_bytes: usize,
}

/// One bundle, decided through pooled instances of the component.
#[derive(Clone)]
pub struct ComponentBackend {
    shared: Arc<BackendShared>,
}

impl std::fmt::Debug for ComponentBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentBackend")
            .field("bundle_id", &self.shared.bundle_id)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ComponentBackend {
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        source: wit::BundleSource,
        first: Slot,
        bundle_id: String,
        policy_ids: Vec<String>,
    ) -> Self {
        let permits = runtime.config.max_instances.max(1);
        Self {
            shared: Arc::new(BackendShared {
                runtime,
                source,
                bundle_id,
                policy_ids,
                idle: Mutex::new(vec![first]),
                permits: Semaphore::new(permits),
                created: AtomicU64::new(1),
                discarded: AtomicU64::new(0),
                peak_memory_bytes: AtomicUsize::new(0),
            }),
        }
    }

    /// How the pool has behaved so far.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        PoolStats {
            instances_created: shared.created.load(Ordering::Relaxed),
            instances_discarded: shared.discarded.load(Ordering::Relaxed),
            instances_idle: shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            peak_memory_bytes: shared.peak_memory_bytes.load(Ordering::Relaxed),
        }
    }

    fn acquire_blocking(&self) -> Result<SemaphorePermit<'_>, AuthorizeError> {
        match self.shared.permits.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::NoPermits) => {
                block_on(self.shared.permits.acquire()).map_err(|_| pool_closed())
            }
            Err(TryAcquireError::Closed) => Err(pool_closed()),
        }
    }

    /// Runs `call` on an idle instance, or a new one; the permit held by the
    /// caller keeps the pool within its size. The deadline covers
    /// `decisions` decisions, so a batch gets the per-decision budget for
    /// each request.
    fn with_instance<R>(
        &self,
        _permit: SemaphorePermit<'_>,
        decisions: usize,
        call: impl FnOnce(&mut Slot) -> wasmtime::Result<R>,
    ) -> Result<R, AuthorizeError> {
        let decisions = u32::try_from(decisions.max(1)).unwrap_or(u32::MAX);
        let shared = &self.shared;
        let runtime = &shared.runtime;
        let idle = shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut slot = match idle {
            Some(slot) => slot,
            None => {
                let (slot, _, _) = runtime.new_slot(&shared.source).map_err(|err| match err {
                    RuntimeError::Authorize(err) => err,
                    other => AuthorizeError::Instantiate(other.to_string()),
                })?;
                shared.created.fetch_add(1, Ordering::Relaxed);
                slot
            }
        };
        slot.store
            .set_epoch_deadline(runtime.deadline_ticks.saturating_mul(u64::from(decisions)));
        let result = call(&mut slot);
        let used = slot.store.data().memory.used_bytes;
        shared.peak_memory_bytes.fetch_max(used, Ordering::Relaxed);
        match result {
            Ok(value) => {
                shared
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(slot);
                Ok(value)
            }
            Err(err) => {
                shared.discarded.fetch_add(1, Ordering::Relaxed);
                let budget = runtime.config.deadline.saturating_mul(decisions);
                Err(slot.store.data().memory.classify(err, budget))
            }
        }
    }

    fn call_authorize(
        &self,
        permit: SemaphorePermit<'_>,
        request: &Request,
    ) -> Result<Response, AuthorizeError> {
        let request = convert::request(request);
        let answer = self.with_instance(permit, 1, |slot| {
            let exports = slot.bindings.cedar_edge_authz_authorizer().bundle();
            exports.call_authorize(&mut slot.store, slot.bundle, &request)
        })?;
        answer
            .map(convert::response)
            .map_err(|err| AuthorizeError::Request(convert::request_error(err)))
    }
}

fn pool_closed() -> AuthorizeError {
    AuthorizeError::Instantiate("the instance pool is shut down".to_owned())
}

impl Backend for ComponentBackend {
    fn bundle_id(&self) -> &str {
        &self.shared.bundle_id
    }

    fn policy_ids(&self) -> &[String] {
        &self.shared.policy_ids
    }

    fn authorize(&self, request: &Request) -> Result<Response, AuthorizeError> {
        let permit = self.acquire_blocking()?;
        self.call_authorize(permit, request)
    }

    fn authorize_batch(&self, requests: &[Request]) -> Vec<Result<Response, AuthorizeError>> {
        let wit_requests: Vec<wit::Request> = requests.iter().map(convert::request).collect();
        let answers = self.acquire_blocking().and_then(|permit| {
            self.with_instance(permit, requests.len(), |slot| {
                let exports = slot.bindings.cedar_edge_authz_authorizer().bundle();
                exports.call_authorize_batch(&mut slot.store, slot.bundle, &wit_requests)
            })
        });
        match answers {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| {
                    answer
                        .map(convert::response)
                        .map_err(|err| AuthorizeError::Request(convert::request_error(err)))
                })
                .collect(),
            // The whole batch failed together: every request gets the error.
            Err(err) => requests.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    /// Waits for a free instance without blocking the async runtime, then
    /// decides on the calling task: a decision takes microseconds, and the
    /// deadline bounds the worst case.
    fn authorize_async<'a>(
        &'a self,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Response, AuthorizeError>> {
        Box::pin(async move {
            let permit = self
                .shared
                .permits
                .acquire()
                .await
                .map_err(|_| pool_closed())?;
            self.call_authorize(permit, request)
        })
    }
}
