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
