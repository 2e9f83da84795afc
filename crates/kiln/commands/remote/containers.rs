//! `kiln --host … ps`, `logs`, `run`, `stop` and `rm`, rendered as the in-process commands
//! render them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_client::{LogsOptions, Output};

use super::session::{Relayed, Resize, Session};
use super::{Remote, create_pulling};
use crate::cli::{LogsArgs, RunArgs};
use crate::commands::containers::request::request;
use crate::commands::flags::parse_log_time;
use crate::render::{table, truncate};

pub fn ps(remote: &Remote, all: bool, quiet: bool) -> Result<ExitCode> {
    let containers = remote.call(remote.client.containers(all))?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &containers {
            writeln!(out, "{}", c.id.chars().take(12).collect::<String>())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let mut rows = vec![crate::render::ps_header()];
    for c in &containers {
        let created = chrono::DateTime::from_timestamp(c.created, 0);
        let names: Vec<&str> = c.names.iter().map(|n| n.trim_start_matches('/')).collect();
        rows.push([
            c.id.chars().take(12).collect(),
            c.image.clone(),
            format!("\"{}\"", truncate(&c.command, 20)),
            format!("{} ago", kiln_runtime::human_since(created, now)),
            c.status.clone(),
            crate::commands::containers::ports::ps_column(&c.ports),
            names.join(","),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(ExitCode::SUCCESS)
}

/// A time for the API: Unix seconds with nanoseconds, which dockerd and kiln serve both read.
fn api_time(flag: &str, value: &str) -> Result<String> {
    let t = parse_log_time(flag, value)?;
    Ok(format!(
        "{}.{:09}",
        t.timestamp(),
        t.timestamp_subsec_nanos()
    ))
}

pub fn logs(remote: &Remote, args: &LogsArgs) -> Result<ExitCode> {
    if args.tail != "all" {
        args.tail
            .parse::<u64>()
            .with_context(|| format!("invalid --tail {:?}", args.tail))?;
    }
    let options = LogsOptions {
        follow: args.follow,
        timestamps: args.timestamps,
        since: args
            .since
            .as_deref()
            .map(|v| api_time("--since", v))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|v| api_time("--until", v))
            .transpose()?,
        tail: args.tail.clone(),
    };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    remote.call(
        remote
            .client
            .container_logs(&args.container, &options, &mut |output, data| {
                match output {
                    // Flushed at once: a followed log is read as it comes.
                    Output::Stdout => stdout.write_all(data).and_then(|()| stdout.flush()),
                    Output::Stderr => stderr.write_all(data),
                }
            }),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln run`: create (pulling the image first when the daemon has none, as the docker CLI
/// does on a 404), then with `-d` start and print the ID; else attach (hijacked: stdin too
/// with `-i`), wait, start, relay until the container ends and exit with its code.
pub fn run(remote: &Remote, args: &RunArgs) -> Result<ExitCode> {
    super::refuse_platform(args)?;
    let body = request(args, !args.detach)?;
    let created = create_pulling(remote, args.name.as_deref(), &args.image, &body)?;
    let id = created.id;
    let client = &remote.client;
    if args.detach {
        remote.call(client.container_start(&id))?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let session = Session {
        remote,
        tty: args.tty,
        stdin: args.interactive,
        resize: Some(Resize::Container(id.clone())),
        signals_to: Some(id.clone()),
        detach_keys: Some(args.detach_keys.parse()?),
    };
    let code = remote.call(async {
        // Attach and wait are in place before the start, so no output and no exit is missed.
        let attached = client
            .container_attach(&id, args.interactive, Some(&args.detach_keys))
            .await?;
        let condition = if args.rm { "removed" } else { "next-exit" };
        let exited = client.container_wait(&id, condition).await?;
        client.container_start(&id).await?;
        if session.relay(attached).await? == Relayed::Detached {
            return Ok(0);
        }
        Ok::<_, anyhow::Error>(exited.exit_code().await?)
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn stop(remote: &Remote, queries: &[String], grace: u64) -> Result<ExitCode> {
    for query in queries {
        remote.call(remote.client.container_stop(query, Some(grace)))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(remote: &Remote, queries: &[String], force: bool, volumes: bool) -> Result<ExitCode> {
    for query in queries {
        remote.call(remote.client.container_remove(query, force, volumes))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}
