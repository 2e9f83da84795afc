//! `kiln --host … volume create`, `ls`, `inspect` and `rm`, printed as the in-process
//! commands print them (`prune` is not served by the daemon yet).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::Remote;
use crate::cli::VolumeCommand;

pub fn volume(remote: &Remote, command: VolumeCommand) -> Result<ExitCode> {
    let client = &remote.client;
    let mut out = std::io::stdout().lock();
    match command {
        VolumeCommand::Create { name, labels } => {
            let labels = labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            let created = remote.call(client.volume_create(name.as_deref(), &labels))?;
            writeln!(out, "{}", created["Name"].as_str().unwrap_or_default())?;
        }
        VolumeCommand::Ls { quiet } => {
            let volumes = remote.call(client.volumes())?;
            if !quiet {
                writeln!(out, "DRIVER    VOLUME NAME")?;
            }
            for v in volumes {
                if quiet {
                    writeln!(out, "{}", v.name)?;
                } else {
                    writeln!(out, "{:<10}{}", v.driver, v.name)?;
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut all = Vec::new();
            for name in &names {
                all.push(remote.call(client.volume_inspect(name))?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        }
        VolumeCommand::Rm { names } => {
            let removed = crate::render::each_reporting(&names, |name| {
                remote.call(client.volume_remove(name))?;
                writeln!(out, "{name}")?;
                Ok(())
            });
            if !removed {
                return Ok(ExitCode::FAILURE);
            }
        }
        VolumeCommand::Prune { .. } => bail!(
            "kiln volume prune does not go through the Engine API yet (the daemon does not serve \
             volumes/prune); unset KILN_HOST to prune the local store"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
