//! The stage scheduler: independent stages build side by side, a stage several others need
//! builds once, `--jobs` bounds the work, and a failing stage stops the build with its error.

use super::harness::{Kiln, assert_success, stderr};

/// Two stages that each wait (up to 60 s) for the other's marker in a shared cache mount: a
/// build that runs them one after the other fails, one that runs them together passes.
const RENDEZVOUS: &str = "\
ARG BASE
FROM ${BASE} AS left
RUN --mount=type=cache,id=rendezvous,target=/rv,sharing=shared \\
    touch /rv/left && i=0; while [ ! -e /rv/right ]; do \\
    i=$((i+1)); [ $i -lt 600 ] || exit 7; sleep 0.1; done; echo left > /out
FROM ${BASE} AS right
RUN --mount=type=cache,id=rendezvous,target=/rv,sharing=shared \\
    touch /rv/right && i=0; while [ ! -e /rv/left ]; do \\
    i=$((i+1)); [ $i -lt 600 ] || exit 7; sleep 0.1; done; echo right > /out
FROM ${BASE}
COPY --from=left /out /left
COPY --from=right /out /right
CMD cat /left /right
";

#[test]
fn independent_stages_run_at_the_same_time() {
    let k = Kiln::new();
    let out = k.build_dockerfile("together", RENDEZVOUS, &["--jobs", "2"]);
    assert_success(&out, &["build", "together"]);
    assert_eq!(k.ok(&["run", "--rm", "together"]), "left\nright\n");
}

#[test]
fn a_stage_needed_by_several_builds_once_and_jobs_one_still_builds() {
    let k = Kiln::new();
    // `base` is the base of two stages and copied from by the last: its RUN appends to a
    // counter in a cache mount, which the last stage copies into the image.
    let dockerfile = "\
ARG BASE
FROM ${BASE} AS base
RUN --mount=type=cache,id=counter,target=/c echo ran >> /c/count && echo base > /base
FROM base AS one
RUN echo one > /one
FROM base AS two
RUN echo two > /two
FROM ${BASE}
COPY --from=one /one /one
COPY --from=two /two /two
COPY --from=base /base /base
RUN --mount=type=cache,id=counter,target=/c cp /c/count /count
CMD cat /one /two /base /count
";
    for (tag, jobs) in [("jobs-default", None), ("jobs-one", Some("1"))] {
        let mut extra = vec!["--no-cache"];
        if let Some(jobs) = jobs {
            extra.extend(["--jobs", jobs]);
        }
        let out = k.build_dockerfile(tag, dockerfile, &extra);
        assert_success(&out, &["build", tag]);
    }
    // Each build ran `base` once: the counter has one line per build.
    assert_eq!(
        k.ok(&["run", "--rm", "jobs-default"]),
        "one\ntwo\nbase\nran\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "jobs-one"]),
        "one\ntwo\nbase\nran\nran\n"
    );
}

#[test]
fn a_failing_stage_fails_the_build_with_its_own_error() {
    let k = Kiln::new();
    let dockerfile = "\
ARG BASE
FROM ${BASE} AS slow
RUN sleep 1 && echo slow > /slow
FROM ${BASE} AS broken
RUN echo about to fail && exit 5
FROM ${BASE}
COPY --from=slow /slow /slow
COPY --from=broken /nothing /nothing
";
    let out = k.build_dockerfile("broken", dockerfile, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exit code 5"), "{err}");
    assert!(err.contains("Dockerfile:5"), "{err}");
    assert!(!err.contains("failed before this stage"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The interval `[start, end]` (seconds of system uptime) a stage's RUN wrote into its image.
fn interval(text: &str) -> (f64, f64) {
    let times: Vec<f64> = text
        .split_whitespace()
        .map(|t| t.parse().unwrap_or_else(|_| panic!("not a time: {t:?}")))
        .collect();
    assert_eq!(times.len(), 2, "{text:?}");
    (times[0], times[1])
}

#[test]
fn waiting_steps_lend_their_slot_so_sleeping_stages_overlap_under_jobs_one() {
    let k = Kiln::new();
    // /proc/uptime is one clock for every sandbox.
    let dockerfile = "\
ARG BASE
FROM ${BASE} AS a
RUN cut -d' ' -f1 /proc/uptime > /t && sleep 3 && cut -d' ' -f1 /proc/uptime >> /t
FROM ${BASE} AS b
RUN cut -d' ' -f1 /proc/uptime > /t && sleep 3 && cut -d' ' -f1 /proc/uptime >> /t
FROM ${BASE} AS c
RUN cut -d' ' -f1 /proc/uptime > /t && sleep 3 && cut -d' ' -f1 /proc/uptime >> /t
FROM ${BASE}
COPY --from=a /t /a
COPY --from=b /t /b
COPY --from=c /t /c
";
    let out = k.build_dockerfile("sleepers", dockerfile, &["--jobs", "1", "--no-cache"]);
    assert_success(&out, &["build", "sleepers"]);
    let intervals: Vec<(f64, f64)> = ["/a", "/b", "/c"]
        .iter()
        .map(|file| interval(&k.ok(&["run", "--rm", "sleepers", "cat", file])))
        .collect();
    // All three were sleeping at once: the last to start started before the first to end ended.
    let last_start = intervals.iter().map(|i| i.0).fold(f64::MIN, f64::max);
    let first_end = intervals.iter().map(|i| i.1).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "stages ran one after another: {intervals:?}"
    );
}

#[test]
fn busy_steps_keep_their_slot_so_jobs_one_runs_them_in_turn() {
    let k = Kiln::new();
    // Each RUN spins the CPU in shell arithmetic (no sleeping, no forks) for a fixed amount of
    // work, so it never looks idle; the test checks order, not duration.
    let spin = "RUN cut -d' ' -f1 /proc/uptime > /t && \
                i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; \
                cut -d' ' -f1 /proc/uptime >> /t";
    let dockerfile = format!(
        "ARG BASE\nFROM ${{BASE}} AS a\n{spin}\nFROM ${{BASE}} AS b\n{spin}\n\
         FROM ${{BASE}}\nCOPY --from=a /t /a\nCOPY --from=b /t /b\n"
    );
    let out = k.build_dockerfile("spinners", &dockerfile, &["--jobs", "1", "--no-cache"]);
    assert_success(&out, &["build", "spinners"]);
    let a = interval(&k.ok(&["run", "--rm", "spinners", "cat", "/a"]));
    let b = interval(&k.ok(&["run", "--rm", "spinners", "cat", "/b"]));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "busy stages overlapped: {a:?} {b:?}"
    );
}

/// How many times [`parallel_stages_mixing_workdir_copy_and_run_build_every_time`] builds: 3 in
/// the ordinary suite, `KILN_STRESS_ITERATIONS` (say 50, as `scripts/stress-parallel-stages.sh`
/// does) when hunting the race it guards against.
fn stress_iterations() -> usize {
    std::env::var("KILN_STRESS_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// Issue 16 item 7: eight stages building side by side, each alternating WORKDIR, COPY and RUN,
/// so that host-side overlay mounts (WORKDIR, COPY) are unmounted while sandboxes for other
/// stages' RUNs are being started. A sandbox started at that moment once kept such a mount
/// busy (`unmount …/merged: Device or resource busy`); every build must succeed.
#[test]
fn parallel_stages_mixing_workdir_copy_and_run_build_every_time() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("f"), "from the context\n").unwrap();
    let mut dockerfile = String::from("ARG BASE\n");
    for stage in 0..8 {
        dockerfile.push_str(&format!(
            "FROM ${{BASE}} AS s{stage}\n\
             WORKDIR /w/{stage}/a\n\
             COPY f one\n\
             RUN cat one > two\n\
             WORKDIR /w/{stage}/b/c\n\
             COPY f three\n\
             RUN ls -R /w/{stage} > /w/{stage}/list\n\
             WORKDIR /w/{stage}/d\n\
             COPY f ../four\n"
        ));
    }
    dockerfile.push_str("FROM ${BASE}\n");
    for stage in 0..8 {
        dockerfile.push_str(&format!("COPY --from=s{stage} /w/{stage} /r/{stage}\n"));
    }
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    for iteration in 0..stress_iterations() {
        let out = k.cmd(&[
            "build",
            "-t",
            "parallel",
            "--no-cache",
            "--jobs",
            "8",
            "--build-arg",
            &base,
            dir,
        ]);
        assert_success(&out, &["build", "parallel", &format!("#{iteration}")]);
    }
    let listing = k.ok(&["run", "--rm", "parallel", "cat", "/r/7/a/two", "/r/7/list"]);
    assert!(listing.starts_with("from the context\n"), "{listing}");
    assert!(listing.contains("three"), "{listing}");
}
