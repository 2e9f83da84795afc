//! The image a stage has built so far: its config, layers and key, and the environment,
//! shell and history that every instruction reads or extends.

use std::collections::BTreeMap;

use kiln_dockerfile::{Instruction, ShellOrExec};
use kiln_image::{Descriptor, History, ImageConfig, LayerRef, Platform};
use kiln_store::CacheKey;

use crate::cache::{CacheRecord, KeyBuilder, KeyInput};
use crate::metadata::shell_of;
use kiln_images::{StoredImage, oci_layer_media_type};

/// Docker's PATH for containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image a stage has built so far.
#[derive(Debug, Clone)]
pub struct StageState {
    pub config: ImageConfig,
    /// Layer descriptors, bottom first (`config.rootfs.diff_ids` is kept in step).
    pub layers: Vec<Descriptor>,
    /// The cache key of the last step: every later key chains from it.
    pub key: CacheKey,
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
    pub(super) pending_history: Option<String>,
    /// For `--explain`: the first step of this stage's chain (or its base stage's) whose own
    /// inputs changed since the last build, with why: what "parent step changed" points at.
    pub first_cause: Option<String>,
    /// The key inputs of the last FROM or metadata step, until the explainer records them.
    pending_inputs: Option<Vec<KeyInput>>,
}

impl StageState {
    /// A stage on `FROM scratch`. Its config is BuildKit's empty image (`emptyImage` in
    /// dockerfile2llb's image.go): working directory `/` and the default PATH (none for a
    /// Windows platform, which keeps the OS's own), so `kiln inspect` and the pushed config of
    /// a scratch-based image are BuildKit's.
    pub fn scratch(platform: &Platform) -> Self {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", "scratch")
            .field("platform", &platform.to_string());
        let (key, inputs) = key.finish_recorded();
        let mut config = ImageConfig::default();
        config.config.working_dir = Some("/".to_owned());
        if platform.os != "windows" {
            config.config.env_set("PATH", DEFAULT_PATH);
        }
        StageState {
            config,
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
        }
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

    /// The stage's layers so far, each blob with its diffID, bottom first.
    pub fn layer_refs(&self) -> impl Iterator<Item = LayerRef> + '_ {
        LayerRef::pair_all(&self.layers, &self.config.rootfs.diff_ids)
    }

    /// Records a filesystem step's result (a cache hit or a fresh run).
    pub fn apply_record(&mut self, instruction: &Instruction, key: CacheKey, record: &CacheRecord) {
        self.key = key;
        self.last_created = Some(record.created.clone());
        let created_by = self
            .pending_history
            .take()
            .unwrap_or_else(|| instruction.original.clone());
        match &record.layer {
            Some(l) => {
                self.layers.push(l.descriptor());
                self.config.rootfs.diff_ids.push(l.diff_id.clone());
                self.history(&created_by, Some(record.created.clone()), false);
            }
            None => self.history(&created_by, Some(record.created.clone()), true),
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
    fn scratch_config_is_buildkits_empty_image() {
        // BuildKit: frontend/dockerfile/dockerfile2llb/image.go, emptyImage.
        let s = StageState::scratch(&Platform::new("linux", "amd64"));
        assert_eq!(s.config.config.working_dir.as_deref(), Some("/"));
        assert_eq!(s.config.config.env, vec![format!("PATH={DEFAULT_PATH}")]);
        let windows = StageState::scratch(&Platform::new("windows", "amd64"));
        assert_eq!(windows.config.config.working_dir.as_deref(), Some("/"));
        assert!(windows.config.config.env.is_empty());
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
