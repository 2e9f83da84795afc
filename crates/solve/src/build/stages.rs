//! The stages of one build run side by side: each needed stage gets a thread of its own that
//! first waits for the stages it reads (starting them if nobody has), then takes a slot and runs
//! its steps. The first failure is the build's error; the stages still waiting then stop.
//!
//! A multi-platform build has one run per target platform on one board, slots and pins: the
//! board is indexed by the plans' nodes (`kiln_plan::PlatformPlans`), so a stage the targets
//! share is claimed, built and published once, and every target waiting for it reads it.

use super::*;

/// What every stage of one build shares.
pub(super) struct BuildRun<'a> {
    pub(super) src: &'a Source,
    pub(super) plan: &'a BuildPlan,
    pub(super) context: &'a BuildContext,
    pub(super) req: &'a BuildRequest,
    pub(super) remote: &'a RemoteCache,
    pub(super) shared: &'a crate::shared_layers::SharedLayers,
    pub(super) progress: Progress<'a>,
    pub(super) board: &'a StageBoard<StageState>,
    pub(super) slots: &'a Slots,
    pub(super) pins: &'a ImagePins,
    pub(super) first_error: &'a Mutex<Option<SolveError>>,
    /// The target platform of this run's plan.
    pub(super) platform: &'a Platform,
    /// The board's node of each stage of `plan`.
    pub(super) nodes: &'a [usize],
    /// How each stage of `plan` is named in progress lines and explain records.
    pub(super) labels: Vec<String>,
}

impl Engine {
    /// Starts building stage `index` on its own thread unless it has been started already.
    pub(super) fn start_stage<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        run: &'env BuildRun<'env>,
        index: usize,
    ) {
        let node = run.nodes[index];
        if !run.board.claim(node) {
            return;
        }
        scope.spawn(move || match self.build_stage(scope, run, index) {
            Ok(state) => run.board.finish(node, state),
            Err(e) => {
                // The first failure is the build's error; stages that then stop waiting for
                // it only report that they were cut short, which is not worth showing.
                let mut first = run
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.is_none() && !run.board.has_failed() {
                    *first = Some(e);
                }
                drop(first);
                run.board.fail();
            }
        });
    }

    /// Starts the stages in `deps` (if not yet started) and waits for their results.
    pub(super) fn wait_for_stages<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        run: &'env BuildRun<'env>,
        deps: impl IntoIterator<Item = usize>,
        built: &mut BTreeMap<usize, StageState>,
    ) -> Result<()> {
        let deps: Vec<usize> = deps.into_iter().collect();
        for &dep in &deps {
            self.start_stage(scope, run, dep);
        }
        for dep in deps {
            let state = run
                .board
                .wait(run.nodes[dep])
                .ok_or(SolveError::DependencyFailed { stage: dep })?;
            built.insert(dep, state);
        }
        Ok(())
    }

    /// Builds stage `index`: first waits for the stages it reads, including those only its
    /// base's ONBUILD triggers name (known once the base is resolved), then runs its steps.
    fn build_stage<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        run: &'env BuildRun<'env>,
        index: usize,
    ) -> Result<StageState> {
        let BuildRun {
            src,
            plan,
            context,
            req,
            progress,
            ..
        } = *run;
        let stage = &plan.stages[index];
        let mut built = BTreeMap::new();
        self.wait_for_stages(scope, run, stage.deps.iter().copied(), &mut built)?;
        let mut slot = Some(run.slots.acquire());
        let from_label = StepLabel {
            stage: run.labels[index].clone(),
            position: 1,
            total: stage.steps.len() + 1,
            // Show what FROM resolved to, not its ARG references.
            text: match &stage.base {
                Base::Image(name) => format!("FROM {name}"),
                Base::Scratch => "FROM scratch".to_owned(),
                Base::Stage(i) => format!(
                    "FROM {}",
                    plan.stages[*i]
                        .name
                        .clone()
                        .unwrap_or_else(|| i.to_string())
                ),
            },
        };
        let started = Instant::now();
        progress(ProgressEvent::StepStarted(from_label.clone()));
        let at = |message: String| SolveError::Dockerfile {
            location: src.at(&stage.from),
            message,
        };
        // `FROM --platform=…` (already expanded by the plan), else the build's target.
        let platform = match &stage.platform {
            Some(text) => text
                .parse::<Platform>()
                .map_err(|e| at(format!("--platform: {e}")))?,
            None => run.platform.clone(),
        };
        let mut state = match &stage.base {
            Base::Scratch => StageState::scratch(&platform),
            Base::Stage(i) => {
                let mut base = built
                    .get(i)
                    .cloned()
                    .ok_or(SolveError::StageNotBuilt { stage: *i })?;
                // As in BuildKit, the base stage's ARGs carry over but "CMD was set here"
                // does not: the base stage is this stage's base image, so an ENTRYPOINT
                // here resets the CMD it set.
                base.cmd_set = false;
                base
            }
            Base::Image(name) => {
                let reference: Reference = name
                    .parse()
                    .map_err(|e: kiln_image::ReferenceError| at(e.to_string()))?;
                let image = run
                    .pins
                    .resolve(self, &reference, &platform, req.pull, progress)
                    .map_err(|e| {
                        at(format!(
                            "failed to resolve base image {}: {e}",
                            reference.familiar()
                        ))
                    })?;
                StageState::from_image(&image, &platform)
            }
        };
        state.proxy_env = proxy_env(&plan.build_args);
        // A stage built on another stage inherits that stage's chain (and first cause); a base
        // image or scratch starts one, which may itself be the first cause of later misses.
        if let Some(inputs) = state.take_pending_inputs() {
            let explainer = Explainer {
                store: &self.store,
                progress,
                dockerfile: &src.path,
                stage: run.labels[index].clone(),
            };
            let key = state.key.clone();
            let step = KeyedStep {
                label: &from_label,
                slot: "FROM".into(),
                key: &key,
                inputs,
                outcome: StepOutcome::From,
            };
            if let Some(record) = explainer.step(&mut state, step) {
                record.save(&self.store)?;
            }
        }
        progress(ProgressEvent::StepDone {
            step: from_label,
            elapsed: started.elapsed(),
        });
        // Stages a trigger copies from may not be needed otherwise (BuildKit re-resolves
        // reachability after reading triggers); they are all earlier than this one. Waiting
        // for them gives the slot back, so that they can run even with `--jobs 1`.
        let trigger_deps =
            crate::onbuild::trigger_stage_deps(plan, stage, &state.config.config.on_build);
        let trigger_deps: Vec<usize> = trigger_deps
            .into_iter()
            .filter(|dep| !built.contains_key(dep))
            .collect();
        if !trigger_deps.is_empty() {
            drop(slot.take());
            self.wait_for_stages(scope, run, trigger_deps, &mut built)?;
            slot = Some(run.slots.acquire());
        }
        let builder = StageBuilder {
            engine: self,
            src,
            plan,
            stage,
            stage_label: &run.labels[index],
            target_platform: run.platform,
            context,
            req,
            built: &built,
            pins: run.pins,
            remote: run.remote,
            shared: run.shared,
            cancelled: &|| run.board.has_failed(),
            progress,
            slot: slot.as_ref(),
        };
        let state = builder.run(state)?;
        drop(slot);
        Ok(state)
    }
}
