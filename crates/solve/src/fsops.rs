//! Steps that write files into the image without running a command: `COPY`, `ADD` (in
//! `copy_add`) and the directory `WORKDIR` creates. Each mounts an overlay of the stage's layers
//! with a fresh upper dir, writes through it (every path confined to the root), and commits the
//! upper dir; `COPY --link` writes into an empty directory instead.

mod copy_add;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_dockerfile::Instruction;
use kiln_image::LayerRef;
use kiln_plan::{CopyFrom, Step};
use kiln_sandbox::OverlayMount;

use crate::copy::{mkdir_all, workdir_owner};
use crate::error::{Result, SolveError};
use crate::progress::StepLabel;
use crate::shared_layers::{Layer, SharedOp};
use crate::stage::{StageBuilder, StageState, join_workdir};

/// A scratch directory for one step, whose `upper`, `work` and mount points are made when the
/// step first needs them: most steps that reach the cache hit it (or take another target
/// platform's layer) and need none, and every directory made is an inode the store's
/// filesystem allocates and frees.
struct StepDirs {
    dir: tempfile::TempDir,
}

impl StepDirs {
    fn new(store: &kiln_store::Store, prefix: &str) -> Result<Self> {
        Ok(StepDirs {
            dir: store.temp_dir(prefix)?,
        })
    }

    /// Where `sub` is (`extra` holds downloads and heredoc files, made by their writers;
    /// `parent` is where `--link` looks up names).
    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// `sub`, made if it is not there yet.
    fn dir(&self, sub: &str) -> Result<PathBuf> {
        let p = self.path(sub);
        match std::fs::create_dir(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(SolveError::ReadFile { path: p, source: e })
            }
            _ => Ok(p),
        }
    }
}

impl StageBuilder<'_> {
    /// Mounts `state`'s filesystem read-write at `dirs/merged` with `dirs/upper` collecting changes.
    fn mount_rw(&self, state: &StageState, dirs: &StepDirs) -> Result<OverlayMount> {
        let lowers = self.lower_dirs(state.layer_refs())?;
        let upper = dirs.dir("upper")?;
        let work = dirs.dir("work")?;
        Ok(OverlayMount::mount(
            &lowers,
            Some((&upper, &work)),
            &dirs.dir("merged")?,
        )?)
    }

    /// Mounts the filesystem a `--from` names, read-only, at `dirs/src`.
    fn mount_from(
        &self,
        ins: &Instruction,
        from: &CopyFrom,
        dirs: &StepDirs,
    ) -> Result<(OverlayMount, String)> {
        let (layers, id): (Vec<LayerRef>, _) = match from {
            CopyFrom::Stage(i) => {
                let st = self.built.get(i).ok_or_else(|| {
                    self.fail(ins, format!("stage {i} is not built before this step"))
                })?;
                (st.layer_refs().collect(), st.key.to_string())
            }
            CopyFrom::Image(name) => {
                let img = self
                    .resolve_from_image(name)
                    .map_err(|e| self.fail(ins, format!("--from={name}: {e}")))?;
                (img.layers().collect(), img.manifest_digest.to_string())
            }
        };
        let lowers = self.lower_dirs(layers)?;
        Ok((OverlayMount::mount(&lowers, None, &dirs.dir("src")?)?, id))
    }

    pub(crate) fn workdir_step(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        dir: &str,
    ) -> Result<()> {
        let user = state.config.config.user.clone();
        self.fs_step(
            state,
            ins,
            label,
            |key| {
                key.field("dir", dir);
                key.field("user", user.as_deref().unwrap_or(""));
                Ok(())
            },
            |b, st, label| -> Result<Option<LayerRef>> {
                let build = || -> Result<Option<LayerRef>> {
                    let dirs = StepDirs::new(&b.engine.store, "workdir-")?;
                    let mount = b.mount_rw(st, &dirs)?;
                    // As BuildKit does, the directory belongs to the current USER, resolved its
                    // lenient way (a user not in /etc/passwd leaves it root's: only RUN fails).
                    let owner = match user.as_deref() {
                        Some(u) if !u.is_empty() => Some(
                            workdir_owner(u, mount.path())
                                .map_err(|e| b.fail(ins, e.to_string()))?,
                        ),
                        _ => None,
                    };
                    mkdir_all(mount.path(), dir, owner).map_err(|e| b.fail(ins, e.to_string()))?;
                    mount.unmount()?;
                    b.commit_upper(ins, label, &dirs.path("upper"))
                };
                // Without a USER the directories are root's whatever the base: the layer is the
                // same for every target platform whose base is alike on the way to `dir`.
                let op = user.as_deref().is_none_or(str::is_empty).then(|| {
                    let mut key = crate::cache::KeyBuilder::new("WORKDIR shared layer", None);
                    b.key_epoch(&mut key);
                    key.field("dir", dir);
                    SharedOp {
                        key: key.finish().to_string(),
                        dest: dir.to_owned(),
                        over_base: true,
                    }
                });
                let layer = b.shared_layer(st, label, op, || Ok((build()?, BTreeMap::new())))?;
                Ok(match layer {
                    Layer::Built(layer) => layer,
                    Layer::Shared(layer, _) => Some(layer),
                })
            },
        )
    }
}

fn copy_from(step: &Step) -> Option<&CopyFrom> {
    match &step.kind {
        kiln_plan::StepKind::Copy { from, .. } => from.as_ref(),
        _ => None,
    }
}

/// COPY's destination is relative to WORKDIR; a trailing `/` (meaning "a directory") is kept.
fn absolute_dest(workdir: Option<&str>, dest: &str) -> String {
    let joined = join_workdir(workdir, dest);
    if (dest.ends_with('/') || dest.ends_with("/.") || dest == ".") && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::absolute_dest;

    #[test]
    fn dest_keeps_directory_meaning() {
        assert_eq!(absolute_dest(Some("/app"), "."), "/app/");
        assert_eq!(absolute_dest(Some("/app"), "bin/"), "/app/bin/");
        assert_eq!(absolute_dest(None, "/etc/x"), "/etc/x");
        assert_eq!(absolute_dest(Some("/app"), "f.txt"), "/app/f.txt");
        assert_eq!(absolute_dest(None, "/"), "/");
    }
}
