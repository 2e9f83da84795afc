//! One supervisor process per running container, in the role conmon or containerd-shim play:
//! containers outlive whoever started them. `launch` (its own module: the other side of the
//! process boundary) re-executes the current program with
//! [`SUPERVISOR_MARKER`]; the binary's `main` calls [`maybe_run_supervisor`] first thing, which
//! runs the supervisor and exits (the way the sandbox's init is entered).
//!
//! The supervisor forks away from its launcher first (the launcher reaps the short-lived
//! first process; the supervisor is reparented to init, so `kiln serve` never parents
//! containers), leads a session of its own (no terminal, nothing tying it to the caller),
//! enters a private mount namespace, holds the container's running lock for the container's
//! lifetime, serves the attach socket (`attach`), starts the sandbox (whose inits die with
//! it), copies the output into the log and to attached clients, runs the HEALTHCHECK, and
//! records the exit code. Its restart policy (`restart`) runs the process again in the same
//! supervisor, the lock held throughout, so the container reads as running (`restarting`
//! between runs) and its log and attached clients carry on. With `--rm` it then removes the
//! container and its anonymous volumes.
//! Foreground and detached containers go through this same path, so there is one state
//! machine.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_store::{ContainerRecord, ContainerStatus, Health, Store};

use crate::attach::StreamType;
use crate::error::{Result, RuntimeError};
use crate::health::{healthcheck, run_health_checks};
use crate::logfile::LogWriter;
use crate::pty::{Pty, PtyReader};
use crate::restart::Backoff;
use crate::spec::ContainerSpec;

mod clients;
use clients::{Streams, serve};

/// `argv[1]` of a supervisor process: `<exe> __kiln-supervise ROOT ID [attach-first]`.
pub const SUPERVISOR_MARKER: &str = "__kiln-supervise";
pub(crate) const ATTACH_FIRST: &str = "attach-first";
/// How long a start may take before the launcher gives up.
pub(crate) const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the supervisor waits for the first client of an attach-first start.
const ATTACH_LIMIT: Duration = Duration::from_secs(60);
/// How often a restart's delay looks for a user's stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Tells the launcher to look at the record again (a byte on the supervisor's stdout). The
/// launcher may be gone; that is no error.
fn announce() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\n").and_then(|()| out.flush());
}

/// What a supervisor writes to its log (its stderr) when the container cannot start, so the
/// launcher learns why even after `--rm` removed the record that also says it.
pub(crate) const START_FAILED: &str = "start failed: ";
/// What a supervisor writes to its log when another one already runs the container.
pub(crate) const ALREADY_RUNNING: &str = "already running";

/// Runs the supervisor if this process was started as one (and then exits); returns at once
/// otherwise. Call it first thing in `main`.
pub fn maybe_run_supervisor() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(std::ffi::OsStr::new(SUPERVISOR_MARKER)) {
        return;
    }
    let code = match &args[2..] {
        [root, id, rest @ ..] => {
            let attach_first = rest.iter().any(|a| a == ATTACH_FIRST);
            match run(PathBuf::from(root), &id.to_string_lossy(), attach_first) {
                Ok(()) => 0,
                Err(e) => {
                    // stderr is the container's supervisor.log.
                    let _ = writeln!(std::io::stderr(), "kiln supervisor: {e}");
                    1
                }
            }
        }
        _ => 2,
    };
    std::process::exit(code);
}

fn run(root: PathBuf, id: &str, attach_first: bool) -> Result<()> {
    // Never the launcher's child: a daemon that launches many supervisors would otherwise
    // have to reap each one (a short `--rm` container's left a zombie until it did), and
    // containers would be tied to whoever started them.
    kiln_sandbox::leave_parent()?;
    // A session of its own: no controlling terminal whose hangup would end it.
    let _ = rustix::process::setsid();
    // Volumes and the overlay are mounted in a namespace of the supervisor's own.
    kiln_sandbox::enter_private_mount_namespace()?;
    let store = Store::open(&root)?;
    supervise(&store, id, attach_first)
}

/// Docker's exit status for a container that could not start: 127 when the program does not
/// exist, 126 when it cannot be executed, 125 when the runtime failed.
pub fn start_error_code(error: &RuntimeError) -> i32 {
    use kiln_sandbox::{InitFailure, SandboxError};
    match error {
        RuntimeError::Sandbox(SandboxError::Init(InitFailure::ExecutableNotFound { .. })) => 127,
        RuntimeError::Sandbox(SandboxError::Init(InitFailure::Exec { .. })) => 126,
        _ => 125,
    }
}

/// The supervisor's work: runs the container `id` to its end.
pub fn supervise(store: &Store, id: &str, attach_first: bool) -> Result<()> {
    let Some(running) = store.try_hold_container_running(id)? else {
        // Another supervisor runs it: a start that raced ours.
        let _ = writeln!(std::io::stderr(), "{ALREADY_RUNNING}");
        return Ok(());
    };
    let record = store.find_container(id)?;
    let spec = ContainerSpec::read(store, id)?;
    let log = LogWriter::create(&store.container_dir(id).join("container.log"))?;
    let streams = Arc::new(Streams::new(record.config.tty, record.config.stdin_once));
    let listener = crate::attach::listen(store, id)?;
    serve(listener, streams.clone());
    announce();
    if attach_first {
        let accepted = streams.accepted.lock().unwrap_or_else(|e| e.into_inner());
        let _ = streams
            .accepted_changed
            .wait_timeout_while(accepted, ATTACH_LIMIT, |n| *n == 0);
    }

    let mut backoff = Backoff::default();
    // Restarts since this start by a user (what `on-failure:N` counts).
    let mut restarts = 0u32;
    let mut record = record;
    loop {
        let first = restarts == 0;
        // `kiln update --restart` may have changed the policy since the last run.
        let spec = if first {
            spec.clone()
        } else {
            ContainerSpec::read(store, id)?
        };
        // A user's stop that came just after the delay's last look.
        if !first && store.find_container(id)?.state.manually_stopped {
            store.update_container(id, |r| {
                r.state.status = ContainerStatus::Exited;
                r.state.restarting = false;
            })?;
            store.record_exit_in_lock(&running, record.state.exit_code)?;
            streams.hang_up();
            return finish(store, &record);
        }
        let started = start_sandbox(store, &spec, &record, &log, &streams);
        let (child, copiers) = match started {
            Ok(started) => started,
            Err(e) => {
                let message = e.to_string();
                let code = start_error_code(&e);
                // Its stderr is the supervisor log the launcher reads.
                let _ = writeln!(
                    std::io::stderr(),
                    "{START_FAILED}{}",
                    message.replace('\n', " ")
                );
                streams.hang_up();
                unpublish(store, &spec, id);
                store.update_container(id, |r| {
                    r.state.status = ContainerStatus::Exited;
                    r.state.restarting = false;
                    r.state.exit_code = code;
                    r.state.error = message.clone();
                    r.state.started_at = Some(chrono::Utc::now());
                    r.state.finished_at = Some(chrono::Utc::now());
                })?;
                store.record_exit_in_lock(&running, code)?;
                announce();
                return finish(store, &record);
            }
        };
        let pid = child.namespace_init_pid().unwrap_or(0);
        let check = healthcheck(&record.config.healthcheck);
        let began = std::time::Instant::now();
        record = store.update_container(id, |r| {
            r.state.status = ContainerStatus::Running;
            r.state.restarting = false;
            // A user's start (the first run) counts restarts anew (dockerd's
            // `ResetRestartManager(true)`); it cleared the stop mark before launching.
            if first {
                r.state.restart_count = 0;
            }
            r.state.pid = pid;
            r.state.sandbox_pid = child.pid();
            r.state.owner_pid = std::process::id();
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.started_at = Some(chrono::Utc::now());
            r.state.finished_at = None;
            r.state.health = check.as_ref().map(|_| Health::default());
        })?;
        announce();
        let code = run_to_exit(store, &spec, &record, child, copiers, check, pid, &streams)?;

        let policy = ContainerSpec::read(store, id)
            .map(|s| s.restart_policy)
            .unwrap_or_default();
        let manual = store.find_container(id)?.state.manually_stopped;
        if record.auto_remove || !policy.restarts_after(code, restarts, manual) {
            // A `--rm` container's record goes in a moment, so its exit is not written into
            // it (a synced rewrite on the path of every `kiln run --rm`): the code goes into
            // the running lock, which `kiln run` and every waiter read, and the record says
            // running (this process holds the lock) until it is removed. Killed in between,
            // it reads as a dead supervisor's.
            if !record.auto_remove {
                store.update_container(id, |r| {
                    r.state.status = ContainerStatus::Exited;
                    r.state.restarting = false;
                    r.state.exit_code = code;
                    r.state.pid = 0;
                    r.state.finished_at = Some(chrono::Utc::now());
                })?;
            }
            store.record_exit_in_lock(&running, code)?;
            // Clients learn the end from the closed connection, after the exit code is
            // recorded.
            streams.hang_up();
            return finish(store, &record);
        }
        restarts += 1;
        let delay = backoff.next(began.elapsed());
        store.update_container(id, |r| {
            r.state.restarting = true;
            r.state.restart_count += 1;
            r.state.exit_code = code;
            r.state.pid = 0;
            r.state.sandbox_pid = 0;
            r.state.finished_at = Some(chrono::Utc::now());
        })?;
        announce();
        if !wait_before_restart(store, id, delay)? {
            // A user stopped it between two runs.
            store.update_container(id, |r| {
                r.state.status = ContainerStatus::Exited;
                r.state.restarting = false;
            })?;
            store.record_exit_in_lock(&running, code)?;
            streams.hang_up();
            return finish(store, &record);
        }
    }
}

/// Sleeps `delay` before a restart, looking at the record meanwhile: a user's stop during the
/// delay is seen within [`STOP_POLL`] (and once more just before the next run).
/// Returns false when the user stopped it.
fn wait_before_restart(store: &Store, id: &str, delay: Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + delay;
    loop {
        if store.find_container(id)?.state.manually_stopped {
            return Ok(false);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(true);
        }
        std::thread::sleep(STOP_POLL.min(deadline - now));
    }
}

/// Waits for the container's process to end, then ends what served it (published ports, the
/// output copiers, stdin, health checks); returns its exit code.
#[allow(clippy::too_many_arguments)]
fn run_to_exit(
    store: &Store,
    spec: &ContainerSpec,
    record: &ContainerRecord,
    child: kiln_sandbox::SandboxChild,
    copiers: Copiers,
    check: Option<kiln_image::HealthConfig>,
    pid: u32,
    streams: &Streams,
) -> Result<i32> {
    let exited = Arc::new(AtomicBool::new(false));
    let health = check.map(|check| {
        let (store, record, exited) = (store.clone(), record.clone(), exited.clone());
        let security = spec.sandbox.security.clone();
        std::thread::spawn(move || {
            run_health_checks(&store, &record, &check, pid, &security, &exited)
        })
    });
    let code = child.wait()?.code();
    exited.store(true, Ordering::SeqCst);
    unpublish(store, spec, &record.id);
    for copier in copiers {
        let _ = copier.join();
    }
    streams.close_stdin();
    if let Some(h) = health {
        let _ = h.join();
    }
    Ok(code)
}

/// `--rm`: the container goes with its anonymous volumes.
fn finish(store: &Store, record: &ContainerRecord) -> Result<()> {
    if record.auto_remove {
        crate::lifecycle::remove_record(store, record, true)?;
    }
    Ok(())
}

type Copiers = Vec<std::thread::JoinHandle<()>>;

/// Copies one output stream into the log and to the attached clients until it ends.
fn copier(
    log: &LogWriter,
    streams: &Arc<Streams>,
    name: &'static str,
    kind: StreamType,
    mut input: Box<dyn Read + Send>,
) -> std::thread::JoinHandle<()> {
    let mut lines = log.stream(name);
    let streams = streams.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = lines.push(&buf[..n]);
            streams.broadcast(kind, &buf[..n]);
        }
        let _ = lines.finish();
    })
}

/// Spawns the sandbox; on bridge networks its namespace is connected to each of the
/// container's networks before the process runs. Published ports are bound first (a port in
/// use fails the start before anything runs), their DNAT rules written with the interfaces,
/// and their proxy served once the container's namespace exists.
fn spawn_sandbox(
    store: &Store,
    spec: &ContainerSpec,
    record: &ContainerRecord,
    stdio: kiln_sandbox::Stdio,
) -> Result<kiln_sandbox::SandboxChild> {
    use kiln_network::ports::{self, Target};
    let networks = kiln_network::Networks::open(store.root());
    let mut bound = Some(ports::bind(&spec.ports.publish)?);
    let published: Vec<ports::Published> = bound.iter().flatten().map(|b| b.published).collect();
    // Bridge networks, and the default network of a container connected to some since.
    let bridged = spec.sandbox.network == kiln_sandbox::NetworkMode::Prepared;
    let connect = match spec.sandbox.network {
        kiln_sandbox::NetworkMode::Prepared => true,
        kiln_sandbox::NetworkMode::Default => !networks.endpoints_of(&record.id)?.is_empty(),
        _ => false,
    };
    let child = if connect {
        // An address this container asked for must not be in use by another running one.
        networks.check_addresses_free(&record.id)?;
        let mut attach = |pid: u32| {
            networks
                .attach_container(&record.id, pid)
                .and_then(|()| {
                    // On the default bridge the server is there only when resolv.conf names
                    // it (a host with loopback resolvers only; see `create`).
                    let forwarder = spec
                        .sandbox
                        .dns
                        .contains(&kiln_network::dns::DNS_ADDRESS.into());
                    kiln_network::dns::start(
                        store.root(),
                        &record.id,
                        pid,
                        &spec.dns_upstream,
                        forwarder,
                    )
                })
                .and_then(|_| match bound.take() {
                    Some(b) if bridged && !b.is_empty() => {
                        publish_on_bridge(&networks, &record.id, b)
                    }
                    other => {
                        bound = other;
                        Ok(())
                    }
                })
                .map_err(|e| e.to_string())
        };
        kiln_sandbox::spawn_prepared(&spec.sandbox, &spec.process, stdio, &mut attach)?
    } else {
        kiln_sandbox::spawn(&spec.sandbox, &spec.process, stdio)?
    };
    // The default network: the proxy dials into the container's namespace.
    if let Some(b) = bound.filter(|b| !b.is_empty()) {
        let pid = child.namespace_init_pid().unwrap_or(0);
        ports::serve(b, &Target::namespace_of(pid)?)?;
    }
    if !published.is_empty() {
        crate::ports::write_published(store, &record.id, &published)?;
    }
    Ok(child)
}

/// Publishes a bridged container's ports: DNAT from outside to its address on its first
/// network, and the proxy (for the host's own traffic) dialing that address.
fn publish_on_bridge(
    networks: &kiln_network::Networks,
    id: &str,
    bound: Vec<kiln_network::ports::Bound>,
) -> kiln_network::Result<()> {
    let first = networks
        .endpoints_of(id)?
        .into_iter()
        .min_by_key(|(_, e)| e.interface.clone());
    let Some((network, Some(ip))) = first.map(|(n, e)| (n, e.ip)) else {
        return Ok(());
    };
    // Rootless: no DNAT (the host's namespace has no route to the per-user namespace's
    // bridges); the proxy dials the address from inside that namespace.
    if let Some(keeper) = networks.user_netns_pid()? {
        return kiln_network::ports::serve(
            bound,
            &kiln_network::ports::Target::address_in(keeper, ip)?,
        );
    }
    let published: Vec<_> = bound.iter().map(|b| b.published).collect();
    kiln_network::nft::publish(&network.bridge, id, ip, &published)?;
    kiln_network::ports::serve(bound, &kiln_network::ports::Target::Address(ip))
}

/// Undoes what publishing made once the container ended (or failed to start): the record of
/// its bound ports and its DNAT rules (the sockets close with this process).
pub(crate) fn unpublish(store: &Store, spec: &ContainerSpec, id: &str) {
    if spec.ports.publish.is_empty() {
        return;
    }
    let _ = std::fs::remove_file(crate::ports::published_path(store, id));
    // A rootless kiln wrote no DNAT rules.
    if !kiln_network::privileged() {
        return;
    }
    if let Ok(endpoints) = kiln_network::Networks::open(store.root()).endpoints_of(id) {
        for (network, _) in endpoints {
            let _ = kiln_network::nft::unpublish(&network.bridge, id);
        }
    }
}

/// Starts the sandbox: stdout and stderr into pipes (stdin too when it is open), or one pty
/// with `-t`.
fn start_sandbox(
    store: &Store,
    spec: &ContainerSpec,
    record: &ContainerRecord,
    log: &LogWriter,
    streams: &Arc<Streams>,
) -> Result<(kiln_sandbox::SandboxChild, Copiers)> {
    if record.config.tty {
        let pty = Pty::open()?;
        let child = spawn_sandbox(store, spec, record, pty.stdio()?)?;
        // Only the sandbox holds the slave now, so the copier sees EIO when it exits.
        let Pty { master, slave } = pty;
        drop(slave);
        let clone = || master.try_clone().map_err(RuntimeError::io("pty master"));
        if record.config.open_stdin {
            *streams.stdin.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(clone()?));
        }
        *streams.pty.lock().unwrap_or_else(|e| e.into_inner()) = Some(clone()?);
        let out = copier(
            log,
            streams,
            "stdout",
            StreamType::Stdout,
            Box::new(PtyReader(master)),
        );
        return Ok((child, vec![out]));
    }
    let stdio = kiln_sandbox::Stdio {
        stdin: if record.config.open_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        },
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
    };
    let mut child = spawn_sandbox(store, spec, record, stdio)?;
    if let Some(stdin) = child.take_stdin() {
        *streams.stdin.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(stdin));
    }
    let mut copiers = Vec::new();
    if let Some(out) = child.take_stdout() {
        copiers.push(copier(
            log,
            streams,
            "stdout",
            StreamType::Stdout,
            Box::new(out),
        ));
    }
    if let Some(err) = child.take_stderr() {
        copiers.push(copier(
            log,
            streams,
            "stderr",
            StreamType::Stderr,
            Box::new(err),
        ));
    }
    Ok((child, copiers))
}
