//! What `kiln build --call outline` and `--call targets` report, as BuildKit's subrequests
//! of the same names do: the build args, secrets and SSH sockets a build of the target uses
//! (each with its default and the line it is declared on), and every stage with its
//! description.
//!
//! Descriptions follow BuildKit's documented convention: in the block of `#` comments
//! directly above a `FROM` (or `ARG`), the line that starts with the stage's (or arg's) name
//! and a space is its description, the name removed. Only needed stages count for the
//! outline, so an arg of a stage the target never builds is not listed.

use kiln_dockerfile::{Command, Dockerfile, Instruction};

use crate::{BuildPlan, StepKind};

/// One build arg of the outline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineArg {
    pub name: String,
    /// The default as written in the Dockerfile (not expanded), if any.
    pub default: Option<String>,
    pub description: String,
    /// The line of its (first) declaration.
    pub line: usize,
}

/// One secret (`RUN --mount=type=secret`) or SSH socket (`type=ssh`) a build of the target
/// asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineMount {
    pub id: String,
    /// `required=true`: the build fails without it.
    pub required: bool,
    /// The line of the first RUN that mounts it.
    pub line: usize,
}

/// What a build of the target reads from outside its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    /// The target stage's name (`stage-N` for an unnamed one).
    pub target: String,
    pub description: String,
    pub args: Vec<OutlineArg>,
    pub secrets: Vec<OutlineMount>,
    pub ssh: Vec<OutlineMount>,
}

/// One stage, for `--call targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub description: String,
    /// The stage a build without `--target` builds (the last one).
    pub default: bool,
    pub line: usize,
}

/// The description of `name` in the comment block directly above line `line` of `text`.
fn description(text: &str, line: usize, name: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = line.saturating_sub(1);
    let prefix = format!("{name} ");
    while at > 0 {
        at -= 1;
        let Some(comment) = lines.get(at).and_then(|l| l.trim_start().strip_prefix('#')) else {
            break;
        };
        if let Some(rest) = comment.trim_start().strip_prefix(&prefix) {
            return rest.trim().to_owned();
        }
    }
    String::new()
}

/// Whether `text` refers to the variable `name` (`$NAME` not followed by more of a name,
/// or `${NAME…`).
fn mentions(text: &str, name: &str) -> bool {
    let braced = format!("${{{name}");
    let bare = format!("${name}");
    let after_braced = |rest: &str| rest.starts_with(['}', ':', '-', '+', '?', '#', '%', '/']);
    let after_bare =
        |rest: &str| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(&braced)
        .any(|(i, m)| after_braced(&text[i + m.len()..]))
        || text
            .match_indices(&bare)
            .any(|(i, m)| after_bare(&text[i + m.len()..]))
}

/// Every stage of the Dockerfile with its description.
pub fn targets(text: &str, plan: &BuildPlan) -> Vec<Target> {
    let last = plan.stages.len().saturating_sub(1);
    plan.stages
        .iter()
        .map(|stage| {
            let name = stage
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", stage.index));
            let line = stage.from.span.start_line;
            Target {
                description: stage
                    .name
                    .as_deref()
                    .map(|n| description(text, line, n))
                    .unwrap_or_default(),
                name,
                default: stage.index == last,
                line,
            }
        })
        .collect()
}

/// The outline of a build of `plan`'s target.
pub fn outline(df: &Dockerfile, text: &str, plan: &BuildPlan) -> Outline {
    let mut args: Vec<OutlineArg> = Vec::new();
    let mut add_arg = |ins: &Instruction, name: &str, default: Option<&str>| {
        if args.iter().any(|a| a.name == name) {
            return;
        }
        args.push(OutlineArg {
            name: name.to_owned(),
            default: default.map(str::to_owned),
            description: description(text, ins.span.start_line, name),
            line: ins.span.start_line,
        });
    };
    let needed: Vec<_> = plan.stages.iter().filter(|s| s.needed).collect();
    // Global ARGs: listed when a needed FROM reads them or a needed stage declares them again.
    for ins in df.instructions.iter().take_while(|i| i.keyword != "FROM") {
        let Command::Arg(decls) = &ins.command else {
            continue;
        };
        for (name, default) in decls {
            let in_from = needed.iter().any(|s| mentions(&s.from.original, name));
            let redeclared = needed.iter().any(|s| {
                s.steps
                    .iter()
                    .any(|st| matches!(&st.kind, StepKind::Arg { name: n, .. } if n == name))
            });
            if in_from || redeclared {
                add_arg(ins, name, default.as_deref());
            }
        }
    }
    let mut secrets = Vec::new();
    let mut ssh = Vec::new();
    for stage in &needed {
        for step in &stage.steps {
            match &step.instruction.command {
                Command::Arg(decls) => {
                    for (name, default) in decls {
                        add_arg(&step.instruction, name, default.as_deref());
                    }
                }
                Command::Run { mounts, .. } => {
                    for mount in mounts {
                        collect_mount(
                            mount,
                            step.instruction.span.start_line,
                            &mut secrets,
                            &mut ssh,
                        );
                    }
                }
                _ => {}
            }
        }
    }
    let target = &plan.stages[plan.target];
    let target_name = target
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", target.index));
    Outline {
        description: target
            .name
            .as_deref()
            .map(|n| description(text, target.from.span.start_line, n))
            .unwrap_or_default(),
        target: target_name,
        args,
        secrets,
        ssh,
    }
}

/// Adds a secret or ssh mount (`type=secret,id=…` / `type=ssh[,id=…]`) to its list, once per
/// id; a secret without `id` is named after its target's file name, as BuildKit names it.
fn collect_mount(
    mount: &str,
    line: usize,
    secrets: &mut Vec<OutlineMount>,
    ssh: &mut Vec<OutlineMount>,
) {
    let mut kind = "";
    let mut id = None;
    let mut target = None;
    let mut required = None;
    for field in mount.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, "true"));
        match key.trim() {
            "type" => kind = value,
            "id" => id = Some(value),
            "target" | "dst" | "destination" => target = Some(value),
            "required" => required = Some(value == "true"),
            _ => {}
        }
    }
    let (list, id, required_default) = match kind {
        "secret" => {
            let id = id.or_else(|| target.and_then(|t| t.rsplit('/').next()));
            (secrets, id.unwrap_or_default(), false)
        }
        "ssh" => (ssh, id.unwrap_or("default"), false),
        _ => return,
    };
    if id.is_empty() || list.iter().any(|m| m.id == id) {
        return;
    }
    list.push(OutlineMount {
        id: id.to_owned(),
        required: required.unwrap_or(required_default),
        line,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuildOptions, plan};
    use kiln_image::Platform;

    const DOCKERFILE: &str = "\
ARG GO_VERSION=1.22
ARG UNUSED=x
# base the toolchain image
FROM golang:${GO_VERSION} AS base
# build compiles the binary
FROM base AS build
# VERSION the version stamped into the binary
ARG VERSION=dev
RUN --mount=type=secret,id=token,required=true --mount=type=ssh make
RUN --mount=type=secret,target=/run/secrets/npmrc true
FROM scratch AS other
ARG OTHER
FROM build
";

    fn planned(target: Option<&str>) -> (Dockerfile, BuildPlan) {
        let df = kiln_dockerfile::parse(DOCKERFILE).unwrap();
        let opts = BuildOptions {
            build_args: Default::default(),
            target: target.map(str::to_owned),
            platform: Platform::host(),
            build_platform: Platform::host(),
        };
        let plan = plan(&df, &opts).unwrap();
        (df, plan)
    }

    #[test]
    fn outline_lists_what_the_target_reads() {
        let (df, plan) = planned(Some("build"));
        let o = outline(&df, DOCKERFILE, &plan);
        assert_eq!(o.target, "build");
        assert_eq!(o.description, "compiles the binary");
        let args: Vec<_> = o
            .args
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.default.as_deref(),
                    a.description.as_str(),
                    a.line,
                )
            })
            .collect();
        assert_eq!(
            args,
            [
                ("GO_VERSION", Some("1.22"), "", 1),
                (
                    "VERSION",
                    Some("dev"),
                    "the version stamped into the binary",
                    8
                )
            ]
        );
        let secrets: Vec<_> = o
            .secrets
            .iter()
            .map(|s| (s.id.as_str(), s.required, s.line))
            .collect();
        assert_eq!(secrets, [("token", true, 9), ("npmrc", false, 10)]);
        assert_eq!(o.ssh.len(), 1);
        assert_eq!(
            (o.ssh[0].id.as_str(), o.ssh[0].required),
            ("default", false)
        );
    }

    #[test]
    fn variable_mentions_need_the_whole_name() {
        assert!(mentions("FROM img:$V", "V"));
        assert!(mentions("FROM img:${V:-1}", "V"));
        assert!(mentions("FROM $V/img", "V"));
        assert!(!mentions("FROM img:$VERSION", "V"));
        assert!(!mentions("FROM img:${VERSION}", "V"));
    }

    #[test]
    fn targets_have_their_descriptions() {
        let (_, plan) = planned(None);
        let t = targets(DOCKERFILE, &plan);
        let rows: Vec<_> = t
            .iter()
            .map(|t| (t.name.as_str(), t.description.as_str(), t.default))
            .collect();
        assert_eq!(
            rows,
            [
                ("base", "the toolchain image", false),
                ("build", "compiles the binary", false),
                ("other", "", false),
                ("stage-3", "", true)
            ]
        );
    }
}
