//! `kiln create` (and the first half of `kiln run`): the flags become one
//! `ContainerCreateRequest` in the Engine API's vocabulary, the image is found (or pulled, with
//! progress), and the runtime creates the container; nothing is started.

use anyhow::Result;
use kiln_image::Platform;
use kiln_images::resolve_image;
use kiln_runtime::{
    ContainerConfig, ContainerCreateRequest, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkingConfig, Runtime,
};
use kiln_store::ContainerRecord;

use super::super::flags::{RUN_NETWORKS, choose_network};
use super::super::{Env, parse_reference};
use super::volumes::parse_mount_flag;
use crate::cli::RunArgs;
use crate::render::ProgressPrinter;

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
    let mut networking_config = None;
    match args.network.as_deref() {
        // A bridge network, the runtime's to connect (`bridge` as root is the real default
        // bridge; rootless, the default network as before).
        Some(name)
            if !RUN_NETWORKS.contains(&name)
                || (name == "bridge" && kiln_network::privileged()) =>
        {
            host_config.network_mode = Some(name.to_owned());
            if args.ip.is_some() || !args.network_alias.is_empty() {
                let settings = EndpointSettings {
                    aliases: args.network_alias.clone(),
                    ipam_config: args.ip.clone().map(|ip| EndpointIpamConfig {
                        ipv4_address: ip,
                        ..EndpointIpamConfig::default()
                    }),
                    ..EndpointSettings::default()
                };
                networking_config = Some(NetworkingConfig {
                    endpoints_config: [(name.to_owned(), settings)].into(),
                });
            }
        }
        flag => {
            if args.ip.is_some() || !args.network_alias.is_empty() {
                anyhow::bail!(
                    "--ip and --network-alias need a user-defined network (--network NAME)"
                );
            }
            // The default network falls back to none (with a warning) where slirp4netns is
            // missing.
            let network = choose_network(flag, RUN_NETWORKS)?;
            host_config.network_mode = Some(network.name().to_owned());
        }
    }
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
        networking_config,
    })
}

/// Creates the container `args` describe and returns its record.
pub fn create(env: &Env, args: &RunArgs, attached_stdin: bool) -> Result<ContainerRecord> {
    // Flags are checked before anything is pulled or created.
    let request = request(args, attached_stdin)?;
    request.host_config.mount_requests()?;
    request.host_config.security_options()?;
    request.host_config.extra_hosts()?;
    request.host_config.resource_limits()?;
    let img = match kiln_images::find_image(&env.store, &args.image) {
        Ok(img) => img,
        Err(_) => {
            let reference = parse_reference(&args.image)?;
            let printer = ProgressPrinter::new(false);
            resolve_image(
                &env.store,
                env.registry()?,
                env.rt.handle(),
                &reference,
                &Platform::host(),
                false,
                &|e| printer.image_event(e),
            )?
        }
    };
    let rt = Runtime::new(env.store.clone());
    Ok(rt.create(args.name.as_deref(), &request, &img)?)
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
