//! The Dockerfile frontend in real builds: heredocs, build checks and `kiln build --check`.

use super::harness::{Kiln, assert_success, stderr};

/// Builds `dockerfile` (with `ARG BASE` pointing at busybox) from a fresh context.
fn build_text(k: &Kiln, tag: &str, dockerfile: &str, extra: &[&str]) -> std::process::Output {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let base = format!("BASE={}", k.base);
    let mut args = vec!["build", "-t", tag, "--build-arg", &base];
    args.extend_from_slice(extra);
    let dir = ctx.path().to_str().unwrap().to_owned();
    args.push(&dir);
    k.cmd(&args)
}

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
    let out = build_text(&k, "heredocs", dockerfile, &[]);
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
fn run_heredoc_body_is_part_of_the_cache_key() {
    let k = Kiln::new();
    let build = |body: &str| {
        let dockerfile =
            format!("ARG BASE\nFROM ${{BASE}}\nRUN <<EOF\n{body}\nEOF\nCMD cat /out.txt\n");
        let out = build_text(&k, "keyed", &dockerfile, &[]);
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
    let out = build_text(
        &k,
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
