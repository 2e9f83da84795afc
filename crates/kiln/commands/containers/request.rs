//! The `ContainerCreateRequest` that `kiln run`/`kiln create` flags describe, shared by the
//! in-process commands and the ones sent to a daemon with `--host` (which sends it as the body
//! of `POST /containers/create`: the runtime's own type, so both paths mean the same thing).

use anyhow::Result;
use kiln_runtime::{ContainerConfig, ContainerCreateRequest, HostConfig};

use super::volumes::parse_mount_flag;
use crate::cli::RunArgs;

/// The request `kiln run`/`kiln create` flags describe. `attached_stdin`: a client attaches
/// stdin at start (a foreground `kiln run -i`), so the container's stdin closes when that
/// client's input ends (Docker's `StdinOnce`).
pub fn request(args: &RunArgs, attached_stdin: bool) -> Result<ContainerCreateRequest> {
    let mut host_config = HostConfig {
        binds: args.volumes.clone(),
        mounts: args
            .mounts
            .iter()
            .map(|m| parse_mount_flag(m))
            .collect::<Result<_>>()?,
        auto_remove: args.rm,
        ..HostConfig::default()
    };
    // As given: the in-process `create` decides the default network where it runs (it
    // needs slirp4netns there); through `--host`, the daemon decides.
    host_config.network_mode = args.network.clone();
    host_config.extra_hosts = args.add_host.clone();
    super::super::confinement::apply(&args.confinement, &mut host_config)?;
    let config = ContainerConfig {
        hostname: args.hostname.clone(),
        user: args.user.clone(),
        tty: args.tty,
        open_stdin: args.interactive,
        stdin_once: args.interactive && attached_stdin,
        env: resolve_env(&args.env),
        cmd: Some(args.command.clone()).filter(|c| !c.is_empty()),
        image: args.image.clone(),
        working_dir: args.workdir.clone(),
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        ..ContainerConfig::default()
    };
    Ok(ContainerCreateRequest {
        config,
        host_config,
    })
}

/// `-e` entries: `K=V` as given, `K` taken from kiln's environment (dropped when unset).
pub fn resolve_env(flags: &[String]) -> Vec<String> {
    flags
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect()
}
