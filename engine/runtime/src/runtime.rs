//! The compiled component and its wasmtime engine: configured once,
//! precompiled once (or read from the authenticated cache), linked once into an
//! `InstancePre` that every instance of every bundle starts from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cedar_edge_core::{Bundle, BundleSource, LoadError, RequestLimits};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{PolicyEngine, PolicyEnginePre, wit};
use crate::cache::{self, CacheOutcome};
use crate::convert;
use crate::error::{AuthorizeError, RuntimeError};
use crate::limits::{EpochTicker, MemoryCap, ticks};
use crate::pool::{ComponentBackend, Slot};

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
    /// The folder is created 0700 and used only while it belongs to the
    /// current user and nobody else may write to it; entries are
    /// authenticated with a key kept in it (see the crate's README).
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
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub(crate) struct RuntimeInner {
    engine: Engine,
    pre: PolicyEnginePre<InstanceState>,
    pub(crate) config: RuntimeConfig,
    cache_outcome: CacheOutcome,
    pub(crate) deadline_ticks: u64,
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
        let (component, cache_outcome) =
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
                cache_outcome,
                _ticker: ticker,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Whether the compiled component came from the cache, and why not when
    /// it did not.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.inner.cache_outcome
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

    /// Loads a bundle that the host has already parsed and validated into a
    /// first instance; more instances are made on demand, up to
    /// `max_instances`. The guest carries no validator and is handed the
    /// validated files, so nothing is validated twice.
    pub fn load_bundle(&self, bundle: &Bundle) -> Result<ComponentBackend, RuntimeError> {
        let wit_source = convert::bundle_source(bundle.validated_source());
        let loaded = self.inner.new_slot(&wit_source)?;
        self.backend(bundle, wit_source, loaded)
    }

    /// The backend around a first instance, once the guest's bundle id is
    /// known to be the host's.
    fn backend(
        &self,
        bundle: &Bundle,
        wit_source: wit::BundleSource,
        (slot, bundle_id, policy_ids): (Slot, String, Vec<String>),
    ) -> Result<ComponentBackend, RuntimeError> {
        if bundle_id != bundle.id() {
            return Err(RuntimeError::Component(format!(
                "the component computed bundle id `{bundle_id}` where the host computed `{}`",
                bundle.id()
            )));
        }
        Ok(ComponentBackend::new(
            Arc::clone(&self.inner),
            wit_source,
            slot,
            bundle_id,
            policy_ids,
        ))
    }

    /// Parses and validates a bundle, and loads it: for callers that need
    /// only the component backend.
    pub fn load_source(&self, source: &BundleSource) -> Result<ComponentBackend, RuntimeError> {
        self.load_with_native(source).map(|(_, backend)| backend)
    }

    /// Loads a bundle natively and into the component at once: while the
    /// host parses and validates it, the guest parses the same files on a
    /// second thread, so a load takes about as long as the slower of the
    /// two instead of their sum. The guest's instance is kept only when the
    /// host's validation passes and both compute the same bundle id; any
    /// problem is reported as the native load reports it.
    pub fn load_with_native(
        &self,
        source: &BundleSource,
    ) -> Result<(Bundle, ComponentBackend), RuntimeError> {
        let limits = self.inner.config.request_limits;
        let mut hand_over = source.clone();
        if hand_over.prepare_schema_json().is_err() {
            // The schema does not parse: the native load says where.
            let bundle = Bundle::load(source, limits)?;
            let backend = self.load_bundle(&bundle)?;
            return Ok((bundle, backend));
        }
        let wit_source = convert::bundle_source(&hand_over);
        let (native, guest) = std::thread::scope(|scope| {
            let guest = scope.spawn(|| self.inner.new_slot(&wit_source));
            let native = Bundle::load(source, limits);
            (native, guest.join())
        });
        let bundle = native?;
        let loaded = guest.map_err(|_| {
            RuntimeError::Component("the thread loading the guest panicked".to_owned())
        })??;
        let backend = self.backend(&bundle, wit_source, loaded)?;
        Ok((bundle, backend))
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
            memory: MemoryCap::new(self.config.memory_limit_bytes),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.load_deadline_ticks);
        store
    }

    /// Instantiates and loads the bundle, returning its id and policy ids.
    pub(crate) fn new_slot(
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
        let deadline = self.config.load_deadline;
        let loaded = exports
            .call_load(&mut store, source, limits)
            .map_err(|err| store.data().memory.classify(err, deadline))?;
        let bundle = loaded.map_err(|diagnostics| LoadError {
            diagnostics: diagnostics.into_iter().map(convert::diagnostic).collect(),
        })?;
        let calls = (|| {
            let id = exports.call_id(&mut store, bundle)?;
            let policy_ids = exports.call_policy_ids(&mut store, bundle)?;
            wasmtime::Result::Ok((id, policy_ids))
        })();
        let (id, policy_ids) = calls.map_err(|err| store.data().memory.classify(err, deadline))?;
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
