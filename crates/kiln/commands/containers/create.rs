//! `kiln create` (and the first half of `kiln run`): a new container of an image, recorded in
//! the store with its writable layer, volumes and spec; nothing started.

use anyhow::{Context, Result, bail};
use kiln_image::Platform;
use kiln_images::{StoredImage, lower_dirs, resolve_image};
use kiln_runtime::{ContainerSpec, Runtime};
use kiln_sandbox::{ProcessSpec, SandboxSpec};
use kiln_solve::DEFAULT_PATH;
use kiln_store::{CONTAINER_SCHEMA_VERSION, ContainerRecord, ContainerState, RunConfig};

use super::super::build::{RUN_NETWORKS, choose_network};
use super::super::{Env, parse_reference};
use super::volumes::{MountRequest, create_mounts, parse_mount_flag, parse_volume_flag};
use crate::cli::RunArgs;
use crate::render::ProgressPrinter;

/// Creates the container `args` describe and returns its record. `attached_stdin`: a client
/// will attach stdin at start (a foreground `kiln run -i`), so the container's stdin closes
/// when that client's input ends (Docker's `StdinOnce`).
pub fn create(env: &Env, args: &RunArgs, attached_stdin: bool) -> Result<ContainerRecord> {
    // Flags are checked before anything is pulled or created.
    let mut requests: Vec<MountRequest> = Vec::new();
    for v in &args.volumes {
        requests.push(parse_volume_flag(v)?);
    }
    for m in &args.mounts {
        requests.push(parse_mount_flag(m)?);
    }
    let network = choose_network(args.network.as_deref(), RUN_NETWORKS)?;
    let security = super::super::confinement::security_options(&args.confinement)?;
    let resources = super::super::confinement::resource_limits(&args.confinement)?;
    let img = match kiln_images::find_image(&env.store, &args.image) {
        Ok(img) => img,
        Err(_) => {
            let reference = parse_reference(&args.image)?;
            let printer = ProgressPrinter::new(false);
            resolve_image(
                &env.store,
                env.registry(),
                env.rt.handle(),
                &reference,
                &Platform::host(),
                false,
                &|e| printer.image_event(e),
            )?
        }
    };
    let mut process = process_spec(&img, args)?;
    process.terminal = args.tty;
    let lowers = lower_dirs(&env.store, img.layers())?;

    let store = &env.store;
    let id = store.new_container_id(&img.manifest_digest.to_string());
    let cfg = &img.config.config;
    let hostname = args.hostname.clone().unwrap_or_else(|| id[..12].to_owned());
    let mut record = ContainerRecord {
        schema_version: CONTAINER_SCHEMA_VERSION,
        id: id.clone(),
        name: args.name.clone().unwrap_or_default(),
        created: chrono::Utc::now(),
        image: args.image.clone(),
        image_id: img.config_digest.to_string(),
        manifest: img.manifest_digest.to_string(),
        config: RunConfig {
            hostname: hostname.clone(),
            user: process.user.clone().unwrap_or_default(),
            env: process.env.clone(),
            entrypoint: entrypoint(cfg, args),
            cmd: process.args[entrypoint(cfg, args).len()..].to_vec(),
            working_dir: process.cwd.clone(),
            labels: cfg.labels.clone(),
            stop_signal: cfg.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            healthcheck: cfg.healthcheck.clone(),
            tty: args.tty,
            open_stdin: args.interactive,
            stdin_once: args.interactive && attached_stdin,
        },
        mounts: Vec::new(),
        auto_remove: args.rm,
        state: ContainerState::default(),
    };
    store.create_container(&mut record)?;
    let sandbox = SandboxSpec {
        lower_dirs: lowers,
        upper_dir: store.container_dir(&id).join("upper"),
        work_dir: store.container_dir(&id).join("work"),
        network,
        hostname,
        mounts: Vec::new(),
        security,
        resources,
    };
    match prepare(env, &mut record, requests, &img, sandbox, process) {
        Ok(()) => Ok(record),
        Err(e) => {
            // Nothing ran: leave no half-made container behind.
            let _ = Runtime::new(store.clone()).remove(&id, true, true);
            Err(e)
        }
    }
}

/// Creates the container's volumes and writable layer and writes its spec.
fn prepare(
    env: &Env,
    record: &mut ContainerRecord,
    requests: Vec<MountRequest>,
    img: &StoredImage,
    mut sandbox: SandboxSpec,
    process: ProcessSpec,
) -> Result<()> {
    let store = &env.store;
    let image_volumes: Vec<String> = img.config.config.volumes.keys().cloned().collect();
    let created = record
        .created
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mounts = create_mounts(
        store,
        requests,
        &image_volumes,
        &sandbox.lower_dirs,
        &created,
    )?;
    for d in [&sandbox.upper_dir, &sandbox.work_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (records, mounts): (Vec<_>, Vec<_>) = mounts.into_iter().unzip();
    *record = store.update_container(&record.id, |r| r.mounts = records)?;
    sandbox.mounts = mounts;
    ContainerSpec { sandbox, process }.write(store, &record.id)?;
    Ok(())
}

/// The entrypoint the container runs: `--entrypoint` (empty string: none) or the image's.
fn entrypoint(cfg: &kiln_image::ContainerConfig, args: &RunArgs) -> Vec<String> {
    match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    }
}

/// Adds `-e` entries (`K=V`, or `K` taken from kiln's environment when set) over `env`.
pub fn apply_env(env: &mut Vec<String>, flags: &[String]) {
    for e in flags {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
}

fn process_spec(img: &StoredImage, args: &RunArgs) -> Result<ProcessSpec> {
    let cfg = &img.config.config;
    let entrypoint = entrypoint(cfg, args);
    // A new entrypoint drops the image's CMD, as in Docker.
    let cmd = if !args.command.is_empty() {
        args.command.clone()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!(
            "no command specified: the image has no ENTRYPOINT or CMD; give one after the image name"
        );
    }
    let mut env = cfg.env.clone();
    apply_env(&mut env, &args.env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let cwd = args
        .workdir
        .clone()
        .or_else(|| cfg.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not an absolute path");
    }
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
        user: args
            .user
            .clone()
            .or_else(|| cfg.user.clone())
            .filter(|u| !u.is_empty()),
        terminal: false,
    })
}
