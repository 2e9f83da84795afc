//! `kiln --host … create`, `start` (`-a`: attached), `restart`, `kill` and `wait`: one call
//! per container, printed as the in-process commands print them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_runtime::DetachKeys;

use super::session::{Relayed, Resize, Session};
use super::{Remote, create_pulling};
use crate::cli::RunArgs;
use crate::commands::containers::request::request;

pub fn create(remote: &Remote, args: &RunArgs) -> Result<ExitCode> {
    super::refuse_platform(args)?;
    let body = request(args, false)?;
    let created = create_pulling(remote, args.name.as_deref(), &args.image, &body)?;
    println!("{}", created.id);
    Ok(ExitCode::SUCCESS)
}

/// `kiln start`; with `-a` the one container's output (and stdin with `-i`, if it was created
/// with `-i`) until it ends, and its exit code.
pub fn start(
    remote: &Remote,
    queries: &[String],
    attach: bool,
    interactive: bool,
) -> Result<ExitCode> {
    let client = &remote.client;
    if !attach {
        for query in queries {
            remote.call(client.container_start(query))?;
            println!("{query}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let [query] = queries else {
        bail!("you cannot start and attach multiple containers at once");
    };
    let inspected = remote.call(client.container_inspect(query))?;
    let id = inspected["Id"].as_str().unwrap_or(query).to_owned();
    let tty = inspected["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = interactive && inspected["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let session = Session {
        remote,
        tty,
        stdin,
        resize: Some(Resize::Container(id.clone())),
        signals_to: Some(id.clone()),
        detach_keys: Some(DetachKeys::default()),
    };
    let code = remote.call(async {
        let attached = client.container_attach(&id, stdin, None).await?;
        let exited = client.container_wait(&id, "next-exit").await?;
        client.container_start(&id).await?;
        if session.relay(attached).await? == Relayed::Detached {
            return Ok(0);
        }
        Ok::<_, anyhow::Error>(exited.exit_code().await?)
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn restart(remote: &Remote, queries: &[String], grace: u64) -> Result<ExitCode> {
    for query in queries {
        remote.call(remote.client.container_restart(query, grace))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(remote: &Remote, queries: &[String], signal: &str) -> Result<ExitCode> {
    for query in queries {
        remote.call(remote.client.container_kill(query, signal))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn wait(remote: &Remote, queries: &[String], condition: &str) -> Result<ExitCode> {
    for query in queries {
        let code = remote.call(async {
            remote
                .client
                .container_wait(query, condition)
                .await?
                .exit_code()
                .await
        })?;
        println!("{code}");
    }
    Ok(ExitCode::SUCCESS)
}
