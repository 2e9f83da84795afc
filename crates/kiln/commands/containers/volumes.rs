//! Volumes: `kiln volume create|ls|inspect|rm|prune`, and `--mount`'s syntax turned into the
//! Engine API's `Mount` object (the runtime makes the mounts, `kiln_runtime::mounts`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_runtime::mounts::{ApiMount, TmpfsOptions, VolumeOptions};
use kiln_store::{MountKind, Store, VolumeRecord};
use serde_json::json;

use crate::cli::VolumeCommand;

/// `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly][,volume-nocopy][,tmpfs-size=N]`.
pub fn parse_mount_flag(m: &str) -> Result<ApiMount> {
    let mut kind = None;
    let (mut source, mut target, mut readonly, mut no_copy, mut size) =
        (None, None, false, false, None);
    for field in m.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let flag = |value: Option<&str>| match value {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => bail!("invalid mount {m:?}: {key}={other} is not a boolean"),
        };
        match (key, value) {
            ("type", Some(v)) => kind = Some(v),
            ("source" | "src", Some(v)) => source = Some(v),
            ("destination" | "dst" | "target", Some(v)) => target = Some(v),
            ("readonly" | "ro", v) => readonly = flag(v)?,
            ("volume-nocopy", v) => no_copy = flag(v)?,
            ("tmpfs-size", Some(v)) => {
                size = Some(parse_size(v).with_context(|| format!("invalid mount {m:?}"))?)
            }
            _ => bail!("invalid mount {m:?}: unknown or incomplete field {field:?}"),
        }
    }
    let Some(target) = target else {
        bail!("invalid mount {m:?}: target= (or dst=) is required");
    };
    let kind = match kind.unwrap_or("volume") {
        "volume" => MountKind::Volume,
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        other => bail!("invalid mount {m:?}: unknown type {other:?} (volume, bind or tmpfs)"),
    };
    if kind == MountKind::Bind && source.is_none() {
        bail!("invalid mount {m:?}: a bind mount needs source=");
    }
    // The runtime checks the rest (paths, a tmpfs without source), as for the Engine API.
    Ok(ApiMount {
        target: target.to_owned(),
        source: source.unwrap_or_default().to_owned(),
        kind,
        read_only: readonly,
        volume_options: no_copy.then_some(VolumeOptions { no_copy }),
        tmpfs_options: size.map(|size| TmpfsOptions {
            size_bytes: size as i64,
        }),
    })
}

fn parse_size(v: &str) -> Result<u64> {
    let lower = v.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches('b').char_indices().last() {
        Some((i, c @ ('k' | 'm' | 'g'))) => (&lower[..i], c),
        _ => (lower.trim_end_matches('b'), ' '),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{v:?} is not a size"))?;
    Ok(n * match unit {
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => 1,
    })
}

pub fn volume_command(store: &Store, command: VolumeCommand) -> Result<ExitCode> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
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
            let (volume, _) = store.create_volume(name.as_deref(), &now, labels)?;
            writeln!(out, "{}", volume.name)?;
        }
        VolumeCommand::Ls { quiet } => {
            let volumes = store.list_volumes()?;
            if !quiet {
                writeln!(out, "DRIVER    VOLUME NAME")?;
            }
            for v in volumes {
                if quiet {
                    writeln!(out, "{}", v.name)?;
                } else {
                    writeln!(out, "{:<10}{}", "local", v.name)?;
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut all = Vec::new();
            for name in &names {
                all.push(volume_json(store, &store.volume(name)?));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        }
        VolumeCommand::Rm { names } => {
            let removed = crate::render::each_reporting(&names, |name| {
                store.remove_volume(name)?;
                writeln!(out, "{name}")?;
                Ok(())
            });
            if !removed {
                return Ok(ExitCode::FAILURE);
            }
        }
        VolumeCommand::Prune { all, force: _ } => {
            let removed = store.prune_volumes(all)?;
            writeln!(out, "Deleted Volumes:")?;
            for name in removed {
                writeln!(out, "{name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn volume_json(store: &Store, v: &VolumeRecord) -> serde_json::Value {
    json!({
        "CreatedAt": v.created_at,
        "Driver": "local",
        "Labels": v.labels,
        "Mountpoint": store.volume_data_dir(&v.name),
        "Name": v.name,
        "Options": serde_json::Value::Null,
        "Scope": "local",
        "Anonymous": v.anonymous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let volume = parse_mount_flag("type=volume,src=cache,dst=/cache,readonly").unwrap();
        assert_eq!(
            (
                volume.kind,
                volume.source.as_str(),
                volume.target.as_str(),
                volume.read_only
            ),
            (MountKind::Volume, "cache", "/cache", true)
        );
        let tmpfs = parse_mount_flag("type=tmpfs,target=/run,tmpfs-size=64m").unwrap();
        assert_eq!(tmpfs.tmpfs_options.unwrap().size_bytes, 64 << 20);
        let bind = parse_mount_flag("type=bind,source=/tmp,target=/h,ro=false").unwrap();
        assert!(!bind.read_only && bind.kind == MountKind::Bind);
        assert!(parse_mount_flag("target=/anon").unwrap().source.is_empty());
        for bad in [
            "type=bind,target=/x",
            "type=nfs,target=/x",
            "type=volume,src=a",
            "type=volume,target=/x,colour=blue",
            "type=volume,target=/x,ro=maybe",
        ] {
            assert!(parse_mount_flag(bad).is_err(), "{bad}");
        }
    }
}
