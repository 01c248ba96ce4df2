//! Choosing and loading the backend a command decides with. The component
//! is compiled (or read from the on-disk cache) once per process, however
//! many bundles a command loads.

use std::sync::Arc;

use cedar_edge_core::{Backend, Bundle, BundleSource, NativeBackend};
use cedar_edge_runtime::{ComponentRuntime, RuntimeConfig, RuntimeError};
use clap::ValueEnum;

/// Which engine decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The WebAssembly component on wasmtime, as production hosts run it.
    Component,
    /// The same core, in-process.
    Native,
}

impl BackendChoice {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::Native => "native",
        }
    }
}

/// Loads bundles into the chosen backend.
pub struct Engines {
    choice: BackendChoice,
    config: RuntimeConfig,
    runtime: Option<ComponentRuntime>,
}

impl Engines {
    /// Prepares the chosen backend; for the component, compiles it now.
    pub fn new(choice: BackendChoice) -> Result<Self, RuntimeError> {
        let config = RuntimeConfig::default();
        let runtime = match choice {
            BackendChoice::Component => Some(ComponentRuntime::new(config.clone())?),
            BackendChoice::Native => None,
        };
        Ok(Self {
            choice,
            config,
            runtime,
        })
    }

    /// The chosen backend.
    pub fn choice(&self) -> BackendChoice {
        self.choice
    }

    /// Parses and validates one bundle, once, and loads it into the
    /// chosen backend.
    pub fn load(&self, source: &BundleSource) -> Result<LoadedBundle, RuntimeError> {
        let Some(runtime) = &self.runtime else {
            let bundle = Arc::new(Bundle::load(source, self.config.request_limits)?);
            let backend = Box::new(NativeBackend::new(Arc::clone(&bundle)));
            return Ok(LoadedBundle { bundle, backend });
        };
        let (bundle, backend) = runtime.load_with_native(source)?;
        Ok(LoadedBundle {
            bundle: Arc::new(bundle),
            backend: Box::new(backend),
        })
    }
}

/// A bundle loaded once: the parsed bundle (for listing its entities and
/// policies) and the backend that decides with it.
pub struct LoadedBundle {
    /// The parsed, validated bundle.
    pub bundle: Arc<Bundle>,
    /// What decides.
    pub backend: Box<dyn Backend>,
}

impl std::fmt::Debug for LoadedBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedBundle")
            .field("bundle_id", &self.bundle.id())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field("choice", &self.choice)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
