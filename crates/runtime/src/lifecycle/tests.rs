//! The lifecycle's state rules and host calls, against a fake host over testkit's process
//! table: no root, no processes.

use std::sync::Arc;

use kiln_error::ErrorKind;
use kiln_store::{ContainerState, RunConfig};
use kiln_testkit::processes::FakeProcesses;

use super::*;
use crate::host::BeforeStart;
use crate::wait::WaitCondition;

/// The fake process table, plus what a real supervisor writes into the record when it
/// starts a container.
#[derive(Debug, Clone)]
struct TestHost {
    fake: Arc<FakeProcesses>,
    store: Store,
    /// Containers `pause` froze.
    frozen: Arc<std::sync::Mutex<Vec<String>>>,
    /// Containers whose process has just ended on its own: a signal finds no process while
    /// the supervisor still records the exit (for a moment, they still count as running).
    vanishing: Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::ops::Deref for TestHost {
    type Target = FakeProcesses;

    fn deref(&self) -> &FakeProcesses {
        &self.fake
    }
}

impl Host for TestHost {
    fn is_running(&self, id: &str) -> Result<bool> {
        Ok(self.fake.is_running(id))
    }

    fn signal(&self, record: &ContainerRecord, signal: i32) -> Result<()> {
        if self.vanishing.lock().unwrap().contains(&record.id) {
            let (fake, id) = (self.fake.clone(), record.id.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                fake.signal(&id, 9);
            });
            return Err(RuntimeError::state(&record.name)(
                kiln_store::StateError::NotRunning,
            ));
        }
        if self.fake.signal(&record.id, signal) {
            Ok(())
        } else {
            Err(RuntimeError::state(&record.name)(
                kiln_store::StateError::NotRunning,
            ))
        }
    }

    fn wait_stopped(&self, id: &str, timeout: Option<Duration>) -> Result<(bool, Option<i32>)> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        while self.fake.is_running(id) {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok((false, None));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((true, self.exit_code(id)))
    }

    fn launch(
        &self,
        record: &ContainerRecord,
        before_start: Option<BeforeStart<'_>>,
    ) -> Result<()> {
        if let Some(hook) = before_start {
            hook()?;
        }
        self.fake
            .launch(&record.id)
            .map_err(|message| RuntimeError::StartFailed {
                message,
                exit_code: 125,
            })?;
        self.store.update_container(&record.id, |r| {
            r.state.status = ContainerStatus::Running;
            r.state.started_at = Some(chrono::Utc::now());
        })?;
        Ok(())
    }

    fn pause(&self, record: &ContainerRecord) -> Result<()> {
        self.frozen.lock().unwrap().push(record.id.clone());
        Ok(())
    }

    fn resume(&self, record: &ContainerRecord) -> Result<()> {
        self.frozen.lock().unwrap().retain(|id| *id != record.id);
        Ok(())
    }
}

fn runtime() -> (tempfile::TempDir, Runtime<TestHost>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let host = TestHost {
        fake: Arc::new(FakeProcesses::new()),
        store: store.clone(),
        frozen: Arc::default(),
        vanishing: Arc::default(),
    };
    (dir, Runtime::with_host(store, host))
}

fn create(rt: &Runtime<TestHost>, name: &str, stop_signal: &str) -> String {
    let mut record = ContainerRecord {
        schema_version: kiln_store::CONTAINER_SCHEMA_VERSION,
        id: rt.store.new_container_id(name),
        name: name.into(),
        created: chrono::Utc::now(),
        image: "busybox".into(),
        image_id: "sha256:00".into(),
        manifest: "sha256:11".into(),
        config: RunConfig {
            stop_signal: stop_signal.into(),
            ..RunConfig::default()
        },
        mounts: Vec::new(),
        auto_remove: false,
        state: ContainerState::default(),
    };
    rt.store.create_container(&mut record).unwrap();
    record.id
}

fn conflict(e: RuntimeError) -> String {
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    e.to_string()
}

#[test]
fn start_runs_a_created_container_once() {
    let (_d, rt) = runtime();
    let id = create(&rt, "web", "");
    assert_eq!(
        rt.container("web").unwrap().state.status,
        ContainerStatus::Created
    );
    let started = rt.start("web").unwrap();
    assert_eq!(started.state.status, ContainerStatus::Running);
    let again = conflict(rt.start("web").unwrap_err());
    assert!(again.contains("web is already running"), "{again}");
    assert_eq!(rt.host.launches(), [id]);
}

#[test]
fn signals_reach_only_running_containers() {
    let (_d, rt) = runtime();
    let id = create(&rt, "job", "");
    let not_running = conflict(rt.kill("job", "TERM").unwrap_err());
    assert!(not_running.contains("job is not running"), "{not_running}");
    assert!(rt.host.signals().is_empty());
    rt.start("job").unwrap();
    rt.kill("job", "SIGUSR1").unwrap();
    assert_eq!(rt.host.signals(), [(id.clone(), 10)]);
    assert!(rt.host.is_running(&id).unwrap());
    let bad = rt.kill("job", "SIGNOPE").unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
    let missing = rt.kill("nope", "KILL").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_the_grace_time() {
    let (_d, rt) = runtime();
    let id = create(&rt, "stubborn", "SIGQUIT");
    rt.host.ignore(3);
    rt.start("stubborn").unwrap();
    rt.stop("stubborn", Duration::from_millis(100)).unwrap();
    assert_eq!(rt.host.signals(), [(id.clone(), 3), (id.clone(), 9)]);
    assert_eq!(
        rt.container(&id).unwrap().state.status,
        ContainerStatus::Exited
    );
    // Stopping a stopped container is no error and sends nothing.
    rt.stop("stubborn", Duration::from_millis(100)).unwrap();
    assert_eq!(rt.host.signals().len(), 2);

    let polite = create(&rt, "polite", "");
    rt.start("polite").unwrap();
    rt.stop("polite", Duration::from_secs(10)).unwrap();
    assert_eq!(rt.host.signals().last(), Some(&(polite, 15)));
}

#[test]
fn a_container_ending_as_it_is_stopped_is_stopped_and_restarted() {
    let (_d, rt) = runtime();
    let id = create(&rt, "brief", "");
    rt.start("brief").unwrap();
    // Its process is gone, its supervisor not yet done: no error, and the restart goes on.
    rt.host.vanishing.lock().unwrap().push(id.clone());
    rt.restart("brief", Duration::from_secs(10)).unwrap();
    assert_eq!(rt.host.launches(), [id.clone(), id.clone()]);
    rt.host.vanishing.lock().unwrap().clear();
    assert!(rt.host.is_running(&id).unwrap());
}

#[test]
fn restart_stops_and_starts_again() {
    let (_d, rt) = runtime();
    let id = create(&rt, "cycle", "");
    rt.start("cycle").unwrap();
    rt.restart("cycle", Duration::from_secs(1)).unwrap();
    assert_eq!(rt.host.signals(), [(id.clone(), 15)]);
    assert_eq!(rt.host.launches(), [id.clone(), id.clone()]);
    assert!(rt.host.is_running(&id).unwrap());
}

#[test]
fn a_running_container_is_removed_only_with_force() {
    let (_d, rt) = runtime();
    let id = create(&rt, "busy", "");
    rt.start("busy").unwrap();
    let refused = conflict(rt.remove("busy", false, false).unwrap_err());
    assert!(refused.contains("force remove"), "{refused}");
    assert!(rt.container("busy").is_ok());
    rt.remove("busy", true, false).unwrap();
    assert_eq!(rt.host.signals(), [(id, 9)]);
    assert_eq!(
        rt.container("busy").unwrap_err().kind(),
        ErrorKind::NotFound
    );

    create(&rt, "idle", "");
    rt.remove("idle", false, false).unwrap();
    assert!(rt.container("idle").is_err());
}

#[test]
fn wait_follows_its_condition() {
    let (_d, rt) = runtime();
    let id = create(&rt, "short", "");
    rt.store
        .update_container(&id, |r| {
            r.state.status = ContainerStatus::Exited;
            r.state.exit_code = 3;
        })
        .unwrap();
    // Not running: at once, with the recorded code.
    assert_eq!(rt.wait("short", WaitCondition::NotRunning).unwrap(), 3);

    let rt = Arc::new(rt);
    rt.start("short").unwrap();
    let (waiter_rt, waiter_id) = (rt.clone(), id.clone());
    let waiter = std::thread::spawn(move || {
        waiter_rt
            .wait(&waiter_id, WaitCondition::NotRunning)
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "wait returned while the container ran"
    );
    rt.host.exit(&id, 42);
    assert_eq!(waiter.join().unwrap(), 42);

    // next-exit on a stopped container waits for it to run and stop again.
    let (next_rt, next_id) = (rt.clone(), id.clone());
    let next = std::thread::spawn(move || next_rt.wait(&next_id, WaitCondition::NextExit).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!next.is_finished(), "next-exit returned before a new run");
    rt.start(&id).unwrap();
    rt.host.exit(&id, 7);
    assert_eq!(next.join().unwrap(), 7);

    // removed: until the record is gone.
    let (gone_rt, gone_id) = (rt.clone(), id.clone());
    let gone = std::thread::spawn(move || gone_rt.wait(&gone_id, WaitCondition::Removed).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !gone.is_finished(),
        "removed returned while the record existed"
    );
    rt.remove(&id, false, false).unwrap();
    assert_eq!(gone.join().unwrap(), 7);

    let bad = "soon".parse::<WaitCondition>().unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn a_cancelled_wait_ends_and_an_uncancelled_one_does_not() {
    let (_d, rt) = runtime();
    let id = create(&rt, "never", "");
    let rt = Arc::new(rt);
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiters: Vec<_> = [WaitCondition::Removed, WaitCondition::NextExit]
        .into_iter()
        .map(|condition| {
            let (rt, id, flag) = (rt.clone(), id.clone(), flag.clone());
            std::thread::spawn(move || {
                let cancelled = || flag.load(std::sync::atomic::Ordering::SeqCst);
                rt.wait_unless(&id, condition, Some(&cancelled))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a wait gave up early"
    );
    flag.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in waiters {
        let err = w.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    }
    // Running: the wait for its end is cancelled too.
    rt.start("never").unwrap();
    let cancelled = || true;
    let err = rt
        .wait_unless("never", WaitCondition::NotRunning, Some(&cancelled))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::WaitCancelled(_)), "{err:?}");
}

#[test]
fn pause_freezes_until_unpause_and_blocks_exec() {
    let (_d, rt) = runtime();
    let id = create(&rt, "frozen", "");
    let not_running = conflict(rt.pause("frozen").unwrap_err());
    assert!(not_running.contains("is not running"), "{not_running}");
    rt.start("frozen").unwrap();
    assert!(rt.pause("frozen").unwrap().state.is_paused());
    assert_eq!(*rt.host.frozen.lock().unwrap(), std::slice::from_ref(&id));
    assert_eq!(
        rt.container("frozen").unwrap().state.docker_status(),
        "paused"
    );
    let again = conflict(rt.pause("frozen").unwrap_err());
    assert!(again.contains("already paused"), "{again}");
    let exec = crate::ExecConfig {
        cmd: vec!["true".into()],
        ..crate::ExecConfig::default()
    };
    let refused = conflict(rt.exec_create("frozen", &exec).unwrap_err());
    assert!(
        refused.contains("unpause the container before exec"),
        "{refused}"
    );
    rt.unpause("frozen").unwrap();
    assert!(rt.host.frozen.lock().unwrap().is_empty());
    let not_paused = conflict(rt.unpause("frozen").unwrap_err());
    assert!(not_paused.contains("is not paused"), "{not_paused}");
    // Stopping a paused container thaws it first, so it can act on its signal.
    rt.pause("frozen").unwrap();
    rt.stop("frozen", Duration::from_secs(1)).unwrap();
    assert!(rt.host.frozen.lock().unwrap().is_empty());
    assert!(!rt.container("frozen").unwrap().state.paused);
}

#[test]
fn a_failed_start_is_an_error_with_dockers_code() {
    let (_d, rt) = runtime();
    create(&rt, "broken", "");
    rt.host
        .fail_launches("exec: \"nope\": executable file not found");
    let err = rt.start("broken").unwrap_err();
    assert!(
        matches!(err, RuntimeError::StartFailed { exit_code: 125, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
    // The failed one is kept (`docker start` shows why); a `--rm` one goes, as dockerd
    // removes it, so a client waiting for its removal is not left waiting.
    assert!(rt.container("broken").is_ok());
    let id = create(&rt, "broken-rm", "");
    rt.store
        .update_container(&id, |r| r.auto_remove = true)
        .unwrap();
    let attached = rt.start_attached("broken-rm", AttachRequest::output());
    assert!(attached.is_err());
    assert_eq!(
        rt.container("broken-rm").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn execs_are_recorded_only_in_running_containers() {
    let (_d, rt) = runtime();
    let id = create(&rt, "host", "");
    let config = crate::ExecConfig {
        cmd: vec!["true".into()],
        env: vec!["A=1".into()],
        ..crate::ExecConfig::default()
    };
    let refused = conflict(rt.exec_create("host", &config).unwrap_err());
    assert!(refused.contains("host is not running"), "{refused}");
    rt.start("host").unwrap();
    let exec = rt.exec_create("host", &config).unwrap();
    assert_eq!(exec.container_id, id);
    assert!(exec.process.env.contains(&"A=1".to_owned()));
    let found = rt.exec_inspect(&exec.id[..12]).unwrap();
    assert_eq!((found.running, found.exit_code), (false, None));
    let missing = rt.exec_inspect("feedface").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let empty = rt
        .exec_create("host", &crate::ExecConfig::default())
        .unwrap_err();
    assert_eq!(empty.kind(), ErrorKind::InvalidArgument, "{empty}");
}

#[test]
fn a_users_stop_or_kill_marks_the_container_and_a_start_clears_the_mark() {
    let (_d, rt) = runtime();
    let id = create(&rt, "policy", "");
    let marked = |rt: &Runtime<_>| rt.store.find_container(&id).unwrap().state.manually_stopped;
    rt.start("policy").unwrap();
    assert!(!marked(&rt));
    // A signal that does not end the container leaves its restart policy in force.
    rt.kill("policy", "SIGHUP").unwrap();
    assert!(!marked(&rt));
    rt.stop("policy", Duration::from_secs(1)).unwrap();
    assert!(marked(&rt), "stop did not mark the container");
    rt.start("policy").unwrap();
    assert!(!marked(&rt), "a start kept the stop's mark");
    rt.kill("policy", "KILL").unwrap();
    assert!(marked(&rt), "kill did not mark the container");
}
