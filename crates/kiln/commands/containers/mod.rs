//! Container lifecycle commands: `ps`, `logs`, `stop`, `kill`, `wait`, `exec`, `rm`,
//! `commit`, container `inspect`, and `volume`. The records live in the store
//! (`kiln_store::ContainerRecord`); a detached container is owned by its supervisor
//! ([`supervisor`]), a foreground one by its `kiln run`.

mod commit;
pub mod logfile;
pub mod supervisor;
pub mod terminal;
pub mod volumes;

use std::io::{BufReader, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_sandbox::{ProcessSpec, SandboxSpec};
use kiln_store::{ContainerRecord, ContainerStatus, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use commit::commit;

use super::Env;
use crate::cli::ExecArgs;

/// `containers/<id>/spec.json`: how the supervisor starts the container.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub sandbox: SandboxSpec,
    pub process: ProcessSpec,
}

impl ContainerSpec {
    pub fn write(&self, store: &Store, id: &str) -> Result<()> {
        let path = store.container_dir(id).join("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(store: &Store, id: &str) -> Result<ContainerSpec> {
        let path = store.container_dir(id).join("spec.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Docker's exit status for a container that could not start: 127 when the program does not
/// exist, 126 when it cannot be executed, 125 when the runtime failed.
pub fn start_error_code(error: &anyhow::Error) -> i32 {
    use kiln_sandbox::{InitFailure, SandboxError};
    match error.downcast_ref::<SandboxError>() {
        Some(SandboxError::Init(InitFailure::ExecutableNotFound { .. })) => 127,
        Some(SandboxError::Init(InitFailure::Exec { .. })) => 126,
        _ => 125,
    }
}

/// The current time as Docker prints it in records (RFC 3339, nanoseconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Linux signal numbers by name (the same on x86-64 and arm64).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<rustix::process::Signal> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name.parse::<i32>() {
        Ok(n) => n,
        Err(_) => SIGNALS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, n)| *n)
            .with_context(|| format!("invalid signal {s:?}"))?,
    };
    rustix::process::Signal::from_named_raw(number)
        .with_context(|| format!("invalid or unsupported signal {s:?}"))
}

/// Sends `signal` to a running container (through its sandbox's outer init, which forwards
/// it to the container's process).
fn signal_container(
    store: &Store,
    c: &ContainerRecord,
    signal: rustix::process::Signal,
) -> Result<()> {
    // The running lock says the pid is still the container's (not a reused one).
    if !store.container_is_running(&c.id)? || c.state.sandbox_pid == 0 {
        bail!("container {} is not running", c.name);
    }
    let pid = rustix::process::Pid::from_raw(c.state.sandbox_pid as i32)
        .context("the container's record has no pid")?;
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("signalling container {}", c.name))
}

pub fn ps(store: &Store, all: bool, quiet: bool) -> Result<ExitCode> {
    let containers: Vec<ContainerRecord> = store
        .list_containers()?
        .into_iter()
        .filter(|c| all || c.state.status == ContainerStatus::Running)
        .collect();
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &containers {
            writeln!(out, "{}", &c.id[..12])?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "CONTAINER ID".to_owned(),
        "IMAGE".to_owned(),
        "COMMAND".to_owned(),
        "CREATED".to_owned(),
        "STATUS".to_owned(),
        "NAMES".to_owned(),
    ]];
    for c in &containers {
        let command: Vec<&str> = c
            .config
            .entrypoint
            .iter()
            .chain(&c.config.cmd)
            .map(String::as_str)
            .collect();
        rows.push([
            c.id[..12].to_owned(),
            c.image.clone(),
            format!("\"{}\"", truncate(&command.join(" "), 20)),
            format!("{} ago", human_since(&c.created)),
            status_text(c),
            c.name.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 5 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// `Up 3 minutes (healthy)`, `Exited (0) 2 seconds ago`, `Created`.
fn status_text(c: &ContainerRecord) -> String {
    match c.state.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => {
            let health = match &c.state.health {
                Some(h) if h.status == "starting" => " (health: starting)".to_owned(),
                Some(h) => format!(" ({})", h.status),
                None => String::new(),
            };
            format!("Up {}{health}", human_since(&c.state.started_at))
        }
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            human_since(&c.state.finished_at)
        ),
    }
}

/// Docker's "About a minute", "3 hours" style of elapsed time since an RFC 3339 time.
fn human_since(time: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) else {
        return "some time".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

pub fn logs(store: &Store, query: &str, follow: bool) -> Result<ExitCode> {
    let c = store.find_container(query)?;
    let path = store.container_dir(&c.id).join("container.log");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("container {} has no log (it never started)", c.name)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut pending = Vec::new();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        // Checked before reading, so the last read after the owner let go sees everything.
        let running = follow && store.container_is_running(&c.id)?;
        for entry in logfile::read_entries(&mut reader, &mut pending)? {
            if entry.stream == "stderr" {
                stderr.write_all(entry.log.as_bytes())?;
            } else {
                stdout.write_all(entry.log.as_bytes())?;
            }
        }
        stdout.flush()?;
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn stop(store: &Store, queries: &[String], grace: u64) -> Result<ExitCode> {
    for query in queries {
        let c = store.find_container(query)?;
        if store.container_is_running(&c.id)? {
            let signal = parse_signal(if c.config.stop_signal.is_empty() {
                "SIGTERM"
            } else {
                &c.config.stop_signal
            })?;
            signal_container(store, &c, signal)?;
            let deadline = Instant::now() + Duration::from_secs(grace);
            while store.container_is_running(&c.id)? && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if store.container_is_running(&c.id)? {
                let _ = signal_container(store, &c, rustix::process::Signal::KILL);
            }
            store.wait_container_stopped(&c.id)?;
        }
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(store: &Store, queries: &[String], signal: &str) -> Result<ExitCode> {
    let signal = parse_signal(signal)?;
    for query in queries {
        let c = store.find_container(query)?;
        signal_container(store, &c, signal)?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn wait(store: &Store, queries: &[String]) -> Result<ExitCode> {
    for query in queries {
        let c = store.find_container(query)?;
        let left_in_lock = store.wait_container_stopped(&c.id)?;
        // A `--rm` container is gone by now; its owner left the code in the lock file.
        let code = match store.find_container(&c.id) {
            Ok(after) => after.state.exit_code,
            Err(_) => left_in_lock
                .with_context(|| format!("container {} was removed when it exited", c.name))?,
        };
        println!("{code}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(store: &Store, queries: &[String], force: bool, volumes: bool) -> Result<ExitCode> {
    for query in queries {
        let c = store.find_container(query)?;
        if store.container_is_running(&c.id)? {
            if !force {
                bail!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove (-f)",
                    c.name
                );
            }
            let _ = signal_container(store, &c, rustix::process::Signal::KILL);
            store.wait_container_stopped(&c.id)?;
        }
        remove(store, &c, volumes)?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes a stopped container and, with `volumes`, its anonymous volumes. A container
/// removed by its own `--rm` at the same time is not an error.
pub fn remove(store: &Store, c: &ContainerRecord, volumes: bool) -> Result<()> {
    match store.remove_container(&c.id) {
        Ok(()) | Err(kiln_store::ContainerError::NoSuchContainer(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if volumes {
        volumes::remove_anonymous_volumes(store, &c.mounts)?;
    }
    Ok(())
}

/// Docker's `inspect` object for a container, `None` if `query` names none.
pub fn inspect_json(store: &Store, query: &str) -> Result<Option<serde_json::Value>> {
    let c = match store.find_container(query) {
        Ok(c) => c,
        Err(kiln_store::ContainerError::NoSuchContainer(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let zero = "0001-01-01T00:00:00Z";
    let or_zero = |t: &str| {
        if t.is_empty() {
            zero.to_owned()
        } else {
            t.to_owned()
        }
    };
    let mut args: Vec<&String> = c.config.entrypoint.iter().chain(&c.config.cmd).collect();
    let path = if args.is_empty() {
        String::new()
    } else {
        args.remove(0).clone()
    };
    let health = c.state.health.as_ref().map(|h| {
        json!({
            "Status": h.status,
            "FailingStreak": h.failing_streak,
            "Log": h.log.iter().map(|p| json!({
                "Start": p.start, "End": p.end, "ExitCode": p.exit_code, "Output": p.output,
            })).collect::<Vec<_>>(),
        })
    });
    let running = c.state.status == ContainerStatus::Running;
    let mut state = json!({
        "Status": c.state.status.as_str(),
        "Running": running,
        "Paused": false,
        "Restarting": false,
        "OOMKilled": false,
        "Dead": false,
        "Pid": if running { c.state.pid } else { 0 },
        "ExitCode": c.state.exit_code,
        "Error": c.state.error,
        "StartedAt": or_zero(&c.state.started_at),
        "FinishedAt": or_zero(&c.state.finished_at),
    });
    if let Some(h) = health {
        state["Health"] = h;
    }
    Ok(Some(json!({
        "Id": c.id,
        "Created": c.created,
        "Path": path,
        "Args": args,
        "State": state,
        "Image": c.image_id,
        "Name": format!("/{}", c.name),
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.kind,
            "Name": if m.name.is_empty() { None } else { Some(&m.name) },
            "Source": m.source,
            "Destination": m.destination,
            "Driver": if m.kind == "volume" { "local" } else { "" },
            "Mode": "",
            "RW": m.rw,
            "Propagation": "",
        })).collect::<Vec<_>>(),
        "Config": {
            "Hostname": c.config.hostname,
            "User": c.config.user,
            "Tty": c.config.tty,
            "OpenStdin": c.config.open_stdin,
            "Env": c.config.env,
            "Cmd": c.config.cmd,
            "Entrypoint": c.config.entrypoint,
            "Image": c.image,
            "WorkingDir": c.config.working_dir,
            "Labels": c.config.labels,
            "StopSignal": c.config.stop_signal,
            "Healthcheck": c.config.healthcheck,
        },
        "HostConfig": { "AutoRemove": c.auto_remove },
    })))
}

pub fn exec(env: &Env, args: ExecArgs) -> Result<ExitCode> {
    let c = env.store.find_container(&args.container)?;
    if !env.store.container_is_running(&c.id)? || c.state.pid == 0 {
        bail!("container {} is not running", c.name);
    }
    let mut environment = c.config.env.clone();
    super::run::apply_env(&mut environment, &args.env);
    let process = ProcessSpec {
        args: args.command.clone(),
        env: environment,
        cwd: args
            .workdir
            .clone()
            .or_else(|| Some(c.config.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
        user: args
            .user
            .clone()
            .or_else(|| Some(c.config.user.clone()))
            .filter(|u| !u.is_empty()),
        terminal: args.tty,
    };
    if !process.cwd.starts_with('/') {
        bail!(
            "the working directory {:?} is not an absolute path",
            process.cwd
        );
    }
    // The exec'd process is confined exactly as the container's own.
    let security = ContainerSpec::read(&env.store, &c.id)?.sandbox.security;
    let code = if args.tty {
        let pty = terminal::Pty::open()?;
        terminal::copy_window_size(std::io::stdin(), &pty.master);
        let child = kiln_sandbox::spawn_in(c.state.pid, &process, &security, pty.stdio()?)?;
        super::run::attach_terminal(env, pty, child, args.interactive, None)?
    } else {
        let stdio = kiln_sandbox::Stdio {
            stdin: if args.interactive {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            },
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        };
        kiln_sandbox::spawn_in(c.state.pid, &process, &security, stdio)?
            .wait()?
            .code()
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap().as_raw(), 15);
        assert_eq!(parse_signal("usr1").unwrap().as_raw(), 10);
        assert_eq!(parse_signal("9").unwrap().as_raw(), 9);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn elapsed_times_read_like_docker() {
        let ago = |secs: i64| {
            (chrono::Utc::now() - chrono::Duration::seconds(secs))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        assert_eq!(human_since(&ago(5)), "5 seconds");
        assert_eq!(human_since(&ago(90)), "About a minute");
        assert_eq!(human_since(&ago(7200 + 5)), "2 hours");
        assert_eq!(
            truncate("abcdefghijklmnopqrstuvwxyz", 20).chars().count(),
            20
        );
    }
}
