//! From raw nodes to typed [`Command`]s: checks keywords, flags and argument counts.

use crate::ast::Node;
use crate::command::{Command, CopyCommand, Healthcheck, HealthcheckOptions, Heredoc, ShellOrExec};
use crate::error::{ParseError, Span};
use crate::heredoc::{RawHeredoc, chomp_leading_tabs, parse_heredoc_word};
use std::collections::BTreeMap;

/// Every instruction keyword, for "did you mean" suggestions.
const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name=value`, at most once.
    Value,
    /// `--name=value`, repeatable.
    List,
    /// `--name`, `--name=true` or `--name=false`.
    Bool,
}

/// An instruction's flags, checked against the flags it accepts.
#[derive(Debug)]
struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    fn parse(
        node: &Node,
        keyword: &str,
        accepted: &[(&'static str, FlagKind)],
    ) -> Result<Flags, ParseError> {
        let error = |message: String| ParseError::new(node.span, message);
        let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for raw in &node.flags {
            let body = raw.strip_prefix("--").unwrap_or(raw);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(&(name, kind)) = accepted.iter().find(|(known, _)| *known == name) else {
                return Err(error(format!("unknown flag for {keyword}: --{name}")));
            };
            let entry = values.entry(name).or_default();
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v @ ("true" | "false"))) => v.to_string(),
                (FlagKind::Bool, Some(v)) => {
                    return Err(error(format!(
                        "expecting boolean value for flag --{name}, not: {v}"
                    )));
                }
                (_, None) => return Err(error(format!("missing a value on flag --{name}"))),
                (_, Some(v)) => v.to_string(),
            };
            if kind != FlagKind::List && !entry.is_empty() {
                return Err(error(format!("duplicate flag specified: --{name}")));
            }
            entry.push(value);
        }
        Ok(Flags { values })
    }

    fn value(&mut self, name: &str) -> Option<String> {
        self.values.remove(name).and_then(|mut v| v.pop())
    }

    fn list(&mut self, name: &str) -> Vec<String> {
        self.values.remove(name).unwrap_or_default()
    }

    fn bool(&mut self, name: &str) -> bool {
        self.value(name).is_some_and(|v| v == "true")
    }
}

/// Builds the typed command of `node`.
pub(crate) fn to_command(node: &Node) -> Result<Command, ParseError> {
    use FlagKind::*;
    let keyword = node.keyword.to_ascii_uppercase();
    let span = node.span;
    let error = |message: String| ParseError::new(span, message);
    let flags = |accepted: &[(&'static str, FlagKind)]| Flags::parse(node, &keyword, accepted);
    let args = &node.args;
    let single = || match args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(error(format!("{keyword} requires exactly one argument"))),
    };
    let command = match keyword.as_str() {
        "FROM" => {
            let mut flags = flags(&[("platform", Value)])?;
            let (image, name) = match args.as_slice() {
                [image] => (image.clone(), None),
                [image, r#as, name] if r#as.eq_ignore_ascii_case("as") => {
                    check_stage_name(name, span)?;
                    (image.clone(), Some(name.clone()))
                }
                _ => {
                    return Err(error(
                        "FROM requires either one argument, or three: FROM <image> AS <name>"
                            .into(),
                    ));
                }
            };
            Command::From {
                image,
                name,
                platform: flags.value("platform"),
            }
        }
        "RUN" => {
            let mut flags = flags(&[("mount", List), ("network", Value)])?;
            if args.is_empty() && !node.json {
                return Err(error("RUN requires at least one argument".into()));
            }
            Command::Run {
                cmd: shell_or_exec(node),
                network: flags.value("network"),
                mounts: flags.list("mount"),
                heredocs: node.heredocs.iter().map(run_heredoc).collect(),
            }
        }
        "COPY" | "ADD" => {
            let is_copy = keyword == "COPY";
            let mut accepted = vec![
                ("chown", Value),
                ("chmod", Value),
                ("link", Bool),
                ("exclude", List),
                ("parents", Bool),
            ];
            if is_copy {
                accepted.push(("from", Value));
            } else {
                accepted.extend([("checksum", Value), ("keep-git-dir", Bool)]);
            }
            let mut flags = flags(&accepted)?;
            let Some((dest, sources)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
                return Err(error(format!("{keyword} requires at least two arguments")));
            };
            if parse_heredoc_word(dest).is_some() {
                return Err(error(format!(
                    "{keyword} cannot accept a heredoc as a destination"
                )));
            }
            let (heredocs, sources) = copy_heredocs(sources, &node.heredocs);
            let copy = CopyCommand {
                sources,
                dest: dest.clone(),
                from: flags.value("from"),
                chown: flags.value("chown"),
                chmod: flags.value("chmod"),
                link: flags.bool("link"),
                exclude: flags.list("exclude"),
                parents: flags.bool("parents"),
                checksum: flags.value("checksum"),
                keep_git_dir: flags.bool("keep-git-dir"),
                heredocs,
            };
            if is_copy {
                Command::Copy(copy)
            } else {
                Command::Add(copy)
            }
        }
        "ENV" | "LABEL" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(error(format!("{keyword} requires at least one argument")));
            }
            let pairs = args
                .chunks_exact(3)
                .map(|triple| (triple[0].clone(), triple[1].clone()))
                .collect();
            if keyword == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "ARG" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(error("ARG requires at least one argument".into()));
            }
            let mut declared = Vec::new();
            for word in args {
                let (name, default) = match word.split_once('=') {
                    Some((name, default)) => (name, Some(default.to_string())),
                    None => (word.as_str(), None),
                };
                if name.is_empty() {
                    return Err(error(format!("ARG names can not be blank: {word:?}")));
                }
                declared.push((name.to_string(), default));
            }
            Command::Arg(declared)
        }
        "WORKDIR" | "USER" | "STOPSIGNAL" | "MAINTAINER" => {
            flags(&[])?;
            let value = single()?;
            match keyword.as_str() {
                "WORKDIR" => Command::Workdir(value),
                "USER" => Command::User(value),
                "STOPSIGNAL" => Command::StopSignal(value),
                _ => Command::Maintainer(value),
            }
        }
        "CMD" | "ENTRYPOINT" => {
            flags(&[])?;
            if keyword == "CMD" {
                Command::Cmd(shell_or_exec(node))
            } else {
                Command::Entrypoint(shell_or_exec(node))
            }
        }
        "SHELL" => {
            flags(&[])?;
            if !node.json || args.is_empty() {
                return Err(error(
                    "SHELL requires the arguments to be a non-empty JSON array, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                        .into(),
                ));
            }
            Command::Shell(args.clone())
        }
        "EXPOSE" | "VOLUME" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(error(format!("{keyword} requires at least one argument")));
            }
            if keyword == "EXPOSE" {
                Command::Expose(args.clone())
            } else {
                if args.iter().any(|v| v.trim().is_empty()) {
                    return Err(error("VOLUME specified can not be an empty string".into()));
                }
                Command::Volume(args.clone())
            }
        }
        "HEALTHCHECK" => healthcheck(
            node,
            flags(&[
                ("interval", Value),
                ("timeout", Value),
                ("start-period", Value),
                ("start-interval", Value),
                ("retries", Value),
            ])?,
        )?,
        "ONBUILD" => {
            flags(&[])?;
            let Some(trigger) = &node.nested else {
                return Err(error("ONBUILD requires at least one argument".into()));
            };
            let trigger_keyword = trigger.keyword.to_ascii_uppercase();
            if matches!(trigger_keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(error(format!(
                    "{trigger_keyword} isn't allowed as an ONBUILD trigger"
                )));
            }
            let trigger = Node {
                heredocs: node.heredocs.clone(),
                ..(**trigger).clone()
            };
            to_command(&trigger)?;
            // As BuildKit: the trigger text carries its heredocs, so that it parses again
            // to the same instruction when a later build runs it.
            let mut text = node.args_text.clone();
            for heredoc in &node.heredocs {
                text.push('\n');
                text.push_str(&heredoc.content);
                text.push_str(&heredoc.word.name);
            }
            Command::Onbuild(text)
        }
        _ => return Err(error(unknown_instruction_message(&node.keyword))),
    };
    Ok(command)
}

/// A RUN heredoc: the body with tabs stripped for `<<-` (the shell would strip them too).
fn run_heredoc(raw: &RawHeredoc) -> Heredoc {
    Heredoc {
        name: raw.word.name.clone(),
        content: if raw.word.chomp {
            chomp_leading_tabs(&raw.content)
        } else {
            raw.content.clone()
        },
        expand: raw.word.expand,
    }
}

/// Splits COPY/ADD sources into inline files and paths, as BuildKit: every source word that
/// is a heredoc opener becomes a file named after its delimiter, with the body read for that
/// name (the last one if repeated; empty if none was read, e.g. in JSON form).
fn copy_heredocs(sources: &[String], bodies: &[RawHeredoc]) -> (Vec<Heredoc>, Vec<String>) {
    // Later bodies of the same name win, as in BuildKit's map.
    let by_name: BTreeMap<&str, &str> = bodies
        .iter()
        .map(|body| (body.word.name.as_str(), body.content.as_str()))
        .collect();
    let mut heredocs = Vec::new();
    let mut paths = Vec::new();
    for source in sources {
        let Some(word) = parse_heredoc_word(source) else {
            paths.push(source.clone());
            continue;
        };
        let content = by_name.get(word.name.as_str()).copied().unwrap_or_default();
        heredocs.push(Heredoc {
            content: if word.chomp {
                chomp_leading_tabs(content)
            } else {
                content.to_string()
            },
            name: word.name,
            expand: word.expand,
        });
    }
    (heredocs, paths)
}

fn shell_or_exec(node: &Node) -> ShellOrExec {
    if node.json {
        ShellOrExec::Exec(node.args.clone())
    } else {
        match node.args.first() {
            Some(text) => ShellOrExec::Shell(text.clone()),
            // `CMD` / `ENTRYPOINT` with nothing after them reset the value.
            None => ShellOrExec::Exec(Vec::new()),
        }
    }
}

fn healthcheck(node: &Node, mut flags: Flags) -> Result<Command, ParseError> {
    let error = |message: &str| ParseError::new(node.span, message);
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(error("HEALTHCHECK requires an argument: CMD or NONE"));
    };
    let options = HealthcheckOptions {
        interval: flags.value("interval"),
        timeout: flags.value("timeout"),
        start_period: flags.value("start-period"),
        start_interval: flags.value("start-interval"),
        retries: flags.value("retries"),
    };
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !rest.is_empty() || options != HealthcheckOptions::default() {
                return Err(error("HEALTHCHECK NONE takes no arguments or flags"));
            }
            Ok(Command::Healthcheck(Healthcheck::None))
        }
        "CMD" => {
            if rest.is_empty() && !node.json {
                return Err(error("HEALTHCHECK CMD requires a command"));
            }
            let test = if node.json {
                ShellOrExec::Exec(rest.to_vec())
            } else {
                ShellOrExec::Shell(rest[0].clone())
            };
            Ok(Command::Healthcheck(Healthcheck::Cmd { test, options }))
        }
        other => Err(ParseError::new(
            node.span,
            format!("unknown HEALTHCHECK type {other:?}: expected CMD or NONE"),
        )),
    }
}

/// Stage names as BuildKit accepts them: a letter, then letters, digits, `-`, `_` or `.`.
fn check_stage_name(name: &str, span: Span) -> Result<(), ParseError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ParseError::new(
            span,
            format!(
                "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
            ),
        ))
    }
}

fn unknown_instruction_message(keyword: &str) -> String {
    let upper = keyword.to_ascii_uppercase();
    let closest = KEYWORDS
        .iter()
        // The distance is at least the length difference: skip hopeless (and huge) words.
        .filter(|known| upper.chars().count().abs_diff(known.len()) <= 2)
        .map(|known| (edit_distance(&upper, known), known))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    match closest {
        Some((_, known)) => format!("unknown instruction: {upper} (did you mean {known}?)"),
        None => format!("unknown instruction: {upper}"),
    }
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so that
/// `FORM` is one edit from `FROM`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("FORM", "FROM"), 1);
        assert_eq!(edit_distance("RUN", "RUN"), 0);
        assert_eq!(edit_distance("CPY", "COPY"), 1);
        assert_eq!(edit_distance("", "ADD"), 3);
    }

    #[test]
    fn unknown_instruction_suggests_close_keywords_only() {
        assert_eq!(
            unknown_instruction_message("form"),
            "unknown instruction: FORM (did you mean FROM?)"
        );
        assert_eq!(
            unknown_instruction_message("BOGUSWORD"),
            "unknown instruction: BOGUSWORD"
        );
    }

    #[test]
    fn stage_names() {
        assert!(check_stage_name("build-1.x_y", Span::line(1)).is_ok());
        assert!(check_stage_name("1build", Span::line(1)).is_err());
        assert!(check_stage_name("a/b", Span::line(1)).is_err());
    }
}
