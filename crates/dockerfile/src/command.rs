//! Typed Dockerfile commands holding raw (unexpanded) words, and their expansion.
//!
//! [`Command::expand`] substitutes variables exactly where Docker does: ADD, COPY, ENV,
//! EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG defaults. RUN, CMD,
//! ENTRYPOINT and SHELL are left to the shell at run time; HEALTHCHECK and ONBUILD are kept
//! as written.

use crate::error::ExpandError;
use crate::expand::{expand_heredoc, expand_word, expand_words};

/// Shell form (`RUN make`) or exec form (`RUN ["make"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

/// COPY and ADD. `from` is COPY-only and `checksum` ADD-only; the parser rejects the other.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyCommand {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
    pub parents: bool,
    pub checksum: Option<String>,
    /// `ADD --keep-git-dir`: a git source keeps its `.git` directory.
    pub keep_git_dir: bool,
    /// Inline files (`COPY <<EOF /dst`), in the order written; their names are not in
    /// `sources`.
    pub heredocs: Vec<Heredoc>,
}

/// A here-document: `<<NAME` (or `<<-NAME`, tabs stripped) followed by lines up to `NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heredoc {
    /// The delimiter word, without quotes; for COPY/ADD also the file name.
    pub name: String,
    /// The body, each line with its line ending as written (`\n`, or `\r\n` in a CRLF
    /// file); leading tabs already stripped for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no variable expansion.
    /// For COPY/ADD, [`Command::expand`] expands the body when true; a RUN body is left to
    /// the shell.
    pub expand: bool,
}

/// HEALTHCHECK options as written (Go duration strings such as `30s` and a retry count);
/// the engine parses them when it writes the image config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthcheckOptions {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<String>,
}

/// HEALTHCHECK NONE (disable the base image's check) or HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Cmd {
        test: ShellOrExec,
        options: HealthcheckOptions,
    },
}

/// One instruction's meaning, with raw words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From {
        image: String,
        /// The `AS` name, as written (stage names compare case-insensitively).
        name: Option<String>,
        platform: Option<String>,
    },
    Run {
        cmd: ShellOrExec,
        network: Option<String>,
        /// Raw `--mount` values, e.g. `type=cache,target=/root/.cache`.
        mounts: Vec<String>,
        /// Heredoc bodies following the command (`RUN <<EOF`, `RUN python3 <<EOF`), in the
        /// order of their `<<` words; `cmd` keeps the `<<` words as written.
        heredocs: Vec<Heredoc>,
    },
    Copy(CopyCommand),
    Add(CopyCommand),
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Maintainer(String),
    Healthcheck(Healthcheck),
    /// The trigger instruction's text, e.g. `RUN make`; it was checked to parse.
    Onbuild(String),
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Command {
    /// Returns the command with its words expanded where Docker expands them.
    pub fn expand(&self, env: Lookup<'_>, escape: char) -> Result<Command, ExpandError> {
        let word = |w: &String| expand_word(w, env, escape);
        let opt = |w: &Option<String>| w.as_ref().map(word).transpose();
        let all = |ws: &[String]| ws.iter().map(word).collect::<Result<Vec<_>, _>>();
        let pairs = |kvs: &[(String, String)]| {
            kvs.iter()
                .map(|(k, v)| Ok((word(k)?, word(v)?)))
                .collect::<Result<Vec<_>, ExpandError>>()
        };
        let copy = |c: &CopyCommand| -> Result<CopyCommand, ExpandError> {
            Ok(CopyCommand {
                sources: all(&c.sources)?,
                dest: word(&c.dest)?,
                from: opt(&c.from)?,
                chown: opt(&c.chown)?,
                chmod: opt(&c.chmod)?,
                link: c.link,
                exclude: all(&c.exclude)?,
                parents: c.parents,
                checksum: opt(&c.checksum)?,
                keep_git_dir: c.keep_git_dir,
                heredocs: c
                    .heredocs
                    .iter()
                    .map(|h| {
                        let content = if h.expand {
                            expand_heredoc(&h.content, env)?
                        } else {
                            h.content.clone()
                        };
                        Ok(Heredoc {
                            content,
                            ..h.clone()
                        })
                    })
                    .collect::<Result<_, ExpandError>>()?,
            })
        };
        Ok(match self {
            Command::From {
                image,
                name,
                platform,
            } => Command::From {
                image: word(image)?,
                name: name.clone(),
                platform: opt(platform)?,
            },
            Command::Copy(c) => Command::Copy(copy(c)?),
            Command::Add(c) => Command::Add(copy(c)?),
            Command::Env(kvs) => Command::Env(pairs(kvs)?),
            Command::Label(kvs) => Command::Label(pairs(kvs)?),
            Command::Arg(args) => Command::Arg(
                args.iter()
                    .map(|(name, default)| Ok((name.clone(), opt(default)?)))
                    .collect::<Result<_, ExpandError>>()?,
            ),
            Command::Workdir(w) => Command::Workdir(word(w)?),
            Command::User(w) => Command::User(word(w)?),
            Command::StopSignal(w) => Command::StopSignal(word(w)?),
            Command::Volume(ws) => Command::Volume(all(ws)?),
            Command::Expose(ports) => {
                let mut expanded = Vec::new();
                for port in ports {
                    expanded.extend(expand_words(port, env, escape)?);
                }
                Command::Expose(expanded)
            }
            Command::Run { .. }
            | Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Shell(_)
            | Command::Maintainer(_)
            | Command::Healthcheck(_)
            | Command::Onbuild(_) => self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "V" => Some("1.2".into()),
            "PORTS" => Some("80 443/udp".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_copy_env_label_expose_but_not_run() {
        let copy = Command::Copy(CopyCommand {
            sources: vec!["app-$V.tar".into()],
            dest: "/opt/\"${V}\"/".into(),
            chown: Some("${U:-root}".into()),
            ..CopyCommand::default()
        });
        let Command::Copy(c) = copy.expand(&env, '\\').unwrap() else {
            panic!("not a copy")
        };
        assert_eq!(c.sources, ["app-1.2.tar"]);
        assert_eq!(c.dest, "/opt/1.2/");
        assert_eq!(c.chown.as_deref(), Some("root"));

        let envs = Command::Env(vec![("K_$V".into(), "\"a $V\"".into())]);
        assert_eq!(
            envs.expand(&env, '\\').unwrap(),
            Command::Env(vec![("K_1.2".into(), "a 1.2".into())])
        );
        let expose = Command::Expose(vec!["$PORTS".into(), "8080".into()]);
        assert_eq!(
            expose.expand(&env, '\\').unwrap(),
            Command::Expose(vec!["80".into(), "443/udp".into(), "8080".into()])
        );
        let run = Command::Run {
            cmd: ShellOrExec::Shell("cat <<EOF".into()),
            network: None,
            mounts: vec![],
            heredocs: vec![Heredoc {
                name: "EOF".into(),
                content: "$V\n".into(),
                expand: true,
            }],
        };
        assert_eq!(run.expand(&env, '\\').unwrap(), run);
    }

    #[test]
    fn copy_heredoc_bodies_expand_raw_unless_the_delimiter_was_quoted() {
        let body = |expand| Heredoc {
            name: "f".into(),
            content: "v=$V '${V}' \"$NOPE\" \\$V a\\\\b\n".into(),
            expand,
        };
        let copy = Command::Copy(CopyCommand {
            dest: "/d".into(),
            heredocs: vec![body(true), body(false)],
            ..CopyCommand::default()
        });
        let Command::Copy(c) = copy.expand(&env, '`').unwrap() else {
            panic!("not a copy")
        };
        // Quotes stay, `\` escapes even with the backtick escape directive (as BuildKit).
        assert_eq!(c.heredocs[0].content, "v=1.2 '1.2' \"\" $V a\\b\n");
        assert_eq!(c.heredocs[1], body(false));
    }

    #[test]
    fn arg_defaults_expand_and_errors_propagate() {
        let arg = Command::Arg(vec![("A".into(), Some("x${V}".into())), ("B".into(), None)]);
        assert_eq!(
            arg.expand(&env, '\\').unwrap(),
            Command::Arg(vec![("A".into(), Some("x1.2".into())), ("B".into(), None)])
        );
        let err = Command::Workdir("${NOPE:?required}".into())
            .expand(&env, '\\')
            .unwrap_err();
        assert_eq!(err.message, "NOPE: required");
    }
}
