//! Errors of planning a build. Each names the instruction (by its span) that caused it.

use kiln_dockerfile::{ExpandError, Span};
use kiln_error::ErrorKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the Dockerfile has no FROM instruction, so no build stage")]
    NoStages,

    #[error("line {}: {keyword} before the first FROM: only ARG may come before FROM", span.start_line)]
    BeforeFirstFrom { span: Span, keyword: String },

    #[error("line {}: base image name {word:?} is empty after expansion", span.start_line)]
    EmptyBaseImage { span: Span, word: String },

    #[error("line {}: {source}", span.start_line)]
    Expand { span: Span, source: ExpandError },

    #[error("line {}: duplicate stage name {name:?}, first used on line {first_line}", span.start_line)]
    DuplicateStageName {
        span: Span,
        name: String,
        first_line: usize,
    },

    #[error("line {}: cannot use {flag}={value:?}: that stage needs to be defined before the current stage {current:?}", span.start_line)]
    StageNotYetDefined {
        span: Span,
        flag: &'static str,
        value: String,
        /// The current stage's name (`stage-N` when it has none).
        current: String,
    },

    #[error("line {}: circular dependency detected on stage: {stage} ({flag}={value:?} names the stage it is in)", span.start_line)]
    CircularDependency {
        span: Span,
        flag: &'static str,
        value: String,
        stage: String,
    },

    #[error("line {}: FROM {name:?} names a stage defined later (line {defined_line}); stages must be defined before they are used", span.start_line)]
    FromLaterStage {
        span: Span,
        name: String,
        defined_line: usize,
    },

    #[error("line {}: invalid stage index {index}: the Dockerfile has {count} stages", span.start_line)]
    StageIndexOutOfRange {
        span: Span,
        index: usize,
        count: usize,
    },

    #[error("line {}: {message}", span.start_line)]
    TriggerShape { span: Span, message: String },

    #[error("target stage {target:?} not found; the stages are: {}", names.join(", "))]
    TargetNotFound { target: String, names: Vec<String> },
}

impl PlanError {
    /// [`ErrorKind::InvalidArgument`] for every variant: a plan fails only because of the
    /// Dockerfile or the build options (a `--target` naming no stage included: a stage is part
    /// of the request, not an object in the store).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlanError::Expand { source, .. } => source.kind(),
            PlanError::NoStages
            | PlanError::BeforeFirstFrom { .. }
            | PlanError::EmptyBaseImage { .. }
            | PlanError::DuplicateStageName { .. }
            | PlanError::StageNotYetDefined { .. }
            | PlanError::CircularDependency { .. }
            | PlanError::FromLaterStage { .. }
            | PlanError::StageIndexOutOfRange { .. }
            | PlanError::TriggerShape { .. }
            | PlanError::TargetNotFound { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// The offending instruction's position, when there is one.
    pub fn span(&self) -> Option<Span> {
        match self {
            PlanError::NoStages | PlanError::TargetNotFound { .. } => None,
            PlanError::BeforeFirstFrom { span, .. }
            | PlanError::EmptyBaseImage { span, .. }
            | PlanError::Expand { span, .. }
            | PlanError::DuplicateStageName { span, .. }
            | PlanError::StageNotYetDefined { span, .. }
            | PlanError::CircularDependency { span, .. }
            | PlanError::FromLaterStage { span, .. }
            | PlanError::StageIndexOutOfRange { span, .. }
            | PlanError::TriggerShape { span, .. } => Some(*span),
        }
    }
}
