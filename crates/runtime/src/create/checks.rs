//! The checks of a create request's `HostConfig` (and its name settings): each field turned
//! into what the sandbox takes, or an `InvalidArgument` error naming the field and value.
//! They are apart from `create.rs`, which makes the container, because all of them run before
//! anything is created: a request that fails here leaves nothing behind.

use kiln_sandbox::{Capabilities, ExtraHost, NameSettings, ResourceLimits, SecurityOptions};

use super::{ContainerConfig, HostConfig, invalid};
use crate::error::Result;
use crate::mounts::{MountRequest, from_api, parse_bind};

/// `/etc/hostname`, `--domainname`, `--dns-search` and `--dns-option` as the sandbox takes
/// them (empty lists: the host's, as dockerd).
pub(super) fn name_settings(config: &ContainerConfig, host: &HostConfig) -> Result<NameSettings> {
    // The kernel's limit for a UTS name.
    if config.domainname.len() > 64 || config.domainname.contains(char::is_whitespace) {
        return Err(invalid(
            "domain name",
            &config.domainname,
            "expected at most 64 characters without spaces",
        ));
    }
    let given = |list: &Vec<String>| Some(list.clone()).filter(|l| !l.is_empty());
    Ok(NameSettings {
        etc_hostname: true,
        domainname: config.domainname.clone(),
        dns_search: given(&host.dns_search),
        dns_options: given(&host.dns_options),
    })
}

impl HostConfig {
    /// The `/etc/hosts` entries `ExtraHosts` asks for.
    pub fn extra_hosts(&self) -> Result<Vec<ExtraHost>> {
        self.extra_hosts
            .iter()
            .map(|h| {
                ExtraHost::parse(h)
                    .map_err(|_| invalid("extra host", h, "expected NAME:ADDRESS (an IP address)"))
            })
            .collect()
    }

    /// `Dns`, checked: addresses.
    pub fn dns_servers(&self) -> Result<Vec<std::net::IpAddr>> {
        self.dns
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| invalid("DNS server", s, "expected an IP address"))
            })
            .collect()
    }

    /// Docker's default capabilities and seccomp filter, adjusted as asked.
    pub fn security_options(&self) -> Result<SecurityOptions> {
        let capabilities = Capabilities::docker_default()
            .adjusted(&self.cap_add, &self.cap_drop)
            .map_err(|e| invalid("capability", e.0, "unknown capability"))?;
        let mut options = SecurityOptions {
            capabilities,
            read_only_root: self.readonly_rootfs,
            ..Default::default()
        };
        for opt in &self.security_opt {
            options
                .apply_security_opt(opt)
                .map_err(|_| invalid("security option", opt, "unsupported security option"))?;
        }
        Ok(options)
    }

    /// The cgroup limits, with Docker's bounds.
    pub fn resource_limits(&self) -> Result<ResourceLimits> {
        let memory_bytes = match self.memory {
            0 => None,
            // Docker's minimum: below it the container cannot even start.
            m if m < 6 << 20 => {
                return Err(invalid(
                    "memory limit",
                    m,
                    "the minimum memory limit is 6MB",
                ));
            }
            m => Some(m as u64),
        };
        let pids = match self.pids_limit {
            None | Some(-1) | Some(0) => None,
            Some(n) if n < 0 => {
                return Err(invalid(
                    "pids-limit",
                    n,
                    "must be positive, or -1 for no limit",
                ));
            }
            Some(n) => Some(n as u64),
        };
        let nano_cpus = match self.nano_cpus {
            0 => None,
            n if n < 0 => return Err(invalid("cpus", n, "must be a positive number")),
            n => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
                if n > cpus * 1_000_000_000 {
                    return Err(invalid(
                        "cpus",
                        n as f64 / 1e9,
                        "more than the range of CPUs available",
                    ));
                }
                Some(n as u64)
            }
        };
        Ok(ResourceLimits {
            memory_bytes,
            pids,
            nano_cpus,
        })
    }

    /// Every mount asked for, `Binds` first, as Docker lists them.
    pub fn mount_requests(&self) -> Result<Vec<MountRequest>> {
        let mut requests = Vec::new();
        for b in &self.binds {
            requests.push(parse_bind(b)?);
        }
        for m in &self.mounts {
            requests.push(from_api(m)?);
        }
        requests.extend(self.tmpfs_requests()?);
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_host_config_values_are_invalid_arguments() {
        let bad = |h: HostConfig| {
            let e = h
                .security_options()
                .err()
                .or(h.resource_limits().err())
                .or(h.network().err())
                .expect("an error");
            assert_eq!(e.kind(), kiln_error::ErrorKind::InvalidArgument, "{e}");
            e.to_string()
        };
        let base = HostConfig::default;
        assert!(
            bad(HostConfig {
                cap_add: vec!["FLY".into()],
                ..base()
            })
            .contains("FLY")
        );
        assert!(
            bad(HostConfig {
                security_opt: vec!["label=x".into()],
                ..base()
            })
            .contains("unsupported security option")
        );
        assert!(
            bad(HostConfig {
                memory: 1024,
                ..base()
            })
            .contains("minimum memory")
        );
        assert!(
            bad(HostConfig {
                pids_limit: Some(-5),
                ..base()
            })
            .contains("pids-limit")
        );
        assert!(
            bad(HostConfig {
                nano_cpus: -1,
                ..base()
            })
            .contains("positive")
        );
        assert!(
            bad(HostConfig {
                nano_cpus: i64::MAX,
                ..base()
            })
            .contains("range of CPUs")
        );
        assert!(
            bad(HostConfig {
                network_mode: Some("container:web".into()),
                ..base()
            })
            .contains("container:web")
        );
        assert!(!HostConfig::default().resource_limits().unwrap().any());
    }
}
