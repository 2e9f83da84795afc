//! Building one stage: the dispatch of each instruction over the stage's running state.

use std::collections::BTreeMap;

use kiln_dockerfile::{Command, Instruction};
use kiln_image::LayerRef;
use kiln_plan::{ArgValue, BuildPlan, StagePlan, Step, StepKind};

use crate::build::{BuildRequest, Engine, Source};
use crate::context::BuildContext;
use crate::error::{Result, SolveError};
use crate::explain::{Explainer, MissCause};
use crate::metadata::run_history;
use crate::progress::{Progress, ProgressEvent, StepLabel};
use kiln_images::StoredImage;

mod cached;
mod state;

pub use state::{DEFAULT_PATH, StageState, join_workdir};

/// Builds one stage of a plan.
pub(crate) struct StageBuilder<'a> {
    pub engine: &'a Engine,
    pub src: &'a Source,
    pub plan: &'a BuildPlan,
    pub stage: &'a StagePlan,
    /// How progress lines and explain records name the stage: its name, with the target
    /// platform in front when a multi-platform build builds it once per platform.
    pub stage_label: &'a str,
    /// The target platform this stage is built for (`TARGETPLATFORM`): what a
    /// `COPY --from=<image>` resolves to.
    pub target_platform: &'a kiln_image::Platform,
    pub context: &'a BuildContext,
    pub req: &'a BuildRequest,
    /// The finished stages this one reads (its base, `--from` and trigger sources).
    pub built: &'a BTreeMap<usize, StageState>,
    pub pins: &'a crate::pins::ImagePins,
    /// The build's imported caches and the steps its exports record.
    pub remote: &'a crate::remote_cache::RemoteCache,
    /// The layers the build's target platforms share (see `crate::shared_layers`).
    pub shared: &'a crate::shared_layers::SharedLayers,
    /// Whether the build has already failed elsewhere.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    pub progress: Progress<'a>,
    /// The stage's `--jobs` slot, lent while a RUN step only waits.
    pub slot: Option<&'a crate::schedule::Slot<'a>>,
}

impl StageBuilder<'_> {
    fn label(&self, position: usize, instruction: &Instruction) -> StepLabel {
        StepLabel {
            stage: self.stage_label.to_owned(),
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

    /// The build's `SOURCE_DATE_EPOCH` (already checked when the build started).
    pub(crate) fn epoch(&self) -> Option<crate::epoch::SourceDateEpoch> {
        crate::epoch::SourceDateEpoch::of_build_args(&self.req.build_args)
            .ok()
            .flatten()
    }

    /// Adds the build's epoch to a filesystem step's key, when one is set: it decides the mtimes
    /// in the step's layer (see `crate::epoch`). Without one the key is unchanged.
    pub(crate) fn key_epoch(&self, key: &mut crate::cache::KeyBuilder) {
        if let Some(epoch) = self.epoch() {
            key.field(crate::epoch::KEY_FIELD, &epoch.secs().to_string());
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
        // With an epoch, every history entry this build adds and the image's `created` are the
        // epoch; the base image's own history stays as it is (as BuildKit keeps it).
        if let Some(epoch) = self.epoch() {
            state.last_created = Some(epoch.rfc3339());
        }
        self.run_triggers(&mut state)?;
        for (i, step) in self.stage.steps.iter().enumerate() {
            if self.engine.cancel.is_cancelled() {
                return Err(SolveError::Cancelled);
            }
            // Another stage failed: the build is over, so start nothing new.
            if (self.cancelled)() {
                return Err(SolveError::Abandoned {
                    reason: "another stage failed".into(),
                });
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
            (self.progress)(ProgressEvent::StepMetadata(label));
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
            _ => {
                self.apply_metadata(state, ins, &command)?;
                (self.progress)(ProgressEvent::StepMetadata(label));
                Ok(())
            }
        }
    }

    /// The explainer for this stage's steps.
    pub(crate) fn explainer(&self) -> Explainer<'_> {
        Explainer {
            store: &self.engine.store,
            progress: self.progress,
            dockerfile: &self.src.path,
            stage: self.stage_label.to_owned(),
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
        let reference: kiln_image::Reference = name
            .parse()
            .map_err(|e: kiln_image::ReferenceError| e.to_string())?;
        self.pins.resolve(
            self.engine,
            &reference,
            self.target_platform,
            self.req.pull,
            self.progress,
        )
    }

    /// Snapshot directories for an overlay of `layers` (bottom first in, topmost first out),
    /// fetching first the blobs of layers taken from an imported cache and not unpacked yet.
    pub(crate) fn lower_dirs(
        &self,
        layers: impl IntoIterator<Item = LayerRef>,
    ) -> Result<Vec<std::path::PathBuf>> {
        let layers: Vec<_> = layers.into_iter().collect();
        self.remote
            .fetch_for_snapshots(self.engine, &layers, self.progress)?;
        Ok(kiln_images::lower_dirs(&self.engine.store, layers)?)
    }
}
