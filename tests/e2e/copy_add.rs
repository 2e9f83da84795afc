//! COPY and ADD end to end: source rules, `--chmod`/`--chown`, `--exclude`, `--parents`,
//! `--link` (ADD of URLs and archives: `add.rs`). Results are checked in the built image with
//! `kiln run`, or in the layer blobs in the store. The helpers here are shared with `add.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use super::harness::{Kiln, assert_success, stderr};

/// A build context in a temp dir: `files` are (path, content); the Dockerfile starts with
/// `ARG BASE` / `FROM ${BASE}` so its third line is the first instruction given.
pub(super) fn context(files: &[(&str, &[u8])], instructions: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    write_dockerfile(dir.path(), instructions);
    dir
}

pub(super) fn write_dockerfile(dir: &Path, instructions: &str) {
    std::fs::write(
        dir.join("Dockerfile"),
        format!("ARG BASE\nFROM ${{BASE}}\n{instructions}"),
    )
    .unwrap();
}

pub(super) fn build(k: &Kiln, dir: &Path, tag: &str) -> Output {
    let base = format!("BASE={}", k.base);
    k.cmd(&[
        "build",
        "-t",
        tag,
        "--build-arg",
        &base,
        dir.to_str().unwrap(),
    ])
}

pub(super) fn build_ok(k: &Kiln, dir: &Path, tag: &str) -> String {
    let out = build(k, dir, tag);
    assert_success(&out, &["build", tag]);
    stderr(&out)
}

/// Runs a shell command in the image and returns its output.
pub(super) fn sh(k: &Kiln, tag: &str, script: &str) -> String {
    k.ok(&["run", "--rm", tag, "sh", "-c", script])
}

pub(super) fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The entry names of a gzip'd layer blob.
fn layer_entries(blob: &Path) -> BTreeSet<String> {
    let file = std::fs::File::open(blob).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

#[test]
fn source_rules_follow_buildkit() {
    let k = Kiln::new();
    let ctx = context(
        &[
            ("a.txt", b"A"),
            ("b.txt", b"B"),
            ("dir/top.txt", b"T"),
            ("dir/sub/n.txt", b"N"),
            ("secret.txt", b"S"),
            (".dockerignore", b"secret.txt\n"),
        ],
        "COPY a.txt b.txt /multi/\n\
         COPY dir /contents/\n\
         COPY *.txt /wild/\n\
         COPY dir/sub/n.txt /renamed.txt\n\
         COPY dir/sub/n.txt /intodir/\n\
         COPY nomatch*.txt a.txt /opt/\n\
         COPY [\"dir/sub/\", \"/slash\"]\n",
    );
    build_ok(&k, ctx.path(), "rules");
    let found = sh(
        &k,
        "rules",
        "cd / && find multi contents wild renamed.txt intodir opt slash",
    );
    assert_eq!(
        lines(&found),
        set(&[
            // several sources into a directory
            "multi",
            "multi/a.txt",
            "multi/b.txt",
            // a directory source copies its contents
            "contents",
            "contents/top.txt",
            "contents/sub",
            "contents/sub/n.txt",
            // wildcards see the context after .dockerignore
            "wild",
            "wild/a.txt",
            "wild/b.txt",
            // one file to a path without slash: that path is the file
            "renamed.txt",
            "intodir",
            "intodir/n.txt",
            // a wildcard that matches nothing is fine when other sources do
            "opt",
            "opt/a.txt",
            "slash",
            "slash/n.txt",
        ]),
        "{found}"
    );
    assert_eq!(sh(&k, "rules", "cat /renamed.txt /wild/b.txt"), "NB");

    let fails = |instructions: &str, wanted: &[&str]| {
        write_dockerfile(ctx.path(), instructions);
        let out = build(&k, ctx.path(), "rules-bad");
        assert!(!out.status.success(), "{instructions} should fail");
        let err = stderr(&out);
        for want in wanted {
            assert!(
                err.contains(want),
                "{instructions}: wanted {want:?} in\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    fails(
        "RUN true\nCOPY missing.txt /x\n",
        &["missing.txt", "not found in build context", "Dockerfile:4"],
    );
    fails(
        "COPY secret.txt /x\n",
        &["secret.txt", "excluded by .dockerignore", "Dockerfile:3"],
    );
    fails(
        "COPY https://127.0.0.1:1/x /x\n",
        &["use ADD", "Dockerfile:3"],
    );
    fails(
        "COPY --chmod=u+q a.txt /x\n",
        &["--chmod=u+q", "Dockerfile:3"],
    );
    fails("COPY --chmod=999 a.txt /x\n", &["octal", "Dockerfile:3"]);
}

/// COPY/ADD source patterns as BuildKit matches them: after Dockerfile word processing (where
/// `\?` and `\*` lose their backslash and become wildcards), each pattern is split at its first
/// wildcard component and the rest matched against the paths below with Go's `filepath.Match`
/// (tonistiigi/fsutil copy/copy.go, `ResolveWildcards`), so `*` and `**` alike stay inside one
/// path component. Every match is copied on its own (see `crate::copy` in kiln-solve): to a
/// destination without a trailing slash, the last match wins. A wildcard matching nothing
/// copies nothing (BuildKit's file op allows an empty wildcard). The layout is that of
/// buildah's conformance fixtures copy-escape-glob and copyglob.
#[test]
fn source_patterns_match_like_buildkit() {
    let k = Kiln::new();
    let ctx = context(
        &[
            ("app/[xyz]/file.txt", b"xyz"),
            ("app/nope/file.txt", b"nope"),
            ("app/n?pe/file.txt", b"n?pe"),
            ("app/strauv/file.txt", b"strauv"),
            ("app/st*uv/file.txt", b"st*uv"),
            ("e/.sub/Tytonidae.txt", b"1"),
            ("e/Towroy.txt", b"2"),
            ("e/sub/subsub/near-blindness.txt", b"3"),
            ("e/subjectivities.txt", b"4"),
            ("a.txt", b"A"),
            ("b.txt", b"B"),
        ],
        "COPY ./app/[[]xyz]/file.txt /class/\n\
         COPY ./app/n\\?pe/file.txt /app4/file.txt\n\
         COPY ./app/st\\*uv/file.txt /app5/\n\
         COPY e/**/*sub/*.txt /g3/\n\
         COPY e/**/**/*sub/*.txt /g4/\n\
         COPY a.txt b.txt /last\n",
    );
    let log = build_ok(&k, ctx.path(), "globs");
    let found = sh(
        &k,
        "globs",
        "cd / && find class app4 app5 g3 last; test -e g4 || echo no-g4",
    );
    assert_eq!(
        lines(&found),
        set(&[
            // `[[]` is a class holding `[`
            "class",
            "class/file.txt",
            // `n?pe` matched `n?pe` and `nope`: two files to a name without a slash, the last
            // (in byte order) is the file
            "app4",
            "app4/file.txt",
            "app5",
            "app5/file.txt",
            // `e/**/*sub/*.txt` is `e/*/*sub/*.txt`: exactly four components
            "g3",
            "g3/near-blindness.txt",
            // `e/**/**/*sub/*.txt` needs five: nothing, and no /g4 either
            "no-g4",
            "last",
        ]),
        "{found}"
    );
    assert_eq!(
        sh(&k, "globs", "cat /app4/file.txt /app5/file.txt /last"),
        "nopestrauvB"
    );
    for warning in [
        "e/**/**/*sub/*.txt matched nothing in the build context; nothing copied",
        "2 sources were copied to /app4/file.txt, which is not a directory",
        "2 sources were copied to /last, which is not a directory",
    ] {
        assert!(log.contains(warning), "{warning:?} in\n{log}");
    }
}

#[test]
fn chmod_symbolic_and_octal_and_chown_by_name() {
    let k = Kiln::new();
    let ctx = context(
        &[
            ("f.txt", b"f"),
            ("run.sh", b"#!/bin/sh\n"),
            ("dir/inner", b"i"),
        ],
        "RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && \
             echo 'grp:x:3456:' >> /etc/group\n\
         COPY --chown=app:grp --chmod=u+x,go-w f.txt /owned.txt\n\
         COPY --chown=app f.txt /primary.txt\n\
         COPY --chmod=a=rX dir /rx/\n\
         COPY --chmod=u=rwx,g=rx,o= f.txt /exact.txt\n\
         COPY --chmod=0640 f.txt /octal.txt\n\
         COPY --chmod=+x run.sh /usr/local/bin/\n",
    );
    // Known source modes, whatever the checkout's umask did.
    for (rel, mode) in [("f.txt", 0o664), ("run.sh", 0o644), ("dir/inner", 0o600)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ctx.path().join(rel), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    build_ok(&k, ctx.path(), "modes");
    let out = sh(
        &k,
        "modes",
        "stat -c '%n %a %u:%g' /owned.txt /primary.txt /rx /rx/inner /exact.txt /octal.txt \
         /usr/local/bin/run.sh",
    );
    assert_eq!(
        out,
        "/owned.txt 744 1234:3456\n\
         /primary.txt 664 1234:2345\n\
         /rx 555 0:0\n\
         /rx/inner 444 0:0\n\
         /exact.txt 750 0:0\n\
         /octal.txt 640 0:0\n\
         /usr/local/bin/run.sh 755 0:0\n"
    );

    // Changing only the --chmod misses the cache from that step on.
    let dockerfile = std::fs::read_to_string(ctx.path().join("Dockerfile")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        dockerfile.replace("--chmod=0640", "--chmod=0600"),
    )
    .unwrap();
    let log = build_ok(&k, ctx.path(), "modes");
    let cached: Vec<&str> = log.lines().filter(|l| l.ends_with("CACHED")).collect();
    assert_eq!(cached.len(), 5, "the RUN and four COPYs hit: {log}");
    assert_eq!(sh(&k, "modes", "stat -c %a /octal.txt"), "600\n");
}

#[test]
fn exclude_and_parents() {
    let k = Kiln::new();
    let ctx = context(
        &[
            ("src/main.c", b"m"),
            ("src/debug.log", b"l"),
            ("src/skip/x", b"x"),
            ("src/keep/y", b"y"),
            ("x/one/a.txt", b"1"),
            ("x/two/a.txt", b"2"),
            ("x/two/b.txt", b"3"),
        ],
        "COPY --exclude=*.log --exclude=skip src /ex/\n\
         COPY --exclude=b.txt x/two/* /ex2/\n\
         COPY --parents x/*/a.txt /par/\n\
         COPY --parents x/./two /piv/\n",
    );
    build_ok(&k, ctx.path(), "sel");
    let found = sh(&k, "sel", "cd / && find ex ex2 par piv -type f");
    assert_eq!(
        lines(&found),
        set(&[
            "ex/main.c",
            "ex/keep/y",
            "ex2/a.txt",
            "par/x/one/a.txt",
            "par/x/two/a.txt",
            "piv/two/a.txt",
            "piv/two/b.txt",
        ]),
        "{found}"
    );

    // --exclude and --parents are part of the cache key.
    write_dockerfile(
        ctx.path(),
        "COPY --exclude=*.log src /ex/\n\
         COPY --exclude=b.txt x/two/* /ex2/\n\
         COPY x/*/a.txt /par/\n",
    );
    let log = build_ok(&k, ctx.path(), "sel2");
    assert_eq!(log.matches("CACHED").count(), 0, "{log}");
    assert_eq!(
        sh(&k, "sel2", "cd / && find ex/skip par -type f | sort"),
        "ex/skip/x\npar/a.txt\n",
        "without --parents both a.txt land on the same path: the last one wins"
    );
    assert_eq!(sh(&k, "sel2", "cat /par/a.txt"), "2");
}

#[test]
fn copy_link_layers_do_not_depend_on_what_came_before() {
    let k = Kiln::new();
    let ctx = context(
        &[("app/bin.sh", b"echo linked\n"), ("app/data", b"d")],
        "RUN echo one > /before && rm -f /bin/true\n\
         COPY --link app /opt/app/\n\
         RUN cat /opt/app/data /before > /seen\n",
    );
    build_ok(&k, ctx.path(), "link1");
    let image = k.inspect("link1");
    let layers: Vec<String> = image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let link_layer = layers[layers.len() - 2].clone();
    let hex = link_layer.strip_prefix("sha256:").unwrap();
    let entries = layer_entries(&k.root.path().join("blobs/sha256").join(hex));
    assert_eq!(
        entries,
        set(&["opt", "opt/app", "opt/app/bin.sh", "opt/app/data"]),
        "only the copied files, no whiteouts, nothing from the parent"
    );
    // The image sees both the parent's changes and the linked files.
    assert_eq!(
        sh(&k, "link1", "cat /seen; test -e /bin/true || echo gone"),
        "done\ngone\n"
    );

    // A changed earlier step: the linked COPY hits its cache and reuses the same blob; the
    // step after it runs again on top of the new parent.
    write_dockerfile(
        ctx.path(),
        "RUN echo two > /before\n\
         COPY --link app /opt/app/\n\
         RUN cat /opt/app/data /before > /seen\n",
    );
    let log = build_ok(&k, ctx.path(), "link2");
    let copy_line = log
        .lines()
        .position(|l| l.contains("COPY --link app /opt/app/"))
        .expect("the COPY step is reported");
    assert!(
        log.lines()
            .skip(copy_line)
            .take(2)
            .any(|l| l.ends_with("CACHED")),
        "{log}"
    );
    let layers2: Vec<String> = k.inspect("link2")["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers2[layers2.len() - 2], link_layer, "same layer blob");
    assert_ne!(layers2[layers2.len() - 3], layers[layers.len() - 3]);
    assert_eq!(sh(&k, "link2", "cat /seen"), "dtwo\n");
}
