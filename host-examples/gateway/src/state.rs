//! The active bundle and its replacement. A reload builds the new bundle
//! completely (mapping checked against its schema, component loaded) before
//! one atomic swap; a bundle that fails anywhere is refused and the last
//! good one keeps serving.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cedar_edge_engine::{BundleSource, RequestLimits};
use cedar_edge_envoy_filter::config::plugin_config;
use cedar_edge_envoy_filter::mapping::Filter;
use cedar_edge_runtime::{Backend, ComponentRuntime, NativeBackend, RuntimeConfig};
use serde_json::Value;

use crate::config::BackendKind;
use crate::metrics::Metrics;

/// One loaded bundle with its mapping and backend.
pub struct Active {
    /// The bundle's content hash.
    pub bundle_id: String,
    /// The claims and route mapping over this bundle.
    pub filter: Filter,
    /// What decides.
    pub backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("bundle_id", &self.bundle_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bundle_dir", &self.bundle_dir)
            .finish_non_exhaustive()
    }
}

/// Holds the active bundle and knows how to load the next one.
pub struct Engine {
    bundle_dir: PathBuf,
    mapping: Value,
    runtime: Option<ComponentRuntime>,
    active: RwLock<Arc<Active>>,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// Compiles the component (if chosen) and loads the first bundle.
    pub fn start(
        bundle_dir: PathBuf,
        mapping: Value,
        backend: BackendKind,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let runtime = match backend {
            BackendKind::Component => Some(ComponentRuntime::new(RuntimeConfig::default())?),
            BackendKind::Native => None,
        };
        let first = load(
            &BundleSource::from_dir(&bundle_dir)?,
            &mapping,
            runtime.as_ref(),
        )?;
        metrics.set_bundle(&first.bundle_id);
        Ok(Self {
            bundle_dir,
            mapping,
            runtime,
            active: RwLock::new(Arc::new(first)),
            metrics,
        })
    }

    /// The bundle serving now.
    pub fn active(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(active) => Arc::clone(&active),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the directory again if its content changed. `Ok(true)` when a
    /// new bundle now serves; an error leaves the old one in place.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let source = BundleSource::from_dir(&self.bundle_dir)?;
        if source.content_hash() == self.active().bundle_id {
            return Ok(false);
        }
        match load(&source, &self.mapping, self.runtime.as_ref()) {
            Ok(next) => {
                tracing::info!(bundle_id = %next.bundle_id, "bundle reloaded");
                self.metrics.set_bundle(&next.bundle_id);
                self.metrics.reload(true);
                let next = Arc::new(next);
                match self.active.write() {
                    Ok(mut active) => *active = next,
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

fn load(
    source: &BundleSource,
    mapping: &Value,
    runtime: Option<&ComponentRuntime>,
) -> anyhow::Result<Active> {
    let config = plugin_config(source, mapping)?;
    let filter = Filter::from_json(config.to_string().as_bytes())?;
    let backend: Box<dyn Backend> = match runtime {
        Some(runtime) => Box::new(runtime.load_bundle(source)?),
        None => Box::new(NativeBackend::load(source, RequestLimits::default())?),
    };
    Ok(Active {
        bundle_id: backend.bundle_id().to_owned(),
        filter,
        backend,
    })
}
