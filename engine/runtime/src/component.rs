//! The component backend: one compiled component, pooled instances, and
//! per-call deadline and memory cap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use cedar_edge_engine::{Bundle, BundleSource, LoadError, Request, RequestLimits, Response};
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};
use wasmtime::component::{Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::backend::{Backend, BoxFuture};
use crate::bindings::{PolicyEngine, PolicyEnginePre, wit};
use crate::block_on::block_on;
use crate::cache;
use crate::convert;
use crate::error::{AuthorizeError, RuntimeError};

/// How the runtime compiles, limits and pools instances.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The longest a single call may run before it is interrupted.
    pub deadline: Duration,
    /// The longest loading a bundle into a fresh instance may take.
    pub load_deadline: Duration,
    /// How often the deadline clock ticks; deadlines are rounded up to it.
    pub epoch_tick: Duration,
    /// The most linear memory one instance may use, bundle included.
    pub memory_limit_bytes: usize,
    /// The most instances of one bundle alive at once; callers beyond it wait.
    pub max_instances: usize,
    /// Size and depth limits applied to every request.
    pub request_limits: RequestLimits,
    /// Where precompiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            load_deadline: Duration::from_secs(30),
            epoch_tick: Duration::from_millis(1),
            memory_limit_bytes: 256 * 1024 * 1024,
            max_instances: std::thread::available_parallelism().map_or(2, |n| n.get()),
            request_limits: RequestLimits::default(),
            cache_dir: cache::default_cache_dir(),
        }
    }
}

/// The state each instance's store carries.
struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether the cap was hit, so that the
/// resulting trap can be reported as what it is.
struct MemoryCap {
    limit_bytes: usize,
    used_bytes: usize,
    exceeded: bool,
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
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
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

struct RuntimeInner {
    engine: Engine,
    pre: PolicyEnginePre<InstanceState>,
    config: RuntimeConfig,
    deadline_ticks: u64,
    load_deadline_ticks: u64,
    _ticker: EpochTicker,
}

/// The compiled policy component, ready to be instantiated for any bundle.
#[derive(Clone)]
pub struct ComponentRuntime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for ComponentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRuntime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn ticks(duration: Duration, tick: Duration) -> u64 {
    let tick_nanos = tick.as_nanos().max(1);
    // One extra tick: the current one may be nearly over when the call starts.
    u64::try_from(duration.as_nanos().div_ceil(tick_nanos))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl ComponentRuntime {
    /// Prepares the component this crate was built with.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        Self::with_component(crate::GUEST_COMPONENT, config)
    }

    /// Prepares a given component binary, which must implement
    /// `cedar-edge:authz/policy-engine`.
    pub fn with_component(wasm: &[u8], config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let failed = |err: wasmtime::Error| RuntimeError::Component(format!("{err:#}"));
        let engine = Engine::new(&engine_config(&config)).map_err(failed)?;
        let component =
            cache::load_or_compile(&engine, wasm, config.cache_dir.as_deref()).map_err(failed)?;
        let mut linker = Linker::<InstanceState>::new(&engine);
        // The component's WASI imports are satisfied by a context that grants
        // nothing: no files, sockets, environment or arguments.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(failed)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(failed)?;
        let pre = PolicyEnginePre::new(instance_pre).map_err(failed)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                deadline_ticks: ticks(config.deadline, config.epoch_tick),
                load_deadline_ticks: ticks(config.load_deadline, config.epoch_tick),
                engine,
                pre,
                config,
                _ticker: ticker,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The names of the component's imports: what it could ask the host for.
    pub fn component_imports(&self) -> Vec<String> {
        let component = self.inner.pre.instance_pre().component();
        component
            .component_type()
            .imports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Makes a fresh instance with no bundle loaded, for measuring
    /// instantiation on its own.
    pub fn instantiate(&self) -> Result<BareInstance, AuthorizeError> {
        let mut store = self.inner.new_store();
        let bindings = self
            .inner
            .pre
            .instantiate(&mut store)
            .map_err(|err| AuthorizeError::Instantiate(format!("{err:#}")))?;
        Ok(BareInstance {
            _bindings: bindings,
            store,
        })
    }

    /// Validates a bundle, then loads it into a first instance; more
    /// instances are made on demand, up to `max_instances`.
    pub fn load_bundle(&self, source: &BundleSource) -> Result<ComponentBackend, RuntimeError> {
        // The component carries no validator: the same core checks the
        // bundle here first, strictly, and hands over the schema as JSON.
        Bundle::load(source, self.inner.config.request_limits)?;
        let mut prepared = source.clone();
        prepared.prepare_schema_json()?;
        let wit_source = convert::bundle_source(&prepared);
        let (slot, bundle_id, policy_ids) = self.inner.new_slot(&wit_source)?;
        let permits = self.inner.config.max_instances.max(1);
        let shared = BackendShared {
            runtime: Arc::clone(&self.inner),
            source: wit_source,
            bundle_id,
            policy_ids,
            idle: Mutex::new(vec![slot]),
            permits: Semaphore::new(permits),
            created: AtomicU64::new(1),
            discarded: AtomicU64::new(0),
            peak_memory_bytes: AtomicUsize::new(0),
        };
        Ok(ComponentBackend {
            shared: Arc::new(shared),
        })
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut engine_config = Config::new();
    engine_config.wasm_component_model(true);
    engine_config.epoch_interruption(true);
    let slots = u32::try_from(config.max_instances.max(1))
        .unwrap_or(u32::MAX)
        .saturating_mul(2)
        .saturating_add(4);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(4))
        .total_tables(slots.saturating_mul(16))
        .total_stacks(slots)
        .max_memory_size(config.memory_limit_bytes);
    engine_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    engine_config
}

impl RuntimeInner {
    fn new_store(&self) -> Store<InstanceState> {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = InstanceState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit_bytes: self.config.memory_limit_bytes,
                used_bytes: 0,
                exceeded: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.load_deadline_ticks);
        store
    }

    /// Instantiates and loads the bundle, returning its id and policy ids.
    fn new_slot(
        &self,
        source: &wit::BundleSource,
    ) -> Result<(Slot, String, Vec<String>), RuntimeError> {
        let mut store = self.new_store();
        let instantiate_failed =
            |err: wasmtime::Error| AuthorizeError::Instantiate(format!("{err:#}"));
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(instantiate_failed)?;
        let exports = bindings.cedar_edge_authz_authorizer().bundle();
        let limits = convert::limits(self.config.request_limits);
        let loaded = exports
            .call_load(&mut store, source, limits)
            .map_err(|err| self.classify(err, store.data(), self.config.load_deadline))?;
        let bundle = loaded.map_err(|diagnostics| LoadError {
            diagnostics: diagnostics.into_iter().map(convert::diagnostic).collect(),
        })?;
        let calls = (|| {
            let id = exports.call_id(&mut store, bundle)?;
            let policy_ids = exports.call_policy_ids(&mut store, bundle)?;
            wasmtime::Result::Ok((id, policy_ids))
        })();
        let (id, policy_ids) =
            calls.map_err(|err| self.classify(err, store.data(), self.config.load_deadline))?;
        Ok((
            Slot {
                store,
                bindings,
                bundle,
            },
            id,
            policy_ids,
        ))
    }

    /// Names the reason a call failed, from the trap and the store's state.
    fn classify(
        &self,
        err: wasmtime::Error,
        state: &InstanceState,
        deadline: Duration,
    ) -> AuthorizeError {
        if state.memory.exceeded {
            AuthorizeError::MemoryLimit {
                limit_bytes: state.memory.limit_bytes,
            }
        } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            AuthorizeError::Timeout(deadline)
        } else {
            AuthorizeError::Trap(format!("{err:#}"))
        }
    }
}

/// An instance with no bundle, from [`ComponentRuntime::instantiate`].
pub struct BareInstance {
    _bindings: PolicyEngine,
    store: Store<InstanceState>,
}

impl std::fmt::Debug for BareInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareInstance")
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl BareInstance {
    /// The linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.used_bytes
    }
}

/// One pooled instance with the bundle loaded.
struct Slot {
    store: Store<InstanceState>,
    bindings: PolicyEngine,
    bundle: ResourceAny,
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

    /// Runs `call` on an idle instance, or a new one. The permit held by the
    /// caller guarantees the pool is not over its size. An instance whose call
    /// failed is dropped, so a trap can never leave bad state behind.
    /// Runs `call` on an idle instance. The deadline covers `decisions`
    /// decisions, so a batch gets the per-decision budget for each request.
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
                Err(runtime.classify(err, slot.store.data(), budget))
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
