//! `kiln --host … create`, `start`, `restart`, `kill` and `wait`: one call per container,
//! printed as the in-process commands print them.

use std::process::ExitCode;

use anyhow::Result;

use super::{Remote, create_pulling};
use crate::cli::RunArgs;
use crate::commands::containers::request::request;

pub fn create(remote: &Remote, args: &RunArgs) -> Result<ExitCode> {
    let body = request(args, false)?;
    let created = create_pulling(remote, args.name.as_deref(), &args.image, &body)?;
    println!("{}", created.id);
    Ok(ExitCode::SUCCESS)
}

pub fn start(remote: &Remote, queries: &[String]) -> Result<ExitCode> {
    for query in queries {
        remote.call(remote.client.container_start(query))?;
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
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
