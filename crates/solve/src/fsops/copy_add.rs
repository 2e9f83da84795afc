//! The `COPY` and `ADD` step.
//!
//! Sources come from three places: the build context or a `--from` tree (patterns resolved with
//! `--exclude`/`--parents`), inline heredoc files, and (ADD only) URLs. Everything is gathered
//! into a scratch directory first so the cache key can hash exactly what will be written; the
//! one exception is a URL with `--checksum`, whose key is the URL and the checksum and which is
//! fetched only on a cache miss. Local archives given to ADD are extracted; downloads never are.
//!
//! `--link` writes into an empty directory rather than over the stage's filesystem, so the layer
//! holds only the copied files, produces no whiteouts, and its cache key leaves out the parent:
//! the same `COPY --link` reuses its layer whatever changed before it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use kiln_dockerfile::{CopyCommand, Instruction};
use kiln_image::{DiffId, Digest, LayerRef};
use kiln_plan::Step;
use kiln_sandbox::OverlayMount;
use kiln_store::CacheKey;

use super::{StepDirs, absolute_dest, copy_from};
use crate::cache::KeyBuilder;
use crate::context::{SelectOptions, Source, SourceTree};
use crate::copy::{
    Chmod, CopyOptions, CopyOutcome, CopyReuse, PreviousCopy, copy_into_reusing, link_reused,
    parse_chown,
};
use crate::dockerignore::IgnoreMatcher;
use crate::download::{download, is_url, parse_checksum};
use crate::error::{Result, SolveError};
use crate::progress::{ProgressEvent, StepLabel};
use crate::shared_layers::{Layer, SharedOp};
use crate::stage::{StageBuilder, StageState};
use heredoc::heredoc_sources;

mod heredoc;

/// A URL whose download waits for a cache miss because `--checksum` already names its content.
struct DeferredDownload {
    url: String,
    checksum: Digest,
}

impl StageBuilder<'_> {
    pub(crate) fn copy_step(
        &self,
        state: &mut StageState,
        step: &Step,
        ins: &Instruction,
        label: StepLabel,
        c: &CopyCommand,
        is_add: bool,
    ) -> Result<()> {
        let fail = |message: String| self.fail(ins, message);
        if c.sources.is_empty() && c.heredocs.is_empty() {
            return Err(fail(format!(
                "{} requires at least one source and a destination",
                ins.keyword
            )));
        }
        // `ADD <git URL>` checks the repository out; other URLs are downloads.
        let is_git = |s: &str| is_add && crate::remote_context::GitSource::parse(s).is_some();
        let gits: Vec<&String> = c.sources.iter().filter(|s| is_git(s)).collect();
        let urls: Vec<&String> = c
            .sources
            .iter()
            .filter(|s| is_url(s) && !is_git(s))
            .collect();
        if let Some(url) = urls.first()
            && !is_add
        {
            return Err(fail(format!(
                "COPY cannot fetch a URL ({url}); use ADD for remote files"
            )));
        }
        let deferred = match &c.checksum {
            None => None,
            Some(_) if !is_add => return Err(fail("--checksum is only valid for ADD".into())),
            Some(_) if c.sources.len() != 1 || !c.heredocs.is_empty() => {
                return Err(fail("--checksum can't be used with several sources".into()));
            }
            Some(_) if !gits.is_empty() => {
                return Err(fail("--checksum is not supported for git sources".into()));
            }
            Some(_) if urls.is_empty() => {
                return Err(fail("--checksum requires an HTTP(S) source".into()));
            }
            Some(value) => Some(DeferredDownload {
                url: c.sources[0].clone(),
                checksum: parse_checksum(value).map_err(|e| fail(e.to_string()))?,
            }),
        };
        let chmod = c
            .chmod
            .as_deref()
            .map(Chmod::parse)
            .transpose()
            .map_err(|e| fail(e.to_string()))?;
        let select = SelectOptions {
            exclude: Arc::new(
                IgnoreMatcher::from_patterns(&c.exclude).map_err(|e| fail(e.to_string()))?,
            ),
            parents: c.parents,
        };

        // A copy from a stage that an imported cache knows by its definition is a hit without
        // mounting (so without fetching) the source stage.
        let alias = self.copy_from_alias(state, step, c, is_add, &urls);
        if let Some((alias, inputs)) = &alias
            && self.forced_miss().is_none()
            && let Some(key) = self.remote.alias_target(alias)
        {
            self.remote
                .note_alias(self.stage.index, alias.clone(), key.clone());
            return self.cached_or_run(
                state,
                ins,
                label,
                &key,
                key.clone(),
                inputs.clone(),
                |b, _, _| {
                    Err(b.fail(
                        ins,
                        "the imported cache lost this step's record during the build",
                    ))
                },
            );
        }

        let dirs = StepDirs::new(&self.engine.store, "copy-")?;
        // Sources that are not patterns in a tree, prepared before the cache key is computed.
        let mut extras = heredoc_sources(&dirs.path("extra"), &c.heredocs).map_err(fail)?;
        if deferred.is_none() {
            for (index, url) in urls.iter().enumerate() {
                let dir = dirs.path("extra").join(format!("url-{index}"));
                extras.push(self.fetch(&dir, url, None).map_err(fail)?);
            }
        }
        for (index, git) in gits.iter().enumerate() {
            let source = crate::remote_context::GitSource::parse(git).expect("a git source");
            let dir = dirs.path("extra").join(format!("git-{index}"));
            std::fs::create_dir_all(dirs.path("extra")).map_err(|e| fail(e.to_string()))?;
            let checkout = crate::remote_context::git_checkout(
                &source,
                &dir,
                c.keep_git_dir,
                &self.req.settings.git_access(),
            )
            .map_err(|e| fail(format!("ADD {e}")))?;
            // Its contents land in the destination, as a directory source's do.
            extras.push(Source::standalone_dir(checkout));
        }

        // The source tree stays mounted while its content is hashed and copied.
        let patterns: Vec<String> = c
            .sources
            .iter()
            .filter(|s| !is_url(s) && !is_git(s))
            .cloned()
            .collect();
        let from_mount;
        let tree = match copy_from(step) {
            Some(from) => {
                let (mount, _) = self.mount_from(ins, from, &dirs)?;
                let root = mount.path().to_owned();
                from_mount = Some(mount);
                SourceTree::Rootfs(root)
            }
            None => {
                from_mount = None;
                SourceTree::Context(self.context.clone())
            }
        };
        let local = tree
            .select(&patterns, &select)
            .map_err(|e| fail(e.to_string()))?;
        if local.is_empty() && extras.is_empty() && deferred.is_none() {
            // Only wildcards get here (a plain path must exist): BuildKit copies nothing and
            // goes on (its file op allows an empty wildcard), so kiln does too, but says so.
            (self.progress)(ProgressEvent::Warning(format!(
                "{label}: {} matched nothing in the {}; nothing copied",
                patterns.join(" "),
                if from_mount.is_some() {
                    "source stage filesystem"
                } else {
                    "build context"
                }
            )));
        }
        let mut hashed: Vec<Source> = local.clone();
        hashed.extend(extras.iter().cloned());
        let keep_owner = from_mount.is_some();
        // Ownership reaches the layer only when a --from copy keeps it.
        let hashed = tree
            .digest_sources(&hashed, keep_owner && c.chown.is_none())
            .map_err(|e| fail(e.to_string()))?;
        (self.progress)(ProgressEvent::SourcesHashed {
            step: label.clone(),
            from_context: from_mount.is_none(),
            stats: hashed.stats,
        });
        let content = hashed.digest;
        let manifest = hashed.manifest;
        let fingerprints: HashMap<String, String> = manifest
            .iter()
            .map(|file| (file.path.clone(), file.fingerprint.clone()))
            .collect();

        // As in BuildKit, each source is copied on its own, so only a trailing slash or an
        // existing directory makes the destination a directory (see `crate::copy`).
        let dest = absolute_dest(state.config.config.working_dir.as_deref(), &c.dest);
        let step_name = label.to_string();
        // --link resolves --chown names before the key (against the stage's filesystem, which
        // the linked layer itself does not see), so the key holds ids, not the parent.
        let linked_owner = match (&c.chown, c.link) {
            (Some(spec), true) => Some(self.resolve_owner_in_parent(state, &dirs, ins, spec)?),
            _ => None,
        };
        // What the key hashes after the content: the layer's inputs but the base (and the
        // platform). The content goes first in both keys, so the step's own key is the one
        // earlier kiln wrote (stores keep hitting their records).
        let key_fields = |key: &mut KeyBuilder| {
            key.list("sources", c.sources.iter().map(String::as_str));
            key.list(
                "heredocs",
                c.heredocs.iter().map(|heredoc| heredoc.name.as_str()),
            );
            key.field("dest", &dest);
            key.field("chown", c.chown.as_deref().unwrap_or(""));
            if let Some((uid, gid)) = linked_owner {
                key.field("owner", &format!("{uid}:{gid}"));
            }
            key.field("chmod", chmod.as_ref().map(Chmod::as_str).unwrap_or(""));
            key.list("exclude", c.exclude.iter().map(String::as_str));
            key.field("parents", if c.parents { "1" } else { "0" });
            key.field("add", if is_add { "1" } else { "0" });
            key.field("keep-owner", if keep_owner { "1" } else { "0" });
            if let Some(deferred) = &deferred {
                key.field("checksum", &deferred.checksum.to_string());
            }
        };
        let key_inputs = |key: &mut KeyBuilder| {
            key.field("content", &content.to_string());
            key.detail("content-files", manifest);
            key_fields(key);
        };
        let write = |b: &Self, root: &Path, reuse: CopyReuse<'_>| -> Result<CopyOutcome> {
            let fail = |message: String| b.fail(ins, message);
            let owner = match (linked_owner, &c.chown) {
                (Some(owner), _) => Some(owner),
                (None, Some(spec)) => {
                    Some(parse_chown(spec, root).map_err(|e| fail(e.to_string()))?)
                }
                (None, None) => None,
            };
            let opts = CopyOptions {
                owner,
                chmod: chmod.clone(),
                keep_source_owner: keep_owner && owner.is_none(),
            };
            let mut plain = Vec::new();
            for (index, source) in local.iter().enumerate() {
                if is_add
                    && !source.is_dir
                    && kiln_layer::is_archive(&source.host_path).unwrap_or(false)
                {
                    let file = std::fs::File::open(&source.host_path).map_err(|source_error| {
                        SolveError::ReadFile {
                            path: source.host_path.clone(),
                            source: source_error,
                        }
                    })?;
                    let reader = std::io::BufReader::new(file);
                    let extracting = |e| fail(format!("extracting {}: {e}", source.rel_path));
                    if opts.owner.is_none() && opts.chmod.is_none() {
                        kiln_layer::extract_archive(reader, root, &dest).map_err(extracting)?;
                    } else {
                        // As in BuildKit, --chown/--chmod apply to the unpacked entries too:
                        // unpack aside, then copy the tree in with the options.
                        let aside = dirs.path("extra").join(format!("archive-{index}"));
                        std::fs::create_dir_all(&aside)
                            .map_err(|e| fail(format!("creating {}: {e}", aside.display())))?;
                        kiln_layer::extract_archive(reader, &aside, "/").map_err(extracting)?;
                        plain.push(Source::standalone_dir(aside));
                    }
                } else {
                    plain.push(source.clone());
                }
            }
            plain.extend(extras.iter().cloned());
            if let Some(deferred) = &deferred {
                let dir = dirs.path("extra").join("url-checked");
                let fetched = b
                    .fetch(&dir, &deferred.url, Some(&deferred.checksum))
                    .map_err(fail)?;
                plain.push(fetched);
            }
            if plain.is_empty() {
                return Ok(CopyOutcome::default());
            }
            let outcome = copy_into_reusing(root, &plain, &dest, &opts, reuse)
                .map_err(|e| fail(e.to_string()))?;
            if outcome.replaced_at_dest > 0 {
                (b.progress)(ProgressEvent::Warning(format!(
                    "{step_name}: {} sources were copied to {dest}, which is not a directory: \
                     each replaced the one before, as in BuildKit (end the destination with / \
                     to copy them into a directory)",
                    outcome.replaced_at_dest + 1,
                )));
            }
            Ok(outcome)
        };
        // On a miss: the files of the last run of this step that can be linked, and afterwards
        // what this run wrote, recorded for the next one once the step succeeded.
        let slot = Self::slot(&label);
        let previous = || self.previous_copy(&slot);
        let copied: RefCell<Option<(DiffId, BTreeMap<String, String>)>> = RefCell::new(None);
        let commit = |b: &Self,
                      label: &StepLabel,
                      upper: &Path,
                      outcome: CopyOutcome|
         -> Result<Option<LayerRef>> {
            link_reused(upper, &outcome).map_err(|e| b.fail(ins, e.to_string()))?;
            let layer = b.commit_upper(ins, label, upper)?;
            *copied.borrow_mut() = layer
                .as_ref()
                .map(|layer| (layer.diff_id.clone(), outcome.written));
            Ok(layer)
        };

        // Another target platform's run of this step can stand for this one's when nothing
        // but the files at the destination decides the layer: `--chown` by name reads the
        // base's /etc/passwd, so it is always run (see `crate::shared_layers`).
        let shared_op = c
            .chown
            .as_deref()
            .is_none_or(|spec| spec.split(':').all(|part| part.parse::<u32>().is_ok()));
        let result = if c.link {
            self.linked_step(state, ins, label, key_inputs, |b, st, label| {
                // The owner is resolved into the key already, so any target's run will do.
                let mut key =
                    KeyBuilder::new(&format!("{} --link shared layer", ins.keyword), None);
                b.key_epoch(&mut key);
                key.field("content", &content.to_string());
                key_fields(&mut key);
                let op = SharedOp {
                    key: key.finish().to_string(),
                    dest: dest.clone(),
                    over_base: false,
                };
                let layer = b.shared_layer(st, label, Some(op), || {
                    let layer_root = dirs.dir("upper")?;
                    let previous = previous();
                    let reuse = CopyReuse {
                        fingerprints: Some(&fingerprints),
                        previous: previous.as_ref(),
                        upper: Some(&layer_root),
                    };
                    let outcome = write(b, &layer_root, reuse)?;
                    let layer = commit(b, label, &layer_root, outcome)?;
                    let files = copied.borrow().as_ref().map(|(_, files)| files.clone());
                    Ok((layer, files.unwrap_or_default()))
                })?;
                Ok(shared_copy(layer, &copied))
            })
        } else {
            self.fs_step(
                state,
                ins,
                label,
                |key| {
                    key_inputs(key);
                    Ok(())
                },
                |b, st, label| {
                    let op = shared_op.then(|| {
                        let mut key =
                            KeyBuilder::new(&format!("{} shared layer", ins.keyword), None);
                        b.key_epoch(&mut key);
                        key.field("content", &content.to_string());
                        key_fields(&mut key);
                        SharedOp {
                            key: key.finish().to_string(),
                            dest: dest.clone(),
                            over_base: true,
                        }
                    });
                    let layer = b.shared_layer(st, label, op, || {
                        let previous = previous();
                        let upper = dirs.path("upper");
                        let reuse = CopyReuse {
                            fingerprints: Some(&fingerprints),
                            previous: previous.as_ref(),
                            upper: Some(&upper),
                        };
                        let mount = b.mount_rw(st, &dirs)?;
                        let outcome = write(b, mount.path(), reuse)?;
                        mount.unmount()?;
                        let layer = commit(b, label, &dirs.path("upper"), outcome)?;
                        let files = copied.borrow().as_ref().map(|(_, files)| files.clone());
                        Ok((layer, files.unwrap_or_default()))
                    })?;
                    Ok(shared_copy(layer, &copied))
                },
            )
        };
        drop(from_mount);
        if result.is_ok()
            && let Some((diff_id, files)) = copied.take()
        {
            self.explainer().save_copied(&slot, &diff_id, files)?;
        }
        if result.is_ok()
            && let Some((alias, _)) = alias
        {
            self.remote
                .note_alias(self.stage.index, alias, state.key.clone());
        }
        result
    }

    /// The definition key of a `COPY --from=<stage>` (without `--link`, heredocs or URLs): its
    /// parent's key, its arguments as written, the workdir they resolve against, and the
    /// source stage's key, which stands for that stage's files as every key stands for its
    /// step's result. With its inputs, for the explainer.
    fn copy_from_alias(
        &self,
        state: &StageState,
        step: &Step,
        c: &CopyCommand,
        is_add: bool,
        urls: &[&String],
    ) -> Option<(CacheKey, Vec<crate::cache::KeyInput>)> {
        let Some(kiln_plan::CopyFrom::Stage(source)) = copy_from(step) else {
            return None;
        };
        if c.link || !c.heredocs.is_empty() || !urls.is_empty() {
            return None;
        }
        let source_key = &self.built.get(source)?.key;
        let mut key = KeyBuilder::new("COPY --from definition", Some(&state.key));
        key.field("platform", &state.platform.to_string());
        self.key_epoch(&mut key);
        key.field("source-stage", &source_key.to_string())
            .list("sources", c.sources.iter().map(String::as_str))
            .field("dest", &c.dest)
            .field(
                "workdir",
                state.config.config.working_dir.as_deref().unwrap_or(""),
            )
            .field("chown", c.chown.as_deref().unwrap_or(""))
            .field("chmod", c.chmod.as_deref().unwrap_or(""))
            .list("exclude", c.exclude.iter().map(String::as_str))
            .field("parents", if c.parents { "1" } else { "0" })
            .field("add", if is_add { "1" } else { "0" });
        Some(key.finish_recorded())
    }

    /// The files the last run of the COPY/ADD step at `slot` wrote, while its snapshot is still
    /// in the store; none when the user asked for no cache (nothing of an earlier build is used).
    /// `KILN_NO_SNAPSHOT_REUSE` (any value) in the environment turns the reuse off, to measure
    /// what it saves.
    fn previous_copy(&self, slot: &str) -> Option<PreviousCopy> {
        if self.forced_miss().is_some() || std::env::var_os("KILN_NO_SNAPSHOT_REUSE").is_some() {
            return None;
        }
        let copied = self.explainer().previous_copy(slot)?;
        let store = &self.engine.store;
        if !store.has_snapshot(&copied.diff_id) {
            return None;
        }
        Some(PreviousCopy {
            snapshot: store.snapshot_path(&copied.diff_id),
            files: copied.files.into_iter().collect(),
        })
    }

    /// Downloads `url` into the fresh directory `dir`.
    fn fetch(&self, dir: &Path, url: &str, checksum: Option<&Digest>) -> Result<Source, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let downloaded = download(
            &self.engine.rt,
            &self.engine.cancel,
            &self.engine.registry,
            url,
            dir,
            checksum,
        )
        .map_err(|e| format!("ADD {e}"))?;
        Ok(Source::standalone(downloaded.path))
    }

    /// `--chown` for a linked copy, resolved against the stage's filesystem mounted read-only.
    fn resolve_owner_in_parent(
        &self,
        state: &StageState,
        dirs: &StepDirs,
        ins: &Instruction,
        spec: &str,
    ) -> Result<(u32, u32)> {
        let numeric = spec.split(':').all(|part| part.parse::<u32>().is_ok());
        let mount = if numeric || state.layers.is_empty() {
            None
        } else {
            let lowers = self.lower_dirs(state.layer_refs())?;
            Some(OverlayMount::mount(&lowers, None, &dirs.dir("parent")?)?)
        };
        let root = match &mount {
            Some(mount) => mount.path().to_owned(),
            // Numeric ids, or nothing to look names up in: an empty directory.
            None => dirs.dir("parent")?,
        };
        parse_chown(spec, &root).map_err(|e| self.fail(ins, e.to_string()))
    }

    /// A step whose layer does not depend on the stage below it (`--link`): its record is
    /// stored under a key without the parent, and the stage's chain continues from a key that
    /// combines the parent's with it.
    fn linked_step(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        key_inputs: impl FnOnce(&mut KeyBuilder),
        execute: impl FnOnce(&Self, &StageState, &StepLabel) -> Result<Option<LayerRef>>,
    ) -> Result<()> {
        let mut key = KeyBuilder::new(&format!("{} --link", ins.keyword), None);
        // The stage's platform, as for every other step: a stage shared by the targets of a
        // multi-platform build gets one key.
        key.field("platform", &state.platform.to_string());
        self.key_epoch(&mut key);
        key_inputs(&mut key);
        // The linked layer's own inputs are what --explain records: the parent is not one.
        let (layer_key, inputs) = key.finish_recorded();
        let mut chained = KeyBuilder::new(&ins.keyword, Some(&state.key));
        chained.field("linked", &layer_key.to_string());
        let stage_key = chained.finish();

        self.cached_or_run(state, ins, label, &layer_key, stage_key, inputs, execute)
    }
}

/// A copy's layer, noting what a shared one's files were (for the next build's reuse).
fn shared_copy(
    layer: Layer,
    copied: &RefCell<Option<(DiffId, BTreeMap<String, String>)>>,
) -> Option<LayerRef> {
    match layer {
        Layer::Built(layer) => layer,
        Layer::Shared(layer, files) => {
            *copied.borrow_mut() = Some((layer.diff_id.clone(), files));
            Some(layer)
        }
    }
}
