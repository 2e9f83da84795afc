//! The supervisor of a detached container (`kiln run -d`), in the role conmon or
//! containerd-shim play: `kiln run -d` re-executes kiln as `kiln __supervise ID` and returns
//! once the record says the container runs (or failed to start). The supervisor leads a session
//! of its own (no terminal, nothing tying it to the caller), holds the container's running
//! lock for the container's lifetime, starts the sandbox (whose inits die with it), copies the
//! output into the JSON log, runs the HEALTHCHECK, and records the exit code. With `--rm` it
//! then removes the container and its anonymous volumes.

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_image::HealthConfig;
use kiln_sandbox::{ProcessSpec, SandboxChild, SecurityOptions};
use kiln_store::{ContainerRecord, ContainerStatus, Health, HealthProbe, Store};

use super::logfile::{LogWriter, PtyReader};
use super::terminal::Pty;
use super::{ContainerSpec, now};

/// Starts the supervisor for the container `id` (already recorded, with its spec written) and
/// waits until it has started the container. Returns the start error, if any.
pub fn start(store: &Store, id: &str) -> Result<()> {
    let dir = store.container_dir(id);
    let diagnostics = std::fs::File::create(dir.join("supervisor.log"))
        .context("creating the supervisor's log")?;
    let mut child = Command::new("/proc/self/exe")
        .arg("--root")
        .arg(store.root())
        .arg("__supervise")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(diagnostics)
        .spawn()
        .context("starting the container's supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = store.find_container(id)?;
        match record.state.status {
            ContainerStatus::Running => return Ok(()),
            ContainerStatus::Exited if !record.state.error.is_empty() => {
                bail!("{}", record.state.error)
            }
            ContainerStatus::Exited => return Ok(()),
            ContainerStatus::Created => {}
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            bail!("the container's supervisor exited ({status}) before starting it: {log}");
        }
        if Instant::now() > deadline {
            bail!("the container's supervisor did not start it within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor's main: runs the container to its end.
pub fn supervise(store: &Store, id: &str) -> Result<ExitCode> {
    // A session of its own: no controlling terminal whose hangup would end it.
    let _ = rustix::process::setsid();
    let running = store.hold_container_running(id)?;
    let record = store.find_container(id)?;
    let spec = ContainerSpec::read(store, id)?;
    let log = LogWriter::create(&store.container_dir(id).join("container.log"))?;

    let started = start_sandbox(&spec, &log, record.config.tty);
    let (child, copiers) = match started {
        Ok(started) => started,
        Err(e) => {
            let message = format!("{e:#}");
            let code = super::start_error_code(&e);
            store.update_container(id, |r| {
                r.state.status = ContainerStatus::Exited;
                r.state.exit_code = code;
                r.state.error = message.clone();
                r.state.finished_at = now();
            })?;
            store.record_exit_in_lock(&running, code)?;
            finish(store, &record)?;
            return Ok(ExitCode::from(125));
        }
    };
    let pid = child.namespace_init_pid().unwrap_or(0);
    let record = store.update_container(id, |r| {
        r.state.status = ContainerStatus::Running;
        r.state.pid = pid;
        r.state.sandbox_pid = child.pid();
        r.state.owner_pid = std::process::id();
        r.state.started_at = now();
        r.state.health = healthcheck(&r.config.healthcheck).map(|_| Health {
            status: "starting".into(),
            ..Health::default()
        });
    })?;

    let exited = Arc::new(AtomicBool::new(false));
    let health = healthcheck(&record.config.healthcheck).map(|check| {
        let (store, record, exited) = (store.clone(), record.clone(), exited.clone());
        let security = spec.sandbox.security.clone();
        std::thread::spawn(move || {
            run_health_checks(&store, &record, &check, pid, &security, &exited)
        })
    });

    let code = child.wait()?.code();
    exited.store(true, Ordering::SeqCst);
    for copier in copiers {
        let _ = copier.join();
    }
    if let Some(h) = health {
        let _ = h.join();
    }
    store.update_container(id, |r| {
        r.state.status = ContainerStatus::Exited;
        r.state.exit_code = code;
        r.state.pid = 0;
        r.state.finished_at = now();
    })?;
    store.record_exit_in_lock(&running, code)?;
    finish(store, &record)?;
    Ok(ExitCode::SUCCESS)
}

/// `--rm`: the container goes with its anonymous volumes.
fn finish(store: &Store, record: &ContainerRecord) -> Result<()> {
    if record.auto_remove {
        super::remove(store, record, true)?;
    }
    Ok(())
}

type Copiers = Vec<std::thread::JoinHandle<()>>;

/// Starts the sandbox with its output going to the log: two pipes, or one pty with `-t`.
fn start_sandbox(
    spec: &ContainerSpec,
    log: &LogWriter,
    tty: bool,
) -> Result<(SandboxChild, Copiers)> {
    let copy = |stream: &'static str, input: Box<dyn Read + Send>| {
        let log = log.clone();
        std::thread::spawn(move || {
            let _ = log.copy(stream, input);
        })
    };
    if tty {
        let pty = Pty::open()?;
        let child = kiln_sandbox::spawn(&spec.sandbox, &spec.process, pty.stdio()?)?;
        // Only the sandbox holds the slave now, so the copier sees EIO when it exits.
        let Pty { master, slave } = pty;
        drop(slave);
        return Ok((child, vec![copy("stdout", Box::new(PtyReader(master)))]));
    }
    let stdio = kiln_sandbox::Stdio {
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
    };
    let mut child = kiln_sandbox::spawn(&spec.sandbox, &spec.process, stdio)?;
    let out = child.take_stdout().context("stdout pipe")?;
    let err = child.take_stderr().context("stderr pipe")?;
    Ok((
        child,
        vec![copy("stdout", Box::new(out)), copy("stderr", Box::new(err))],
    ))
}

/// The image's check, unless it has none or says `NONE`.
fn healthcheck(config: &Option<HealthConfig>) -> Option<HealthConfig> {
    config
        .clone()
        .filter(|h| !h.test.is_empty() && h.test[0] != "NONE")
}

/// Docker's defaults for durations left at zero.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Probe results kept in the record, as Docker keeps five.
const KEPT_PROBES: usize = 5;
/// Output kept per probe (Docker keeps 4 KiB).
const MAX_PROBE_OUTPUT: usize = 4096;

fn nanos_or(n: i64, default: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        default
    }
}

/// Runs the check every interval (every start interval during the start period) until the
/// container exits; each probe is a process in the container, as `kiln exec` starts one.
fn run_health_checks(
    store: &Store,
    record: &ContainerRecord,
    check: &HealthConfig,
    pid: u32,
    security: &SecurityOptions,
    exited: &AtomicBool,
) {
    let interval = nanos_or(check.interval, DEFAULT_INTERVAL);
    let timeout = nanos_or(check.timeout, DEFAULT_TIMEOUT);
    let start_period = nanos_or(check.start_period, Duration::ZERO);
    let start_interval = nanos_or(check.start_interval, DEFAULT_START_INTERVAL);
    let retries = if check.retries > 0 {
        check.retries as u32
    } else {
        DEFAULT_RETRIES
    };
    let args = match check.test[0].as_str() {
        "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), check.test[1..].join(" ")],
        "CMD" => check.test[1..].to_vec(),
        _ => check.test.clone(),
    };
    let process = ProcessSpec {
        args,
        env: record.config.env.clone(),
        cwd: Some(record.config.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: Some(record.config.user.clone()).filter(|u| !u.is_empty()),
        terminal: false,
    };
    let began = Instant::now();
    loop {
        let in_start_period = began.elapsed() < start_period;
        let wait = if in_start_period {
            start_interval
        } else {
            interval
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if exited.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
        let start = now();
        let (exit_code, output) = probe(pid, &process, security, timeout);
        if exited.load(Ordering::SeqCst) {
            return;
        }
        let result = HealthProbe {
            start,
            end: now(),
            exit_code,
            output,
        };
        let _ = store.update_container(&record.id, |r| {
            let health = r.state.health.get_or_insert_with(Health::default);
            apply_probe(health, result.clone(), in_start_period, retries);
        });
    }
}

/// Docker's rules: a success makes the container healthy and resets the streak; a failure
/// adds to the streak, except during the start period, and `retries` failures in a row make
/// it unhealthy. The last [`KEPT_PROBES`] results are kept.
fn apply_probe(health: &mut Health, result: HealthProbe, in_start_period: bool, retries: u32) {
    let passed = result.exit_code == 0;
    health.log.push(result);
    if health.log.len() > KEPT_PROBES {
        health.log.remove(0);
    }
    if passed {
        health.status = "healthy".into();
        health.failing_streak = 0;
    } else if !in_start_period {
        health.failing_streak += 1;
        if health.failing_streak >= retries {
            health.status = "unhealthy".into();
        }
    }
}

/// One probe: its exit code and output, or -1 with a timeout message.
fn probe(
    pid: u32,
    process: &ProcessSpec,
    security: &SecurityOptions,
    timeout: Duration,
) -> (i32, String) {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return (-1, format!("pipe: {e}")),
    };
    let stdio = kiln_sandbox::Stdio {
        stdin: Stdio::null(),
        stdout: match writer.try_clone() {
            Ok(w) => w.into(),
            Err(e) => return (-1, format!("pipe: {e}")),
        },
        stderr: writer.into(),
    };
    let mut child = match kiln_sandbox::spawn_in(pid, process, security, stdio) {
        Ok(c) => c,
        Err(e) => return (-1, e.to_string()),
    };
    let output = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.take(MAX_PROBE_OUTPUT as u64).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(code)) => return (code.code(), output.join().unwrap_or_default()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // Killing the helper kills the probe (its parent-death signal).
                let _ = child.kill();
                let _ = child.wait();
                return (
                    -1,
                    format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64()),
                );
            }
            Err(e) => return (-1, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_result(exit_code: i32) -> HealthProbe {
        HealthProbe {
            exit_code,
            ..HealthProbe::default()
        }
    }

    #[test]
    fn health_follows_dockers_rules() {
        let mut h = Health {
            status: "starting".into(),
            ..Health::default()
        };
        // Failures in the start period do not count.
        for _ in 0..4 {
            apply_probe(&mut h, probe_result(1), true, 2);
        }
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        apply_probe(&mut h, probe_result(1), false, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        apply_probe(&mut h, probe_result(1), false, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        apply_probe(&mut h, probe_result(0), false, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        assert_eq!(h.log.len(), KEPT_PROBES);
        assert_eq!(h.log.last().unwrap().exit_code, 0);
        // A success during the start period counts at once.
        let mut early = Health::default();
        apply_probe(&mut early, probe_result(0), true, 3);
        assert_eq!(early.status, "healthy");
    }

    #[test]
    fn check_forms() {
        let check = |test: &[&str]| {
            healthcheck(&Some(HealthConfig {
                test: test.iter().map(|s| s.to_string()).collect(),
                ..HealthConfig::default()
            }))
        };
        assert!(check(&["NONE"]).is_none());
        assert!(check(&[]).is_none());
        assert!(check(&["CMD", "true"]).is_some());
        assert!(healthcheck(&None).is_none());
    }
}
