//! Load through one `kiln serve`: the docker CLI running 20 `--rm` containers and 4 legacy
//! builds at the same time, every one of them succeeding (each CLI invocation has the
//! suite's time limit, so a hang fails the test naming the command).

use super::super::harness::{Kiln, stderr, stdout};
use super::Daemon;
use super::docker_cli::Docker;

#[test]
fn twenty_runs_and_four_builds_at_once_all_succeed() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    // Pulled once up front: twenty clients pulling the same image at once is another test.
    docker.ok(&["pull", &k.base]);
    let contexts: Vec<tempfile::TempDir> = (0..4)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let dockerfile = format!(
                "FROM {}\nRUN echo build-{i} > /which\nCOPY f /f\nCMD [\"cat\", \"/which\"]\n",
                k.base
            );
            std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
            std::fs::write(dir.path().join("f"), format!("file {i}")).unwrap();
            dir
        })
        .collect();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..20)
            .map(|n| {
                let (docker, image) = (&docker, k.base.as_str());
                scope.spawn(move || {
                    let out = docker.run(
                        &[
                            "run",
                            "--rm",
                            "--network",
                            "none",
                            image,
                            "sh",
                            "-c",
                            &format!("echo run-{n}"),
                        ],
                        b"",
                        None,
                    );
                    (n, out)
                })
            })
            .collect();
        let builds: Vec<_> = contexts
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let docker = &docker;
                scope.spawn(move || {
                    let tag = format!("load:{i}");
                    let out = docker.run(&["build", "-t", &tag, "."], b"", Some(dir.path()));
                    (i, out)
                })
            })
            .collect();
        for run in runs {
            let (n, out) = run.join().unwrap();
            assert!(
                out.status.success(),
                "run {n}: {}\n{}",
                stderr(&out),
                d.log()
            );
            assert_eq!(stdout(&out), format!("run-{n}\n"), "run {n}");
        }
        for build in builds {
            let (i, out) = build.join().unwrap();
            assert!(
                out.status.success(),
                "build {i}: {}\n{}",
                stderr(&out),
                d.log()
            );
        }
    });
    // Every run removed itself; every image runs its own build's file.
    assert_eq!(docker.ok(&["ps", "-aq"]).trim(), "");
    for i in 0..4 {
        let tag = format!("load:{i}");
        let out = docker.ok(&["run", "--rm", "--network", "none", &tag]);
        assert_eq!(out, format!("build-{i}\n"));
    }
}
