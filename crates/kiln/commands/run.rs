//! `kiln run`: a new container of an image. The container is recorded in the store first
//! (name, config, mounts), then run in the foreground by this process (its output passed
//! through, its exit code returned) or, with `-d`, by a detached supervisor
//! (`containers::supervisor`).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::Platform;
use kiln_images::{StoredImage, lower_dirs, resolve_image};
use kiln_sandbox::{ProcessSpec, SandboxChild, SandboxSpec};
use kiln_solve::DEFAULT_PATH;
use kiln_store::{ContainerRecord, ContainerState, ContainerStatus, RunConfig};

use super::build::{RUN_NETWORKS, choose_network};
use super::containers::logfile::{LogWriter, Tee};
use super::containers::terminal::{self, Pty, RawMode};
use super::containers::volumes::{
    MountRequest, create_mounts, parse_mount_flag, parse_volume_flag,
};
use super::containers::{self, ContainerSpec, now};
use super::{Env, parse_reference};
use crate::cli::RunArgs;
use crate::render::ProgressPrinter;

pub fn run(env: &Env, args: RunArgs) -> Result<ExitCode> {
    // Flags are checked before anything is pulled or created.
    let mut requests: Vec<MountRequest> = Vec::new();
    for v in &args.volumes {
        requests.push(parse_volume_flag(v)?);
    }
    for m in &args.mounts {
        requests.push(parse_mount_flag(m)?);
    }
    let network = choose_network(args.network.as_deref(), RUN_NETWORKS)?;
    let security = super::confinement::security_options(&args.confinement)?;
    let resources = super::confinement::resource_limits(&args.confinement)?;
    let img = match super::images::find_image(env, &args.image) {
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
    let mut process = process_spec(&img, &args)?;
    process.terminal = args.tty;
    let lowers = lower_dirs(&env.store, img.layers())?;

    let store = &env.store;
    let id = store.new_container_id(&img.manifest_digest.to_string());
    let cfg = &img.config.config;
    let hostname = args.hostname.clone().unwrap_or_else(|| id[..12].to_owned());
    let mut record = ContainerRecord {
        id: id.clone(),
        name: args.name.clone().unwrap_or_default(),
        created: now(),
        image: args.image.clone(),
        image_id: img.config_digest.to_string(),
        manifest: img.manifest_digest.to_string(),
        config: RunConfig {
            hostname: hostname.clone(),
            user: process.user.clone().unwrap_or_default(),
            env: process.env.clone(),
            entrypoint: entrypoint(cfg, &args),
            cmd: process.args[entrypoint(cfg, &args).len()..].to_vec(),
            working_dir: process.cwd.clone(),
            labels: cfg.labels.clone(),
            stop_signal: cfg.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            healthcheck: cfg.healthcheck.clone(),
            tty: args.tty,
            open_stdin: args.interactive,
        },
        mounts: Vec::new(),
        auto_remove: args.rm,
        state: ContainerState::default(),
    };
    store.create_container(&mut record)?;
    let prepared = prepare(
        env,
        &mut record,
        requests,
        &img,
        lowers,
        Confinement {
            network,
            hostname,
            security,
            resources,
        },
        process,
    );
    let spec = match prepared {
        Ok(spec) => spec,
        Err(e) => {
            // Nothing ran: leave no half-made container behind.
            let _ = containers::remove(store, &record, true);
            return Err(e);
        }
    };
    if args.detach {
        containers::supervisor::start(store, &id)?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    run_foreground(env, &record, &spec, &args)
}

/// The sandbox settings of a container that come from `kiln run`'s flags.
struct Confinement {
    network: kiln_sandbox::NetworkMode,
    hostname: String,
    security: kiln_sandbox::SecurityOptions,
    resources: kiln_sandbox::ResourceLimits,
}

/// Creates the container's volumes and writable layer and writes its spec.
fn prepare(
    env: &Env,
    record: &mut ContainerRecord,
    requests: Vec<MountRequest>,
    img: &StoredImage,
    lowers: Vec<std::path::PathBuf>,
    confinement: Confinement,
    process: ProcessSpec,
) -> Result<ContainerSpec> {
    let Confinement {
        network,
        hostname,
        security,
        resources,
    } = confinement;
    let store = &env.store;
    let image_volumes: Vec<String> = img.config.config.volumes.keys().cloned().collect();
    let mounts = create_mounts(store, requests, &image_volumes, &lowers, &record.created)?;
    let dir = store.container_dir(&record.id);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (records, mounts): (Vec<_>, Vec<_>) = mounts.into_iter().unzip();
    *record = store.update_container(&record.id, |r| r.mounts = records)?;
    let spec = ContainerSpec {
        sandbox: SandboxSpec {
            lower_dirs: lowers,
            upper_dir: upper,
            work_dir: work,
            network,
            hostname,
            mounts,
            security,
            resources,
        },
        process,
    };
    spec.write(store, &record.id)?;
    Ok(spec)
}

/// Runs the container in this process, holding its running lock, so that other kiln processes
/// see it in `ps` and can `exec`, `stop` or `kill` it.
fn run_foreground(
    env: &Env,
    record: &ContainerRecord,
    spec: &ContainerSpec,
    args: &RunArgs,
) -> Result<ExitCode> {
    let store = &env.store;
    let running = store.hold_container_running(&record.id)?;
    // Foreground output is logged too, as Docker logs it, while it reaches the caller.
    let log = LogWriter::create(&store.container_dir(&record.id).join("container.log"))?;
    let started = if args.tty {
        Pty::open().and_then(|pty| {
            terminal::copy_window_size(std::io::stdin(), &pty.master);
            let child = kiln_sandbox::spawn(&spec.sandbox, &spec.process, pty.stdio()?)?;
            Ok((child, Some(pty)))
        })
    } else {
        let stdio = kiln_sandbox::Stdio {
            stdin: if args.interactive {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            },
            stdout: std::process::Stdio::piped(),
            stderr: std::process::Stdio::piped(),
        };
        kiln_sandbox::spawn(&spec.sandbox, &spec.process, stdio)
            .map(|child| (child, None))
            .map_err(Into::into)
    };
    let (child, pty) = match started {
        Ok(started) => started,
        Err(e) => {
            let code = containers::start_error_code(&e);
            store.update_container(&record.id, |r| {
                r.state.status = ContainerStatus::Exited;
                r.state.exit_code = code;
                r.state.error = format!("{e:#}");
                r.state.finished_at = now();
            })?;
            drop(running);
            if args.rm {
                containers::remove(store, record, true)?;
            }
            // Docker's status for a container that could not start, after the error.
            crate::render::print_error(&e);
            return Ok(ExitCode::from(code as u8));
        }
    };
    let pid = child.namespace_init_pid().unwrap_or(0);
    store.update_container(&record.id, |r| {
        r.state.status = ContainerStatus::Running;
        r.state.pid = pid;
        r.state.sandbox_pid = child.pid();
        r.state.owner_pid = std::process::id();
        r.state.started_at = now();
    })?;
    let code = match pty {
        Some(pty) => attach_terminal(env, pty, child, args.interactive, Some(log))?,
        None => {
            let mut child = child;
            let copiers = [
                child
                    .take_stdout()
                    .map(|out| log_and_echo(&log, "stdout", out, std::io::stdout())),
                child
                    .take_stderr()
                    .map(|err| log_and_echo(&log, "stderr", err, std::io::stderr())),
            ];
            let code = child.wait()?.code();
            for copier in copiers.into_iter().flatten() {
                let _ = copier.join();
            }
            code
        }
    };
    store.update_container(&record.id, |r| {
        r.state.status = ContainerStatus::Exited;
        r.state.exit_code = code;
        r.state.pid = 0;
        r.state.finished_at = now();
    })?;
    store.record_exit_in_lock(&running, code)?;
    drop(running);
    if args.rm {
        containers::remove(store, record, true)?;
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Connects the caller's terminal to a process running on `pty` until it exits: raw mode,
/// input (with `-i`), output, window size changes. Returns the exit code.
pub fn attach_terminal(
    env: &Env,
    pty: Pty,
    child: SandboxChild,
    interactive: bool,
    log: Option<LogWriter>,
) -> Result<i32> {
    let Pty { master, slave } = pty;
    // Only the process keeps the slave open, so reading the master ends when it exits.
    drop(slave);
    let raw = RawMode::enter()?;
    if interactive {
        terminal::relay_input(master.try_clone()?);
    }
    terminal::forward_window_changes(&env.rt, master.try_clone()?);
    let output = terminal::relay_output(master, log);
    let code = child.wait()?.code();
    let _ = output.join();
    drop(raw);
    Ok(code)
}

/// Copies one output stream of a foreground container to the caller and into the log.
fn log_and_echo(
    log: &LogWriter,
    stream: &'static str,
    input: impl std::io::Read + Send + 'static,
    echo: impl std::io::Write + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let log = log.clone();
    std::thread::spawn(move || {
        let _ = log.copy(stream, Tee { input, echo });
    })
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
