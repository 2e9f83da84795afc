//! `RUN` with heredocs: the command line BuildKit's dockerfile2llb would run.
//!
//! * `RUN <<EOF` (the command is only the heredoc word): the body is the script, run by the
//!   shell as `sh -c <body>` — unless the body starts with `#!`, in which case it is written
//!   as an executable file `/dev/pipes/<name>` (a read-only bind mount on the sandbox's
//!   private /dev, never in a layer) and the shell runs that file, so its interpreter runs it.
//! * Anything else (`RUN python3 <<EOF`, `RUN <<A cat - <<B > out`): the heredocs are put back
//!   after the command line, each body followed by its terminator, and the whole text is given
//!   to the shell, which feeds the bodies on stdin (or wherever the redirections say) and
//!   expands variables in them unless the delimiter was quoted.
//!
//! The bodies are part of the command line or of the script, so they are part of the cache
//! key either way.

use std::path::Path;

use kiln_dockerfile::{Heredoc, ShellOrExec, parse_heredoc_word};
use kiln_sandbox::BindMount;

use crate::stage::StageState;

/// Where BuildKit mounts the script of a `RUN <<EOF` with a `#!` body.
pub(crate) const PIPES_DIR: &str = "/dev/pipes";

/// What a RUN step executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunCommandLine {
    pub argv: Vec<String>,
    /// The executable file to provide at `/dev/pipes/<name>`, if any.
    pub script: Option<InlineScript>,
}

/// A `#!` heredoc body run as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InlineScript {
    pub name: String,
    pub content: String,
}

/// Builds the command line of a RUN in `state` (whose SHELL runs shell forms).
pub(crate) fn run_command_line(
    state: &StageState,
    cmd: &ShellOrExec,
    heredocs: &[Heredoc],
) -> Result<RunCommandLine, String> {
    let Some(first) = heredocs.first() else {
        return Ok(RunCommandLine {
            argv: state.argv(cmd),
            script: None,
        });
    };
    let ShellOrExec::Shell(text) = cmd else {
        // The parser never reads heredocs after a JSON form.
        return Err(format!("heredocs cannot follow an exec-form RUN {cmd:?}"));
    };
    let with_shell = |arg: String| state.argv(&ShellOrExec::Shell(arg));
    if parse_heredoc_word(text).is_none() {
        let mut full = text.clone();
        for heredoc in heredocs {
            full.push('\n');
            full.push_str(&heredoc.content);
            full.push_str(&heredoc.name);
        }
        return Ok(RunCommandLine {
            argv: with_shell(full),
            script: None,
        });
    }
    if !first.content.starts_with("#!") {
        return Ok(RunCommandLine {
            argv: with_shell(first.content.clone()),
            script: None,
        });
    }
    // The name becomes a file name on the host side of the bind mount: one plain component.
    if first.name.is_empty()
        || first.name.contains('/')
        || matches!(first.name.as_str(), "." | "..")
    {
        return Err(format!(
            "heredoc name {:?} cannot be used as a script file name",
            first.name
        ));
    }
    Ok(RunCommandLine {
        argv: with_shell(format!("{PIPES_DIR}/{}", first.name)),
        script: Some(InlineScript {
            name: first.name.clone(),
            content: first.content.clone(),
        }),
    })
}

impl InlineScript {
    /// Writes the script (mode 0755) into `dir` and returns the read-only mount that shows
    /// `dir` at `/dev/pipes`. `dir` is made world-readable so that any USER can run it.
    pub(crate) fn materialize(&self, dir: &Path) -> std::io::Result<BindMount> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(&self.name);
        std::fs::write(&path, &self.content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(BindMount {
            source: dir.to_path_buf(),
            target: PIPES_DIR.into(),
            readonly: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> StageState {
        StageState::scratch(&kiln_image::Platform::host())
    }

    fn doc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
        }
    }

    fn shell(text: &str) -> ShellOrExec {
        ShellOrExec::Shell(text.into())
    }

    #[test]
    fn plain_commands_are_unchanged() {
        let line = run_command_line(&sh(), &shell("echo hi"), &[]).unwrap();
        assert_eq!(line.argv, ["/bin/sh", "-c", "echo hi"]);
        let exec = ShellOrExec::Exec(vec!["ls".into()]);
        assert_eq!(run_command_line(&sh(), &exec, &[]).unwrap().argv, ["ls"]);
        assert!(run_command_line(&sh(), &exec, &[doc("A", "x\n")]).is_err());
    }

    #[test]
    fn lone_heredoc_body_is_the_script() {
        let line =
            run_command_line(&sh(), &shell("<<EOF"), &[doc("EOF", "echo a\necho b\n")]).unwrap();
        assert_eq!(line.argv, ["/bin/sh", "-c", "echo a\necho b\n"]);
        assert_eq!(line.script, None);
        // Quoted or chomped delimiters are still "only a heredoc".
        let line = run_command_line(&sh(), &shell("<<-'EOF'"), &[doc("EOF", "x\n")]).unwrap();
        assert_eq!(line.argv[2], "x\n");
    }

    #[test]
    fn shebang_body_becomes_a_file_run_by_the_shell() {
        let body = "#!/usr/bin/env python3\nprint(1)\n";
        let line = run_command_line(&sh(), &shell("<<run.py"), &[doc("run.py", body)]).unwrap();
        assert_eq!(line.argv, ["/bin/sh", "-c", "/dev/pipes/run.py"]);
        assert_eq!(
            line.script,
            Some(InlineScript {
                name: "run.py".into(),
                content: body.into()
            })
        );
        assert!(run_command_line(&sh(), &shell("<<a/b"), &[doc("a/b", "#!/bin/sh\n")]).is_err());
    }

    #[test]
    fn other_forms_reconstitute_the_shell_heredoc() {
        let line = run_command_line(
            &sh(),
            &shell("cat <<A - <<'B' > /out"),
            &[doc("A", "one $X\n"), doc("B", "two\n")],
        )
        .unwrap();
        assert_eq!(
            line.argv,
            ["/bin/sh", "-c", "cat <<A - <<'B' > /out\none $X\nA\ntwo\nB"]
        );
        let mut bash = sh();
        bash.config.config.shell = vec!["/bin/bash".into(), "-ec".into()];
        let line =
            run_command_line(&bash, &shell("python3 <<EOF"), &[doc("EOF", "print(1)\n")]).unwrap();
        assert_eq!(
            line.argv,
            ["/bin/bash", "-ec", "python3 <<EOF\nprint(1)\nEOF"]
        );
    }

    #[test]
    fn materialize_writes_an_executable_and_a_read_only_mount() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = InlineScript {
            name: "s".into(),
            content: "#!/bin/sh\necho hi\n".into(),
        };
        let mount = script.materialize(dir.path()).unwrap();
        assert_eq!(mount.target, "/dev/pipes");
        assert!(mount.readonly);
        let meta = std::fs::metadata(dir.path().join("s")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("s")).unwrap(),
            script.content
        );
    }
}
