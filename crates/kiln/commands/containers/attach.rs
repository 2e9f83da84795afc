//! The client side of attaching, shared by `kiln run`, `kiln start -a` and `kiln attach`: this
//! process's stdin to the container (until it ends), the container's stdout and stderr to
//! ours, and with a tty: raw mode on our terminal and its window size (at start and on each
//! SIGWINCH) to the container's pty.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use kiln_runtime::{AttachRequest, AttachStream, Runtime, RuntimeError, StreamType, WaitCondition};
use kiln_store::ContainerRecord;

use super::super::Env;
use super::terminal::RawMode;

/// Starts `record` with this process attached, relays until its output ends and returns its
/// exit code (Docker's 125/126/127 when it could not start, after the error).
pub fn run_attached(
    env: &Env,
    rt: &Runtime,
    record: &ContainerRecord,
    request: AttachRequest,
    proxy_signals: bool,
) -> Result<ExitCode> {
    // Opened first: a `--rm` container's record is gone by the time it is waited for.
    let exit = rt.store.watch_container_exit(&record.id)?;
    // Before the start: once others can see the container running, a signal to this process
    // must reach the container, not end this process.
    if proxy_signals && !record.config.tty {
        forward_signals(env, rt, record);
    }
    let stream = match rt.start_attached(&record.id, request.clone()) {
        Ok(stream) => stream,
        Err(RuntimeError::StartFailed { message, exit_code }) => {
            crate::render::print_error(&anyhow::anyhow!(message));
            return Ok(ExitCode::from(exit_code.clamp(0, 255) as u8));
        }
        Err(e) => return Err(e.into()),
    };
    if relay(env, rt, record, stream, &request)? == Relayed::Detached {
        return Ok(ExitCode::SUCCESS);
    }
    exit_code(rt, record, exit)
}

/// The exit code of a container whose output ended: the one its supervisor left in the
/// running lock, else the record's (a supervisor killed outright leaves none).
pub fn exit_code(
    rt: &Runtime,
    record: &ContainerRecord,
    exit: kiln_store::ExitWatch,
) -> Result<ExitCode> {
    let code = match exit.wait()? {
        Some(code) => code,
        None => rt.wait(&record.id, WaitCondition::NotRunning)?,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The container's output ended.
    Ended,
    /// The user typed the detach keys: the container runs on.
    Detached,
}

/// Relays between this process and the container until the container's output ends, or the
/// user types the detach keys (with a tty).
pub fn relay(
    env: &Env,
    rt: &Runtime,
    record: &ContainerRecord,
    mut stream: AttachStream,
    request: &AttachRequest,
) -> Result<Relayed> {
    let (tty, stdin) = (record.config.tty, request.stdin);
    // The supervisor watches the input for the detach keys and then hangs up; this watch
    // of the same bytes only tells a hang-up after them from the container's end.
    let detached = Arc::new(AtomicBool::new(false));
    let mut watch = request
        .detach_keys
        .as_ref()
        .filter(|_| tty)
        .map(|keys| keys.watch());
    let raw = if tty && stdin {
        RawMode::enter()?
    } else {
        None
    };
    if tty {
        forward_window_size(env, rt, record);
    }
    if stdin {
        let mut input = stream.input()?;
        let detached = Arc::clone(&detached);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 8192];
            let mut ignored = Vec::new();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(watch) = watch.as_mut()
                    && watch.feed(&buf[..n], &mut ignored)
                {
                    detached.store(true, Ordering::SeqCst);
                }
                ignored.clear();
                if input.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = input.shutdown(std::net::Shutdown::Write);
        });
    }
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some((kind, bytes)) = stream.read_output()? {
        // The caller going away (a closed pipe) must not stop the container.
        let _ = match kind {
            StreamType::Stderr => stderr.write_all(&bytes).and_then(|()| stderr.flush()),
            _ => stdout.write_all(&bytes).and_then(|()| stdout.flush()),
        };
    }
    drop(raw);
    Ok(if detached.load(Ordering::SeqCst) {
        Relayed::Detached
    } else {
        Relayed::Ended
    })
}

/// Our terminal's window size to the container's pty, now and on every SIGWINCH.
fn forward_window_size(env: &Env, rt: &Runtime, record: &ContainerRecord) {
    let send = {
        let (store, record) = (rt.store.clone(), record.clone());
        move || {
            if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdin()) {
                let _ = kiln_runtime::attach::resize(&store, &record, size.ws_row, size.ws_col);
            }
        }
    };
    send();
    env.rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut changes) = signal(SignalKind::window_change()) else {
            return;
        };
        while changes.recv().await.is_some() {
            send();
        }
    });
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT to this process go to the container instead (Docker's
/// `--sig-proxy`); the container's exit then ends the relay.
fn forward_signals(env: &Env, rt: &Runtime, record: &ContainerRecord) {
    use tokio::signal::unix::{SignalKind, signal};
    // The handlers are installed here, not in the tasks, so they are in place when this
    // returns.
    let _context = env.rt.enter();
    for (kind, name) in [
        (SignalKind::interrupt(), "INT"),
        (SignalKind::terminate(), "TERM"),
        (SignalKind::hangup(), "HUP"),
        (SignalKind::quit(), "QUIT"),
    ] {
        let Ok(mut signals) = signal(kind) else {
            continue;
        };
        let (rt, id) = (rt.clone(), record.id.clone());
        env.rt.spawn(async move {
            while signals.recv().await.is_some() {
                let _ = rt.kill(&id, name);
            }
        });
    }
}
