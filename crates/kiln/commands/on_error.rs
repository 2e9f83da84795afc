//! `kiln build --on-error=fail|shell[:CMD]|keep`: what happens when a `RUN` fails
//! (`docs/on-error.md`).
//!
//! The engine hands the failed step over through `BuildRequest::on_run_failure` before it
//! cleans anything up ([`kiln_solve::FailedRun`]); this module decides what to do with it:
//!
//! - `shell`: a new sandbox from the very same spec (the upper dir with the step's changes over
//!   the same lower dirs, the same mounts, environment, user, working directory), running
//!   `/bin/sh` (or CMD) on a pty of its own, relayed to our terminal in raw mode as `kiln exec
//!   -it` does. The build's failure is still the result: the shell is for looking, not fixing.
//!   It needs a terminal on stdin, checked before the build starts: a user who asked for a
//!   shell and gets none after a long build would rather hear it at once (CI without a
//!   terminal uses `keep`).
//! - `keep`: the stage's layers are written as an unnamed image and a stopped container of it
//!   is created whose writable layer *is* the step's upper dir (moved, not copied, within the
//!   store), with the step's environment (secret variables left out: nothing secret is written
//!   to disk), user, working directory, and `/bin/sh` with a tty as its command, so `kiln
//!   start -ai` opens a shell there; `ps -a`, `commit`, `rm` treat it like any container.
//!   Mounts are not kept: cache directories belong to later builds, secrets must not be
//!   written, the context copy of a bind is gone with the build.
//!
//! Only the first failing step is handed over; when stages fail side by side the others fail
//! as usual. While the shell runs, progress events of the stages still finishing are queued
//! ([`Gate`]) and shown after it, so they do not write over it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use kiln_runtime::pty::{Pty, PtyReader};
use kiln_solve::{FailedRun, OnRunFailure, ProgressEvent};

use super::containers::terminal::{RawMode, copy_window_size, relay_input};
use crate::progress::{Outcome, Renderer};

/// The label a kept container carries: the step it was kept from.
pub const FAILED_STEP_LABEL: &str = "kiln.build.failed-step";

/// What `--on-error` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    Fail,
    /// The program (and its arguments) to run in the failed step's sandbox.
    Shell(Vec<String>),
    Keep,
}

impl OnError {
    /// Parses the flag's value; `shell` without a terminal on stdin is refused here, before the
    /// build starts.
    pub fn from_flag(flag: Option<&str>) -> Result<OnError> {
        let on_error = OnError::parse(flag)?;
        if matches!(on_error, OnError::Shell(_)) && !std::io::stdin().is_terminal() {
            bail!(
                "--on-error=shell needs a terminal on stdin to open the shell on; \
                 use --on-error=keep to keep the failed step as a container instead"
            );
        }
        Ok(on_error)
    }

    fn parse(flag: Option<&str>) -> Result<OnError> {
        Ok(match flag {
            None | Some("fail") => OnError::Fail,
            Some("keep") => OnError::Keep,
            Some("shell") => OnError::Shell(vec!["/bin/sh".to_owned()]),
            Some(other) => match other.strip_prefix("shell:") {
                Some(cmd) => {
                    let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
                    if argv.is_empty() {
                        bail!("--on-error=shell:CMD needs a command after `shell:`");
                    }
                    OnError::Shell(argv)
                }
                None => bail!(
                    "unsupported --on-error {other:?} (expected fail, shell, shell:CMD or keep)"
                ),
            },
        })
    }

    /// The renderer to build with: events are queued while a shell has the terminal.
    pub fn gate(&self, renderer: Arc<dyn Renderer>) -> Arc<Gate> {
        Arc::new(Gate {
            inner: renderer,
            queued: Mutex::new(None),
        })
    }

    /// The engine's hook for this choice (`None` for `fail`), and where it leaves what it has
    /// to say once the build's progress is finished ([`Handover::report`]).
    pub fn hook(&self, gate: &Arc<Gate>) -> (Option<OnRunFailure>, Handover) {
        let handover = Handover::default();
        let hook = match self.clone() {
            OnError::Fail => None,
            mode => {
                let gate = Arc::clone(gate);
                let taken = Arc::clone(&handover.taken);
                let notes = Arc::clone(&handover.notes);
                Some(OnRunFailure::new(move |failed: &FailedRun<'_>| {
                    if taken.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    let note = match &mode {
                        OnError::Shell(argv) => {
                            gate.hold(true);
                            let shell = open_shell(failed, argv);
                            gate.hold(false);
                            match shell {
                                Ok(_) => None,
                                Err(e) => Some(format!("--on-error=shell failed: {e:#}")),
                            }
                        }
                        OnError::Keep => Some(match keep(failed) {
                            Ok(kept) => kept,
                            Err(e) => format!("--on-error=keep failed: {e:#}"),
                        }),
                        OnError::Fail => None,
                    };
                    if let Some(note) = note {
                        notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
                    }
                }))
            }
        };
        (hook, handover)
    }
}

/// What the hook did, reported when the build has failed, through the progress renderer (a
/// line, the live view, or a JSON `warning` event: the rawjson stream stays JSON).
#[derive(Debug, Default)]
pub struct Handover {
    taken: Arc<AtomicBool>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Handover {
    pub fn report(&self, renderer: &dyn Renderer) {
        for note in self
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            renderer.event(ProgressEvent::Warning(note));
        }
    }
}

/// A renderer that queues events while another program has the terminal.
pub struct Gate {
    inner: Arc<dyn Renderer>,
    /// `Some` while held: the events to show once released.
    queued: Mutex<Option<Vec<ProgressEvent>>>,
}

impl Renderer for Gate {
    fn event(&self, event: ProgressEvent) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        match queued.as_mut() {
            Some(q) => q.push(event),
            None => {
                drop(queued);
                self.inner.event(event);
            }
        }
    }

    fn finish(&self, outcome: Outcome<'_>) {
        self.hold(false);
        self.inner.finish(outcome);
    }

    fn hold(&self, held: bool) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        if held {
            queued.get_or_insert_with(Vec::new);
            self.inner.hold(true);
        } else if let Some(events) = queued.take() {
            // Under the lock, so events sent meanwhile come after these.
            self.inner.hold(false);
            for event in events {
                self.inner.event(event);
            }
        }
    }
}

/// Runs `argv` in a new sandbox made from the failed step's spec, on a pty relayed to our
/// terminal, until it exits. Returns its exit code.
fn open_shell(failed: &FailedRun<'_>, argv: &[String]) -> Result<i32> {
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{} failed (exit code {}) at {}:{}; running {} in its sandbox as it was \
             (exit to end the build)",
            failed.step,
            failed.code,
            failed.location.file.display(),
            failed.location.line,
            argv.join(" "),
        );
        let _ = err.flush();
    }
    let pty = Pty::open().context("opening a pty for the shell")?;
    copy_window_size(std::io::stdin(), &pty.master);
    let mut process = failed.process.clone();
    process.args = argv.to_vec();
    process.terminal = true;
    let child = kiln_sandbox::spawn(failed.sandbox, &process, pty.stdio()?)
        .with_context(|| format!("starting {} in the failed step's sandbox", argv.join(" ")))?;
    let Pty { master, slave } = pty;
    // Only the shell keeps the slave open, so reading the master ends when it exits.
    drop(slave);
    let raw = RawMode::enter()?;
    relay_input(master.try_clone()?);
    let output = std::thread::spawn(move || {
        let _ = std::io::copy(&mut PtyReader(master), &mut std::io::stdout());
        let _ = std::io::stdout().flush();
    });
    let code = child.wait().map(|c| c.code());
    let _ = output.join();
    drop(raw);
    Ok(code?)
}

/// Keeps the failed step as a stopped container; returns the line that tells the user.
fn keep(failed: &FailedRun<'_>) -> Result<String> {
    let store = failed.store;
    let image = kiln_images::write_image(store, failed.config, failed.layers.to_vec())
        .context("writing the failed step's stage as an image")?;
    let process = failed.process;
    let env = process
        .env
        .iter()
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or_default();
            !failed.secret_vars.iter().any(|s| s == name)
        })
        .cloned()
        .collect();
    let mut request = kiln_runtime::ContainerCreateRequest::default();
    request.config.image = image.config_digest.to_string();
    request.config.cmd = Some(vec!["/bin/sh".to_owned()]);
    request.config.entrypoint = Some(Vec::new());
    request.config.env = env;
    request.config.working_dir = Some(process.cwd.clone());
    request.config.user = process.user.clone().filter(|u| !u.is_empty());
    request.config.tty = true;
    request.config.open_stdin = true;
    request
        .config
        .labels
        .insert(FAILED_STEP_LABEL.to_owned(), failed.step.to_string());
    let network = match failed.sandbox.network {
        kiln_sandbox::NetworkMode::Prepared => "none",
        other => other.name(),
    };
    request.host_config.network_mode = Some(network.to_owned());
    let runtime = kiln_runtime::Runtime::new(store.clone());
    let record = runtime
        .create(None, &request, &image)
        .context("creating the container")?;
    // The container's writable layer becomes the step's upper dir: both are in the store, so
    // this is a rename, and the container sees exactly the files the command left.
    let upper = store.container_dir(&record.id).join("upper");
    let moved = std::fs::remove_dir(&upper)
        .and_then(|()| std::fs::rename(&failed.sandbox.upper_dir, &upper))
        .with_context(|| format!("moving the step's changes to {}", upper.display()));
    if let Err(e) = moved {
        let _ = runtime.remove(&record.id, true, false);
        return Err(e);
    }
    Ok(format!(
        "kept {} (exit code {}) as container {} ({}): kiln start -ai {} to look inside, \
         kiln commit, kiln rm",
        failed.step,
        failed.code,
        record.name,
        &record.id[..12],
        record.name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        assert_eq!(OnError::parse(None).unwrap(), OnError::Fail);
        assert_eq!(OnError::parse(Some("fail")).unwrap(), OnError::Fail);
        assert_eq!(OnError::parse(Some("keep")).unwrap(), OnError::Keep);
        assert_eq!(
            OnError::parse(Some("shell")).unwrap(),
            OnError::Shell(vec!["/bin/sh".into()])
        );
        assert_eq!(
            OnError::parse(Some("shell:bash -l")).unwrap(),
            OnError::Shell(vec!["bash".into(), "-l".into()])
        );
        assert!(OnError::parse(Some("shell:")).is_err());
        let err = OnError::parse(Some("debug")).unwrap_err().to_string();
        assert!(err.contains("\"debug\""), "{err}");
    }
}
