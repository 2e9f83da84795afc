//! ONBUILD triggers: instructions a base recorded in its config's `OnBuild` list (or that the
//! base stage declared) run in the deriving stage right after its FROM, in order, and are then
//! cleared, so they fire once, in the direct child only (Docker's rule).

use kiln_dockerfile::Instruction;
use kiln_plan::{BuildPlan, CopyFrom, StagePlan, StepKind};

use crate::error::{Result, SolveError};
use crate::progress::StepLabel;
use crate::stage::{StageBuilder, StageState};

impl StageBuilder<'_> {
    /// Runs and clears the triggers inherited from the base. Errors point at the stage's FROM
    /// line and name the trigger.
    pub(crate) fn run_triggers(&self, state: &mut StageState) -> Result<()> {
        let triggers = std::mem::take(&mut state.config.config.on_build);
        for text in &triggers {
            let from = &self.stage.from;
            let in_trigger = |message: String| SolveError::Dockerfile {
                location: self.src.at(from),
                message: format!("ONBUILD trigger {text:?} inherited by this FROM: {message}"),
            };
            let instruction = trigger_instruction(text, from).map_err(&in_trigger)?;
            let step = self
                .plan
                .plan_trigger(self.stage.index, &instruction)
                .map_err(|e| in_trigger(e.to_string()))?;
            let label = StepLabel {
                stage: self.stage_label.to_owned(),
                position: 1,
                total: self.stage.steps.len() + 1,
                text: format!("ONBUILD {text}"),
            };
            self.step(state, &step, label).map_err(|e| match e {
                SolveError::Dockerfile { location, message } => SolveError::Dockerfile {
                    location,
                    message: format!("ONBUILD trigger {text:?} inherited by this FROM: {message}"),
                },
                other => other,
            })?;
        }
        Ok(())
    }
}

/// The earlier stages `triggers` copy from (`ONBUILD COPY --from=<stage>`). Triggers that do
/// not parse or plan name none here; running them reports the error.
pub(crate) fn trigger_stage_deps(
    plan: &BuildPlan,
    stage: &StagePlan,
    triggers: &[String],
) -> Vec<usize> {
    triggers
        .iter()
        .filter_map(|text| trigger_instruction(text, &stage.from).ok())
        .filter_map(|ins| plan.plan_trigger(stage.index, &ins).ok())
        .filter_map(|step| match step.kind {
            StepKind::Copy {
                from: Some(CopyFrom::Stage(dep)),
                ..
            } => Some(dep),
            _ => None,
        })
        .collect()
}

/// Parses a trigger's text as a one-instruction Dockerfile, placed at the FROM that runs it
/// so every error about it points there.
fn trigger_instruction(text: &str, from: &Instruction) -> std::result::Result<Instruction, String> {
    let parsed = kiln_dockerfile::parse(text).map_err(|e| e.message.clone())?;
    let mut instructions = parsed.instructions;
    if instructions.len() != 1 {
        return Err("an ONBUILD trigger must be a single instruction".into());
    }
    let mut instruction = instructions.remove(0);
    instruction.span = from.span;
    Ok(instruction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_parse_at_the_from_line() {
        let df = kiln_dockerfile::parse("\n\nFROM base\n").unwrap();
        let from = &df.instructions[0];
        let ins = trigger_instruction("RUN echo hi", from).unwrap();
        assert_eq!(ins.keyword, "RUN");
        assert_eq!(ins.span.start_line, 3);
        assert_eq!(ins.original, "RUN echo hi");
        assert!(trigger_instruction("NOPE x", from).is_err());
        assert!(trigger_instruction("RUN a\nRUN b", from).is_err());
    }
}
