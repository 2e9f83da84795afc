//! The mounts of a new container: Docker's `Binds` strings (`-v`), its `Mounts` objects
//! (`--mount`), and an anonymous volume for each image `VOLUME` path neither covers.
//!
//! As with Docker, a volume that is empty when a container first mounts it gets the image's
//! content at the mount path (named and anonymous volumes alike); a bind mount never does. The
//! copy is `kiln_layer::fill_volume`, safe against containers already using the volume.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use kiln_sandbox::{BindMount, Mount, OverlayMount, TmpfsMount};
use kiln_store::{MountKind, MountRecord, Store};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

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

/// The Engine API's `Mount` object (`HostConfig.Mounts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiMount {
    pub target: String,
    #[serde(default)]
    pub source: String,
    #[serde(rename = "Type")]
    pub kind: MountKind,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeOptions {
    #[serde(default)]
    pub no_copy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    #[serde(default)]
    pub size_bytes: i64,
}

fn invalid(spec: &str, reason: String) -> RuntimeError {
    RuntimeError::InvalidMount {
        spec: spec.to_owned(),
        reason,
    }
}

/// A `Binds` entry (`-v`): `NAME:/PATH[:ro]`, `/HOST:/PATH[:ro|rw]`, or `/PATH` (anonymous).
pub fn parse_bind(v: &str) -> Result<MountRequest> {
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
            return Err(invalid(
                v,
                "expected NAME:/PATH[:ro], /HOST/PATH:/PATH[:ro] or /PATH".into(),
            ));
        }
    };
    check_target(v, target)?;
    if source.starts_with('/') {
        return Ok(MountRequest::Bind {
            source: canonical_source(v, source)?,
            target: normalize(target),
            readonly,
        });
    }
    if source.starts_with('.') || source.starts_with('~') {
        return Err(invalid(v, "a host path must be absolute".into()));
    }
    Ok(MountRequest::Volume {
        name: Some(source.to_owned()),
        target: normalize(target),
        readonly,
        no_copy: false,
    })
}

/// A `Mounts` entry (`--mount`).
pub fn from_api(m: &ApiMount) -> Result<MountRequest> {
    let spec = format!("{}:{}", m.kind.as_str(), m.target);
    check_target(&spec, &m.target)?;
    let target = normalize(&m.target);
    Ok(match m.kind {
        MountKind::Volume => MountRequest::Volume {
            name: Some(m.source.clone()).filter(|s| !s.is_empty()),
            target,
            readonly: m.read_only,
            no_copy: m.volume_options.as_ref().is_some_and(|o| o.no_copy),
        },
        MountKind::Bind => {
            if !m.source.starts_with('/') {
                return Err(invalid(
                    &spec,
                    "the bind source must be an absolute path".into(),
                ));
            }
            MountRequest::Bind {
                source: canonical_source(&spec, &m.source)?,
                target,
                readonly: m.read_only,
            }
        }
        MountKind::Tmpfs => {
            if !m.source.is_empty() {
                return Err(invalid(&spec, "a tmpfs mount takes no source".into()));
            }
            MountRequest::Tmpfs {
                target,
                size: m
                    .tmpfs_options
                    .as_ref()
                    .map(|o| o.size_bytes)
                    .filter(|&s| s > 0)
                    .map(|s| s as u64),
            }
        }
    })
}

fn check_target(spec: &str, target: &str) -> Result<()> {
    if !target.starts_with('/') {
        return Err(invalid(
            spec,
            format!("the container path {target:?} must be absolute"),
        ));
    }
    if Path::new(target)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(invalid(
            spec,
            format!("the container path {target:?} contains \"..\""),
        ));
    }
    if normalize(target) == "/" {
        return Err(invalid(spec, "cannot mount over /".into()));
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

fn canonical_source(spec: &str, source: &str) -> Result<PathBuf> {
    PathBuf::from(source)
        .canonicalize()
        .map_err(|_| invalid(spec, format!("bind source path {source} does not exist")))
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
            return Err(RuntimeError::InvalidMount {
                spec: r.target().to_owned(),
                reason: format!("duplicate mount point: {}", r.target()),
            });
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
                    .map_err(RuntimeError::io(&data))?
                    .next()
                    .is_none();
                if empty && !no_copy && !lowers.is_empty() {
                    if image_root.is_none() {
                        let dir = store.temp_dir("volume-init-")?;
                        let mount = OverlayMount::mount(lowers, None, dir.path())?;
                        image_root = Some((dir, mount));
                    }
                    if let Some((_, root)) = &image_root {
                        kiln_layer::fill_volume(root.path(), &target, &data)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_read_as_docker_reads_them() {
        assert_eq!(
            parse_bind("data:/srv/data:ro").unwrap(),
            MountRequest::Volume {
                name: Some("data".into()),
                target: "/srv/data".into(),
                readonly: true,
                no_copy: false
            }
        );
        assert!(matches!(
            parse_bind("/var//lib/").unwrap(),
            MountRequest::Volume { name: None, ref target, .. } if target == "/var/lib"
        ));
        assert!(matches!(
            parse_bind("/tmp:/data:ro").unwrap(),
            MountRequest::Bind { readonly: true, .. }
        ));
        for bad in [
            "/tmp:data",
            "/nonexistent-kiln-dir:/x",
            "./rel:/x",
            "a",
            "v:/a/../b",
        ] {
            let err = parse_bind(bad).unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn api_mounts_become_requests() {
        let api = |json: &str| from_api(&serde_json::from_str::<ApiMount>(json).unwrap());
        assert_eq!(
            api(r#"{"Type":"tmpfs","Target":"/run","TmpfsOptions":{"SizeBytes":1024}}"#).unwrap(),
            MountRequest::Tmpfs {
                target: "/run".into(),
                size: Some(1024)
            }
        );
        assert_eq!(
            api(
                r#"{"Type":"volume","Target":"/c","Source":"cache","ReadOnly":true,
                "VolumeOptions":{"NoCopy":true}}"#
            )
            .unwrap(),
            MountRequest::Volume {
                name: Some("cache".into()),
                target: "/c".into(),
                readonly: true,
                no_copy: true
            }
        );
        assert!(api(r#"{"Type":"bind","Target":"/x","Source":"rel"}"#).is_err());
        assert!(api(r#"{"Type":"tmpfs","Target":"/x","Source":"a"}"#).is_err());
        assert!(api(r#"{"Type":"volume","Target":"/"}"#).is_err());
    }
}
