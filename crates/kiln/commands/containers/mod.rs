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
pub mod resources;
pub mod run;
pub mod terminal;
pub mod volumes;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln_runtime::{AttachRequest, LogFilter, LogOptions, Runtime, WaitCondition};
use kiln_store::{ContainerRecord, ContainerStatus, Store, Timestamp};

pub use commit::commit;

use super::Env;
use crate::cli::{ExecArgs, LogsArgs};

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
    let mut rows = vec![[
        "CONTAINER ID".to_owned(),
        "IMAGE".to_owned(),
        "COMMAND".to_owned(),
        "CREATED".to_owned(),
        "STATUS".to_owned(),
        "NAMES".to_owned(),
    ]];
    for c in &containers {
        let command = c.config.command();
        rows.push([
            c.id[..12].to_owned(),
            c.image.clone(),
            format!("\"{}\"", truncate(&command.join(" "), 20)),
            format!("{} ago", kiln_runtime::human_since(Some(c.created), now)),
            kiln_runtime::status_text(c, now),
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

/// `--since`/`--until`: RFC 3339, or a duration before now (`10m`, `1h30m`, `45s`).
fn parse_log_time(flag: &str, value: &str) -> Result<Timestamp> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let mut total = 0i64;
    let mut number = String::new();
    for ch in value.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => {
                bail!("invalid {flag} {value:?}: expected an RFC 3339 time or a duration like 10m")
            }
        };
        let n: i64 = number
            .parse()
            .with_context(|| format!("invalid {flag} {value:?}"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || value.is_empty() {
        bail!("invalid {flag} {value:?}: expected an RFC 3339 time or a duration like 10m");
    }
    Ok(chrono::Utc::now() - chrono::Duration::seconds(total))
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
pub fn attach_command(env: &Env, query: &str, no_stdin: bool) -> Result<ExitCode> {
    let rt = Runtime::new(env.store.clone());
    let record = rt.container(query)?;
    let request = AttachRequest {
        stdin: !no_stdin && record.config.open_stdin,
        ..AttachRequest::output()
    };
    let exit = rt.store.watch_container_exit(&record.id)?;
    let stream = rt.attach(&record.id, request.clone())?;
    attach::relay(env, &rt, &record, stream, request.stdin)?;
    attach::exit_code(&rt, &record, exit)
}

/// `kiln exec`: an exec instance created and started in the container, its exit code
/// recorded (and returned).
pub fn exec(env: &Env, args: ExecArgs) -> Result<ExitCode> {
    let rt = Runtime::new(env.store.clone());
    let config = kiln_runtime::ExecConfig {
        cmd: args.command.clone(),
        env: create::resolve_env(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        attach_stdin: args.interactive,
    };
    let exec = rt.exec_create(&args.container, &config)?;
    let code = if args.tty {
        let pty = kiln_runtime::pty::Pty::open()?;
        terminal::copy_window_size(std::io::stdin(), &pty.master);
        let started = rt.exec_start(&exec.id, pty.stdio()?)?;
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
        rt.exec_start(&exec.id, stdio)?.wait()?
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut_to_the_column() {
        assert_eq!(
            truncate("abcdefghijklmnopqrstuvwxyz", 20).chars().count(),
            20
        );
    }

    #[test]
    fn log_times_are_rfc3339_or_durations() {
        let t = parse_log_time("--since", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let ago = chrono::Utc::now() - parse_log_time("--since", "1h30m").unwrap();
        assert!((5399..=5401).contains(&ago.num_seconds()), "{ago}");
        for bad in ["", "10", "5d", "yesterday"] {
            assert!(parse_log_time("--since", bad).is_err(), "{bad}");
        }
    }
}
