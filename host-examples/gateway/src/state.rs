//! The serving bundle and its replacement. A load reads and validates the
//! bundle once; the mapping and the backend share that one `Arc<Bundle>`.
//! A reload builds the next bundle completely (mapping checked against its
//! schema, component loaded) before one atomic swap; a bundle that fails
//! anywhere is refused and the last good one keeps serving.
//!
//! Polled changes apply only once stable: the same content hash seen at two
//! polls at least `reload_settle_ms` apart. A deploy that writes its files
//! one by one (a forbid moved from one file to another) is then never
//! served half-written, as long as it finishes within the settle time.
//! SIGHUP, the operator saying the bundle is complete, applies at once.
//! Loads run on their own thread with a large stack, after the core's
//! nesting pre-check, so a policy nested too deep is refused like any
//! other broken bundle instead of overflowing a stack.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cedar_edge_core::{Backend, Bundle, NativeBackend, RequestLimits};
use cedar_edge_mapping::{Mapping, MappingConfig};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};

use crate::config::BackendKind;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::source::{Fetched, Fetcher, Origin};

/// One loaded bundle with its mapping and backend.
pub struct LoadedBundle {
    /// The bundle, parsed and validated once.
    pub bundle: Arc<Bundle>,
    /// The claims and route mapping over it, when the proxy or `ext_authz`
    /// needs one.
    pub mapping: Option<Mapping>,
    /// What decides.
    pub backend: Box<dyn Backend>,
    /// Where it came from: source, revision, signer.
    pub origin: Origin,
}

impl LoadedBundle {
    /// The bundle's content hash.
    pub fn bundle_id(&self) -> &str {
        self.bundle.id()
    }

    /// The OCI manifest digest or Git commit it was fetched at.
    pub fn revision(&self) -> Option<&str> {
        self.origin.revision.as_deref()
    }
}

/// What a loaded bundle must fit besides its own checks: the names the
/// decision service's configuration uses.
#[derive(Debug, Clone)]
pub struct BundleChecks {
    /// The claims and route mapping, checked against the schema by
    /// [`Mapping::new`].
    pub mapping: Option<MappingConfig>,
    /// AuthZEN type → Cedar type, and the action type, of `pdp`.
    pub authzen: Option<(std::collections::BTreeMap<String, String>, String)>,
}

impl std::fmt::Debug for LoadedBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedBundle")
            .field("bundle_id", &self.bundle_id())
            .finish_non_exhaustive()
    }
}

/// Holds the serving bundle and knows how to load the next one.
pub struct BundleSlot {
    fetcher: Fetcher,
    checks: BundleChecks,
    runtime: Option<ComponentRuntime>,
    serving: RwLock<Arc<LoadedBundle>>,
    /// A changed content hash, and when a poll first saw it.
    pending: Mutex<Option<(String, Instant)>>,
    /// The last content a load refused (or the last read error): polls do
    /// not retry or log it again until the directory changes.
    refused: Mutex<Option<String>>,
    /// The last failure logged: the same one is not logged again at every
    /// poll.
    last_error: Mutex<Option<String>>,
    settle: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for BundleSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSlot")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl BundleSlot {
    /// Compiles the component (if chosen) and loads the first bundle. A
    /// polled change applies once it has held for `settle`.
    pub fn start(
        fetcher: Fetcher,
        checks: BundleChecks,
        backend: BackendKind,
        settle: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GatewayError> {
        let runtime = match backend {
            BackendKind::Component => Some(ComponentRuntime::new(RuntimeConfig::default())?),
            BackendKind::Native => None,
        };
        let fetched = fetcher.fetch(fetcher.revision()?.as_deref())?;
        let first = load(fetched, &checks, runtime.as_ref())?;
        metrics.set_bundle(first.bundle_id(), &first.origin);
        Ok(Self {
            fetcher,
            checks,
            runtime,
            serving: RwLock::new(Arc::new(first)),
            pending: Mutex::new(None),
            refused: Mutex::new(None),
            last_error: Mutex::new(None),
            settle,
            metrics,
        })
    }

    /// The bundle serving now.
    pub fn serving(&self) -> Arc<LoadedBundle> {
        match self.serving.read() {
            Ok(serving) => Arc::clone(&serving),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the directory again if its content changed. `Ok(true)` when a
    /// new bundle now serves; an error leaves the old one in place.
    /// `Reload::WhenStable` (a poll) waits until the change is stable and
    /// does not retry content already refused; `Reload::Now` (SIGHUP)
    /// loads at once.
    pub fn reload(&self, when: Reload) -> Result<bool, GatewayError> {
        if self.fetcher.is_remote() {
            return self.reload_remote();
        }
        let fetched = match self.fetcher.fetch(None) {
            Ok(fetched) => fetched,
            Err(err) => {
                // Often a deploy in progress (a file replaced while it was
                // listed): logged once, and the next poll tries again.
                let text = err.to_string();
                if self.note_refused(&text) || when == Reload::Now {
                    self.metrics.source_error();
                    tracing::warn!(error = %text, "cannot read the bundle; the last good bundle keeps serving");
                }
                return Err(err);
            }
        };
        // A source that cannot be packed has no id; loading it reports why.
        let hash = fetched.source.content_hash().unwrap_or_default();
        if hash == self.serving().bundle_id() {
            set(&self.pending, None);
            return Ok(false);
        }
        if when == Reload::WhenStable {
            if get(&self.refused).as_deref() == Some(hash.as_str()) {
                return Ok(false);
            }
            let settled = match get(&self.pending) {
                Some((seen, since)) if seen == hash => since.elapsed() >= self.settle,
                _ => {
                    set(&self.pending, Some((hash.clone(), Instant::now())));
                    false
                }
            };
            if !settled {
                return Ok(false);
            }
        }
        set(&self.pending, None);
        self.apply(fetched, hash)
    }

    /// A registry or Git remote: fetched only when its revision moved, and
    /// applied at once (an artifact or a commit is never half-written).
    /// Nothing is remembered about a revision that failed: the next poll
    /// fetches and judges it again, so a registry that failed once, or a
    /// signature pushed after its bundle, is picked up without a restart.
    /// Each failure is counted; the same failure is logged once.
    fn reload_remote(&self) -> Result<bool, GatewayError> {
        let revision = self
            .fetcher
            .revision()
            .map_err(|err| self.source_failed(err))?;
        if revision.as_deref() == self.serving().revision() {
            set(&self.last_error, None);
            return Ok(false);
        }
        let fetched = self
            .fetcher
            .fetch(revision.as_deref())
            .map_err(|err| self.source_failed(err))?;
        self.apply(fetched, revision.unwrap_or_default())
    }

    /// Counts and (once per distinct message) logs a failed poll.
    fn source_failed(&self, err: GatewayError) -> GatewayError {
        self.metrics.source_error();
        if matches!(err, GatewayError::Source(_)) {
            self.metrics.reload(false);
        }
        let text = err.to_string();
        if self.failure_is_new(&text) {
            tracing::error!(error = %text, "bundle not replaced; the last good bundle keeps serving");
        }
        err
    }

    /// Loads a fetched bundle and swaps it in, or refuses it (remembered
    /// under `key`, so polls do not retry it until the source changes).
    fn apply(&self, fetched: Fetched, key: String) -> Result<bool, GatewayError> {
        match load(fetched, &self.checks, self.runtime.as_ref()) {
            Ok(next) => {
                tracing::info!(
                    bundle_id = %next.bundle_id(),
                    revision = next.revision().unwrap_or(""),
                    signer = next.origin.signer.as_deref().unwrap_or(""),
                    "bundle reloaded"
                );
                set(&self.refused, None);
                set(&self.last_error, None);
                self.metrics.set_bundle(next.bundle_id(), &next.origin);
                self.metrics.reload(true);
                let next = Arc::new(next);
                match self.serving.write() {
                    Ok(mut serving) => *serving = next,
                    Err(poisoned) => *poisoned.into_inner() = next,
                }
                Ok(true)
            }
            Err(err) => {
                set(&self.refused, Some(key));
                self.metrics.reload(false);
                let text = err.to_string();
                if self.failure_is_new(&text) {
                    tracing::error!(error = %text, "bundle reload refused; the last good bundle keeps serving");
                }
                Err(err)
            }
        }
    }

    /// Remembers the failure to log; `true` when it differs from the last
    /// one, so that a failure repeated at every poll is logged once.
    fn failure_is_new(&self, text: &str) -> bool {
        let fresh = get(&self.last_error).as_deref() != Some(text);
        set(&self.last_error, Some(text.to_owned()));
        fresh
    }

    /// Remembers a refusal; `true` when it is new.
    fn note_refused(&self, key: &str) -> bool {
        let fresh = get(&self.refused).as_deref() != Some(key);
        set(&self.refused, Some(key.to_owned()));
        fresh
    }
}

/// When a changed bundle is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Once the same content has been seen for the settle time, at two
    /// polls or more.
    WhenStable,
    /// At once.
    Now,
}

fn get<T: Clone>(cell: &Mutex<T>) -> T {
    match cell.lock() {
        Ok(value) => value.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn set<T>(cell: &Mutex<T>, value: T) {
    match cell.lock() {
        Ok(mut slot) => *slot = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// The stack that bundle loads run on: Cedar's parser recurses per nesting
/// level, and the nesting pre-check leaves it a wide margin on this stack.
const LOAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Runs a bundle load on its own thread with a large stack, off the
/// reactor.
pub async fn on_load_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, GatewayError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bundle-load".to_owned())
        .stack_size(LOAD_STACK_BYTES)
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|err| GatewayError::Task(err.to_string()))?;
    receiver
        .await
        .map_err(|_| GatewayError::Task("the bundle load thread stopped".to_owned()))
}

/// Reads, parses and validates the bundle once; the mapping and the
/// backend share it.
fn load(
    fetched: Fetched,
    checks: &BundleChecks,
    runtime: Option<&ComponentRuntime>,
) -> Result<LoadedBundle, GatewayError> {
    let source = &fetched.source;
    let (bundle, backend): (Arc<Bundle>, Box<dyn Backend>) = match runtime {
        // The guest parses while the host validates.
        Some(runtime) => {
            let (bundle, backend) = runtime.load_with_native(source)?;
            (Arc::new(bundle), Box::new(backend))
        }
        None => {
            let bundle = Arc::new(Bundle::load(source, RequestLimits::default())?);
            (Arc::clone(&bundle), Box::new(NativeBackend::new(bundle)))
        }
    };
    if let Some((types, action_type)) = &checks.authzen {
        let names = crate::authzen::Names { types, action_type };
        names.check(&bundle).map_err(GatewayError::Field)?;
    }
    let mapping = checks
        .mapping
        .as_ref()
        .map(|mapping| Mapping::new(mapping.clone(), Arc::clone(&bundle)))
        .transpose()?;
    Ok(LoadedBundle {
        bundle,
        mapping,
        backend,
        origin: fetched.origin,
    })
}
