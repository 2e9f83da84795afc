//! The launcher's side of a supervisor: start the process, connect an attach-first client
//! while it waits, and sleep on its announcements until the record says the container runs or
//! why it could not start (also when `--rm` removed the record in between).
//!
//! The process started is not the supervisor itself: it forks the supervisor away and exits
//! (`kiln_sandbox::leave_parent`), and is reaped here. Whether the supervisor still lives is
//! told by its announcement pipe, whose last write end closes when it exits.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_store::{ContainerRecord, ContainerStatus, Store};

use crate::error::{Result, RuntimeError};
use crate::host::BeforeStart;
use crate::supervisor::{
    ALREADY_RUNNING, ATTACH_FIRST, START_FAILED, START_LIMIT, SUPERVISOR_MARKER,
};

/// Starts the supervisor of `record` and waits until it has started the container.
pub(crate) fn launch(
    store: &Store,
    record: &ContainerRecord,
    before_start: Option<BeforeStart<'_>>,
) -> Result<()> {
    let dir = store.container_dir(&record.id);
    let log_path = dir.join("supervisor.log");
    let diagnostics = std::fs::File::create(&log_path).map_err(RuntimeError::io(&log_path))?;
    // Both outlive a `--rm` removal of the container directory, which a container that ends
    // (or fails to start) before the first look below has already had.
    let diagnostics_reader = std::fs::File::open(&log_path).map_err(RuntimeError::io(&log_path))?;
    let exit = Some(store.watch_container_exit(&record.id)?);
    // The running binary itself, not the path it was started from: a `kiln serve` whose
    // binary was replaced on disk (an upgrade, a relink) keeps starting supervisors of its own
    // version, where `current_exe()`'s path names a deleted file or a different binary.
    // argv[0] keeps the path, so `ps` shows `kiln __kiln-supervise …`.
    let mut command = Command::new("/proc/self/exe");
    if let Ok(path) = std::env::current_exe() {
        std::os::unix::process::CommandExt::arg0(&mut command, path);
    }
    command
        .arg(SUPERVISOR_MARKER)
        .arg(store.root())
        .arg(&record.id);
    if before_start.is_some() {
        command.arg(ATTACH_FIRST);
    }
    // The supervisor's stdout is a pipe on which it announces each step (socket bound,
    // container started or failed), so this process sleeps until there is news.
    let (news, news_writer) = std::io::pipe().map_err(RuntimeError::io("pipe"))?;
    command
        .stdin(Stdio::null())
        .stdout(news_writer)
        .stderr(diagnostics);
    // The first process holds copies of this process's descriptors until it runs its own
    // program; a daemon unmounts build overlays meanwhile (`kiln_sandbox::fork_window`). It
    // only forks the supervisor and exits, so its end closes the window (and the supervisor,
    // forked from it after the exec, holds none of ours).
    let window = kiln_sandbox::fork_window::spawning();
    let spawned = command.spawn();
    // Our copy of the write end goes with the command, so the supervisor's exit reads as EOF.
    drop(command);
    let news = News::new(news);
    let mut first = spawned.map_err(RuntimeError::io("/proc/self/exe"))?;
    // Reaped here, so the launcher (a long-lived `kiln serve`) keeps no zombie of it; its
    // status stays with `first` for `follow` to read.
    let _ = first.wait();
    drop(window);
    follow(
        store,
        record,
        before_start,
        news,
        &mut first,
        diagnostics_reader,
        exit,
    )
}

/// Follows a launched supervisor until the container runs (or could not start).
fn follow(
    store: &Store,
    record: &ContainerRecord,
    mut before_start: Option<BeforeStart<'_>>,
    mut news: News,
    first: &mut std::process::Child,
    mut diagnostics_reader: std::fs::File,
    mut exit: Option<kiln_store::ExitWatch>,
) -> Result<()> {
    let started = record.state.started_at;
    let deadline = Instant::now() + START_LIMIT;
    let mut hooked = before_start.is_none();
    let mut forked = false;
    loop {
        if !hooked && let Some(hook) = before_start.as_mut() {
            hooked = hook()?;
        }
        let now = match store.find_container(&record.id) {
            Ok(now) => now,
            Err(kiln_store::ContainerError::NoSuchContainer(_)) => {
                // Removed by its own `--rm`: it ran (or failed to start, which the supervisor
                // then said in its log) and its exit code is in the lock.
                let code = match exit.take() {
                    Some(watch) => watch.wait()?,
                    None => None,
                };
                let mut log = String::new();
                let _ = diagnostics_reader.read_to_string(&mut log);
                return match start_failure(&log) {
                    Some(message) => Err(RuntimeError::StartFailed {
                        message,
                        exit_code: code.unwrap_or(125),
                    }),
                    None => Ok(()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        // A state written by this start (not the one the container had before): every start,
        // failed or not, writes its own start time. (A finished state alone is not this
        // start's: a failed start before it leaves one, with its error, which this start
        // must not report as its own.)
        let fresh = now.state.started_at != started;
        match now.state.status {
            ContainerStatus::Running if fresh => return Ok(()),
            ContainerStatus::Exited if fresh && !now.state.error.is_empty() => {
                return Err(RuntimeError::StartFailed {
                    message: now.state.error,
                    exit_code: now.state.exit_code,
                });
            }
            _ => {}
        }
        // The first process fails only if it could not fork the supervisor.
        if !forked && let Some(status) = first.try_wait().map_err(RuntimeError::io("supervisor"))? {
            forked = true;
            if !status.success() {
                let mut log = String::new();
                let _ = diagnostics_reader.read_to_string(&mut log);
                return Err(RuntimeError::SupervisorDied {
                    name: record.name.clone(),
                    status: status.to_string(),
                    log,
                });
            }
        }
        if news.eof {
            // Every end of the announcement pipe is closed: the supervisor is gone. It may
            // have run a short container to its end before the first look.
            let Ok(now) = store.find_container(&record.id) else {
                continue;
            };
            if now.state.started_at != started {
                return if now.state.error.is_empty() {
                    Ok(())
                } else {
                    Err(RuntimeError::StartFailed {
                        message: now.state.error,
                        exit_code: now.state.exit_code,
                    })
                };
            }
            let mut log = String::new();
            let _ = diagnostics_reader.read_to_string(&mut log);
            if log.lines().any(|l| l == ALREADY_RUNNING) {
                return Err(RuntimeError::state(&record.name)(
                    kiln_store::StateError::AlreadyRunning,
                ));
            }
            return Err(RuntimeError::SupervisorDied {
                name: record.name.clone(),
                status: "exited".into(),
                log,
            });
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::SupervisorTimeout {
                name: record.name.clone(),
                seconds: START_LIMIT.as_secs(),
            });
        }
        // Only news (or a slow timeout, in case) makes us look again: the supervisor announces
        // its bound attach socket as it does each step, so an attach-first client is connected
        // as soon as it can be, without trying every millisecond for a CPU the supervisor and
        // the sandbox need to get there.
        news.wait(Duration::from_millis(100));
    }
}

/// A supervisor's announcements, read on a thread of their own so the launcher can wait for
/// them with a timeout.
#[derive(Debug)]
struct News {
    received: std::sync::mpsc::Receiver<()>,
    eof: bool,
}

impl News {
    fn new(mut pipe: std::io::PipeReader) -> News {
        let (tx, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // Ends at the supervisor's exit (EOF) or once the launcher stopped listening.
            while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        News {
            received,
            eof: false,
        }
    }

    /// Waits up to `limit` for an announcement (or the supervisor's end).
    fn wait(&mut self, limit: Duration) {
        if self.eof {
            std::thread::sleep(limit.min(Duration::from_millis(10)));
            return;
        }
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
            self.received.recv_timeout(limit)
        {
            self.eof = true;
        }
    }
}

fn start_failure(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix(START_FAILED))
        .map(str::to_owned)
}
