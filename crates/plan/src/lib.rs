//! Turns a parsed Dockerfile and build options into the stages to build. Pure: no I/O.
//!
//! The plan settles everything that does not need the filesystem or a registry: stage
//! boundaries and names, each stage's base (scratch, an image reference expanded with the
//! global ARGs, or an earlier stage), the `--target` stage and which stages it needs, the
//! value of every `ARG` by Docker's scoping rules, and which `--build-arg`s went unused.
//! Everything else stays raw in the steps for the engine to expand as it executes them.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod error;
pub mod outline;
mod platforms;

pub use args::{ArgValue, BUILDKIT_OPTION_PREFIX, PROXY_ARGS, SOURCE_DATE_EPOCH};
pub use error::PlanError;
pub use platforms::{PlatformPlans, plan_platforms};

use args::{ArgScope, predefined_args, unused_build_args};
use kiln_dockerfile::{Command, CopyCommand, Dockerfile, Instruction, Span, expand_word};
use kiln_image::Platform;
use std::collections::{BTreeMap, BTreeSet};

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg NAME=VALUE`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name (case-insensitive); the last stage when `None`.
    pub target: Option<String>,
    /// The platform the image is built for (`TARGETPLATFORM`).
    pub platform: Platform,
    /// The platform the build runs on (`BUILDPLATFORM`).
    pub build_platform: Platform,
}

/// Everything the engine needs to run the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// All stages, in Dockerfile order (`StagePlan::index` is the position here).
    pub stages: Vec<StagePlan>,
    /// Index of the stage whose result is the image.
    pub target: usize,
    /// `--build-arg`s no ARG of a needed stage (or the global scope) declares, sorted.
    pub unused_build_args: Vec<String>,
    /// The Dockerfile's escape character, for expanding the raw words of steps.
    pub escape: char,
    /// TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and the BUILD* equivalents.
    pub predefined_args: BTreeMap<String, String>,
    /// The `--build-arg`s, for ARGs declared by ONBUILD triggers and for the proxy
    /// variables RUN sees without a declaration.
    pub build_args: BTreeMap<String, String>,
    /// Global ARGs (declared before the first FROM) that have a value, after overrides.
    pub global_args: BTreeMap<String, String>,
}

/// One `FROM` and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    pub index: usize,
    /// The `AS` name as written.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=…`, expanded with the global ARGs.
    pub platform: Option<String>,
    /// The stage's `FROM` instruction, for progress display and errors.
    pub from: Instruction,
    pub steps: Vec<Step>,
    /// Stages this one needs (its base, `COPY --from`, `RUN --mount=from=`), sorted.
    pub deps: Vec<usize>,
    /// Whether the target stage needs this stage (directly or not); others need not run.
    pub needed: bool,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference, ARGs already expanded.
    Image(String),
    Stage(usize),
}

/// Where `COPY --from` (or a `RUN --mount` `from=`) takes files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    Stage(usize),
    /// An image reference, expanded.
    Image(String),
}

/// One instruction of a stage, with what the engine must do for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The raw instruction (for display, history and its span).
    pub instruction: Instruction,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// One declared ARG (an `ARG A B=1` instruction gives one step per name).
    Arg { name: String, value: ArgValue },
    /// COPY with its raw words; `from` is the resolved `--from`.
    Copy {
        command: CopyCommand,
        from: Option<CopyFrom>,
    },
    /// ADD with its raw words.
    Add(CopyCommand),
    /// Any other instruction, raw. For RUN, stages named by `--mount=…,from=…` are already
    /// in the stage's `deps`; the engine resolves the mount itself.
    Other(Command),
}

/// Plans the build of `df`.
pub fn plan(df: &Dockerfile, opts: &BuildOptions) -> Result<BuildPlan, PlanError> {
    let predefined = predefined_args(&opts.platform, &opts.build_platform, &opts.build_args);
    let mut scope = ArgScope::new(&opts.build_args, &predefined);
    let stage_names = stage_names(df)?;
    let mut declared_globals = BTreeSet::new();
    let mut stages: Vec<StageBuilder> = Vec::new();

    for instruction in &df.instructions {
        let span = instruction.span;
        if let Command::From { .. } = instruction.command {
            let stage = start_stage(instruction, stages.len(), &stage_names, &scope, df.escape)?;
            stages.push(stage);
            continue;
        }
        match (&instruction.command, stages.last_mut()) {
            (Command::Arg(declarations), None) => {
                for (name, default) in declarations {
                    let expanded = default
                        .as_ref()
                        .map(|raw| {
                            expand_word(raw, &|n| scope.global_lookup(n), df.escape)
                                .map_err(|source| PlanError::Expand { span, source })
                        })
                        .transpose()?;
                    scope.declare_global(name, expanded);
                    declared_globals.insert(name.clone());
                }
            }
            (_, None) => {
                return Err(PlanError::BeforeFirstFrom {
                    span,
                    keyword: instruction.keyword.clone(),
                });
            }
            (command, Some(stage)) => {
                stage.add_step(instruction, command, &stage_names, &scope, df.escape)?
            }
        }
    }
    if stages.is_empty() {
        return Err(PlanError::NoStages);
    }

    let target =
        match &opts.target {
            None => stages.len() - 1,
            Some(wanted) => stage_names.find(wanted, 0..stages.len()).ok_or_else(|| {
                PlanError::TargetNotFound {
                    target: wanted.clone(),
                    names: stage_names.names.iter().flatten().cloned().collect(),
                }
            })?,
        };
    let needed = needed_stages(&stages, target);
    let mut declared = declared_globals;
    for (stage, needed) in stages.iter().zip(&needed) {
        if *needed {
            declared.extend(stage.declared.iter().cloned());
        }
    }
    let unused_build_args = unused_build_args(&opts.build_args, &predefined, &declared);
    let stages = stages
        .into_iter()
        .zip(needed)
        .map(|(builder, needed)| StagePlan {
            needed,
            ..builder.plan
        })
        .collect();
    Ok(BuildPlan {
        stages,
        target,
        unused_build_args,
        escape: df.escape,
        global_args: scope.global_values(),
        predefined_args: predefined,
        build_args: opts.build_args.clone(),
    })
}

impl BuildPlan {
    /// Plans one ONBUILD trigger (an instruction from a base image's `OnBuild` list, or an
    /// `ONBUILD` of the base stage) that runs at the start of stage `stage`. Triggers are only
    /// known once the base is resolved, so they are planned then, by the same rules as the
    /// Dockerfile's own instructions: ARGs resolve against `--build-arg`s and global ARGs, and
    /// `COPY --from` names an earlier stage, or else an image.
    pub fn plan_trigger(&self, stage: usize, instruction: &Instruction) -> Result<Step, PlanError> {
        let span = instruction.span;
        let step = |kind| Step {
            instruction: instruction.clone(),
            kind,
        };
        let mut scope = ArgScope::new(&self.build_args, &self.predefined_args);
        for (name, value) in &self.global_args {
            scope.declare_global(name, Some(value.clone()));
        }
        let table = StageTable {
            names: self.stages.iter().map(|s| s.name.clone()).collect(),
            lines: self.stages.iter().map(|s| s.from.span.start_line).collect(),
        };
        match &instruction.command {
            Command::Arg(declarations) => match declarations.as_slice() {
                [(name, default)] => Ok(step(StepKind::Arg {
                    name: name.clone(),
                    value: scope.declare_in_stage(name, default.as_deref()),
                })),
                _ => Err(PlanError::TriggerShape {
                    span,
                    message: "an ONBUILD ARG trigger must declare exactly one name".into(),
                }),
            },
            Command::Copy(copy) => {
                let from = copy
                    .from
                    .as_deref()
                    .map(|raw| {
                        let value = expand_word(raw, &|n| scope.global_lookup(n), self.escape)
                            .map_err(|source| PlanError::Expand { span, source })?;
                        resolve_stage_ref(&value, "--from", span, stage, &table)
                    })
                    .transpose()?;
                Ok(step(StepKind::Copy {
                    command: copy.clone(),
                    from,
                }))
            }
            Command::Add(add) => Ok(step(StepKind::Add(add.clone()))),
            Command::From { .. } | Command::Onbuild(_) | Command::Maintainer(_) => {
                Err(PlanError::TriggerShape {
                    span,
                    message: format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        instruction.keyword
                    ),
                })
            }
            other => Ok(step(StepKind::Other(other.clone()))),
        }
    }
}

/// A stage being planned, with what is only needed while planning.
struct StageBuilder {
    plan: StagePlan,
    /// Names of the ARGs this stage declares.
    declared: BTreeSet<String>,
    /// This stage's ARG values so far, for expanding `--from`.
    arg_values: BTreeMap<String, String>,
}

/// Every stage's `AS` name and FROM line, in order.
#[derive(Debug)]
struct StageTable {
    names: Vec<Option<String>>,
    lines: Vec<usize>,
}

impl StageTable {
    /// The stage whose name is `reference` (case-insensitive) among stages `range`.
    fn find(&self, reference: &str, range: std::ops::Range<usize>) -> Option<usize> {
        let start = range.start;
        self.names[range]
            .iter()
            .position(|name| {
                name.as_ref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(reference))
            })
            .map(|i| i + start)
    }

    /// How progress and errors call stage `index`: its name, else `stage-N` as BuildKit does.
    fn display(&self, index: usize) -> String {
        self.names[index]
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// Every stage's `AS` name, checking for duplicates.
fn stage_names(df: &Dockerfile) -> Result<StageTable, PlanError> {
    let mut names: Vec<Option<String>> = Vec::new();
    let mut lines = Vec::new();
    let mut first_lines: BTreeMap<String, usize> = BTreeMap::new();
    for instruction in &df.instructions {
        if let Command::From { name, .. } = &instruction.command {
            if let Some(name) = name {
                let key = name.to_ascii_lowercase();
                if let Some(&first_line) = first_lines.get(&key) {
                    return Err(PlanError::DuplicateStageName {
                        span: instruction.span,
                        name: name.clone(),
                        first_line,
                    });
                }
                first_lines.insert(key, instruction.span.start_line);
            }
            names.push(name.clone());
            lines.push(instruction.span.start_line);
        }
    }
    Ok(StageTable { names, lines })
}

fn start_stage(
    from: &Instruction,
    index: usize,
    stage_names: &StageTable,
    scope: &ArgScope<'_>,
    escape: char,
) -> Result<StageBuilder, PlanError> {
    let Command::From {
        image,
        name,
        platform,
    } = &from.command
    else {
        unreachable!("start_stage is only called for FROM");
    };
    let span = from.span;
    let lookup = |n: &str| scope.global_lookup(n);
    let expand = |word: &str| {
        expand_word(word, &lookup, escape).map_err(|source| PlanError::Expand { span, source })
    };
    let expanded = expand(image)?;
    let base = if expanded.is_empty() {
        return Err(PlanError::EmptyBaseImage {
            span,
            word: image.clone(),
        });
    } else if expanded == "scratch" {
        Base::Scratch
    } else if let Some(stage) = stage_names.find(&expanded, 0..index) {
        Base::Stage(stage)
    } else if let Some(later) = stage_names.find(&expanded, index + 1..stage_names.names.len()) {
        // BuildKit would try to pull an image of that name, which is never what was meant.
        // A stage's own name stays an image reference (`FROM node AS node` is common).
        return Err(PlanError::FromLaterStage {
            span,
            name: expanded,
            defined_line: stage_names.lines[later],
        });
    } else {
        Base::Image(expanded)
    };
    let deps = match base {
        Base::Stage(stage) => vec![stage],
        _ => Vec::new(),
    };
    Ok(StageBuilder {
        plan: StagePlan {
            index,
            name: name.clone(),
            base,
            platform: platform.as_deref().map(expand).transpose()?,
            from: from.clone(),
            steps: Vec::new(),
            deps,
            needed: false,
        },
        declared: BTreeSet::new(),
        arg_values: BTreeMap::new(),
    })
}

impl StageBuilder {
    fn add_step(
        &mut self,
        instruction: &Instruction,
        command: &Command,
        stage_names: &StageTable,
        scope: &ArgScope<'_>,
        escape: char,
    ) -> Result<(), PlanError> {
        let step = |kind| Step {
            instruction: instruction.clone(),
            kind,
        };
        match command {
            Command::Arg(declarations) => {
                for (name, default) in declarations {
                    let value = scope.declare_in_stage(name, default.as_deref());
                    self.remember_arg(name, &value, escape);
                    self.declared.insert(name.clone());
                    self.plan.steps.push(step(StepKind::Arg {
                        name: name.clone(),
                        value,
                    }));
                }
            }
            Command::Copy(copy) => {
                let from = copy
                    .from
                    .as_deref()
                    .map(|raw| {
                        self.resolve_from(raw, "--from", instruction.span, stage_names, escape)
                    })
                    .transpose()?;
                if let Some(CopyFrom::Stage(stage)) = from {
                    self.add_dep(stage);
                }
                self.plan.steps.push(step(StepKind::Copy {
                    command: copy.clone(),
                    from,
                }));
            }
            Command::Add(add) => self.plan.steps.push(step(StepKind::Add(add.clone()))),
            Command::Run { mounts, .. } => {
                for from in mounts.iter().filter_map(|mount| mount_from(mount)) {
                    let source = self.resolve_from(
                        from,
                        "--mount from",
                        instruction.span,
                        stage_names,
                        escape,
                    )?;
                    if let CopyFrom::Stage(stage) = source {
                        self.add_dep(stage);
                    }
                }
                self.plan.steps.push(step(StepKind::Other(command.clone())));
            }
            other => self.plan.steps.push(step(StepKind::Other(other.clone()))),
        }
        Ok(())
    }

    /// Tracks the ARG's value so later `--from` words can use it. A default that cannot be
    /// expanded yet is treated as unset here; the engine reports the error when it runs.
    fn remember_arg(&mut self, name: &str, value: &ArgValue, escape: char) {
        let resolved = match value {
            ArgValue::Given(v) => Some(v.clone()),
            ArgValue::Default(raw) => {
                expand_word(raw, &|n| self.arg_values.get(n).cloned(), escape).ok()
            }
            ArgValue::Unset => None,
        };
        match resolved {
            Some(v) => self.arg_values.insert(name.to_string(), v),
            None => self.arg_values.remove(name),
        };
    }

    /// Resolves a `--from` value: a stage index or an earlier stage's name gives that stage,
    /// anything else is an image reference.
    fn resolve_from(
        &self,
        raw: &str,
        flag: &'static str,
        span: Span,
        stage_names: &StageTable,
        escape: char,
    ) -> Result<CopyFrom, PlanError> {
        let value = expand_word(raw, &|n| self.arg_values.get(n).cloned(), escape)
            .map_err(|source| PlanError::Expand { span, source })?;
        resolve_stage_ref(&value, flag, span, self.plan.index, stage_names)
    }

    fn add_dep(&mut self, stage: usize) {
        if let Err(at) = self.plan.deps.binary_search(&stage) {
            self.plan.deps.insert(at, stage);
        }
    }
}

/// Resolves an expanded `--from` value seen in stage `current`: a stage index or an earlier
/// stage's name gives that stage; the current stage is a cycle and a later one an ordering
/// error (as BuildKit reports them); anything else is an image reference.
fn resolve_stage_ref(
    value: &str,
    flag: &'static str,
    span: Span,
    current: usize,
    stage_names: &StageTable,
) -> Result<CopyFrom, PlanError> {
    let count = stage_names.names.len();
    let target = match value.parse::<usize>() {
        Ok(index) if index >= count => {
            return Err(PlanError::StageIndexOutOfRange { span, index, count });
        }
        Ok(index) => Some(index),
        Err(_) => stage_names.find(value, 0..count),
    };
    match target {
        None => Ok(CopyFrom::Image(value.to_string())),
        Some(stage) if stage < current => Ok(CopyFrom::Stage(stage)),
        Some(stage) if stage == current => Err(PlanError::CircularDependency {
            span,
            flag,
            value: value.to_string(),
            stage: stage_names.display(current),
        }),
        Some(_) => Err(PlanError::StageNotYetDefined {
            span,
            flag,
            value: value.to_string(),
            current: stage_names.display(current),
        }),
    }
}

/// The `from=` value of a raw `--mount` spec (`type=bind,from=build,target=/x`), if any.
fn mount_from(mount: &str) -> Option<&str> {
    mount
        .split(',')
        .filter_map(|field| field.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("from"))
        .map(|(_, value)| value.trim())
}

/// Marks the stages reachable from `target` through `deps`.
fn needed_stages(stages: &[StageBuilder], target: usize) -> Vec<bool> {
    let mut needed = vec![false; stages.len()];
    let mut pending = vec![target];
    while let Some(stage) = pending.pop() {
        if !std::mem::replace(&mut needed[stage], true) {
            pending.extend(&stages[stage].plan.deps);
        }
    }
    needed
}

#[cfg(test)]
mod tests;
