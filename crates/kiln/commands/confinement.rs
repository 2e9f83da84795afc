//! `kiln run`'s privilege and resource flags (`--cap-add/--cap-drop`, `--security-opt`,
//! `--read-only`, `--memory`, `--pids-limit`, `--cpus`) written into the Engine API's
//! `HostConfig`, whose values the runtime checks against Docker's bounds.

use anyhow::{Result, bail};
use kiln_runtime::HostConfig;

use super::flags::parse_size;
use crate::cli::ConfinementArgs;

pub fn apply(args: &ConfinementArgs, host: &mut HostConfig) -> Result<()> {
    host.cap_add = args.cap_add.clone();
    host.cap_drop = args.cap_drop.clone();
    host.security_opt = args.security_opt.clone();
    host.readonly_rootfs = args.read_only;
    if let Some(text) = &args.memory {
        host.memory = parse_size(text)? as i64;
    }
    host.pids_limit = args.pids_limit;
    if let Some(c) = args.cpus {
        if !c.is_finite() {
            bail!("--cpus {c}: must be a positive number");
        }
        host.nano_cpus = (c * 1e9).round() as i64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(a: &ConfinementArgs) -> HostConfig {
        let mut h = HostConfig::default();
        apply(a, &mut h).unwrap();
        h
    }

    #[test]
    fn no_flags_mean_dockers_defaults() {
        let h = host(&ConfinementArgs::default());
        assert_eq!(
            h.security_options().unwrap(),
            kiln_sandbox::SecurityOptions::default()
        );
        assert!(!h.resource_limits().unwrap().any());
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
        let h = host(&a);
        let s = h.security_options().unwrap();
        assert!(s.capabilities.contains("NET_ADMIN") && !s.capabilities.contains("CHOWN"));
        assert!(s.no_new_privileges && s.read_only_root);
        assert_eq!(s.seccomp, kiln_sandbox::SeccompProfile::Unconfined);
        let r = h.resource_limits().unwrap();
        assert_eq!(r.memory_bytes, Some(64 << 20));
        assert_eq!(r.pids, Some(100));
        assert_eq!(r.nano_cpus, Some(500_000_000));
        let mut bad = HostConfig::default();
        let err = apply(
            &ConfinementArgs {
                memory: Some("lots".into()),
                ..ConfinementArgs::default()
            },
            &mut bad,
        )
        .unwrap_err();
        assert!(err.to_string().contains("lots"), "{err}");
    }
}
