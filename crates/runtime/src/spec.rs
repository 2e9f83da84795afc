//! `containers/<id>/spec.json`: the sandbox and process a container runs, fixed at create time
//! so every start (and every exec, which is confined the same way) uses the same settings.

use kiln_sandbox::{ProcessSpec, SandboxSpec};
use kiln_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub sandbox: SandboxSpec,
    pub process: ProcessSpec,
    /// Exposed and published ports (none for specs written before ports existed).
    #[serde(default)]
    pub ports: crate::ports::PortsSpec,
}

impl ContainerSpec {
    pub fn write(&self, store: &Store, id: &str) -> Result<()> {
        let path = store.container_dir(id).join("spec.json");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| RuntimeError::CorruptSpec {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, bytes).map_err(RuntimeError::io(path))
    }

    pub fn read(store: &Store, id: &str) -> Result<ContainerSpec> {
        let path = store.container_dir(id).join("spec.json");
        let bytes = std::fs::read(&path).map_err(RuntimeError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::CorruptSpec {
            path,
            message: e.to_string(),
        })
    }
}
