//! Tests of the public `parse` entry point: whole Dockerfiles through all layers.

use crate::*;

fn commands(source: &str) -> Vec<Command> {
    parse(source)
        .unwrap()
        .instructions
        .into_iter()
        .map(|i| i.command)
        .collect()
}

fn parse_error(source: &str) -> ParseError {
    parse(source).unwrap_err()
}

#[test]
fn continuation_lines_give_original_text_and_span() {
    let df = parse("FROM alpine\n\n  RUN make \\\n   # comment\n    && make install\nUSER me\n")
        .unwrap();
    let run = &df.instructions[1];
    assert_eq!(run.keyword, "RUN");
    assert_eq!(run.original, "RUN make     && make install");
    assert_eq!(
        run.span,
        Span {
            start_line: 3,
            end_line: 5,
            col: 3
        }
    );
    assert_eq!(df.instructions[2].span.start_line, 6);
}

#[test]
fn escape_directive_and_syntax() {
    let df =
        parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nWORKDIR C:\\dir `\n  \\sub\n")
            .unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(
        df.instructions[1].command,
        Command::Workdir("C:\\dir   \\sub".into())
    );
}

#[test]
fn keywords_are_case_insensitive_and_crlf_bom_work() {
    let cmds = commands("\u{feff}from alpine AS Build\r\nrun echo hi\r\n");
    assert_eq!(
        cmds[0],
        Command::From {
            image: "alpine".into(),
            name: Some("Build".into()),
            platform: None
        }
    );
    assert!(matches!(&cmds[1], Command::Run { cmd: ShellOrExec::Shell(s), .. } if s == "echo hi"));
}

#[test]
fn json_versus_shell_form() {
    let cmds = commands(
        "FROM a\nCMD [\"/bin/app\", \"--flag\"]\nENTRYPOINT /bin/app --x\nSHELL [\"/bin/bash\", \"-c\"]\nCMD ['not', 'json']\n",
    );
    assert_eq!(
        cmds[1],
        Command::Cmd(ShellOrExec::Exec(vec!["/bin/app".into(), "--flag".into()]))
    );
    assert_eq!(
        cmds[2],
        Command::Entrypoint(ShellOrExec::Shell("/bin/app --x".into()))
    );
    assert_eq!(
        cmds[3],
        Command::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(
        cmds[4],
        Command::Cmd(ShellOrExec::Shell("['not', 'json']".into()))
    );
    assert!(
        parse_error("FROM a\nSHELL /bin/sh -c\n")
            .message
            .contains("JSON")
    );
}

#[test]
fn flags_are_typed() {
    let cmds = commands(
        "FROM --platform=$BUILDPLATFORM golang AS build\n\
         RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=x --network=none go build\n\
         COPY --from=build --chown=1:1 --chmod=755 --link --exclude=*.md --exclude=.git --parents a b /dst/\n\
         ADD --checksum=sha256:abc https://x/y /y\n",
    );
    assert!(matches!(&cmds[0], Command::From { platform: Some(p), .. } if p == "$BUILDPLATFORM"));
    let Command::Run {
        mounts, network, ..
    } = &cmds[1]
    else {
        panic!("{:?}", cmds[1])
    };
    assert_eq!(
        mounts,
        &["type=cache,target=/root/.cache", "type=secret,id=x"]
    );
    assert_eq!(network.as_deref(), Some("none"));
    let Command::Copy(copy) = &cmds[2] else {
        panic!("{:?}", cmds[2])
    };
    assert_eq!(
        copy,
        &CopyCommand {
            sources: vec!["a".into(), "b".into()],
            dest: "/dst/".into(),
            from: Some("build".into()),
            chown: Some("1:1".into()),
            chmod: Some("755".into()),
            link: true,
            exclude: vec!["*.md".into(), ".git".into()],
            parents: true,
            checksum: None,
            keep_git_dir: false,
            heredocs: Vec::new(),
        }
    );
    assert!(matches!(&cmds[3], Command::Add(c) if c.checksum.as_deref() == Some("sha256:abc")));
}

#[test]
fn unknown_or_misused_flags_name_flag_and_line() {
    let err = parse_error("FROM a\n\nCOPY --form=x a b\n");
    assert_eq!(err.span.start_line, 3);
    assert!(err.message.contains("--form"), "{}", err.message);
    assert_eq!(err.to_string(), "line 3: unknown flag for COPY: --form");
    assert!(
        parse_error("FROM a\nADD --from=x a b\n")
            .message
            .contains("--from")
    );
    assert!(
        parse_error("FROM a\nCOPY --chown a b\n")
            .message
            .contains("missing a value")
    );
    assert!(
        parse_error("FROM a\nCOPY --from=a --from=b a b\n")
            .message
            .contains("duplicate")
    );
    assert!(
        parse_error("FROM a\nCOPY --link=maybe a b\n")
            .message
            .contains("boolean")
    );
}

#[test]
fn env_and_label_forms() {
    let cmds = commands(
        "FROM a\nENV A=1 B=\"two words\" C=x\\ y\nENV LEGACY some value here\nLABEL \"com.x\"=1 b=\nARG X Y=\"d d\"\n",
    );
    assert_eq!(
        cmds[1],
        Command::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "\"two words\"".into()),
            ("C".into(), "x\\ y".into()),
        ])
    );
    assert_eq!(
        cmds[2],
        Command::Env(vec![("LEGACY".into(), "some value here".into())])
    );
    assert_eq!(
        cmds[3],
        Command::Label(vec![
            ("\"com.x\"".into(), "1".into()),
            ("b".into(), "".into())
        ])
    );
    assert_eq!(
        cmds[4],
        Command::Arg(vec![
            ("X".into(), None),
            ("Y".into(), Some("\"d d\"".into()))
        ])
    );
    let err = parse_error("FROM a\nENV ONLYNAME\n");
    assert_eq!(err.span.start_line, 2);
}

#[test]
fn healthcheck_and_onbuild() {
    let cmds = commands(
        "FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/\nHEALTHCHECK NONE\nONBUILD RUN make\n",
    );
    assert_eq!(
        cmds[1],
        Command::Healthcheck(Healthcheck::Cmd {
            test: ShellOrExec::Shell("curl -f http://localhost/".into()),
            options: HealthcheckOptions {
                interval: Some("5s".into()),
                retries: Some("3".into()),
                ..HealthcheckOptions::default()
            }
        })
    );
    assert_eq!(cmds[2], Command::Healthcheck(Healthcheck::None));
    assert_eq!(cmds[3], Command::Onbuild("RUN make".into()));
    assert!(
        parse_error("FROM a\nONBUILD FROM b\n")
            .message
            .contains("ONBUILD")
    );
    assert!(
        parse_error("FROM a\nONBUILD FORM b\n")
            .message
            .contains("did you mean FROM")
    );
    assert!(
        parse_error("FROM a\nHEALTHCHECK CONNECT x\n")
            .message
            .contains("CONNECT")
    );
}

#[test]
fn errors_carry_the_right_line() {
    let err = parse_error("# c\nFROM a\nRUN x \\\n  y\nFORM b\n");
    assert_eq!(err.span.start_line, 5);
    assert_eq!(
        err.message,
        "unknown instruction: FORM (did you mean FROM?)"
    );
    assert_eq!(parse_error("FROM a b\n").span.start_line, 1);
    assert_eq!(parse_error("FROM a\nCOPY onlyone\n").span.start_line, 2);
    assert_eq!(parse_error("FROM a\n\nWORKDIR\n").span.start_line, 3);
    assert!(parse_error("FROM a AS 9lives\n").message.contains("9lives"));
}

#[test]
fn expand_after_parse_uses_the_files_escape() {
    let df = parse("# escape=`\nFROM a\nWORKDIR `$HOME/$SUB\n").unwrap();
    let env = |name: &str| (name == "SUB").then(|| "x".to_string());
    assert_eq!(
        df.instructions[1].command.expand(&env, df.escape).unwrap(),
        Command::Workdir("$HOME/x".into())
    );
}

#[test]
fn heredocs_fill_run_and_copy() {
    let df = parse(
        "FROM a\nRUN <<EOF\necho $HOME\nEOF\nCOPY <<A <<-\"B\" /dst/\nx\nA\n\tb $V\n\tB\nADD --chmod=755 <<run.sh /usr/bin/\n#!/bin/sh\nrun.sh\nUSER me\n",
    )
    .unwrap();
    let Command::Run { cmd, heredocs, .. } = &df.instructions[1].command else {
        panic!("{:?}", df.instructions[1])
    };
    assert_eq!(cmd, &ShellOrExec::Shell("<<EOF".into()));
    assert_eq!(
        heredocs,
        &[Heredoc {
            name: "EOF".into(),
            content: "echo $HOME\n".into(),
            expand: true
        }]
    );
    assert_eq!(
        (
            df.instructions[1].span.start_line,
            df.instructions[1].span.end_line
        ),
        (2, 4)
    );
    let Command::Copy(copy) = &df.instructions[2].command else {
        panic!()
    };
    assert!(copy.sources.is_empty());
    assert_eq!(copy.dest, "/dst/");
    let docs: Vec<(&str, &str, bool)> = copy
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str(), h.expand))
        .collect();
    assert_eq!(docs, [("A", "x\n", true), ("B", "b $V\n", false)]);
    let Command::Add(add) = &df.instructions[3].command else {
        panic!()
    };
    assert_eq!(add.heredocs[0].name, "run.sh");
    assert_eq!(add.heredocs[0].content, "#!/bin/sh\n");
    assert_eq!(df.instructions[4].span.start_line, 13);
}

#[test]
fn heredoc_errors_and_places_where_they_are_not_read() {
    let err = parse_error("FROM a\nCOPY x <<EOF\nbody\nEOF\n");
    assert!(
        err.message.contains("heredoc as a destination"),
        "{}",
        err.message
    );
    let err = parse_error("FROM a\nRUN <<EOF\nbody\n");
    assert_eq!((err.span.start_line, err.span.end_line), (2, 3));
    // CMD does not read heredocs: the body line is an instruction line of its own.
    assert!(
        parse_error("FROM a\nCMD <<EOF\nbody\nEOF\n")
            .message
            .contains("BODY")
    );
    let cmds = commands("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    assert_eq!(cmds[1], Command::Onbuild("RUN <<EOF\necho hi\nEOF".into()));
    let trigger = parse("FROM a\nRUN <<EOF\necho hi\nEOF").unwrap();
    assert!(
        matches!(&trigger.instructions[1].command, Command::Run { heredocs, .. } if heredocs.len() == 1)
    );
}
