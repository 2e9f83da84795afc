//! Volumes: `kiln volume create|ls|inspect|rm|prune`, and the mounts of a new container from
//! `-v`, `--mount` and the image's `VOLUME` paths.
//!
//! As with Docker, a volume that is empty when a container first mounts it gets the image's
//! content at the mount path (named and anonymous volumes alike); a bind mount never does. The
//! copy is `kiln_layer::fill_volume`, safe against containers already using the volume.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_sandbox::{BindMount, Mount, OverlayMount, TmpfsMount};
use kiln_store::{MountKind, MountRecord, Store, VolumeRecord};
use serde_json::json;

use crate::cli::VolumeCommand;

/// One mount a container asked for, before volumes exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRequest {
    /// `None`: an anonymous volume.
    Volume {
        name: Option<String>,
        target: String,
        readonly: bool,
        /// `volume-nocopy`: leave a new volume empty.
        no_copy: bool,
    },
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

impl MountRequest {
    fn target(&self) -> &str {
        match self {
            MountRequest::Volume { target, .. }
            | MountRequest::Bind { target, .. }
            | MountRequest::Tmpfs { target, .. } => target,
        }
    }
}

/// `-v NAME:/PATH[:ro]`, `-v /HOST:/PATH[:ro|rw]`, `-v /PATH`.
pub fn parse_volume_flag(v: &str) -> Result<MountRequest> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [t] => {
            check_target(v, t)?;
            return Ok(MountRequest::Volume {
                name: None,
                target: normalize(t),
                readonly: false,
                no_copy: false,
            });
        }
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => {
            bail!("invalid volume {v:?}: expected NAME:/PATH[:ro], /HOST/PATH:/PATH[:ro] or /PATH")
        }
    };
    check_target(v, target)?;
    if source.starts_with('/') {
        return Ok(MountRequest::Bind {
            source: canonical_source(source)?,
            target: normalize(target),
            readonly,
        });
    }
    if source.starts_with('.') || source.starts_with('~') {
        bail!("invalid volume {v:?}: a host path must be absolute");
    }
    Ok(MountRequest::Volume {
        name: Some(source.to_owned()),
        target: normalize(target),
        readonly,
        no_copy: false,
    })
}

/// `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly][,volume-nocopy][,tmpfs-size=N]`.
pub fn parse_mount_flag(m: &str) -> Result<MountRequest> {
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
    check_target(m, target)?;
    let target = normalize(target);
    Ok(match kind.unwrap_or("volume") {
        "volume" => MountRequest::Volume {
            name: source.filter(|s| !s.is_empty()).map(str::to_owned),
            target,
            readonly,
            no_copy,
        },
        "bind" => {
            let Some(source) = source else {
                bail!("invalid mount {m:?}: a bind mount needs source=");
            };
            if !source.starts_with('/') {
                bail!("invalid mount {m:?}: the bind source must be an absolute path");
            }
            MountRequest::Bind {
                source: canonical_source(source)?,
                target,
                readonly,
            }
        }
        "tmpfs" => {
            if source.is_some() {
                bail!("invalid mount {m:?}: a tmpfs mount takes no source");
            }
            MountRequest::Tmpfs { target, size }
        }
        other => bail!("invalid mount {m:?}: unknown type {other:?} (volume, bind or tmpfs)"),
    })
}

fn check_target(flag: &str, target: &str) -> Result<()> {
    if !target.starts_with('/') {
        bail!("invalid mount {flag:?}: the container path {target:?} must be absolute");
    }
    if Path::new(target)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        bail!("invalid mount {flag:?}: the container path {target:?} contains \"..\"");
    }
    if normalize(target) == "/" {
        bail!("invalid mount {flag:?}: cannot mount over /");
    }
    Ok(())
}

fn normalize(target: &str) -> String {
    let mut out = String::new();
    for part in target.split('/').filter(|p| !p.is_empty() && *p != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() { "/".into() } else { out }
}

fn canonical_source(source: &str) -> Result<PathBuf> {
    PathBuf::from(source)
        .canonicalize()
        .with_context(|| format!("bind source path {source} does not exist"))
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

/// Every mount of a new container: the requests in order, then an anonymous volume for each
/// image `VOLUME` path no request covers. Volumes are created (and, when empty, filled from
/// the image through a read-only overlay of `lowers`).
pub fn create_mounts(
    store: &Store,
    requests: Vec<MountRequest>,
    image_volumes: &[String],
    lowers: &[PathBuf],
    now: &str,
) -> Result<Vec<(MountRecord, Mount)>> {
    let mut requests = requests;
    for path in image_volumes {
        let path = normalize(path);
        if path != "/" && !requests.iter().any(|r| r.target() == path) {
            requests.push(MountRequest::Volume {
                name: None,
                target: path,
                readonly: false,
                no_copy: false,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &requests {
        if !seen.insert(r.target().to_owned()) {
            bail!("duplicate mount point: {}", r.target());
        }
    }
    let mut image_root: Option<(tempfile::TempDir, OverlayMount)> = None;
    let mut out = Vec::new();
    for request in requests {
        out.push(match request {
            MountRequest::Bind {
                source,
                target,
                readonly,
            } => (
                MountRecord {
                    kind: MountKind::Bind,
                    name: String::new(),
                    source: source.clone(),
                    destination: target.clone(),
                    rw: !readonly,
                },
                Mount::Bind(BindMount {
                    source,
                    target,
                    readonly,
                }),
            ),
            MountRequest::Tmpfs { target, size } => (
                MountRecord {
                    kind: MountKind::Tmpfs,
                    name: String::new(),
                    source: PathBuf::new(),
                    destination: target.clone(),
                    rw: true,
                },
                Mount::Tmpfs(TmpfsMount { target, size }),
            ),
            MountRequest::Volume {
                name,
                target,
                readonly,
                no_copy,
            } => {
                let (volume, _) = store.create_volume(name.as_deref(), now, BTreeMap::new())?;
                let data = store.volume_data_dir(&volume.name);
                // Only a shortcut that spares mounting the image: `fill_volume` decides
                // emptiness again, under its lock, against containers writing meanwhile.
                let empty = std::fs::read_dir(&data)
                    .with_context(|| format!("reading {}", data.display()))?
                    .next()
                    .is_none();
                if empty && !no_copy && !lowers.is_empty() {
                    if image_root.is_none() {
                        let dir = store.temp_dir("volume-init-")?;
                        let mount = OverlayMount::mount(lowers, None, dir.path())
                            .context("mounting the image to copy volume contents")?;
                        image_root = Some((dir, mount));
                    }
                    if let Some((_, root)) = &image_root {
                        kiln_layer::fill_volume(root.path(), &target, &data).with_context(
                            || format!("copying the image's {target} into volume {}", volume.name),
                        )?;
                    }
                }
                (
                    MountRecord {
                        kind: MountKind::Volume,
                        name: volume.name.clone(),
                        source: data.clone(),
                        destination: target.clone(),
                        rw: !readonly,
                    },
                    Mount::Bind(BindMount {
                        source: data,
                        target,
                        readonly,
                    }),
                )
            }
        });
    }
    Ok(out)
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
            let mut failed = false;
            for name in &names {
                match store.remove_volume(name) {
                    Ok(()) => writeln!(out, "{name}")?,
                    Err(e) => {
                        failed = true;
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed {
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
    fn volume_flags() {
        assert_eq!(
            parse_volume_flag("data:/srv/data:ro").unwrap(),
            MountRequest::Volume {
                name: Some("data".into()),
                target: "/srv/data".into(),
                readonly: true,
                no_copy: false
            }
        );
        assert!(matches!(
            parse_volume_flag("/var//lib/").unwrap(),
            MountRequest::Volume { name: None, ref target, .. } if target == "/var/lib"
        ));
        assert!(matches!(
            parse_volume_flag("/tmp:/data:ro").unwrap(),
            MountRequest::Bind { readonly: true, .. }
        ));
        assert!(parse_volume_flag("/tmp:data").is_err());
        assert!(parse_volume_flag("/nonexistent-kiln-dir:/x").is_err());
        assert!(parse_volume_flag("./rel:/x").is_err());
        assert!(parse_volume_flag("a").is_err());
        assert!(parse_volume_flag("v:/a/../b").is_err());
    }

    #[test]
    fn mount_flags() {
        assert_eq!(
            parse_mount_flag("type=volume,src=cache,dst=/cache,readonly").unwrap(),
            MountRequest::Volume {
                name: Some("cache".into()),
                target: "/cache".into(),
                readonly: true,
                no_copy: false
            }
        );
        assert_eq!(
            parse_mount_flag("type=tmpfs,target=/run,tmpfs-size=64m").unwrap(),
            MountRequest::Tmpfs {
                target: "/run".into(),
                size: Some(64 << 20)
            }
        );
        assert!(matches!(
            parse_mount_flag("type=bind,source=/tmp,target=/h,ro=false").unwrap(),
            MountRequest::Bind {
                readonly: false,
                ..
            }
        ));
        assert!(matches!(
            parse_mount_flag("target=/anon").unwrap(),
            MountRequest::Volume { name: None, .. }
        ));
        for bad in [
            "type=bind,target=/x",
            "type=nfs,target=/x",
            "type=volume,src=a",
            "type=tmpfs,src=a,target=/x",
            "type=volume,target=/x,colour=blue",
            "type=volume,target=/",
        ] {
            assert!(parse_mount_flag(bad).is_err(), "{bad}");
        }
    }
}
