//! `kiln serve` never parents containers: supervisors are reparented away from the daemon (no
//! zombies of short `--rm` runs), and a daemon restart leaves a detached container running,
//! with logs, exec, attach, wait and stop working from the new daemon.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::super::containers::{Cleanup, eventually, processes_using};
use super::super::harness::Kiln;
use super::Daemon;
use super::docker_cli::Docker;

/// `(pid, state)` of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let pid: u32 = head
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent {
            found.push((pid, state));
        }
    }
    found
}

fn no_zombies_of(d: &Daemon) {
    // A zombie lasts only until its parent reaps it: give a just-ended child a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies: Vec<_> = children_of(d.child.id())
            .into_iter()
            .filter(|(_, state)| *state == 'Z')
            .collect();
        if zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zombie children of kiln serve: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `line-N` lines of the ticker's log.
fn lines(docker: &Docker) -> Vec<String> {
    docker
        .ok(&["logs", "ticker"])
        .lines()
        .filter(|l| l.starts_with("line-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_daemon_restart_leaves_containers_running_and_parents_none() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let mut d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    for _ in 0..3 {
        docker.ok(&["run", "--rm", "--network", "none", &k.base, "true"]);
    }
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "--network",
        "none",
        &k.base,
        "sh",
        "-c",
        "trap 'exit 7' TERM; i=0; while true; do echo line-$i; i=$((i+1)); sleep 1; done",
    ]);
    // The supervisors are not the daemon's children, and nothing it started is a zombie.
    let root = k.root.path().to_string_lossy().into_owned();
    let supervisors = processes_using(&root);
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    let daemon_children: Vec<u32> = children_of(d.child.id()).iter().map(|c| c.0).collect();
    assert!(
        !daemon_children.contains(&(supervisors[0].0 as u32)),
        "the supervisor is a child of kiln serve"
    );
    no_zombies_of(&d);
    eventually("two lines", || lines(&docker).len() >= 2);

    drop(docker);
    assert!(d.terminate().success(), "{}", d.log());
    let before = {
        // The log is the store's: the kiln CLI reads it with no daemon running.
        let out = k.ok(&["logs", "ticker"]);
        out.lines().filter(|l| l.starts_with("line-")).count()
    };
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    let running = docker.ok(&["inspect", "--format", "{{.State.Running}}", "ticker"]);
    assert_eq!(running.trim(), "true");
    // Lines from before the restart and after it, in order.
    eventually("lines after the restart", || {
        lines(&docker).len() >= before + 2
    });
    let all = lines(&docker);
    for (n, line) in all.iter().enumerate() {
        assert_eq!(*line, format!("line-{n}"), "{all:?}");
    }
    assert_eq!(
        docker.ok(&["exec", "ticker", "echo", "exec-ok"]),
        "exec-ok\n"
    );
    // Attach from the new daemon: the next line arrives.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"POST /containers/ticker/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\
          Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("line-") {
        let n = s.read(&mut buf).expect("attach output after the restart");
        assert!(n > 0, "attach ended: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    // wait, then stop: the container's trap ends it with 7.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| docker.ok(&["wait", "ticker"]));
        std::thread::sleep(Duration::from_millis(500));
        docker.ok(&["stop", "-t", "10", "ticker"]);
        assert_eq!(waiter.join().unwrap().trim(), "7");
    });
    assert!(processes_using(&root).is_empty());
    no_zombies_of(&d);
}

#[test]
fn a_daemon_finishing_its_requests_leaves_its_successors_socket() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let shared = tempfile::tempdir().unwrap();
    let socket = shared.path().join("kiln.sock");
    let host = format!("unix://{}", socket.display());
    let old = Daemon::start(&k, &[], &["--host", &host]);
    let docker = Docker::new(&old);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "none",
        &k.base,
        "sleep",
        "60",
    ]);
    // A request in flight (a wait) keeps the old daemon finishing for its grace time.
    let mut waiting = UnixStream::connect(&old.socket).unwrap();
    waiting
        .write_all(
            b"POST /containers/sleeper/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
    let mut head = [0u8; 12];
    waiting.read_exact(&mut head).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&old.child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    eventually("the old daemon to stop accepting", || {
        UnixStream::connect(&socket).is_err()
    });
    // The successor replaces the stale socket while the old daemon still runs.
    let new = Daemon::start(&k, &[], &["--host", &host]);
    let mut old = old;
    assert!(old.terminate().success(), "{}", old.log());
    let ping = UnixStream::connect(&socket).and_then(|mut s| {
        s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    assert!(
        ping.as_deref().is_ok_and(|r| r.starts_with("HTTP/1.1 200")),
        "the new daemon's socket went with the old daemon: {ping:?}\n{}",
        new.log()
    );
    drop(waiting);
}

/// A container's restarts through the daemon: `die` then `start` events for each, in order.
fn actions_of(docker: &Docker, name: &str) -> Vec<String> {
    let container = format!("container={name}");
    docker
        .events_so_far(
            &["type=container", &container],
            "{{.Action}} {{.Actor.Attributes.exitCode}}",
        )
        .lines()
        .map(|l| l.replace("<no value>", "").trim().to_owned())
        .filter(|l| l.starts_with("start") || l.starts_with("die"))
        .collect()
}

#[test]
fn restart_policies_through_the_daemon_and_at_its_start() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let mut d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    let run = |name: &str, policy: &str, command: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--restart",
            policy,
            &k.base,
        ];
        args.extend_from_slice(command);
        docker.ok(&args);
    };

    // on-failure:2: three runs, each reported, and the container ends exited.
    run(
        "bouncer",
        "on-failure:2",
        &["sh", "-c", "sleep 0.3; exit 5"],
    );
    // The wait ends with the first run's end, as dockerd's.
    assert_eq!(docker.ok(&["wait", "bouncer"]).trim(), "5");
    eventually("the last run", || {
        docker
            .ok(&["inspect", "--format", "{{.State.Status}}", "bouncer"])
            .trim()
            == "exited"
    });
    let inspect = |name: &str, format: &str| {
        docker
            .ok(&["inspect", "--format", format, name])
            .trim()
            .to_owned()
    };
    assert_eq!(
        inspect(
            "bouncer",
            "{{.RestartCount}} {{.State.Status}} {{.HostConfig.RestartPolicy.Name}}"
        ),
        "2 exited on-failure"
    );
    eventually("the events of three runs", || {
        actions_of(&docker, "bouncer").len() >= 6
    });
    assert_eq!(
        actions_of(&docker, "bouncer"),
        ["start", "die 5", "start", "die 5", "start", "die 5"]
    );
    docker.ok(&["rm", "bouncer"]);

    // always (running at the "reboot") and unless-stopped (stopped by its user before it).
    run("keeper", "always", &["sleep", "1000"]);
    run("quiet", "unless-stopped", &["sleep", "1000"]);
    docker.ok(&["stop", "-t", "1", "quiet"]);
    assert_eq!(inspect("quiet", "{{.State.Status}}"), "exited");

    // A machine's reboot: no daemon, and the containers' supervisors gone with it.
    drop(docker);
    assert!(d.terminate().success(), "{}", d.log());
    let root = k.root.path().to_string_lossy().into_owned();
    for (pid, _) in processes_using(&root) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    eventually("the supervisors to go", || {
        processes_using(&root).is_empty()
    });
    assert!(k.ok(&["ps", "-q"]).trim().is_empty());

    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    let inspect = |name: &str, format: &str| {
        docker
            .ok(&["inspect", "--format", format, name])
            .trim()
            .to_owned()
    };
    assert_eq!(
        inspect("keeper", "{{.State.Status}}"),
        "running",
        "{}",
        d.log()
    );
    assert_eq!(inspect("quiet", "{{.State.Status}}"), "exited");
    assert_eq!(processes_using(&root).len(), 1);
    // A user's stop through the daemon ends it for good.
    docker.ok(&["stop", "-t", "1", "keeper"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect("keeper", "{{.State.Status}}"), "exited");
    assert!(processes_using(&root).is_empty());
}
