//! The rules themselves: one pass over the instructions, tracking stages and variables.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::Warning;
use crate::Instruction;
use crate::ast::Node;
use crate::command::{Command, ShellOrExec};
use crate::error::Span;
use crate::expand::expand_word;
use crate::instruction::edit_distance;

/// ARGs every build defines without a declaration (the platform family; the proxy family is
/// [`crate::PROXY_ARGS`]).
const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

fn is_predefined(name: &str) -> bool {
    PLATFORM_ARGS.contains(&name) || crate::PROXY_ARGS.contains(&name)
}

/// Words that make an ARG or ENV name look like it holds a secret (BuildKit's list).
const SECRET_WORDS: [&str; 10] = [
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

/// What the rules remember about a stage.
#[derive(Debug, Clone, Default)]
struct Stage {
    /// Lower-cased `AS` name.
    name: Option<String>,
    /// Variables known to be defined (ENV and ARG declared here or in a parent stage).
    defined: BTreeSet<String>,
    /// Whether every variable is known: the stage descends from `scratch` through stages of
    /// this file, so no base image brings variables the file cannot see.
    env_known: bool,
    /// An absolute WORKDIR was set (here or in a parent stage).
    absolute_workdir: bool,
    /// SHELL was changed: shell-form CMD/ENTRYPOINT is then deliberate.
    custom_shell: bool,
    /// CMD / ENTRYPOINT / HEALTHCHECK seen, with the span of the last one.
    last_once: BTreeMap<&'static str, Span>,
}

struct Checker {
    warnings: Vec<Warning>,
    escape: char,
    global_args: BTreeMap<String, Option<String>>,
    stages: Vec<Stage>,
}

impl Checker {
    fn warn(&mut self, rule: &'static str, span: Span, message: String) {
        self.warnings.push(Warning {
            rule,
            message,
            span,
        });
    }

    /// Expands `word` with `defined`, returning the names it used that are not defined.
    fn undefined_in(&self, word: &str, defined: &dyn Fn(&str) -> bool) -> Vec<String> {
        let missing = RefCell::new(Vec::new());
        let lookup = |name: &str| {
            if defined(name) {
                Some(String::new())
            } else {
                let mut missing = missing.borrow_mut();
                if !missing.iter().any(|m: &String| m == name) {
                    missing.push(name.to_string());
                }
                None
            }
        };
        // A word that does not expand is reported when the build expands it.
        let _ = expand_word(word, &lookup, self.escape);
        missing.into_inner()
    }
}

/// The closest name in `candidates`, if close enough to be a likely typo.
fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    candidates
        .filter(|c| c.as_str() != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().max(name.len()))
        .min()
        .map(|(_, c)| format!(" (did you mean ${c}?)"))
        .unwrap_or_default()
}

/// Runs every rule over the parallel raw and typed instruction lists.
pub(super) fn run(nodes: &[Node], instructions: &[Instruction], escape: char) -> Vec<Warning> {
    let mut checker = Checker {
        warnings: Vec::new(),
        escape,
        global_args: BTreeMap::new(),
        stages: Vec::new(),
    };
    instruction_casing(&mut checker, nodes);
    for (node, ins) in nodes.iter().zip(instructions) {
        if node.empty_continuation {
            checker.warn(
                "NoEmptyContinuation",
                ins.span,
                "Empty continuation line".into(),
            );
        }
        if checker.stages.is_empty()
            && let Command::Arg(args) = &ins.command
        {
            for (name, default) in args {
                checker.global_args.insert(name.clone(), default.clone());
            }
            secrets(&mut checker, ins, args.iter().map(|(n, _)| n));
            continue;
        }
        match &ins.command {
            Command::From {
                image,
                name,
                platform,
            } => from(
                &mut checker,
                node,
                ins,
                image,
                name.as_deref(),
                platform.as_deref(),
            ),
            command => in_stage(&mut checker, node, ins, command),
        }
    }
    checker.warnings
}

/// ConsistentInstructionCasing: keywords as written should all be upper or all lower case,
/// whichever most of them are.
fn instruction_casing(checker: &mut Checker, nodes: &[Node]) {
    let upper = nodes
        .iter()
        .filter(|n| n.keyword == n.keyword.to_ascii_uppercase())
        .count();
    let lower = nodes
        .iter()
        .filter(|n| n.keyword == n.keyword.to_ascii_lowercase())
        .count();
    let majority_upper = upper >= lower;
    let majority = if majority_upper {
        "uppercase"
    } else {
        "lowercase"
    };
    for node in nodes {
        let matches = if majority_upper {
            node.keyword == node.keyword.to_ascii_uppercase()
        } else {
            node.keyword == node.keyword.to_ascii_lowercase()
        };
        if !matches {
            checker.warn(
                "ConsistentInstructionCasing",
                node.span,
                format!(
                    "Command '{}' should match the case of the command majority ({majority})",
                    node.keyword
                ),
            );
        }
    }
}

fn from(
    checker: &mut Checker,
    node: &Node,
    ins: &Instruction,
    image: &str,
    name: Option<&str>,
    platform: Option<&str>,
) {
    let span = ins.span;
    if let (Some(name), Some(as_word)) = (name, node.args.get(1)) {
        let keyword_upper = node.keyword == node.keyword.to_ascii_uppercase();
        let keyword_lower = node.keyword == node.keyword.to_ascii_lowercase();
        let as_upper = as_word == &as_word.to_ascii_uppercase();
        if (keyword_upper && !as_upper) || (keyword_lower && as_upper) {
            checker.warn(
                "FromAsCasing",
                span,
                format!(
                    "'{as_word}' and '{}' keywords' casing do not match",
                    node.keyword
                ),
            );
        }
        if name != name.to_ascii_lowercase() {
            checker.warn(
                "StageNameCasing",
                span,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "scratch" | "context") {
            checker.warn(
                "ReservedStageName",
                span,
                format!("'{name}' is reserved and should not be used as a stage name"),
            );
        }
        if checker
            .stages
            .iter()
            .any(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            checker.warn(
                "DuplicateStageName",
                span,
                format!("Duplicate stage name {lower:?}, stage names should be unique"),
            );
        }
    }

    // Variables in FROM come from global ARGs (or the predefined ones).
    let declared = |n: &str| checker.global_args.contains_key(n) || is_predefined(n);
    let mut undefined = checker.undefined_in(image, &declared);
    if let Some(p) = platform {
        undefined.extend(checker.undefined_in(p, &declared));
    }
    let global_names: Vec<String> = checker.global_args.keys().cloned().collect();
    for name in undefined {
        let hint = suggestion(&name, global_names.iter());
        checker.warn(
            "UndefinedArgInFrom",
            span,
            format!("FROM argument '{name}' is not declared{hint}"),
        );
    }
    if image.contains('$') {
        let defaults = |n: &str| checker.global_args.get(n).cloned().flatten();
        let expanded = expand_word(image, &defaults, checker.escape).unwrap_or_default();
        if !is_plausible_image_name(&expanded) {
            checker.warn(
                "InvalidDefaultArgInFrom",
                span,
                format!(
                    "Default value for ARG {image} results in empty or invalid base image name"
                ),
            );
        }
    }
    if let Some(p) = platform {
        if matches!(p, "$TARGETPLATFORM" | "${TARGETPLATFORM}") {
            checker.warn(
                "RedundantTargetPlatform",
                span,
                format!(
                    "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                ),
            );
        } else if !p.contains('$') {
            checker.warn(
                "FromPlatformFlagConstDisallowed",
                span,
                format!("FROM --platform flag should not use constant value {p:?}"),
            );
        }
    }

    let parent = checker
        .stages
        .iter()
        .rev()
        .find(|s| s.name.as_deref() == Some(image.to_ascii_lowercase().as_str()))
        .cloned();
    let mut stage = match parent {
        Some(parent) => Stage {
            last_once: BTreeMap::new(),
            ..parent
        },
        None => Stage {
            env_known: image.eq_ignore_ascii_case("scratch"),
            ..Stage::default()
        },
    };
    stage.name = name.map(str::to_ascii_lowercase);
    checker.stages.push(stage);
}

/// A rough reference check: enough to catch what an empty ARG default leaves behind
/// (`busybox:`, `:1.0`, `/app`, ``).
fn is_plausible_image_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with([':', '@', '/', '.', '-'])
        && !name.ends_with([':', '@', '/'])
        && !name.contains(char::is_whitespace)
        && !name.contains("//")
}

fn in_stage(checker: &mut Checker, node: &Node, ins: &Instruction, command: &Command) {
    let span = ins.span;
    let Some(mut stage) = checker.stages.pop() else {
        // Instructions before the first FROM other than ARG are rejected by the planner.
        return;
    };
    // UndefinedVar: variables in words the build expands, where the whole environment is known.
    if stage.env_known {
        let defined = |n: &str| stage.defined.contains(n) || is_predefined(n);
        let mut undefined = Vec::new();
        for word in expanded_words(command) {
            for name in checker.undefined_in(word, &defined) {
                if !undefined.contains(&name) {
                    undefined.push(name);
                }
            }
        }
        for name in undefined {
            let hint = suggestion(&name, stage.defined.iter());
            checker.warn(
                "UndefinedVar",
                span,
                format!("Usage of undefined variable '${name}'{hint}"),
            );
        }
    }
    match command {
        Command::Env(pairs) => {
            secrets(checker, ins, pairs.iter().map(|(n, _)| n));
            stage.defined.extend(pairs.iter().map(|(n, _)| n.clone()));
            legacy_key_value(checker, node, ins);
        }
        Command::Label(_) => legacy_key_value(checker, node, ins),
        Command::Arg(args) => {
            secrets(checker, ins, args.iter().map(|(n, _)| n));
            stage.defined.extend(args.iter().map(|(n, _)| n.clone()));
        }
        Command::Workdir(dir) => {
            if dir.starts_with('/') || dir.starts_with('$') {
                stage.absolute_workdir = true;
            } else if !stage.absolute_workdir {
                checker.warn(
                    "WorkdirRelativePath",
                    span,
                    format!(
                        "Relative workdir {dir:?} can have unexpected results if the base image changes"
                    ),
                );
            }
        }
        Command::Shell(_) => stage.custom_shell = true,
        Command::Maintainer(_) => checker.warn(
            "MaintainerDeprecated",
            span,
            "Maintainer instruction is deprecated in favor of using label".into(),
        ),
        Command::Expose(ports) => {
            for port in ports {
                if port.contains(':') {
                    checker.warn(
                        "ExposeInvalidFormat",
                        span,
                        format!(
                            "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
                        ),
                    );
                }
                if let Some((_, proto)) = port.split_once('/')
                    && proto != proto.to_ascii_lowercase()
                {
                    checker.warn(
                        "ExposeProtoCasing",
                        span,
                        format!(
                            "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                        ),
                    );
                }
            }
        }
        _ => {}
    }
    let once = match command {
        Command::Cmd(_) => Some("CMD"),
        Command::Entrypoint(_) => Some("ENTRYPOINT"),
        Command::Healthcheck(_) => Some("HEALTHCHECK"),
        _ => None,
    };
    if let Some(keyword) = once
        && let Some(previous) = stage.last_once.insert(keyword, span)
    {
        checker.warn(
            "MultipleInstructionsDisallowed",
            previous,
            format!(
                "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
            ),
        );
    }
    if let Command::Cmd(ShellOrExec::Shell(_)) | Command::Entrypoint(ShellOrExec::Shell(_)) =
        command
        && !stage.custom_shell
    {
        checker.warn(
            "JSONArgsRecommended",
            span,
            format!(
                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                ins.keyword
            ),
        );
    }
    checker.stages.push(stage);
}

/// The raw words of `command` that the build expands (as [`Command::expand`] does).
fn expanded_words(command: &Command) -> Vec<&String> {
    match command {
        Command::Copy(c) | Command::Add(c) => c
            .sources
            .iter()
            .chain([&c.dest])
            .chain(&c.from)
            .chain(&c.chown)
            .chain(&c.chmod)
            .chain(&c.exclude)
            .chain(&c.checksum)
            .collect(),
        Command::Env(kvs) | Command::Label(kvs) => kvs.iter().flat_map(|(k, v)| [k, v]).collect(),
        Command::Arg(args) => args.iter().filter_map(|(_, d)| d.as_ref()).collect(),
        Command::Workdir(w) | Command::User(w) | Command::StopSignal(w) => vec![w],
        Command::Volume(ws) | Command::Expose(ws) => ws.iter().collect(),
        _ => Vec::new(),
    }
}

/// SecretsUsedInArgOrEnv: a name with a word such as `password` or `token` in it.
fn secrets<'a>(checker: &mut Checker, ins: &Instruction, names: impl Iterator<Item = &'a String>) {
    for name in names {
        let lower = name.to_ascii_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let secret = words.iter().any(|w| SECRET_WORDS.contains(w));
        if secret && !words.contains(&"public") {
            checker.warn(
                "SecretsUsedInArgOrEnv",
                ins.span,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({} {name:?})",
                    ins.keyword
                ),
            );
        }
    }
}

/// LegacyKeyValueFormat: `ENV key value` instead of `ENV key=value`.
fn legacy_key_value(checker: &mut Checker, node: &Node, ins: &Instruction) {
    if node.args.chunks_exact(3).any(|triple| triple[2].is_empty()) {
        checker.warn(
            "LegacyKeyValueFormat",
            ins.span,
            format!(
                "\"{0} key=value\" should be used instead of legacy \"{0} key value\" format",
                ins.keyword
            ),
        );
    }
}
