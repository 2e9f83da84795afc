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
    /// Docker's `RestartPolicy` as given at create or by `update` (absent in specs written
    /// before it was kept: `no`). Carried out by the container's supervisor (`restart`).
    #[serde(default, skip_serializing_if = "RestartPolicy::is_no")]
    pub restart_policy: RestartPolicy,
    /// `HostConfig.Links` as dockerd shows them (`/NAME:/CONTAINER/ALIAS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// `HostConfig.Dns`: resolv.conf's nameservers, or on a user-defined network the embedded
    /// DNS server's upstreams (resolv.conf then names the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<std::net::IpAddr>,
}

/// Docker's `RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `""`/`no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// Only with `on-failure`.
    pub maximum_retry_count: i64,
}

impl RestartPolicy {
    pub fn is_no(&self) -> bool {
        matches!(self.name.as_str(), "" | "no") && self.maximum_retry_count == 0
    }

    /// Docker's rules: a known name, and a retry count only with `on-failure`, never
    /// negative.
    pub fn check(&self) -> Result<()> {
        let invalid = |what, value: String, reason| RuntimeError::Invalid {
            what,
            value,
            reason,
        };
        if !matches!(
            self.name.as_str(),
            "" | "no" | "always" | "unless-stopped" | "on-failure"
        ) {
            return Err(invalid(
                "restart policy",
                self.name.clone(),
                "expected no, always, unless-stopped or on-failure",
            ));
        }
        if self.maximum_retry_count < 0 {
            return Err(invalid(
                "restart policy maximum retry count",
                self.maximum_retry_count.to_string(),
                "cannot be negative",
            ));
        }
        if self.maximum_retry_count > 0 && self.name != "on-failure" {
            return Err(invalid(
                "restart policy maximum retry count",
                self.maximum_retry_count.to_string(),
                "can only be used with on-failure",
            ));
        }
        Ok(())
    }
}

impl ContainerSpec {
    pub fn write(&self, store: &Store, id: &str) -> Result<()> {
        let path = store.container_dir(id).join("spec.json");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| RuntimeError::CorruptSpec {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Whole or not at all: a supervisor reads the restart policy while `update` writes.
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, bytes).map_err(RuntimeError::io(&partial))?;
        std::fs::rename(&partial, &path).map_err(RuntimeError::io(path))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_follow_dockers_rules() {
        let policy = |name: &str, count| RestartPolicy {
            name: name.into(),
            maximum_retry_count: count,
        };
        for ok in [
            policy("", 0),
            policy("no", 0),
            policy("always", 0),
            policy("on-failure", 42),
        ] {
            assert!(ok.check().is_ok(), "{ok:?}");
        }
        for bad in [
            policy("sometimes", 0),
            policy("always", 3),
            policy("on-failure", -1),
        ] {
            let err = bad.check().unwrap_err();
            assert_eq!(
                err.kind(),
                kiln_error::ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert!(policy("no", 0).is_no() && !policy("always", 0).is_no());
        // A spec written before the policy was kept reads as `no`.
        let old: RestartPolicy = serde_json::from_str("{}").unwrap();
        assert!(old.is_no());
    }
}
