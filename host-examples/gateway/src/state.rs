//! The serving bundle and its replacement. A load reads and validates the
//! bundle once; the mapping and the backend share that one `Arc<Bundle>`.
//! A reload builds the next bundle completely (mapping checked against its
//! schema, component loaded) before one atomic swap; a bundle that fails
//! anywhere is refused and the last good one keeps serving.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cedar_edge_core::{Backend, Bundle, BundleSource, NativeBackend, RequestLimits};
use cedar_edge_mapping::{Mapping, MappingConfig};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig};

use crate::config::BackendKind;
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// One loaded bundle with its mapping and backend.
pub struct LoadedBundle {
    /// The claims and route mapping, over the bundle.
    pub mapping: Mapping,
    /// What decides.
    pub backend: Box<dyn Backend>,
}

impl LoadedBundle {
    /// The bundle's content hash.
    pub fn bundle_id(&self) -> &str {
        self.mapping.bundle().id()
    }
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
    bundle_dir: PathBuf,
    mapping: MappingConfig,
    runtime: Option<ComponentRuntime>,
    serving: RwLock<Arc<LoadedBundle>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for BundleSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSlot")
            .field("bundle_dir", &self.bundle_dir)
            .finish_non_exhaustive()
    }
}

impl BundleSlot {
    /// Compiles the component (if chosen) and loads the first bundle.
    pub fn start(
        bundle_dir: PathBuf,
        mapping: MappingConfig,
        backend: BackendKind,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GatewayError> {
        let runtime = match backend {
            BackendKind::Component => Some(ComponentRuntime::new(RuntimeConfig::default())?),
            BackendKind::Native => None,
        };
        let first = load(
            &BundleSource::from_dir(&bundle_dir)?,
            &mapping,
            runtime.as_ref(),
        )?;
        metrics.set_bundle(first.bundle_id());
        Ok(Self {
            bundle_dir,
            mapping,
            runtime,
            serving: RwLock::new(Arc::new(first)),
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
    pub fn reload(&self) -> Result<bool, GatewayError> {
        let source = BundleSource::from_dir(&self.bundle_dir)?;
        if source.content_hash() == self.serving().bundle_id() {
            return Ok(false);
        }
        match load(&source, &self.mapping, self.runtime.as_ref()) {
            Ok(next) => {
                tracing::info!(bundle_id = %next.bundle_id(), "bundle reloaded");
                self.metrics.set_bundle(next.bundle_id());
                self.metrics.reload(true);
                let next = Arc::new(next);
                match self.serving.write() {
                    Ok(mut serving) => *serving = next,
                    Err(poisoned) => *poisoned.into_inner() = next,
                }
                Ok(true)
            }
            Err(err) => {
                self.metrics.reload(false);
                tracing::error!(error = %err, "bundle reload refused; the last good bundle keeps serving");
                Err(err)
            }
        }
    }
}

/// Reads, parses and validates the bundle once; the mapping and the
/// backend share it.
fn load(
    source: &BundleSource,
    mapping: &MappingConfig,
    runtime: Option<&ComponentRuntime>,
) -> Result<LoadedBundle, GatewayError> {
    let limits = runtime.map_or_else(RequestLimits::default, |runtime| {
        runtime.config().request_limits
    });
    let bundle = Arc::new(Bundle::load(source, limits)?);
    let backend: Box<dyn Backend> = match runtime {
        Some(runtime) => Box::new(runtime.load_bundle(&bundle)?),
        None => Box::new(NativeBackend::new(Arc::clone(&bundle))),
    };
    let mapping = Mapping::new(mapping.clone(), bundle)?;
    Ok(LoadedBundle { mapping, backend })
}
