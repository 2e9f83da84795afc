//! Cache keys in both directions, instruction by instruction: an unchanged input hits, a
//! changed input misses exactly the steps that can see it (and those after them), and what a
//! step cannot see (a LABEL, an unused file, an ENV set after it) does not cost a rebuild.

use std::collections::BTreeSet;

use super::harness::{Kiln, assert_success, stderr};

/// The baseline; `{…}` placeholders are replaced per variant.
const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE}
ARG V=1
ENV E={env}
LABEL team={label}
SHELL [\"/bin/sh\", \"-c\"{shell_opt}]
WORKDIR {workdir}
USER {user}
RUN echo \"$V $E $(id -u) $(pwd)\" > out.txt
COPY --chmod={chmod} a.txt /data/
RUN --mount=type=cache,id={cache_id},target=/cache cat /data/a.txt > copied.txt
EXPOSE 80
COPY b.txt /data/
";

// Step numbers as printed (`[stage-0 N/12]`, FROM being 1): 6 WORKDIR, 8 RUN, 9 COPY a,
// 10 RUN, 12 COPY b.
const WORKDIR: u32 = 6;
const RUN_ECHO: u32 = 8;
const COPY_A: u32 = 9;
const RUN_CAT: u32 = 10;
const COPY_B: u32 = 12;

#[derive(Clone)]
struct Variant {
    env: &'static str,
    label: &'static str,
    shell_opt: &'static str,
    workdir: &'static str,
    user: &'static str,
    chmod: &'static str,
    cache_id: &'static str,
    a: &'static str,
    b: &'static str,
    unused: &'static str,
    build_args: &'static [&'static str],
}

const BASELINE: Variant = Variant {
    env: "x",
    label: "one",
    shell_opt: "",
    workdir: "/w",
    user: "root",
    chmod: "644",
    cache_id: "c1",
    a: "a\n",
    b: "b\n",
    unused: "u\n",
    build_args: &[],
};

/// Builds `v` in `ctx` and returns the step numbers that came from the cache.
fn build(k: &Kiln, ctx: &std::path::Path, v: &Variant) -> BTreeSet<u32> {
    let dockerfile = DOCKERFILE
        .replace("{env}", v.env)
        .replace("{label}", v.label)
        .replace("{shell_opt}", v.shell_opt)
        .replace("{workdir}", v.workdir)
        .replace("{user}", v.user)
        .replace("{chmod}", v.chmod)
        .replace("{cache_id}", v.cache_id);
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("a.txt"), v.a).unwrap();
    std::fs::write(ctx.join("b.txt"), v.b).unwrap();
    std::fs::write(ctx.join("unused.txt"), v.unused).unwrap();
    let base = format!("BASE={}", k.base);
    let mut args = vec!["build", "-t", "keys", "--build-arg", &base];
    for arg in v.build_args {
        args.extend(["--build-arg", arg]);
    }
    let dir = ctx.to_str().unwrap().to_owned();
    args.push(&dir);
    let out = k.cmd(&args);
    assert_success(&out, &["build", "keys"]);
    stderr(&out)
        .lines()
        .filter(|l| l.ends_with("] CACHED"))
        .filter_map(|l| l.split_once(' ')?.1.split('/').next()?.parse().ok())
        .collect()
}

fn set(steps: &[u32]) -> BTreeSet<u32> {
    steps.iter().copied().collect()
}

#[test]
fn each_input_misses_exactly_the_steps_that_see_it() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    let all = set(&[WORKDIR, RUN_ECHO, COPY_A, RUN_CAT, COPY_B]);
    assert_eq!(build(&k, ctx.path(), &BASELINE), set(&[]), "cold build");
    assert_eq!(build(&k, ctx.path(), &BASELINE), all, "unchanged: all hit");
    let first = k.image_id("keys");

    let cases: &[(&str, Variant, &[u32])] = &[
        // What no filesystem step sees: all hit, only the config changes.
        (
            "LABEL",
            Variant {
                label: "two",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO, COPY_A, RUN_CAT, COPY_B],
        ),
        (
            "a file nothing copies",
            Variant {
                unused: "changed\n",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO, COPY_A, RUN_CAT, COPY_B],
        ),
        // ENV and ARG reach RUN (as its env), not WORKDIR.
        (
            "ENV",
            Variant {
                env: "y",
                ..BASELINE
            },
            &[WORKDIR],
        ),
        (
            "--build-arg",
            Variant {
                build_args: &["V=2"],
                ..BASELINE
            },
            &[WORKDIR],
        ),
        (
            "SHELL",
            Variant {
                shell_opt: ", \"-e\"",
                ..BASELINE
            },
            &[WORKDIR],
        ),
        (
            "WORKDIR",
            Variant {
                workdir: "/w2",
                ..BASELINE
            },
            &[],
        ),
        (
            "USER",
            Variant {
                user: "0:0",
                ..BASELINE
            },
            &[WORKDIR],
        ),
        // COPY misses on its content and flags; the last COPY reads its own file only.
        (
            "COPY content",
            Variant {
                a: "A\n",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO],
        ),
        (
            "COPY --chmod",
            Variant {
                chmod: "600",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO],
        ),
        (
            "RUN --mount",
            Variant {
                cache_id: "c2",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO, COPY_A],
        ),
        (
            "last COPY",
            Variant {
                b: "B\n",
                ..BASELINE
            },
            &[WORKDIR, RUN_ECHO, COPY_A, RUN_CAT],
        ),
    ];
    for (what, variant, hits) in cases {
        // From the baseline's cache each time, so every case measures one change.
        assert_eq!(
            build(&k, ctx.path(), &BASELINE),
            all,
            "baseline again before {what}"
        );
        assert_eq!(build(&k, ctx.path(), variant), set(hits), "{what}");
    }
    assert_eq!(build(&k, ctx.path(), &BASELINE), all);
    assert_eq!(
        k.image_id("keys"),
        first,
        "the baseline gives the same image again"
    );

    // Two contexts with the same content at different paths share every key.
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(build(&k, elsewhere.path(), &BASELINE), all);
    assert_eq!(k.image_id("keys"), first);
}

#[test]
fn a_changed_base_image_misses_everything() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM keys-base\nWORKDIR /w\nRUN echo hi > f\n",
    )
    .unwrap();
    let dir = ctx.path().to_str().unwrap().to_owned();
    let build = || {
        let out = k.cmd(&["build", "-t", "on-base", &dir]);
        assert_success(&out, &["build", "on-base"]);
        stderr(&out).matches("] CACHED").count()
    };
    k.ok(&["pull", &k.base]);
    k.ok(&["tag", &k.base, "keys-base"]);
    assert_eq!(build(), 0);
    assert_eq!(build(), 2);
    // Another image under the same name: a new base digest.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("Dockerfile"),
        format!("FROM {}\nRUN echo other > /other\n", k.base),
    )
    .unwrap();
    let out = k.cmd(&["build", "-t", "keys-base", other.path().to_str().unwrap()]);
    assert_success(&out, &["build", "keys-base"]);
    assert_eq!(build(), 0, "a new base digest misses every step");
    assert_eq!(build(), 2);
}
