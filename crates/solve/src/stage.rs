//! Building one stage: the running state of its image and the dispatch of each instruction.

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_dockerfile::{Command, Instruction, ShellOrExec};
use kiln_image::{Descriptor, Digest, History, ImageConfig, Platform};
use kiln_plan::{ArgValue, BuildPlan, StagePlan, Step, StepKind};

use crate::build::{BuildRequest, Engine, Source};
use crate::cache::{CacheRecord, KeyBuilder, LayerRecord};
use crate::context::BuildContext;
use crate::error::{Result, SolveError};
use crate::images::{StoredImage, oci_layer_media_type};
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
}

impl StageState {
    pub fn scratch(platform: &Platform) -> Self {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", "scratch")
            .field("platform", &platform.to_string());
        let mut state = StageState {
            config: ImageConfig::default(),
            layers: Vec::new(),
            key: key.finish(),
            args: BTreeMap::new(),
            cmd_set: false,
            last_created: None,
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

    pub fn from_image(image: &StoredImage) -> Self {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", &image.manifest_digest.to_string());
        let mut layers = image.manifest.layers.clone();
        for l in &mut layers {
            l.media_type = oci_layer_media_type(&l.media_type).to_owned();
        }
        let mut state = StageState {
            config: image.config.clone(),
            layers,
            key: key.finish(),
            args: BTreeMap::new(),
            cmd_set: false,
            last_created: image.config.created.clone(),
        };
        state.ensure_path();
        state
    }

    /// Looks a variable up as Docker expands words: ENV first, then ARGs in scope.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.config
            .config
            .env_get(name)
            .map(str::to_owned)
            .or_else(|| self.args.get(name).cloned())
    }

    /// The environment a RUN step sees: the image's ENV, ARGs not shadowed by ENV, and a PATH.
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

    /// The shell for shell-form commands (`SHELL`, default `/bin/sh -c`).
    pub fn shell(&self) -> Vec<String> {
        self.config
            .config
            .extra
            .get("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
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

    /// Records a metadata-only step: no layer, key chained.
    pub fn metadata_step(&mut self, instruction: &Instruction, key_text: &str) {
        let mut key = KeyBuilder::new(&instruction.keyword, Some(&self.key));
        key.field("instruction", key_text);
        self.key = key.finish();
        let created = self.last_created.clone();
        self.history(&instruction.original, created, true);
    }

    /// Records a filesystem step's result (a cache hit or a fresh run).
    pub fn apply_record(&mut self, instruction: &Instruction, key: Digest, record: &CacheRecord) {
        self.key = key;
        self.last_created = Some(record.created.clone());
        match &record.layer {
            Some(l) => {
                self.layers.push(Descriptor::new(
                    l.media_type.clone(),
                    l.digest.clone(),
                    l.size,
                ));
                self.config.rootfs.diff_ids.push(l.diff_id.clone());
                self.history(&instruction.original, Some(record.created.clone()), false);
            }
            None => self.history(&instruction.original, Some(record.created.clone()), true),
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
    pub built: &'a BTreeMap<usize, StageState>,
    pub progress: Progress<'a>,
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

    pub fn run(&self, mut state: StageState) -> Result<StageState> {
        for (i, step) in self.stage.steps.iter().enumerate() {
            let label = self.label(i + 2, &step.instruction);
            self.step(&mut state, step, label)?;
        }
        Ok(state)
    }

    fn step(&self, state: &mut StageState, step: &Step, label: StepLabel) -> Result<()> {
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
            let shown = format!("ARG {name}={}", value.clone().unwrap_or_default());
            if let Some(v) = value {
                state.args.insert(name.clone(), v);
            }
            state.metadata_step(ins, &shown);
            return Ok(());
        }
        let command = self.expand(state, ins)?;
        match &command {
            Command::Run {
                cmd,
                network,
                mounts,
                heredocs,
            } => self.run_step(state, ins, label, cmd, network.as_deref(), mounts, heredocs),
            Command::Copy(c) | Command::Add(c) => {
                let is_add = matches!(command, Command::Add(_));
                self.copy_step(state, step, ins, label, c, is_add)
            }
            Command::Workdir(dir) => {
                let dir = join_workdir(state.config.config.working_dir.as_deref(), dir);
                state.config.config.working_dir = Some(dir.clone());
                self.workdir_step(state, ins, label, &dir)
            }
            _ => {
                self.apply_metadata(state, ins, &command)?;
                Ok(())
            }
        }
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
        key.field("platform", &self.req.platform.to_string());
        key_inputs(&mut key)?;
        let key = key.finish();
        if !self.req.no_cache
            && let Some(record) = CacheRecord::load(&self.engine.store, &key)?
        {
            (self.progress)(ProgressEvent::StepCached(label));
            state.apply_record(ins, key, &record);
            return Ok(());
        }
        (self.progress)(ProgressEvent::StepStarted(label.clone()));
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
        record.save(&self.engine.store, &key)?;
        state.apply_record(ins, key, &record);
        (self.progress)(ProgressEvent::StepDone {
            step: label,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    fn apply_metadata(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        command: &Command,
    ) -> Result<()> {
        let cfg = &mut state.config.config;
        let shown: String = match command {
            Command::Env(pairs) => {
                for (k, v) in pairs {
                    cfg.env_set(k, v);
                }
                format!(
                    "ENV {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            Command::Label(pairs) => {
                for (k, v) in pairs {
                    cfg.labels.insert(k.clone(), v.clone());
                }
                format!("LABEL {pairs:?}")
            }
            Command::Maintainer(m) => {
                state.config.author = Some(m.clone());
                format!("MAINTAINER {m}")
            }
            Command::User(u) => {
                cfg.user = Some(u.clone()).filter(|u| !u.is_empty());
                format!("USER {u}")
            }
            Command::Expose(ports) => {
                for p in ports {
                    let p = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    cfg.exposed_ports.insert(p, ());
                }
                format!("EXPOSE {ports:?}")
            }
            Command::Volume(vols) => {
                for v in vols {
                    cfg.volumes.insert(v.clone(), ());
                }
                format!("VOLUME {vols:?}")
            }
            Command::StopSignal(s) => {
                cfg.stop_signal = Some(s.clone());
                format!("STOPSIGNAL {s}")
            }
            Command::Shell(argv) => {
                if argv.is_empty() {
                    return Err(self.fail(ins, "SHELL requires a non-empty JSON array"));
                }
                cfg.extra.insert("Shell".into(), serde_json::json!(argv));
                format!("SHELL {argv:?}")
            }
            Command::Cmd(c) => {
                let argv = state_argv(cfg, c);
                cfg.cmd = Some(argv.clone());
                state.cmd_set = true;
                format!("CMD {argv:?}")
            }
            Command::Entrypoint(c) => {
                let argv = state_argv(cfg, c);
                cfg.entrypoint = Some(argv.clone());
                if !state.cmd_set {
                    cfg.cmd = None;
                }
                format!("ENTRYPOINT {argv:?}")
            }
            Command::Onbuild(trigger) => {
                let list = cfg
                    .extra
                    .entry("OnBuild".to_owned())
                    .or_insert_with(|| serde_json::json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(serde_json::json!(trigger));
                }
                format!("ONBUILD {trigger}")
            }
            other => {
                return Err(self.fail(
                    ins,
                    format!("{} is not supported yet", keyword_of(other, ins)),
                ));
            }
        };
        state.metadata_step(ins, &shown);
        Ok(())
    }
}

fn keyword_of(_c: &Command, ins: &Instruction) -> String {
    ins.keyword.clone()
}

/// Shell form of CMD/ENTRYPOINT goes through the stage's SHELL, as Docker records it.
fn state_argv(cfg: &kiln_image::ContainerConfig, c: &ShellOrExec) -> Vec<String> {
    match c {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut v = cfg
                .extra
                .get("Shell")
                .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(s.clone());
            v
        }
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
        s.config
            .config
            .extra
            .insert("Shell".into(), serde_json::json!(["/bin/bash", "-xc"]));
        assert_eq!(
            s.argv(&ShellOrExec::Shell("x".into())),
            vec!["/bin/bash", "-xc", "x"]
        );
        assert_eq!(s.argv(&ShellOrExec::Exec(vec!["a".into()])), vec!["a"]);
    }
}
