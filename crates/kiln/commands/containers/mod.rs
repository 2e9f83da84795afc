//! Container lifecycle commands: `create`, `start`, `attach`, `restart`, `ps`, `logs`, `stop`,
//! `kill`, `wait`, `exec`, `rm`, `commit`, container `inspect`, `diff`, `rename`, `container
//! prune`, `cp`, `export`, `pause`/`unpause`, `top`, `stats`, `update`, and `volume`. Each turns its
//! flags into a call of the container runtime (`kiln_runtime`) and renders the result; every
//! container runs under its own supervisor there, whoever started it.

pub mod attach;
mod commit;
pub mod copy;
pub mod create;
pub mod manage;
pub mod networks;
pub mod ports;
pub mod request;
pub mod resources;
pub mod run;
pub mod terminal;
pub mod volumes;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln_runtime::{AttachRequest, LogFilter, LogOptions, Runtime, WaitCondition};
use kiln_store::{ContainerRecord, ContainerStatus, Store};

pub use commit::commit;

use super::Env;
use super::flags::parse_log_time;
use crate::cli::{ExecArgs, LogsArgs};
use crate::render::{table, truncate};

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
    let now = chrono::Utc::now();
    let mut rows = vec![crate::render::ps_header()];
    for c in &containers {
        let command = c.config.command();
        rows.push([
            c.id[..12].to_owned(),
            c.image.clone(),
            format!("\"{}\"", truncate(&command.join(" "), 20)),
            format!("{} ago", kiln_runtime::human_since(Some(c.created), now)),
            kiln_runtime::status_text(c, now),
            ports::ps_column_of(store, c),
            c.name.clone(),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(ExitCode::SUCCESS)
}

pub fn logs(store: &Store, args: &LogsArgs) -> Result<ExitCode> {
    let filter = LogFilter {
        since: args
            .since
            .as_deref()
            .map(|v| parse_log_time("--since", v))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|v| parse_log_time("--until", v))
            .transpose()?,
        tail: match args.tail.as_str() {
            "all" => None,
            n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}"))?),
        },
    };
    let options = LogOptions {
        filter,
        follow: args.follow,
    };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    Runtime::new(store.clone()).logs(&args.container, &options, |entry| {
        let text = if args.timestamps {
            format!("{} {}", entry.time, entry.log)
        } else {
            entry.log
        };
        let (written, name) = if entry.stream == "stderr" {
            (stderr.write_all(text.as_bytes()), "stderr")
        } else {
            (
                stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush()),
                "stdout",
            )
        };
        // A reader gone away (a closed pipe) ends a followed log too.
        written.map_err(|source| kiln_runtime::RuntimeError::Io {
            path: name.into(),
            source,
        })
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop(store: &Store, queries: &[String], grace: u64) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    for query in queries {
        rt.stop(query, Duration::from_secs(grace))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restart(store: &Store, queries: &[String], grace: u64) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    for query in queries {
        rt.restart(query, Duration::from_secs(grace))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(store: &Store, queries: &[String], signal: &str) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    for query in queries {
        rt.kill(query, signal)?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn wait(store: &Store, queries: &[String], condition: &str) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    let condition: WaitCondition = condition.parse()?;
    for query in queries {
        println!("{}", rt.wait(query, condition)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(store: &Store, queries: &[String], force: bool, volumes: bool) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    for query in queries {
        rt.remove(query, force, volumes)?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln start`: starts containers; with `-a`, the (one) container with its output attached
/// (and stdin with `-i`), returning its exit code.
pub fn start(env: &Env, queries: &[String], attach: bool, interactive: bool) -> Result<ExitCode> {
    let rt = Runtime::new(env.store.clone());
    if !attach {
        for query in queries {
            rt.start(query)?;
            println!("{query}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let [query] = queries else {
        bail!("you cannot start and attach multiple containers at once");
    };
    let record = rt.container(query)?;
    let request = AttachRequest {
        stdin: interactive && record.config.open_stdin,
        ..AttachRequest::output()
    };
    attach::run_attached(env, &rt, &record, request, true)
}

/// `kiln attach`: this terminal to a running container's streams until it exits. Killing this
/// process leaves the container running.
pub fn attach_command(
    env: &Env,
    query: &str,
    no_stdin: bool,
    detach_keys: &str,
) -> Result<ExitCode> {
    let rt = Runtime::new(env.store.clone());
    let record = rt.container(query)?;
    let request = AttachRequest {
        stdin: !no_stdin && record.config.open_stdin,
        detach_keys: Some(detach_keys.parse()?),
        ..AttachRequest::output()
    };
    let exit = rt.store.watch_container_exit(&record.id)?;
    let stream = rt.attach(&record.id, request.clone())?;
    if attach::relay(env, &rt, &record, stream, &request)? == attach::Relayed::Detached {
        return Ok(ExitCode::SUCCESS);
    }
    attach::exit_code(&rt, &record, exit)
}

/// `kiln exec`: an exec instance created and started in the container, its exit code
/// recorded (and returned).
pub fn exec(env: &Env, args: ExecArgs) -> Result<ExitCode> {
    let rt = Runtime::new(env.store.clone());
    let config = kiln_runtime::ExecConfig {
        cmd: args.command.clone(),
        env: request::resolve_env(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        attach_stdin: args.interactive,
    };
    let exec = rt.exec_create(&args.container, &config)?;
    // A program that cannot start: its error, and docker exec's 126/127.
    let failed = |e: kiln_runtime::RuntimeError| -> Result<ExitCode> {
        if matches!(e, kiln_runtime::RuntimeError::Sandbox(_)) {
            let code = kiln_runtime::exec_failure_code(&e) as u8;
            crate::render::print_error(&anyhow::Error::from(e));
            return Ok(ExitCode::from(code));
        }
        Err(e.into())
    };
    let code = if args.tty {
        let pty = kiln_runtime::pty::Pty::open()?;
        terminal::copy_window_size(std::io::stdin(), &pty.master);
        let started = match rt.exec_start(&exec.id, pty.stdio()?) {
            Ok(started) => started,
            Err(e) => return failed(e),
        };
        terminal::attach_terminal(env, pty, started, args.interactive)?
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
        match rt.exec_start(&exec.id, stdio) {
            Ok(started) => started.wait()?,
            Err(e) => return failed(e),
        }
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
