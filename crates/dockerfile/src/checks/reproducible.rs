//! Reproducibility rules: what a Dockerfile shows that makes two builds of the same commit give
//! different images even with `SOURCE_DATE_EPOCH` set. These are kiln's own rules (BuildKit has
//! none), documented in `docs/reproducible-builds.md`.
//!
//! Each rule is precise: it fires only on an input that can change between two builds without
//! the Dockerfile or the context changing — a download with no checksum, an image named by a
//! tag. A word kiln cannot resolve from the file and the build args (an undefined variable) is
//! not judged: the rules report what they can see, never a guess. They run only for a build
//! that asks to be reproducible (one with `SOURCE_DATE_EPOCH`), since any other build already
//! differs by its timestamps.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use super::Warning;
use crate::Instruction;
use crate::command::Command;
use crate::expand::expand_word;

/// Every reproducibility rule, by name.
pub const REPRODUCIBILITY_RULES: [&str; 2] = ["RemoteAddWithoutChecksum", "UnpinnedImage"];

/// Runs the reproducibility rules. `build_args` give FROM and `--from` words their values
/// (over the global ARGs' defaults), as the build will.
pub(super) fn run(
    instructions: &[Instruction],
    escape: char,
    build_args: &BTreeMap<String, String>,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    // Global ARG values (a build arg wins over the default); `None`: declared without one.
    let mut globals: BTreeMap<String, Option<String>> = BTreeMap::new();
    // Stage names seen so far, lower-cased: `FROM name` and `--from=name` are no images.
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut stage_count = 0usize;
    // The words a stage's ARGs give, for `COPY --from=$X` inside it.
    let mut stage_args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for ins in instructions {
        match &ins.command {
            Command::Arg(args) => {
                for (name, default) in args {
                    let value = match build_args.get(name) {
                        Some(given) => Some(given.clone()),
                        None => default.as_deref().and_then(|d| {
                            resolve(d, &|n| lookup(&globals, &stage_args, n), escape)
                        }),
                    };
                    if stage_count == 0 {
                        globals.insert(name.clone(), value);
                    } else {
                        // A stage ARG without a value takes the global one of the same name.
                        let value = value.or_else(|| globals.get(name).cloned().flatten());
                        stage_args.insert(name.clone(), value);
                    }
                }
            }
            Command::From { image, name, .. } => {
                stage_args.clear();
                let resolved = resolve(image, &|n| globals.get(n).cloned().flatten(), escape);
                if let Some(image) = resolved
                    && !image.eq_ignore_ascii_case("scratch")
                    && !stages.contains(&image.to_ascii_lowercase())
                    && !is_pinned(&image)
                {
                    warnings.push(unpinned(ins, "FROM", &image));
                }
                if let Some(name) = name {
                    stages.insert(name.to_ascii_lowercase());
                }
                stage_count += 1;
            }
            Command::Copy(c) | Command::Add(c) => {
                if let Some(from) = &c.from {
                    let resolved = resolve(from, &|n| lookup(&globals, &stage_args, n), escape);
                    if let Some(from) = resolved
                        && !from.bytes().all(|b| b.is_ascii_digit())
                        && !stages.contains(&from.to_ascii_lowercase())
                        && !is_pinned(&from)
                    {
                        warnings.push(unpinned(ins, &format!("{} --from", ins.keyword), &from));
                    }
                }
                if matches!(ins.command, Command::Add(_)) && c.checksum.is_none() {
                    for source in c.sources.iter().filter(|s| is_remote(s)) {
                        warnings.push(Warning {
                            rule: "RemoteAddWithoutChecksum",
                            message: format!(
                                "ADD {source} has no --checksum: what the server sends can \
                                 change between builds; add --checksum=sha256:<digest> to pin it"
                            ),
                            span: ins.span,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    warnings
}

fn lookup(
    globals: &BTreeMap<String, Option<String>>,
    stage_args: &BTreeMap<String, Option<String>>,
    name: &str,
) -> Option<String> {
    match stage_args.get(name) {
        Some(value) => value.clone(),
        None => globals.get(name).cloned().flatten(),
    }
}

/// `word` expanded, or `None` when it uses a variable with no known value (or does not expand).
fn resolve(word: &str, env: &dyn Fn(&str) -> Option<String>, escape: char) -> Option<String> {
    let unknown = Cell::new(false);
    let lookup = |name: &str| {
        let value = env(name);
        if value.is_none() {
            unknown.set(true);
        }
        value
    };
    let expanded = expand_word(word, &lookup, escape).ok()?;
    (!unknown.get() && !expanded.is_empty()).then_some(expanded)
}

/// An image reference with a digest (`name@sha256:…`) names one image for good.
fn is_pinned(image: &str) -> bool {
    image
        .split_once('@')
        .is_some_and(|(_, digest)| digest.contains(':'))
}

/// An `http(s)://` source: a download. (Git sources are not fetched by kiln.)
fn is_remote(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn unpinned(ins: &Instruction, what: &str, image: &str) -> Warning {
    Warning {
        rule: "UnpinnedImage",
        message: format!(
            "{what} {image} names an image by tag, which can move to another image between \
             builds; pin it by digest ({image}@sha256:<digest>)"
        ),
        span: ins.span,
    }
}
