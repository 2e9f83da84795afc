//! Building one stage: the running state of its image and the dispatch of each instruction.

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_dockerfile::{Command, Instruction, ShellOrExec};
use kiln_image::{Descriptor, Digest, History, ImageConfig, Platform};
use kiln_plan::{ArgValue, BuildPlan, StagePlan, Step, StepKind};

use crate::build::{BuildRequest, Engine, Source};
use crate::cache::{CacheRecord, KeyBuilder, KeyInput, LayerRecord};
use crate::context::BuildContext;
use crate::error::{Result, SolveError};
use crate::explain::{Explainer, KeyedStep, MissCause, StepOutcome};
use crate::images::{StoredImage, oci_layer_media_type};
use crate::metadata::{run_history, shell_of};
use crate::progress::{Progress, ProgressEvent, StepLabel};

/// Docker's PATH for containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image a stage has built so far.
#[derive(Debug, Clone)]
pub struct StageState {
    pub config: ImageConfig,
    /// Layer descriptors, bottom first (`config.rootfs.diff_ids` is kept in step).
    pub layers: Vec<Descriptor>,
    /// The cache key of the last step: every later key chains from it.
    pub key: Digest,
    /// ARGs declared in this stage, with their values.
    pub args: BTreeMap<String, String>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    pub cmd_set: bool,
    /// Time of the newest layer or base image, used for metadata-only history entries and the
    /// image's `created`, so rebuilding with a warm cache reproduces the image exactly.
    pub last_created: Option<String>,
    /// The platform this stage builds for: its base image's, else `FROM --platform`, else the
    /// build's target platform. The image config and RUN's emulation check follow it.
    pub platform: Platform,
    /// Proxy `--build-arg`s (`HTTP_PROXY`, …): RUN sees them without an ARG, but like Docker
    /// they stay out of the cache key and the history.
    pub proxy_env: Vec<String>,
    /// The history text of the step being executed, when it differs from the instruction
    /// as written (BuildKit's wording for RUN, COPY, WORKDIR).
    pending_history: Option<String>,
    /// For `--explain`: the first step of this stage's chain (or its base stage's) whose own
    /// inputs changed since the last build, with why: what "parent step changed" points at.
    pub first_cause: Option<String>,
    /// The key inputs of the last FROM or metadata step, until the explainer records them.
    pending_inputs: Option<Vec<KeyInput>>,
}

impl StageState {
    pub fn scratch(platform: &Platform) -> Self {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", "scratch")
            .field("platform", &platform.to_string());
        let (key, inputs) = key.finish_recorded();
        let mut state = StageState {
            config: ImageConfig::default(),
            layers: Vec::new(),
            key,
            args: BTreeMap::new(),
            cmd_set: false,
            last_created: None,
            platform: platform.clone(),
            proxy_env: Vec::new(),
            pending_history: None,
            first_cause: None,
            pending_inputs: Some(inputs),
        };
        state.ensure_path();
        state
    }

    /// As BuildKit does, every stage's image has a PATH: the default when the base sets none,
    /// so `ENV PATH=/x:$PATH` and the final image both see a usable search path.
    fn ensure_path(&mut self) {
        if self.config.config.env_get("PATH").is_none() {
            self.config.config.env_set("PATH", DEFAULT_PATH);
        }
    }

    /// A stage starting from `image`. The stage's platform is the image's when its config
    /// names one, else `requested`.
    pub fn from_image(image: &StoredImage, requested: &Platform) -> Self {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", &image.manifest_digest.to_string());
        let (key, inputs) = key.finish_recorded();
        let platform = if image.config.architecture.is_empty() || image.config.os.is_empty() {
            requested.clone()
        } else {
            Platform {
                os: image.config.os.clone(),
                architecture: image.config.architecture.clone(),
                variant: image.config.variant.clone(),
                os_version: None,
            }
        };
        let mut layers = image.manifest.layers.clone();
        for l in &mut layers {
            l.media_type = oci_layer_media_type(&l.media_type).to_owned();
        }
        let mut state = StageState {
            config: image.config.clone(),
            layers,
            key,
            args: BTreeMap::new(),
            cmd_set: false,
            last_created: image.config.created.clone(),
            platform,
            proxy_env: Vec::new(),
            pending_history: None,
            first_cause: None,
            pending_inputs: Some(inputs),
        };
        state.ensure_path();
        state
    }

    /// The key inputs of the FROM or metadata step just applied, for the explainer.
    pub(crate) fn take_pending_inputs(&mut self) -> Option<Vec<KeyInput>> {
        self.pending_inputs.take()
    }

    /// Looks a variable up as Docker expands words: ENV first, then ARGs in scope.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.config
            .config
            .env_get(name)
            .map(str::to_owned)
            .or_else(|| self.args.get(name).cloned())
    }

    /// The environment a RUN step's cache key covers: the image's ENV, ARGs not shadowed by
    /// ENV, and a PATH. The process gets [`StageState::process_env`].
    pub fn run_env(&self) -> Vec<String> {
        let mut env = self.config.config.env.clone();
        for (k, v) in &self.args {
            if self.config.config.env_get(k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env
    }

    /// The environment a RUN step's cache key covers, split for `--explain` into the image's
    /// ENV (with a PATH) and the ARGs it does not shadow: together [`StageState::run_env`].
    pub fn key_env(&self) -> (Vec<String>, Vec<String>) {
        let mut env = self.config.config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let args = self
            .args
            .iter()
            .filter(|(k, _)| self.config.config.env_get(k).is_none())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        (env, args)
    }

    /// The environment a RUN process gets: [`StageState::run_env`] plus the proxy build args
    /// that no ENV or ARG of the same name shadows.
    pub fn process_env(&self) -> Vec<String> {
        let mut env = self.run_env();
        for kv in &self.proxy_env {
            let name = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            if self.lookup(name).is_none() {
                env.push(kv.clone());
            }
        }
        env
    }

    /// The shell for shell-form commands (`SHELL`, default `/bin/sh -c`).
    pub fn shell(&self) -> Vec<String> {
        shell_of(&self.config.config)
    }

    /// Turns a command into argv, running shell form through the shell.
    pub fn argv(&self, cmd: &ShellOrExec) -> Vec<String> {
        match cmd {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn history(&mut self, created_by: &str, created: Option<String>, empty_layer: bool) {
        self.config.history.push(History {
            created,
            created_by: Some(created_by.to_owned()),
            comment: Some("kiln".into()),
            empty_layer,
            ..Default::default()
        });
    }

    /// Records a metadata-only step: no layer and a history entry reading `history_text`.
    ///
    /// The cache key chain is left alone: it stands for the filesystem, which metadata does not
    /// change. Each filesystem step keys on exactly the config it reads (RUN: the command
    /// through SHELL, env with ARGs, workdir, user; WORKDIR: the directory and user; COPY: the
    /// expanded destination), so a LABEL, an EXPOSE or an ENV that a step does not see costs
    /// no rebuild, while the config itself is always rebuilt from the Dockerfile.
    pub fn metadata_step(&mut self, history_text: &str) {
        let created = self.last_created.clone();
        self.history(history_text, created, true);
    }

    /// Records a filesystem step's result (a cache hit or a fresh run).
    pub fn apply_record(&mut self, instruction: &Instruction, key: Digest, record: &CacheRecord) {
        self.key = key;
        self.last_created = Some(record.created.clone());
        let created_by = self
            .pending_history
            .take()
            .unwrap_or_else(|| instruction.original.clone());
        match &record.layer {
            Some(l) => {
                self.layers.push(Descriptor::new(
                    l.media_type.clone(),
                    l.digest.clone(),
                    l.size,
                ));
                self.config.rootfs.diff_ids.push(l.diff_id.clone());
                self.history(&created_by, Some(record.created.clone()), false);
            }
            None => self.history(&created_by, Some(record.created.clone()), true),
        }
    }
}

/// Builds one stage of a plan.
pub(crate) struct StageBuilder<'a> {
    pub engine: &'a Engine,
    pub src: &'a Source,
    pub plan: &'a BuildPlan,
    pub stage: &'a StagePlan,
    pub context: &'a BuildContext,
    pub req: &'a BuildRequest,
    /// The finished stages this one reads (its base, `--from` and trigger sources).
    pub built: &'a BTreeMap<usize, StageState>,
    pub pins: &'a crate::images::ImagePins,
    /// The build's imported caches and the steps its exports record.
    pub remote: &'a crate::remote_cache::RemoteCache,
    /// Whether the build has already failed elsewhere.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    pub progress: Progress<'a>,
    /// The stage's `--jobs` slot, lent while a RUN step only waits.
    pub slot: Option<&'a crate::schedule::Slot<'a>>,
}

impl StageBuilder<'_> {
    fn label(&self, position: usize, instruction: &Instruction) -> StepLabel {
        StepLabel {
            stage: crate::build::stage_name(self.stage),
            position,
            total: self.stage.steps.len() + 1,
            text: instruction.original.clone(),
        }
    }

    pub(crate) fn fail(&self, instruction: &Instruction, message: impl Into<String>) -> SolveError {
        SolveError::Dockerfile {
            location: self.src.at(instruction),
            message: message.into(),
        }
    }

    fn expand(&self, state: &StageState, instruction: &Instruction) -> Result<Command> {
        instruction
            .command
            .expand(&|name: &str| state.lookup(name), self.plan.escape)
            .map_err(|e| self.fail(instruction, e.to_string()))
    }

    /// Builds the stage from its base state: the base's ONBUILD triggers first, then the
    /// stage's own steps.
    pub fn run(&self, mut state: StageState) -> Result<StageState> {
        self.run_triggers(&mut state)?;
        for (i, step) in self.stage.steps.iter().enumerate() {
            // Another stage failed: the build is over, so start nothing new.
            if (self.cancelled)() {
                return Err(SolveError::Other("cancelled: another stage failed".into()));
            }
            let label = self.label(i + 2, &step.instruction);
            self.step(&mut state, step, label)?;
        }
        Ok(state)
    }

    pub(crate) fn step(&self, state: &mut StageState, step: &Step, label: StepLabel) -> Result<()> {
        let ins = &step.instruction;
        if let StepKind::Arg { name, value } = &step.kind {
            let value = match value {
                ArgValue::Given(v) => Some(v.clone()),
                ArgValue::Default(raw) => Some(
                    kiln_dockerfile::expand_word(raw, &|n: &str| state.lookup(n), self.plan.escape)
                        .map_err(|e| self.fail(ins, e.to_string()))?,
                ),
                ArgValue::Unset => None,
            };
            // RUN keys see the value in effect (in their env); the history only the
            // declaration, so a value passed with --build-arg (a token, say) is not written
            // into the image.
            let history = match &step.instruction.command {
                Command::Arg(declarations) => declarations
                    .iter()
                    .find(|(declared, _)| declared == name)
                    .and_then(|(_, default)| default.as_ref())
                    .map_or_else(|| format!("ARG {name}"), |d| format!("ARG {name}={d}")),
                _ => format!("ARG {name}"),
            };
            if let Some(v) = value {
                state.args.insert(name.clone(), v);
            }
            state.metadata_step(&history);
            return Ok(());
        }
        let command = self.expand(state, ins)?;
        match &command {
            Command::Run {
                cmd,
                network,
                mounts,
                heredocs,
            } => {
                if let Some(message) = crate::emulation::cannot_run(&state.platform) {
                    return Err(self.fail(ins, message));
                }
                state.pending_history = Some(run_history(&state.args, &state.argv(cmd)));
                self.run_step(state, ins, label, cmd, network.as_deref(), mounts, heredocs)
            }
            Command::Copy(c) | Command::Add(c) => {
                let is_add = matches!(command, Command::Add(_));
                let words: Vec<&str> = c
                    .heredocs
                    .iter()
                    .map(|h| h.name.as_str())
                    .chain(c.sources.iter().map(String::as_str))
                    .chain([c.dest.as_str()])
                    .collect();
                state.pending_history =
                    Some(format!("{} {} # buildkit", ins.keyword, words.join(" ")));
                self.copy_step(state, step, ins, label, c, is_add)
            }
            Command::Workdir(dir) => {
                let dir = join_workdir(state.config.config.working_dir.as_deref(), dir);
                state.config.config.working_dir = Some(dir.clone());
                state.pending_history = Some(format!("WORKDIR {dir}"));
                self.workdir_step(state, ins, label, &dir)
            }
            // Metadata changes no key, so it has no miss to explain: the filesystem steps
            // that read it (RUN's env, say) name it as their own cause.
            _ => self.apply_metadata(state, ins, &command),
        }
    }

    /// The explainer for this stage's steps.
    pub(crate) fn explainer(&self) -> Explainer<'_> {
        Explainer {
            store: &self.engine.store,
            progress: self.progress,
            dockerfile: &self.src.path,
            stage: crate::build::stage_name(self.stage),
        }
    }

    /// What tells a step apart within its stage from build to build: its position, except for
    /// ONBUILD triggers, which all run at the FROM's position.
    pub(crate) fn slot(label: &StepLabel) -> String {
        if label.position == 1 {
            label.text.clone()
        } else {
            label.position.to_string()
        }
    }

    /// Why this stage's steps may not come from the cache, when the user said so.
    pub(crate) fn forced_miss(&self) -> Option<MissCause> {
        if self.req.no_cache {
            return Some(MissCause::NoCache);
        }
        let name = self.stage.name.as_deref();
        let index = self.stage.index.to_string();
        self.req
            .no_cache_filter
            .iter()
            .any(|f| Some(f.as_str()) == name || *f == index)
            .then_some(MissCause::NoCacheFilter)
    }

    /// The image a `--from=<image>` (COPY or RUN --mount) names, resolved once per build for the
    /// build's target platform, as BuildKit does (not the stage's).
    pub(crate) fn resolve_from_image(
        &self,
        name: &str,
    ) -> std::result::Result<StoredImage, String> {
        let reference: kiln_registry::Reference = name
            .parse()
            .map_err(|e: kiln_registry::ReferenceError| e.to_string())?;
        self.pins.resolve(
            self.engine,
            &reference,
            &self.req.platform,
            self.req.pull,
            self.progress,
        )
    }

    /// Snapshot directories for an overlay of `layers` (bottom first in, topmost first out),
    /// fetching first the blobs of layers taken from an imported cache and not unpacked yet.
    pub(crate) fn lower_dirs<'l>(
        &self,
        layers: impl Iterator<Item = (&'l Descriptor, &'l Digest)>,
    ) -> Result<Vec<std::path::PathBuf>> {
        let layers: Vec<_> = layers.collect();
        self.remote
            .fetch_for_snapshots(self.engine, &layers, self.progress)?;
        crate::images::lower_dirs(&self.engine.store, layers.into_iter())
    }

    /// The lock making "look `key` up, else run the step and record it" one critical section
    /// across every build on the store (none when the user forces a miss, which never looks up).
    pub(crate) fn step_lock(&self, key: &Digest) -> Result<Option<kiln_store::StoreLock>> {
        if self.forced_miss().is_some() {
            return Ok(None);
        }
        let lock = self
            .engine
            .store
            .lock_object(kiln_store::ObjectLock::Step, key)?;
        Ok(Some(lock))
    }

    /// A step that changes the filesystem: look its key up, else run it and record the layer.
    pub(crate) fn fs_step(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        key_inputs: impl FnOnce(&mut KeyBuilder) -> Result<()>,
        execute: impl FnOnce(
            &Self,
            &StageState,
            &StepLabel,
        ) -> Result<Option<kiln_layer::CommittedLayer>>,
    ) -> Result<()> {
        let mut key = KeyBuilder::new(&ins.keyword, Some(&state.key));
        key.field("platform", &state.platform.to_string());
        key_inputs(&mut key)?;
        let (key, inputs) = key.finish_recorded();
        self.cached_or_run(state, ins, label, &key, key.clone(), inputs, execute)
    }

    /// The part of a filesystem step after its key: take the result recorded under
    /// `record_key` (in the build's compression) unless the user forces a miss, else run
    /// `execute` and record what it made; either way the explainer sees the step's `inputs`
    /// and the stage continues from `stage_key` (the same key, except for `COPY --link`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cached_or_run(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        record_key: &Digest,
        stage_key: Digest,
        inputs: Vec<crate::cache::KeyInput>,
        execute: impl FnOnce(
            &Self,
            &StageState,
            &StepLabel,
        ) -> Result<Option<kiln_layer::CommittedLayer>>,
    ) -> Result<()> {
        // "Look up, else run and record" is one critical section per key across every build on
        // this store: a second build reaching the same step waits here, then finds the record.
        let _step_lock = self.step_lock(record_key)?;
        let forced = self.forced_miss();
        let mut cached = match forced {
            None => CacheRecord::load(&self.engine.store, record_key)?,
            Some(_) => None,
        };
        // Not here, but in a `--cache-from`: a hit too, its layer left where it is for now.
        let mut remote_source = None;
        if cached.is_none()
            && forced.is_none()
            && let Some(hit) = self.remote.hit(
                self.engine,
                record_key,
                &self.req.compression,
                self.progress,
            )?
        {
            cached = Some(hit.record);
            remote_source = Some(hit.source);
        }
        let outcome = match cached {
            Some(_) => StepOutcome::Hit,
            None => StepOutcome::Miss { forced },
        };
        if cached.is_none() {
            (self.progress)(ProgressEvent::StepStarted(label.clone()));
        }
        let pending = self.explainer().step(
            state,
            KeyedStep {
                label: &label,
                slot: Self::slot(&label),
                key: record_key,
                inputs,
                outcome,
            },
        );
        if let Some(record) = cached {
            if let Some(pending) = pending {
                pending.save(&self.engine.store)?;
            }
            let record = crate::compress::record_in_compression(
                &self.engine.store,
                record,
                &self.req.compression,
            )?;
            (self.progress)(match remote_source {
                Some(source) => ProgressEvent::StepCachedRemote {
                    step: label,
                    source,
                },
                None => ProgressEvent::StepCached(label),
            });
            self.remote.note(self.stage.index, record_key, &record);
            state.apply_record(ins, stage_key, &record);
            return Ok(());
        }
        let started = Instant::now();
        let layer = execute(self, state, &label)?;
        let record = CacheRecord {
            layer: layer.map(|l| LayerRecord {
                digest: l.digest,
                diff_id: l.diff_id,
                size: l.size,
                media_type: l.media_type,
            }),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        record.save(&self.engine.store, record_key)?;
        self.remote.note(self.stage.index, record_key, &record);
        if let Some(pending) = pending {
            pending.save(&self.engine.store)?;
        }
        state.apply_record(ins, stage_key, &record);
        (self.progress)(ProgressEvent::StepDone {
            step: label,
            elapsed: started.elapsed(),
        });
        Ok(())
    }
}

/// WORKDIR is relative to the previous one; the result is always absolute and clean.
pub fn join_workdir(current: Option<&str>, dir: &str) -> String {
    let base = if dir.starts_with('/') {
        String::new()
    } else {
        current.unwrap_or("/").to_owned()
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(dir.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_joins_relative_paths() {
        assert_eq!(join_workdir(None, "app"), "/app");
        assert_eq!(join_workdir(Some("/app"), "src"), "/app/src");
        assert_eq!(join_workdir(Some("/app"), "/opt/../srv/"), "/srv");
        assert_eq!(join_workdir(Some("/a/b"), "../../.."), "/");
    }

    #[test]
    fn run_env_keeps_env_over_args_and_adds_path() {
        let mut s = StageState::scratch(&Platform::new("linux", "amd64"));
        s.config.config.env_set("A", "env");
        s.args.insert("A".into(), "arg".into());
        s.args.insert("B".into(), "arg".into());
        let env = s.run_env();
        assert!(env.contains(&"A=env".to_string()));
        assert!(env.contains(&"B=arg".to_string()));
        assert!(env.contains(&format!("PATH={DEFAULT_PATH}")));
        assert_eq!(s.lookup("A").as_deref(), Some("env"));
    }

    #[test]
    fn shell_form_uses_shell_instruction() {
        let mut s = StageState::scratch(&Platform::new("linux", "amd64"));
        assert_eq!(
            s.argv(&ShellOrExec::Shell("echo hi".into())),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        s.config.config.shell = vec!["/bin/bash".into(), "-xc".into()];
        assert_eq!(
            s.argv(&ShellOrExec::Shell("x".into())),
            vec!["/bin/bash", "-xc", "x"]
        );
        assert_eq!(s.argv(&ShellOrExec::Exec(vec!["a".into()])), vec!["a"]);
    }
}
