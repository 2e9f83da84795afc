//! Crash safety and concurrency of the store: builds killed with SIGKILL at random (seeded)
//! moments leave a store that `kiln check` passes and the next build completes; builds running
//! side by side on one store all succeed, agree on image IDs, and compute a shared step once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::{Kiln, assert_success, stdout};

use kiln_testkit::SeededRng as Rng;

/// A context with a big incompressible file, many small files, and RUNs that take a while, so
/// kills land in every phase: hashing the context, compressing a layer, running a command,
/// unpacking, writing records and names.
fn crash_context(dir: &Path) {
    let mut rng = Rng(7);
    let mut big = Vec::with_capacity(24 << 20);
    while big.len() < 24 << 20 {
        big.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    std::fs::write(dir.join("big"), &big).unwrap();
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    for i in 0..1500 {
        std::fs::write(small.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "\
ARG BASE
FROM ${BASE}
COPY big /data/big
RUN sleep 1 && md5sum /data/big > /data/big.md5
COPY small /data/small
RUN i=0; while [ $i -lt 300 ]; do echo $i > /data/gen$i; i=$((i+1)); done; sleep 1
RUN cat /data/small/f7 > /data/last
CMD cat /data/big.md5 /data/last /data/gen299 && ls /data/small | wc -l
",
    )
    .unwrap();
}

fn kiln(root: &Path) -> Command {
    let mut c = crate::e2e::harness::kiln_command();
    c.env("KILN_ROOT", root);
    c
}

fn build_args<'a>(k: &'a Kiln, tag: &'a str, ctx: &'a str, base: &'a str) -> Vec<&'a str> {
    let _ = k;
    vec!["build", "-t", tag, "--build-arg", base, ctx]
}

/// Pids of processes (other than kiln builds we still wait for) started with this store root:
/// sandbox inits inherit kiln's environment.
pub(super) fn processes_using(root: &Path) -> Vec<u32> {
    let needle = format!("KILN_ROOT={}", root.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

fn check_passes(root: &Path, repair: bool) -> String {
    let mut args = vec!["check"];
    if repair {
        args.push("--repair");
    }
    let out = kiln(root).args(&args).output().unwrap();
    assert_success(&out, &args);
    stdout(&out)
}

#[test]
fn builds_killed_at_random_points_leave_a_consistent_store() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    crash_context(ctx.path());
    let ctx_path = ctx.path().to_str().unwrap().to_owned();
    let base = format!("BASE={}", k.base);

    // The uninterrupted build, in its own store, as the reference; its time bounds the kills.
    let reference = k.fresh_store();
    let started = Instant::now();
    let out = kiln(reference.path())
        .args(build_args(&k, "app", &ctx_path, &base))
        .output()
        .unwrap();
    assert_success(&out, &["reference build"]);
    let full = started.elapsed();
    let expected_run = stdout(
        &kiln(reference.path())
            .args(["run", "--rm", "app"])
            .output()
            .unwrap(),
    );
    assert!(expected_run.contains("/data/big"), "{expected_run}");

    let root = k.root.path();
    let seed = std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6e_u64);
    let mut rng = Rng(seed);
    let window = full.as_millis().max(200) as u64;
    for iteration in 0..6 {
        let delay = Duration::from_millis(20 + rng.next_u64() % window);
        // Half the builds start from scratch so kills also land late in a full build.
        let mut args = build_args(&k, "app", &ctx_path, &base);
        if iteration % 2 == 0 {
            args.insert(1, "--no-cache");
        }
        let mut child = kiln(root)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        eprintln!(
            "seed {seed:#x} iteration {iteration}: SIGKILL after {delay:?} (finished: {finished})"
        );

        // Nothing the killed build started may live on (the sandbox dies with kiln).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_using(root).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            processes_using(root),
            Vec::<u32>::new(),
            "orphans after a kill"
        );

        // Leftovers may be reported, never corruption; repair only every other time so builds
        // also start over stale temp files.
        check_passes(root, iteration % 2 == 1);
    }

    let out = kiln(root)
        .args(build_args(&k, "app", &ctx_path, &base))
        .output()
        .unwrap();
    assert_success(&out, &["build after the crashes"]);
    let report = check_passes(root, true);
    assert!(report.contains("consistent"), "{report}");
    assert!(check_passes(root, false).contains("the store is consistent"));

    // The same image as without crashes: the same layers and files, and a rebuild finds every
    // step cached and gives the same image ID. (Layer digests themselves differ between two
    // cold builds: RUN writes files with the current time.)
    let inspect = |r: &Path| -> serde_json::Value {
        let out = kiln(r).args(["inspect", "app"]).output().unwrap();
        assert_success(&out, &["inspect"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    let (want, got) = (inspect(reference.path()), inspect(root));
    let layers = |v: &serde_json::Value| v["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(layers(&want), layers(&got));
    let out = kiln(root)
        .args(build_args(&k, "app", &ctx_path, &base))
        .output()
        .unwrap();
    assert_success(&out, &["rebuild"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("] CACHED").count(), 5, "all cached:\n{log}");
    assert_eq!(inspect(root)["Id"], got["Id"]);
    let run = kiln(root).args(["run", "--rm", "app"]).output().unwrap();
    assert_success(&run, &["run"]);
    assert_eq!(stdout(&run), expected_run);
}

/// The same first steps for every Dockerfile: the RUN counts its executions in a cache mount
/// and sleeps so that concurrent builds overlap on it.
const SHARED_PREFIX: &str = "\
ARG BASE
FROM ${BASE}
RUN --mount=type=cache,id=runs,target=/c echo ran >> /c/count && sleep 2 && echo shared > /shared
";

fn write_context(dir: &Path, extra: &str) {
    std::fs::write(dir.join("Dockerfile"), format!("{SHARED_PREFIX}{extra}")).unwrap();
}

/// How many times the shared RUN executed: lines in its cache mount's counter.
fn shared_runs(root: &Path) -> usize {
    let mut total = 0;
    for key in std::fs::read_dir(root.join("cache-mounts"))
        .unwrap()
        .flatten()
    {
        for inst in std::fs::read_dir(key.path()).unwrap().flatten() {
            if let Ok(s) = std::fs::read_to_string(inst.path().join("count")) {
                total += s.lines().count();
            }
        }
    }
    total
}

#[test]
fn concurrent_builds_on_one_store_agree_and_share_steps() {
    let k = Kiln::new();
    let same = tempfile::tempdir().unwrap();
    write_context(same.path(), "CMD cat /shared\n");
    let other = tempfile::tempdir().unwrap();
    write_context(
        other.path(),
        "RUN echo other > /other\nCMD cat /shared /other\n",
    );
    let base = format!("BASE={}", k.base);
    let root = k.root.path();

    // Three builds of one Dockerfile and one of another, all at once, from an empty store:
    // they pull the same base, unpack the same layers and reach the same RUN together.
    let jobs: Vec<(&str, &Path)> = vec![
        ("same1", same.path()),
        ("same2", same.path()),
        ("same3", same.path()),
        ("other", other.path()),
    ];
    let children: Vec<_> = jobs
        .iter()
        .map(|(tag, ctx)| {
            kiln(root)
                .args(["build", "-t", tag, "--build-arg", &base])
                .arg(ctx)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (out, (tag, _)) in outputs.iter().zip(&jobs) {
        assert_success(out, &["concurrent build", tag]);
    }
    assert_eq!(shared_runs(root), 1, "the shared RUN ran once");
    // The progress output agrees: one build ran the step (position 2), the others found it.
    let cached = outputs
        .iter()
        .filter(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            err.contains(" 2/3] CACHED") || err.contains(" 2/4] CACHED")
        })
        .count();
    assert_eq!(cached, jobs.len() - 1);

    let ids: Vec<String> = ["same1", "same2", "same3"]
        .iter()
        .map(|t| k.image_id(t))
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(k.ok(&["run", "--rm", "same2"]), "shared\n");
    assert_eq!(k.ok(&["run", "--rm", "other"]), "shared\nother\n");
    let other_layers = k.inspect("other")["RootFS"]["Layers"].clone();
    let same_layers = k.inspect("same1")["RootFS"]["Layers"].clone();
    assert_eq!(
        other_layers.as_array().unwrap()[..same_layers.as_array().unwrap().len()],
        same_layers.as_array().unwrap()[..],
        "the shared step's layer is the same in both images"
    );
    check_passes(root, false);

    // Two more at once on the warm store: all cached, the same image again.
    let children: Vec<_> = ["again1", "again2"]
        .iter()
        .map(|tag| {
            kiln(root)
                .args(["build", "-t", tag, "--build-arg", &base])
                .arg(same.path())
                .output()
        })
        .collect();
    for out in children {
        assert_success(&out.unwrap(), &["warm build"]);
    }
    assert_eq!(k.image_id("again1"), ids[0]);
    assert_eq!(shared_runs(root), 1);
}
