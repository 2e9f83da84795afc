//! The `ContainerCreateRequest` that `kiln run`/`kiln create` flags describe, shared by the
//! in-process commands and the ones sent to a daemon with `--host` (which sends it as the body
//! of `POST /containers/create`: the runtime's own type, so both paths mean the same thing).

use anyhow::Result;
use kiln_runtime::{
    ContainerConfig, ContainerCreateRequest, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkingConfig,
};

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
        restart_policy: args
            .restart
            .as_deref()
            .map(kiln_runtime::RestartPolicy::parse_flag)
            .transpose()?
            .unwrap_or_default(),
        ..HostConfig::default()
    };
    // As given: the in-process `create` decides the default network where it runs (it
    // needs slirp4netns there); through `--host`, the daemon decides.
    host_config.network_mode = args.network.clone();
    let networking_config = endpoint(args)?;
    host_config.extra_hosts = args.add_host.clone();
    host_config.links = args.link.clone();
    host_config.dns = args.dns.clone();
    host_config.dns_search = args.dns_search.clone();
    host_config.dns_options = args.dns_option.clone();
    let mut exposed = std::collections::BTreeMap::new();
    for flag in &args.publish {
        for (key, binding) in kiln_runtime::ports::parse_publish(flag)? {
            exposed.insert(key.clone(), serde_json::json!({}));
            host_config
                .port_bindings
                .entry(key)
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
    }
    for flag in &args.expose {
        // `--expose 80-81/udp`: every port of the range, as the docker CLI sends them.
        for (key, _) in kiln_runtime::ports::parse_publish(flag)? {
            exposed.insert(key, serde_json::json!({}));
        }
    }
    host_config.publish_all_ports = args.publish_all;
    super::super::confinement::apply(&args.confinement, &mut host_config)?;
    let config = ContainerConfig {
        hostname: args.hostname.clone(),
        domainname: args.domainname.clone().unwrap_or_default(),
        user: args.user.clone(),
        tty: args.tty,
        open_stdin: args.interactive,
        stdin_once: args.interactive && attached_stdin,
        env: resolve_env(&args.env),
        cmd: Some(args.command.clone()).filter(|c| !c.is_empty()),
        image: args.image.clone(),
        working_dir: args.workdir.clone(),
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        exposed_ports: exposed,
        ..ContainerConfig::default()
    };
    Ok(ContainerCreateRequest {
        config,
        host_config,
        networking_config,
    })
}

/// `--ip` and `--network-alias` for the network `--network` names; they need a network of
/// kiln's own (`none`, `host` and the default network have no addresses to choose).
fn endpoint(args: &RunArgs) -> Result<Option<NetworkingConfig>> {
    if args.ip.is_none() && args.network_alias.is_empty() {
        return Ok(None);
    }
    let name = match args.network.as_deref() {
        Some(name) if !matches!(name, "none" | "host" | "default") => name,
        _ => anyhow::bail!("--ip and --network-alias need a user-defined network (--network NAME)"),
    };
    let settings = EndpointSettings {
        aliases: args.network_alias.clone(),
        ipam_config: args.ip.clone().map(|ip| EndpointIpamConfig {
            ipv4_address: ip,
            ..EndpointIpamConfig::default()
        }),
        ..EndpointSettings::default()
    };
    Ok(Some(NetworkingConfig {
        endpoints_config: [(name.to_owned(), settings)].into(),
    }))
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
