//! Choosing and loading the backend a command decides with. The component
//! is compiled (or read from the on-disk cache) once per process, however
//! many bundles a command loads.

use cedar_edge_engine::BundleSource;
use cedar_edge_runtime::{Backend, ComponentRuntime, NativeBackend, RuntimeConfig, RuntimeError};
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

    /// Loads (and validates) one bundle.
    pub fn load(&self, source: &BundleSource) -> Result<Box<dyn Backend>, RuntimeError> {
        match &self.runtime {
            Some(runtime) => Ok(Box::new(runtime.load_bundle(source)?)),
            None => Ok(Box::new(NativeBackend::load(
                source,
                self.config.request_limits,
            )?)),
        }
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
