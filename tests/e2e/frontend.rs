//! The Dockerfile frontend in real builds: heredocs, build checks and `kiln build --check`.

use super::harness::{Kiln, assert_success, stderr};

#[test]
fn run_heredoc_forms_produce_their_files() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM ${BASE}\nENV WHO=world\n\
RUN <<EOF\n\
echo \"hello $WHO\" > /script.txt\n\
echo second line >> /script.txt\n\
EOF\n\
RUN <<-EOT\n\
\techo tabs stripped > /chomp.txt\n\
\tEOT\n\
RUN <<shebang.sh\n\
#!/bin/sh\n\
echo \"run as $0\" > /shebang.txt\n\
shebang.sh\n\
RUN cat > /stdin.txt <<EOF\n\
stdin $WHO\n\
EOF\n\
RUN cat > /quoted.txt <<'EOF'\n\
not expanded $WHO\n\
EOF\n\
RUN <<A cat - > /two.txt; cat <<B >> /two.txt\n\
first $WHO\n\
A\n\
second\n\
B\n\
RUN ls /dev/pipes > /pipes.txt 2>&1 || echo gone > /pipes.txt\n\
CMD cat /script.txt /chomp.txt /shebang.txt /stdin.txt /quoted.txt /two.txt /pipes.txt\n";
    let out = k.build_dockerfile("heredocs", dockerfile, &[]);
    assert_success(&out, &["build", "heredocs"]);
    let run = k.ok(&["run", "--rm", "heredocs"]);
    assert_eq!(
        run,
        "hello world\nsecond line\n\
tabs stripped\n\
run as /dev/pipes/shebang.sh\n\
stdin world\n\
not expanded $WHO\n\
first world\nsecond\n\
gone\n"
    );
}

#[test]
fn copy_and_add_heredocs_write_files() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM ${BASE}\nARG WHO=world\n\
COPY <<EOF /greeting.txt\n\
hello $WHO\n\
EOF\n\
COPY --chmod=0755 <<'EOF' /bin/tool\n\
#!/bin/sh\n\
echo \"tool $WHO\"\n\
EOF\n\
ADD <<one.txt <<two.txt /multi/\n\
first\n\
one.txt\n\
second $WHO\n\
two.txt\n\
CMD cat /greeting.txt /multi/one.txt /multi/two.txt && stat -c '%a %n' /greeting.txt /bin/tool && WHO=env /bin/tool\n";
    let out = k.build_dockerfile("copy-heredocs", dockerfile, &[]);
    assert_success(&out, &["build", "copy-heredocs"]);
    assert_eq!(
        k.ok(&["run", "--rm", "copy-heredocs"]),
        "hello world\nfirst\nsecond world\n644 /greeting.txt\n755 /bin/tool\ntool env\n"
    );
}

#[test]
fn run_heredoc_body_is_part_of_the_cache_key() {
    let k = Kiln::new();
    let build = |body: &str| {
        let dockerfile =
            format!("ARG BASE\nFROM ${{BASE}}\nRUN <<EOF\n{body}\nEOF\nCMD cat /out.txt\n");
        let out = k.build_dockerfile("keyed", &dockerfile, &[]);
        assert_success(&out, &["build", "keyed"]);
        stderr(&out)
    };
    build("echo one > /out.txt");
    assert_eq!(k.ok(&["run", "--rm", "keyed"]), "one\n");
    build("echo two > /out.txt");
    assert_eq!(k.ok(&["run", "--rm", "keyed"]), "two\n");
    // The same body again is a cache hit and the same image.
    let first = k.image_id("keyed");
    build("echo two > /out.txt");
    assert_eq!(k.image_id("keyed"), first);
}

#[test]
fn unterminated_heredoc_is_an_error_with_the_line() {
    let k = Kiln::new();
    let out = k.build_dockerfile(
        "bad",
        "ARG BASE\nFROM ${BASE}\nRUN <<EOF\necho never ends\n",
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("unterminated heredoc"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn build_prints_check_warnings_with_the_line_and_still_builds() {
    let k = Kiln::new();
    let out = k.build_dockerfile(
        "warned",
        "ARG BASE\nFROM ${BASE} as Build\nMAINTAINER someone\nCMD echo hi\n",
        &[],
    );
    assert_success(&out, &["build", "warned"]);
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: FromAsCasing: 'as' and 'FROM' keywords' casing do not match"),
        "{err}"
    );
    assert!(err.contains("StageNameCasing"), "{err}");
    assert!(err.contains("MaintainerDeprecated"), "{err}");
    assert!(err.contains("Dockerfile:4:1"), "{err}");
    assert!(err.contains("4 | CMD echo hi\n  | ^^^"), "{err}");
    assert_eq!(k.ok(&["run", "--rm", "warned"]), "hi\n");
}

#[test]
fn check_reports_without_building_and_exits_by_severity() {
    // `ARG BASE` has a default: without one, InvalidDefaultArgInFrom would warn as well.
    let k = Kiln::new();
    let out = k.build_dockerfile(
        "checked",
        "ARG BASE=busybox\nFROM ${BASE}\nCMD echo hi\n",
        &["--check"],
    );
    assert_success(&out, &["build", "--check"]);
    let err = stderr(&out);
    assert!(err.contains("JSONArgsRecommended"), "{err}");
    assert!(
        err.contains("Check complete, 1 warning has been found!"),
        "{err}"
    );
    assert!(
        !k.ok(&["images"]).contains("checked"),
        "--check builds nothing"
    );

    let out = k.build_dockerfile(
        "clean",
        "ARG BASE=busybox\nFROM ${BASE}\nCMD [\"true\"]\n",
        &["--check"],
    );
    assert_success(&out, &["build", "--check"]);
    assert!(stderr(&out).contains("Check complete, no warnings found."));

    // error=true turns warnings into a failure, in --check and in a build.
    let strict = "# check=error=true\nARG BASE=busybox\nFROM ${BASE}\nCMD echo hi\n";
    let out = k.build_dockerfile("strict", strict, &["--check"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = k.build_dockerfile("strict", strict, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("error=true"), "{}", stderr(&out));
    // The build argument overrides the directive, as in BuildKit.
    let out = k.build_dockerfile(
        "strict",
        strict,
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=all",
            "--check",
        ],
    );
    assert_success(&out, &["build", "--check", "skip=all"]);
    assert!(stderr(&out).contains("no warnings found"));

    // A duplicate stage name is an error even without error=true.
    let out = k.build_dockerfile(
        "dup",
        "ARG BASE=busybox\nFROM ${BASE} AS a\nFROM ${BASE} AS a\n",
        &["--check"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DuplicateStageName"),
        "{}",
        stderr(&out)
    );

    // A Dockerfile that does not parse is an error pointing at the line.
    let out = k.build_dockerfile("bad", "FROM x\nRUN <<EOF\nnever ends\n", &["--check"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2") && err.contains("unterminated heredoc"),
        "{err}"
    );
}
