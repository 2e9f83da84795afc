//! `kiln --host … attach` and `exec`: hijacked connections to a running container's streams,
//! or to a new process in it.

use std::process::ExitCode;

use anyhow::Result;
use kiln_runtime::{DetachKeys, ExecConfig};
use serde::Serialize;

use super::Remote;
use super::session::{Relayed, Resize, Session};
use crate::cli::ExecArgs;
use crate::commands::containers::request::resolve_env;

/// `kiln attach`: this terminal to the container's streams until it ends (stdin unless
/// `--no-stdin`, when the container was created with `-i`); its exit code.
pub fn attach(remote: &Remote, query: &str, no_stdin: bool, detach_keys: &str) -> Result<ExitCode> {
    let keys: DetachKeys = detach_keys.parse()?;
    let client = &remote.client;
    let inspected = remote.call(client.container_inspect(query))?;
    let id = inspected["Id"].as_str().unwrap_or(query).to_owned();
    let tty = inspected["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !no_stdin && inspected["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let session = Session {
        remote,
        tty,
        stdin,
        resize: Some(Resize::Container(id.clone())),
        signals_to: Some(id.clone()),
        detach_keys: Some(keys),
    };
    let code = remote.call(async {
        let attached = client
            .container_attach(&id, stdin, Some(detach_keys))
            .await?;
        if session.relay(attached).await? == Relayed::Detached {
            return Ok(0);
        }
        let exited = client.container_wait(&id, "not-running").await?;
        Ok::<_, anyhow::Error>(exited.exit_code().await?)
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The body of `POST /containers/{id}/exec`: the runtime's `ExecConfig` (the daemon's own
/// type) and the streams to attach.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecCreate<'a> {
    #[serde(flatten)]
    config: &'a ExecConfig,
    attach_stdout: bool,
    attach_stderr: bool,
}

/// `kiln exec`: the process's streams (stdin with `-i`, a pty with `-t`) until it ends; its
/// exit code.
pub fn exec(remote: &Remote, args: &ExecArgs) -> Result<ExitCode> {
    let client = &remote.client;
    let config = ExecConfig {
        cmd: args.command.clone(),
        env: resolve_env(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        attach_stdin: args.interactive,
    };
    let body = ExecCreate {
        config: &config,
        attach_stdout: true,
        attach_stderr: true,
    };
    let exec = remote.call(client.exec_create(&args.container, &body))?;
    let session = Session {
        remote,
        tty: args.tty,
        stdin: args.interactive,
        resize: Some(Resize::Exec(exec.clone())),
        signals_to: None,
        detach_keys: None,
    };
    let code = remote.call(async {
        let started = client.exec_start(&exec, args.tty).await?;
        session.relay(started).await?;
        Ok::<_, anyhow::Error>(client.exec_exit_code(&exec).await?)
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
