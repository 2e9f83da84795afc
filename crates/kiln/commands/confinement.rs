//! `kiln run`'s privilege and resource flags (`--cap-add/--cap-drop`, `--security-opt`,
//! `--read-only`, `--memory`, `--pids-limit`, `--cpus`) turned into the sandbox's settings,
//! with Docker's meaning and Docker's defaults when a flag is absent.

use anyhow::{Result, anyhow, bail};
use kiln_sandbox::{Capabilities, ResourceLimits, SecurityOptions};

use super::system::parse_size;
use crate::cli::ConfinementArgs;

pub fn security_options(args: &ConfinementArgs) -> Result<SecurityOptions> {
    let mut options = SecurityOptions {
        capabilities: Capabilities::docker_default().adjusted(&args.cap_add, &args.cap_drop)?,
        read_only_root: args.read_only,
        ..Default::default()
    };
    for opt in &args.security_opt {
        options.apply_security_opt(opt).map_err(|e| anyhow!(e))?;
    }
    Ok(options)
}

pub fn resource_limits(args: &ConfinementArgs) -> Result<ResourceLimits> {
    let memory_bytes = match args.memory.as_deref() {
        None => None,
        Some(text) => {
            let bytes = parse_size(text)?;
            // Docker's minimum: below it the container cannot even start.
            if bytes < 6 << 20 {
                bail!("--memory {text}: the minimum memory limit is 6MB");
            }
            Some(bytes)
        }
    };
    // Docker: 0 or -1 means unlimited.
    let pids = match args.pids_limit {
        None | Some(-1) | Some(0) => None,
        Some(n) if n < 0 => bail!("--pids-limit {n}: must be positive, or -1 for no limit"),
        Some(n) => Some(n as u64),
    };
    let nano_cpus = match args.cpus {
        None => None,
        Some(c) if c.is_finite() && c > 0.0 => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if c > cpus {
                bail!(
                    "--cpus {c}: range of CPUs is from 0.01 to {cpus}, as there are only {cpus} CPUs available"
                );
            }
            Some((c * 1e9).round() as u64)
        }
        Some(0.0) => None,
        Some(c) => bail!("--cpus {c}: must be a positive number"),
    };
    Ok(ResourceLimits {
        memory_bytes,
        pids,
        nano_cpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConfinementArgs {
        ConfinementArgs::default()
    }

    #[test]
    fn no_flags_mean_dockers_defaults() {
        assert_eq!(
            security_options(&args()).unwrap(),
            SecurityOptions::default()
        );
        assert!(!resource_limits(&args()).unwrap().any());
    }

    #[test]
    fn flags_are_read_as_docker_reads_them() {
        let a = ConfinementArgs {
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["cap_chown".into()],
            security_opt: vec!["no-new-privileges".into(), "seccomp=unconfined".into()],
            read_only: true,
            memory: Some("64m".into()),
            pids_limit: Some(100),
            cpus: Some(0.5),
        };
        let s = security_options(&a).unwrap();
        assert!(s.capabilities.contains("NET_ADMIN") && !s.capabilities.contains("CHOWN"));
        assert!(s.no_new_privileges && s.read_only_root);
        assert_eq!(s.seccomp, kiln_sandbox::SeccompProfile::Unconfined);
        let r = resource_limits(&a).unwrap();
        assert_eq!(r.memory_bytes, Some(64 << 20));
        assert_eq!(r.pids, Some(100));
        assert_eq!(r.nano_cpus, Some(500_000_000));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = |a: ConfinementArgs| {
            let s = security_options(&a).err().or(resource_limits(&a).err());
            s.map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(
            bad(ConfinementArgs {
                cap_add: vec!["FLY".into()],
                ..args()
            })
            .contains("unknown capability")
        );
        assert!(
            bad(ConfinementArgs {
                security_opt: vec!["label=x".into()],
                ..args()
            })
            .contains("unsupported security option")
        );
        assert!(
            bad(ConfinementArgs {
                memory: Some("1k".into()),
                ..args()
            })
            .contains("minimum memory")
        );
        assert!(
            bad(ConfinementArgs {
                pids_limit: Some(-5),
                ..args()
            })
            .contains("pids-limit")
        );
        assert!(
            bad(ConfinementArgs {
                cpus: Some(-1.0),
                ..args()
            })
            .contains("positive")
        );
        assert!(
            bad(ConfinementArgs {
                cpus: Some(10000.0),
                ..args()
            })
            .contains("range of CPUs")
        );
    }
}
