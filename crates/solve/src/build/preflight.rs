//! Checks made before any step runs: every RUN of a needed stage can execute on this machine
//! (natively or through a registered emulator), and, for a multi-platform build, every base
//! image resolves for the platform it is wanted for. Without them a foreign RUN or a platform
//! the base lacks would fail one target halfway through while the others had already run
//! steps. What only a resolved base reveals (its ONBUILD triggers) is still checked when the
//! stage runs.

use std::collections::BTreeMap;

use kiln_dockerfile::Command;
use kiln_plan::StepKind;

use super::*;

impl Engine {
    pub(super) fn preflight(
        &self,
        src: &Source,
        plans: &PlatformPlans,
        req: &BuildRequest,
        pins: &ImagePins,
        progress: Progress<'_>,
    ) -> Result<()> {
        for (plan, target) in plans.plans.iter().zip(&plans.platforms) {
            for stage in plan.stages.iter().filter(|s| s.needed) {
                let Some(platform) = stage_platform(plan, target, stage.index) else {
                    continue;
                };
                let run = stage
                    .steps
                    .iter()
                    .find(|step| matches!(step.kind, StepKind::Other(Command::Run { .. })));
                if let Some(run) = run
                    && let Some(message) = crate::emulation::cannot_run(&platform)
                {
                    return Err(SolveError::Dockerfile {
                        location: src.at(&run.instruction),
                        message,
                    });
                }
            }
        }
        if plans.platforms.len() > 1 {
            self.resolve_bases(src, plans, req, pins, progress)?;
        }
        Ok(())
    }

    /// Resolves (pulling where needed) every base image of every target, side by side, into
    /// the build's pins; the first failure, in Dockerfile order, is the error.
    fn resolve_bases(
        &self,
        src: &Source,
        plans: &PlatformPlans,
        req: &BuildRequest,
        pins: &ImagePins,
        progress: Progress<'_>,
    ) -> Result<()> {
        // (reference text, platform text) → the FROM that first names it and what to resolve.
        let mut wanted = BTreeMap::new();
        for (plan, target) in plans.plans.iter().zip(&plans.platforms) {
            for stage in plan.stages.iter().filter(|s| s.needed) {
                let Base::Image(name) = &stage.base else {
                    continue;
                };
                // Unparsable names and platforms are the stage's own errors, reported as ever.
                let (Ok(reference), Some(platform)) = (
                    name.parse::<Reference>(),
                    stage_platform(plan, target, stage.index),
                ) else {
                    continue;
                };
                wanted
                    .entry((reference.to_string(), platform.to_string()))
                    .or_insert((stage.from.span.start_line, &stage.from, reference, platform));
            }
        }
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = wanted
                .values()
                .map(|(line, from, reference, platform)| {
                    scope.spawn(move || {
                        let outcome = pins.resolve(self, reference, platform, req.pull, progress);
                        (*line, *from, reference, outcome)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut failures: Vec<_> = results
            .into_iter()
            .filter_map(|(line, from, reference, outcome)| {
                outcome.err().map(|e| (line, from, reference, e))
            })
            .collect();
        failures.sort_by_key(|(line, ..)| *line);
        match failures.into_iter().next() {
            None => Ok(()),
            Some((_, from, reference, e)) => Err(SolveError::Dockerfile {
                location: src.at(from),
                message: format!("failed to resolve base image {}: {e}", reference.familiar()),
            }),
        }
    }
}

/// The platform stage `index` of `plan` is built for: its root stage's `FROM --platform`,
/// else the target (a stage built on another stage keeps that stage's platform). `None` when
/// the `--platform` value does not parse (the stage reports that itself).
fn stage_platform(plan: &BuildPlan, target: &Platform, index: usize) -> Option<Platform> {
    let mut stage = &plan.stages[index];
    while let Base::Stage(base) = stage.base {
        stage = &plan.stages[base];
    }
    match &stage.platform {
        Some(text) => text.parse().ok(),
        None => Some(target.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_on_a_stage_keeps_the_root_platform() {
        let df = kiln_dockerfile::parse(
            "FROM --platform=$BUILDPLATFORM busybox AS a\nFROM a AS b\nFROM busybox\n",
        )
        .unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let opts = BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: arm.clone(),
            build_platform: "linux/amd64".parse().unwrap(),
        };
        let plan = kiln_plan::plan(&df, &opts).unwrap();
        assert_eq!(
            stage_platform(&plan, &arm, 1).unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(stage_platform(&plan, &arm, 2), Some(arm));
    }
}
