//! Build checks: warnings about Dockerfiles that parse but probably do not mean what their
//! author wants, with the rule names and messages of BuildKit's build checks
//! (<https://docs.docker.com/reference/build-checks/>).
//!
//! [`check`] is pure: it looks at the source only. Rules that need the base image's config
//! (`UndefinedVar` on a stage built `FROM` a registry image) only judge what the file itself
//! defines: such stages are skipped for that rule. What is checked is configured by the
//! `# check=skip=Rule1,Rule2;error=true` directive (`skip=all` turns every rule off), or by the
//! `BUILDKIT_DOCKERFILE_CHECK` build argument, which replaces the directive as in BuildKit.
//!
//! A build with `SOURCE_DATE_EPOCH` also gets kiln's own reproducibility rules
//! ([`REPRODUCIBILITY_RULES`], `reproducible.rs`), configured the same way.

mod reproducible;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::parse_raw;
use crate::error::{ParseError, Span};

/// The build argument that overrides the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// Every rule [`check`] knows, by its BuildKit name.
pub const RULES: [&str; 19] = [
    "ConsistentInstructionCasing",
    "DuplicateStageName",
    "ExposeInvalidFormat",
    "ExposeProtoCasing",
    "FromAsCasing",
    "FromPlatformFlagConstDisallowed",
    "InvalidDefaultArgInFrom",
    "JSONArgsRecommended",
    "LegacyKeyValueFormat",
    "MaintainerDeprecated",
    "MultipleInstructionsDisallowed",
    "NoEmptyContinuation",
    "RedundantTargetPlatform",
    "ReservedStageName",
    "SecretsUsedInArgOrEnv",
    "StageNameCasing",
    "UndefinedArgInFrom",
    "UndefinedVar",
    "WorkdirRelativePath",
];

pub use reproducible::REPRODUCIBILITY_RULES;

/// Rules whose findings fail the build whatever the configuration (BuildKit rejects a
/// Dockerfile with two stages of the same name).
const FATAL_RULES: [&str; 1] = ["DuplicateStageName"];

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The rule's BuildKit name, e.g. `JSONArgsRecommended`.
    pub rule: &'static str,
    pub message: String,
    /// The instruction the finding is about.
    pub span: Span,
}

impl Warning {
    /// Whether this finding is an error on its own (not only with `error=true`).
    pub fn is_fatal(&self) -> bool {
        FATAL_RULES.contains(&self.rule)
    }

    /// The rule's documentation page: BuildKit's for its rules, kiln's document for kiln's own.
    pub fn url(&self) -> String {
        if REPRODUCIBILITY_RULES.contains(&self.rule) {
            return format!(
                "docs/reproducible-builds.md#{}",
                self.rule.to_ascii_lowercase()
            );
        }
        let mut kebab = String::new();
        let chars: Vec<char> = self.rule.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let starts_word = c.is_ascii_uppercase()
                && i > 0
                && (chars[i - 1].is_ascii_lowercase()
                    || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
            if starts_word {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
    }
}

/// What to check, from `# check=` or `BUILDKIT_DOCKERFILE_CHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckConfig {
    /// Rule names not to report.
    pub skip: BTreeSet<String>,
    /// `skip=all`: report nothing (fatal rules still are).
    pub skip_all: bool,
    /// `error=true`: any finding fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true` (parts in any order, each optional).
    pub fn parse(value: &str) -> Result<CheckConfig, String> {
        let mut config = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, val)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}: expected key=value"));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            config.skip_all = true;
                        } else {
                            config.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => {
                    config.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(format!(
                                "invalid check option error={other:?}: expected true or false"
                            ));
                        }
                    }
                }
                // BuildKit's opt-in list for experimental rules; kiln has none.
                "experimental" => {}
                other => return Err(format!("unknown check option {other:?}")),
            }
        }
        Ok(config)
    }

    fn reports(&self, rule: &str) -> bool {
        FATAL_RULES.contains(&rule) || !(self.skip_all || self.skip.contains(rule))
    }
}

/// The findings for one Dockerfile and the configuration they were filtered with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    pub warnings: Vec<Warning>,
    pub config: CheckConfig,
}

impl CheckReport {
    /// Whether the build must stop: a fatal finding, or any finding with `error=true`.
    pub fn fails(&self) -> bool {
        self.warnings.iter().any(Warning::is_fatal)
            || (self.config.error && !self.warnings.is_empty())
    }
}

/// What a check looks at besides the Dockerfile.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions<'a> {
    /// The `BUILDKIT_DOCKERFILE_CHECK` build argument, if given; it replaces the file's
    /// `# check=` directive.
    pub check_override: Option<&'a str>,
    /// The build args of a build that asks to be reproducible (it has `SOURCE_DATE_EPOCH`):
    /// the reproducibility rules run, resolving FROM and `--from` words with them. `None`: they
    /// do not run.
    pub reproducible: Option<&'a BTreeMap<String, String>>,
}

/// Checks `source`. `check_override` is the `BUILDKIT_DOCKERFILE_CHECK` build argument, if
/// given; it replaces the file's `# check=` directive. Fails like [`crate::parse`] on a file
/// that does not parse, and on a check configuration that does not parse.
pub fn check(source: &str, check_override: Option<&str>) -> Result<CheckReport, ParseError> {
    check_with(
        source,
        &CheckOptions {
            check_override,
            reproducible: None,
        },
    )
}

/// [`check`] with [`CheckOptions`]: also the reproducibility rules, for a build that asks.
pub fn check_with(source: &str, options: &CheckOptions<'_>) -> Result<CheckReport, ParseError> {
    let check_override = options.check_override;
    let raw = parse_raw(source)?;
    let df = crate::parse(source)?;
    let config = match check_override.or(raw.check.as_deref()) {
        Some(value) => CheckConfig::parse(value).map_err(|message| {
            let line = if check_override.is_some() {
                1
            } else {
                directive_line(source)
            };
            ParseError::new(Span::line(line), message)
        })?,
        None => CheckConfig::default(),
    };
    let mut warnings = rules::run(&raw.nodes, &df.instructions, df.escape);
    if let Some(build_args) = options.reproducible {
        warnings.extend(reproducible::run(&df.instructions, df.escape, build_args));
    }
    warnings.retain(|w| config.reports(w.rule));
    warnings.sort_by_key(|w| w.span.start_line);
    Ok(CheckReport { warnings, config })
}

/// The line of the `# check=` directive (directives sit at the top).
fn directive_line(source: &str) -> usize {
    source
        .lines()
        .position(|l| {
            let l = l.trim_start_matches('\u{feff}').trim_start();
            l.starts_with('#')
                && l[1..]
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("check")
        })
        .map_or(1, |i| i + 1)
}
