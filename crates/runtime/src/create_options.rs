//! HostConfig fields of a create request that kiln either applies or refuses, so that none is
//! accepted and silently ignored: `Tmpfs` (mounted), `RestartPolicy` and `LogConfig` (checked
//! as dockerd checks them: a bad policy or an unknown log driver is a 400, not a container that
//! quietly behaves otherwise), `PidMode`/`UTSMode` (only the container's own namespace).
//!
//! Restart policies are carried out by the container's supervisor (`restart.rs`); `json-file`
//! is the only log driver (its options are accepted): docs/api.md says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::create::HostConfig;
use crate::error::{Result, RuntimeError};
use kiln_store::MountKind;

use crate::mounts::{ApiMount, MountRequest, TmpfsOptions, from_api};

/// `HostConfig.LogConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Config")]
    pub config: Option<BTreeMap<String, String>>,
}

fn invalid(what: &'static str, value: impl ToString, reason: &'static str) -> RuntimeError {
    RuntimeError::Invalid {
        what,
        value: value.to_string(),
        reason,
    }
}

/// `size=3M` and the like (Docker's `RAMInBytes`: a number with an optional k, m, g or t,
/// powers of 1024, an optional trailing `b`).
fn tmpfs_size(value: &str) -> Option<u64> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let n: f64 = number.parse().ok().filter(|n: &f64| *n >= 0.0)?;
    Some((n * (1u64 << shift) as f64) as u64)
}

impl HostConfig {
    /// `Tmpfs` (`{"/run": "size=64m"}`) as tmpfs mounts. Of the options, `size` is applied;
    /// `rw`, `noexec`, `nosuid` and `nodev` are what every tmpfs of a container already is (or
    /// allows), and anything else is refused rather than dropped.
    pub fn tmpfs_requests(&self) -> Result<Vec<MountRequest>> {
        let mut requests = Vec::new();
        for (target, options) in &self.tmpfs {
            let mut size = 0i64;
            for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                match option.split_once('=') {
                    Some(("size", v)) => {
                        size = tmpfs_size(v)
                            .and_then(|s| i64::try_from(s).ok())
                            .ok_or_else(|| invalid("tmpfs size", v, "expected a size like 64m"))?;
                    }
                    None if ["rw", "noexec", "nosuid", "nodev"].contains(&option) => {}
                    _ => {
                        return Err(invalid(
                            "tmpfs option",
                            option,
                            "supported: size=N, rw, noexec, nosuid, nodev",
                        ));
                    }
                }
            }
            requests.push(from_api(&ApiMount {
                target: target.clone(),
                source: String::new(),
                kind: MountKind::Tmpfs,
                read_only: false,
                volume_options: None,
                tmpfs_options: Some(TmpfsOptions { size_bytes: size }),
            })?);
        }
        Ok(requests)
    }

    /// `RestartPolicy`, `LogConfig`, `PidMode` and `UTSMode` as dockerd would accept them, with
    /// its messages where clients match them.
    pub fn check_options(&self) -> Result<()> {
        self.restart_policy.check()?;
        if self.auto_remove && !matches!(self.restart_policy.name.as_str(), "" | "no") {
            return Err(invalid(
                "restart policy",
                &self.restart_policy.name,
                "cannot be combined with AutoRemove",
            ));
        }
        if let Some(log) = &self.log_config
            && !matches!(log.kind.as_str(), "" | "json-file")
        {
            return Err(RuntimeError::LogDriver(log.kind.clone()));
        }
        for (what, mode) in [("PidMode", &self.pid_mode), ("UTSMode", &self.uts_mode)] {
            if !mode.is_empty() && mode != "private" {
                return Err(invalid(
                    what,
                    mode,
                    "kiln gives every container a namespace of its own; host and container: \
                     modes are not supported",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(json: &str) -> HostConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tmpfs_entries_become_tmpfs_mounts() {
        let h = host(r#"{"Tmpfs":{"/tmp1":"size=3M","/run":"rw,noexec,nosuid"}}"#);
        assert_eq!(
            h.tmpfs_requests().unwrap(),
            [
                MountRequest::Tmpfs {
                    target: "/run".into(),
                    size: None
                },
                MountRequest::Tmpfs {
                    target: "/tmp1".into(),
                    size: Some(3 << 20)
                },
            ]
        );
        for bad in [
            r#"{"Tmpfs":{"/x":"size=lots"}}"#,
            r#"{"Tmpfs":{"/x":"uid=5"}}"#,
            r#"{"Tmpfs":{"relative":""}}"#,
            r#"{"Tmpfs":{"/":""}}"#,
        ] {
            assert!(host(bad).tmpfs_requests().is_err(), "{bad}");
        }
        assert_eq!(tmpfs_size("64m"), Some(64 << 20));
        assert_eq!(tmpfs_size("1.5GB"), Some(3 << 29));
        assert_eq!(tmpfs_size("4096"), Some(4096));
        assert_eq!(tmpfs_size("5x"), None);
    }

    #[test]
    fn restart_policies_and_log_drivers_are_checked_as_dockerd_does() {
        for ok in [
            r#"{}"#,
            r#"{"RestartPolicy":{"Name":"","MaximumRetryCount":0}}"#,
            r#"{"RestartPolicy":{"Name":"always"}}"#,
            r#"{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}"#,
            r#"{"LogConfig":{"Type":"json-file","Config":{"max-file":"100"}}}"#,
            r#"{"LogConfig":{"Type":"","Config":null}}"#,
            r#"{"PidMode":"","UTSMode":""}"#,
        ] {
            host(ok).check_options().unwrap();
        }
        for bad in [
            r#"{"RestartPolicy":{"Name":"sometimes"}}"#,
            r#"{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":-1}}"#,
            r#"{"RestartPolicy":{"Name":"always","MaximumRetryCount":2}}"#,
            r#"{"RestartPolicy":{"Name":"always"},"AutoRemove":true}"#,
            r#"{"PidMode":"host"}"#,
            r#"{"UTSMode":"host"}"#,
        ] {
            let err = host(bad).check_options().unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument, "{bad}");
        }
        let err = host(r#"{"LogConfig":{"Type":"asdf","Config":{}}}"#)
            .check_options()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "logger: no log driver named 'asdf' is registered"
        );
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
    }
}
