//! One layer for the same filesystem step of several target platforms of one build.
//!
//! A multi-platform build runs each COPY/ADD and WORKDIR once per target, over bases that
//! differ (each platform's base image), so their cache keys differ, as they must. Their layers,
//! though, are often the same bytes: a copy of the same sources writes the same files, and it
//! reads the base only where it writes and on the way there. Copying, tarring, compressing and
//! fsyncing that layer again per platform was what made a two-platform build of COPY-only
//! steps cost twice the CPU of one (docs/benchmarks.md, "Multi-platform builds").
//!
//! The key decision is what makes two bases "alike enough". The first target to run a step
//! records, with its layer, the state of its base (type, mode, owner, size, times, device,
//! symlink target, xattrs) at every path in the layer and at every prefix of the step's
//! destination. A later target of the same build whose base shows the very same state at each
//! of those paths would walk the same directories and write the same entries (the copy follows
//! only what it reads there, and parents it creates depend on the step's own inputs), so it
//! takes that layer (blob, diffID, snapshot) instead. The state is read from the bases' layer
//! snapshots by overlayfs's lookup rules, not through a mount (see [`lookup`]). Whatever the
//! check cannot vouch for is built as before:
//! - a layer holding whiteouts or opaque directories: they depend on what the base holds *below*
//!   a path, which the check does not look at;
//! - a symlink in the first base on any checked path: the step wrote through it, somewhere the
//!   other base may not lead;
//! - steps that resolve names against the base (`--chown name`, WORKDIR under a USER): their
//!   callers do not offer them (no operation key).
//!
//! Nothing here outlives the build, and cache keys stay per platform: only the work is shared.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_image::LayerRef;

use crate::error::{Result, SolveError};
use crate::progress::{ProgressEvent, StepLabel};
use crate::stage::{StageBuilder, StageState};

/// The overlay xattrs that make an upper dir entry more than a plain file or directory.
const OVERLAY_MARKERS: [&[u8]; 4] = [
    b"trusted.overlay.opaque",
    b"trusted.overlay.whiteout",
    b"user.overlay.opaque",
    b"user.overlay.whiteout",
];

/// What a base holds at one path, as far as a step writing there can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathState {
    Absent,
    Present {
        mode: u32,
        owner: (u32, u32),
        size: u64,
        mtime: (i64, i64),
        rdev: u64,
        link: Option<Vec<u8>>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl PathState {
    fn is_symlink(&self) -> bool {
        matches!(self, PathState::Present { link: Some(_), .. })
    }
}

/// A layer one target built, and what its base held where the step looked.
#[derive(Debug, Clone)]
struct Built {
    layer: LayerRef,
    /// The step that built it (its progress label), for the event naming the sharing.
    by: StepLabel,
    /// Root-relative path → the first base's state there.
    probes: Vec<(PathBuf, PathState)>,
    /// What the step's caller keeps about the files it wrote (a COPY's fingerprints).
    files: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
enum Slot {
    /// Nobody has run the operation yet.
    #[default]
    Empty,
    /// Its first run cannot be vouched for (see the module docs).
    Unshareable,
    Built(Built),
}

/// The build's operations by key; a step takes its operation's lock for as long as it runs, so
/// a second target reaching the same step waits for the first and takes its layer.
#[derive(Debug, Default)]
pub(crate) struct SharedLayers {
    /// Off for a one-platform build: nothing to share with, so no probing either.
    enabled: bool,
    ops: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

/// How a step's layer came about.
pub(crate) enum Layer {
    /// The step ran.
    Built(Option<LayerRef>),
    /// Another target's run of the step made it; with that run's files.
    Shared(LayerRef, BTreeMap<String, String>),
}

/// A step's operation: what decides its layer besides its base, and where it writes.
pub(crate) struct SharedOp {
    /// Every input of the step but its base and platform (a cache key without the parent).
    pub key: String,
    /// The absolute destination the step walks to (its prefixes are checked in the base).
    pub dest: String,
    /// Whether the step writes over the base at all: `COPY --link` writes into an empty
    /// directory, so its layer is the same over any base and nothing is checked.
    pub over_base: bool,
}

impl SharedLayers {
    pub(crate) fn new(enabled: bool) -> Self {
        SharedLayers {
            enabled,
            ops: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &str) -> Arc<Mutex<Slot>> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(key.to_owned()).or_default().clone()
    }
}

impl StageBuilder<'_> {
    /// Runs `build` for a step of `state`, unless another target of this build already ran the
    /// same operation over a base that looks the same where the step writes: then that layer.
    /// `build` returns the layer and the files to keep with it.
    pub(crate) fn shared_layer(
        &self,
        state: &StageState,
        label: &StepLabel,
        op: Option<SharedOp>,
        build: impl FnOnce() -> Result<(Option<LayerRef>, BTreeMap<String, String>)>,
    ) -> Result<Layer> {
        let op = match op {
            Some(op) if self.shared.enabled => op,
            _ => return Ok(Layer::Built(build()?.0)),
        };
        let slot = self.shared.slot(&op.key);
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Slot::Built(built) = &*slot {
            let paths: Vec<&Path> = built.probes.iter().map(|(p, _)| p.as_path()).collect();
            let states = self.probe_base(state, &paths)?;
            if built.probes.iter().map(|(_, s)| s).eq(states.iter()) {
                (self.progress)(ProgressEvent::LayerShared {
                    step: label.clone(),
                    from: built.by.clone(),
                });
                return Ok(Layer::Shared(built.layer.clone(), built.files.clone()));
            }
            return Ok(Layer::Built(build()?.0));
        }
        let first = matches!(*slot, Slot::Empty);
        let (layer, files) = build()?;
        if first {
            *slot = match &layer {
                Some(layer) => self.describe(state, label, &op, layer, &files)?,
                None => Slot::Unshareable,
            };
        }
        Ok(Layer::Built(layer))
    }

    /// The slot for a layer this target just built: the base's state at every path of the
    /// layer and every prefix of the destination, unless the check could not vouch for it.
    fn describe(
        &self,
        state: &StageState,
        label: &StepLabel,
        op: &SharedOp,
        layer: &LayerRef,
        files: &BTreeMap<String, String>,
    ) -> Result<Slot> {
        if !op.over_base {
            return Ok(Slot::Built(Built {
                layer: layer.clone(),
                by: label.clone(),
                probes: Vec::new(),
                files: files.clone(),
            }));
        }
        let snapshot = self.engine.store.snapshot_path(&layer.diff_id);
        let Some(mut paths) = layer_paths(&snapshot)? else {
            return Ok(Slot::Unshareable);
        };
        let mut prefix = PathBuf::new();
        for part in Path::new(&op.dest).components() {
            if let std::path::Component::Normal(name) = part {
                prefix.push(name);
                paths.push(prefix.clone());
            }
        }
        paths.sort();
        paths.dedup();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let states = self.probe_base(state, &refs)?;
        if states.iter().any(PathState::is_symlink) {
            return Ok(Slot::Unshareable);
        }
        Ok(Slot::Built(Built {
            layer: layer.clone(),
            by: label.clone(),
            probes: paths.into_iter().zip(states).collect(),
            files: files.clone(),
        }))
    }

    /// The state of `state`'s filesystem at each root-relative path (nothing exists in an
    /// empty stage), looked up in its layers' snapshots.
    fn probe_base(&self, state: &StageState, paths: &[&Path]) -> Result<Vec<PathState>> {
        if state.layers.is_empty() || paths.is_empty() {
            return Ok(vec![PathState::Absent; paths.len()]);
        }
        let lowers = self.lower_dirs(state.layer_refs())?;
        paths.iter().map(|path| lookup(&lowers, path)).collect()
    }
}

/// What an overlay of `lowers` (topmost first) shows at the root-relative `rel`, found in the
/// layers' directories by overlayfs's lookup rules rather than through a mount (a mount and
/// unmount per step and target cost more than the whole check): component by component, the
/// topmost entry wins; a whiteout hides the layers below; a directory merges with the
/// directories below it unless it is opaque; anything that is not a directory hides what is
/// below. Below a non-directory (a symlink included) nothing exists: the probe of that
/// ancestor, which is always among the paths checked, tells such bases apart.
fn lookup(lowers: &[PathBuf], rel: &Path) -> Result<PathState> {
    let mut layers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let mut prefix = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        prefix.push(part);
        let mut top: Option<(PathBuf, bool)> = None;
        let mut merged = Vec::new();
        for layer in &layers {
            let path = layer.join(&prefix);
            let io = |source| SolveError::ReadFile {
                path: path.clone(),
                source,
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.raw_os_error().is_some_and(is_missing) => continue,
                Err(e) => return Err(io(e)),
            };
            let xattrs = crate::copy::xattrs_of(&path).map_err(io)?;
            let marker = |name: &str| {
                xattrs.iter().any(|(key, value)| {
                    [b"trusted.overlay.".as_slice(), b"user.overlay."]
                        .iter()
                        .any(|ns| key.strip_prefix(*ns) == Some(name.as_bytes()))
                        && (name != "opaque" || value == b"y")
                })
            };
            let whiteout =
                (meta.file_type().is_char_device() && meta.rdev() == 0) || marker("whiteout");
            if whiteout {
                break;
            }
            let is_dir = meta.is_dir();
            if top.is_none() {
                top = Some((path, is_dir));
            }
            if !is_dir {
                break;
            }
            merged.push(*layer);
            if marker("opaque") {
                break;
            }
        }
        match top {
            None => return Ok(PathState::Absent),
            Some((path, _)) if i + 1 == parts.len() => return path_state(&path),
            Some((_, false)) => return Ok(PathState::Absent),
            Some((_, true)) => layers = merged,
        }
    }
    // The root itself: never in a layer's tar, never checked.
    Ok(PathState::Absent)
}

fn path_state(path: &Path) -> Result<PathState> {
    let io = |source| SolveError::ReadFile {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // A path below a file is not there either; below a symlink the probe of the symlink
        // itself (an ancestor, also probed) already tells the bases apart.
        Err(e) if e.raw_os_error().is_some_and(is_missing) => return Ok(PathState::Absent),
        Err(e) => return Err(io(e)),
    };
    let link = if meta.file_type().is_symlink() {
        Some(
            std::fs::read_link(path)
                .map_err(io)?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    } else {
        None
    };
    Ok(PathState::Present {
        mode: meta.mode(),
        owner: (meta.uid(), meta.gid()),
        size: if meta.is_dir() { 0 } else { meta.size() },
        mtime: (meta.mtime(), meta.mtime_nsec()),
        rdev: meta.rdev(),
        link,
        xattrs: crate::copy::xattrs_of(path)
            .map_err(io)?
            .into_iter()
            .filter(|(name, _)| {
                !name.starts_with(b"trusted.overlay.") && !name.starts_with(b"user.overlay.")
            })
            .collect(),
    })
}

/// ENOENT, or ENOTDIR (a component on the way is not a directory).
fn is_missing(errno: i32) -> bool {
    errno == rustix::io::Errno::NOENT.raw_os_error()
        || errno == rustix::io::Errno::NOTDIR.raw_os_error()
}

/// Every root-relative path of a committed layer's snapshot, or `None` when it holds a
/// whiteout or an opaque directory (see the module docs).
fn layer_paths(snapshot: &Path) -> Result<Option<Vec<PathBuf>>> {
    let mut paths = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = snapshot.join(&rel);
        let io = |source| SolveError::ReadFile {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let io = |source| SolveError::ReadFile {
                path: path.clone(),
                source,
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io)?;
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                return Ok(None);
            }
            let xattrs = crate::copy::xattrs_of(&path).map_err(io)?;
            if xattrs
                .iter()
                .any(|(name, _)| OVERLAY_MARKERS.contains(&name.as_slice()))
            {
                return Ok(None);
            }
            let child = rel.join(entry.file_name());
            if meta.is_dir() {
                dirs.push(child.clone());
            }
            paths.push(child);
        }
    }
    Ok(Some(paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_lists_every_entry_and_refuses_overlay_markers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app/config")).unwrap();
        std::fs::write(dir.path().join("app/config/a.conf"), "a").unwrap();
        let mut paths = layer_paths(dir.path()).unwrap().unwrap();
        paths.sort();
        let want: Vec<PathBuf> = ["app", "app/config", "app/config/a.conf"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(paths, want);

        // A whiteout (char device 0:0, as overlay writes one) makes the layer unshareable.
        let whiteout = dir.path().join("app/gone");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &whiteout,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        assert!(layer_paths(dir.path()).unwrap().is_none());
        std::fs::remove_file(&whiteout).unwrap();

        // So does an opaque directory.
        rustix::fs::setxattr(
            dir.path().join("app/config"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert!(layer_paths(dir.path()).unwrap().is_none());
    }

    /// Three layers, topmost first: `top` whites out /etc/old and makes /opt opaque;
    /// `middle` has /app as a file over `bottom`'s directory, and /etc/new.
    #[test]
    fn lookup_follows_overlay_rules() {
        let dir = tempfile::tempdir().unwrap();
        let [top, middle, bottom] = ["top", "middle", "bottom"].map(|l| dir.path().join(l));
        for (layer, dirs) in [
            (&top, &["etc", "opt"][..]),
            (&middle, &["etc"][..]),
            (&bottom, &["etc", "opt", "app"][..]),
        ] {
            for d in dirs {
                std::fs::create_dir_all(layer.join(d)).unwrap();
            }
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("etc/old"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        rustix::fs::setxattr(
            top.join("opt"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::fs::write(middle.join("app"), "a file").unwrap();
        std::fs::write(middle.join("etc/new"), "new").unwrap();
        std::fs::write(bottom.join("etc/old"), "old").unwrap();
        std::fs::write(bottom.join("opt/hidden"), "x").unwrap();
        std::fs::write(bottom.join("app/inner"), "x").unwrap();
        let lowers = [top.clone(), middle.clone(), bottom.clone()];
        let at = |p: &str| lookup(&lowers, Path::new(p)).unwrap();
        assert_eq!(at("etc/old"), PathState::Absent, "whited out");
        assert_eq!(at("etc/new"), path_state(&middle.join("etc/new")).unwrap());
        assert_eq!(at("opt/hidden"), PathState::Absent, "below an opaque dir");
        assert_eq!(
            at("app"),
            path_state(&middle.join("app")).unwrap(),
            "a file on top"
        );
        assert_eq!(at("app/inner"), PathState::Absent, "below a file");
        assert_eq!(at("missing/x"), PathState::Absent);
        // The topmost directory's own metadata, without overlay's xattrs.
        let PathState::Present { xattrs, .. } = at("opt") else {
            panic!("/opt is there");
        };
        assert!(xattrs.is_empty(), "{xattrs:?}");
    }

    #[test]
    fn path_state_tells_absent_dir_file_and_symlink_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink("d", dir.path().join("l")).unwrap();
        let state = |p: &str| path_state(&dir.path().join(p)).unwrap();
        assert_eq!(state("missing"), PathState::Absent);
        // Below a file: not there either (ENOTDIR).
        assert_eq!(state("f/below"), PathState::Absent);
        assert!(!state("d").is_symlink() && state("d") != PathState::Absent);
        assert!(state("l").is_symlink());
        assert_ne!(state("d"), state("f"));
    }
}
