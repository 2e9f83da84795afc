//! `RUN`: execute a command in the sandbox on an overlay of the stage's layers, then turn the
//! overlay's upper dir into a layer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::sync::Mutex;

use kiln_dockerfile::{Heredoc, Instruction, ShellOrExec};
use kiln_image::LayerRef;
use kiln_sandbox::{NetworkMode, ProcessSpec, SandboxSpec};

use crate::error::{Result, SolveError};
use crate::mounts::ActiveMounts;
use crate::progress::{OutputStream, ProgressEvent, StepLabel};
use crate::stage::{StageBuilder, StageState};

/// The hostname RUN sees unless `--build-arg BUILDKIT_SANDBOX_HOSTNAME=…` sets one.
const DEFAULT_HOSTNAME: &str = "kiln";

/// Lines of output kept for the error message of a failed step.
const OUTPUT_TAIL_LINES: usize = 20;

impl StageBuilder<'_> {
    /// The sandbox network of a RUN step: `--network=default` (or none given) is the build's;
    /// `host` must be allowed by the build (`--allow network.host`, or `--network host` for the
    /// whole build), as BuildKit requires the `network.host` entitlement.
    pub(crate) fn network_for(&self, ins: &Instruction, flag: Option<&str>) -> Result<NetworkMode> {
        match flag {
            None | Some("default") => Ok(self.req.network),
            Some("none") => Ok(NetworkMode::None),
            Some("host")
                if self.req.allow_network_host || self.req.network == NetworkMode::Host =>
            {
                Ok(NetworkMode::Host)
            }
            Some("host") => Err(self.fail(
                ins,
                "RUN --network=host is not allowed: the build must be started with \
                 --allow network.host",
            )),
            Some(other) => Err(self.fail(
                ins,
                format!("unsupported network mode {other:?} (expected none, host or default)"),
            )),
        }
    }

    /// BuildKit's `BUILDKIT_SANDBOX_HOSTNAME` build option, when given.
    fn sandbox_hostname(&self) -> Option<String> {
        self.plan
            .build_args
            .get("BUILDKIT_SANDBOX_HOSTNAME")
            .filter(|h| !h.is_empty())
            .cloned()
    }

    /// A `RUN` instruction: its cache key inputs, then (on a miss) its execution. The RUN's
    /// fields come one by one, as the dispatch in `stage.rs` destructures them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_step(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        cmd: &ShellOrExec,
        network: Option<&str>,
        mounts: &[String],
        heredocs: &[Heredoc],
    ) -> Result<()> {
        let network = self.network_for(ins, network)?;
        let mounts = self.plan_mounts(state, ins, mounts)?;
        for mount in &mounts {
            if let crate::mounts::PlannedMount::Cache {
                id,
                dir_key,
                settings,
                ..
            } = mount
            {
                self.remote
                    .note_cache_mount(self.stage.index, id, dir_key, *settings);
            }
        }
        let line = crate::heredoc::run_command_line(state, cmd, heredocs)
            .map_err(|message| self.fail(ins, message))?;
        let argv = line.argv;
        let (env, build_args) = state.key_env();
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let user = state.config.config.user.clone().unwrap_or_default();
        let custom_hostname = self.sandbox_hostname();
        self.fs_step(
            state,
            ins,
            label,
            |key| {
                key.list("argv", argv.iter().map(String::as_str));
                key.list("env", env.iter().map(String::as_str));
                key.list("build-args", build_args.iter().map(String::as_str));
                key.field("workdir", &workdir);
                key.field("user", &user);
                key.field("network", network.name());
                key.field("mounts", &mounts.len().to_string());
                for mount in &mounts {
                    mount.add_to_key(key);
                }
                if let Some(hostname) = custom_hostname.as_deref() {
                    key.field("hostname", hostname);
                }
                // As in BuildKit, where they are part of the exec op; absent, keys are as before.
                if !self.req.extra_hosts.is_empty() {
                    let hosts: Vec<String> = self
                        .req
                        .extra_hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    key.list("extra-hosts", hosts.iter().map(String::as_str));
                }
                // Part of BuildKit's exec op too; absent, keys are as before.
                let settings = &self.req.settings;
                if let Some(size) = settings.shm_size {
                    key.field("shm-size", &size.to_string());
                }
                if !settings.ulimits.is_empty() {
                    let limits: Vec<String> =
                        settings.ulimits.iter().map(ToString::to_string).collect();
                    key.list("ulimits", limits.iter().map(String::as_str));
                }
                if let Some(script) = &line.script {
                    key.field("heredoc-script", &script.name)
                        .field("heredoc-body", &script.content);
                }
                Ok(())
            },
            |b, st, label| {
                let mut active = b.materialize_mounts(ins, &mounts)?;
                // A `#!` heredoc is a file on a read-only mount that lives as long as the run.
                let pipes;
                if let Some(script) = &line.script {
                    pipes = b.engine.store.temp_dir("pipes-")?;
                    let mount = script.materialize(pipes.path()).map_err(|source| {
                        SolveError::ReadFile {
                            path: pipes.path().to_path_buf(),
                            source,
                        }
                    })?;
                    active.mounts.push(mount.into());
                }
                b.exec_run(st, ins, label, &argv, network, &active)
            },
        )
    }

    pub(crate) fn exec_run(
        &self,
        state: &StageState,
        ins: &Instruction,
        label: &StepLabel,
        argv: &[String],
        network: NetworkMode,
        mounts: &ActiveMounts,
    ) -> Result<Option<LayerRef>> {
        let store = &self.engine.store;
        let lowers = self.lower_dirs(state.layer_refs())?;
        let work = store.temp_dir("run-")?;
        let upper = work.path().join("upper");
        let overlay_work = work.path().join("work");
        for d in [&upper, &overlay_work] {
            std::fs::create_dir(d).map_err(|source| SolveError::ReadFile {
                path: d.clone(),
                source,
            })?;
        }
        let spec = SandboxSpec {
            lower_dirs: lowers,
            upper_dir: upper.clone(),
            work_dir: overlay_work,
            network,
            hostname: self
                .sandbox_hostname()
                .unwrap_or_else(|| DEFAULT_HOSTNAME.into()),
            mounts: mounts.mounts.clone(),
            // BuildKit's defaults for RUN: Docker's capabilities, seccomp, masked paths.
            security: Default::default(),
            resources: Default::default(),
            extra_hosts: self.req.extra_hosts.clone(),
            dns: Vec::new(),
            shm_size: self.req.settings.shm_size,
            ulimits: self.req.settings.ulimits.clone(),
            names: Default::default(),
        };
        // Secrets exposed as variables reach the process only, never the image's config.
        let mut env = state.process_env();
        let mut secret_vars = Vec::new();
        for var in &mounts.env {
            let name = var.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(var.clone());
            secret_vars.push(name.to_owned());
        }
        let process = ProcessSpec {
            args: argv.to_vec(),
            env,
            cwd: state
                .config
                .config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".into()),
            user: state.config.config.user.clone(),
            terminal: false,
        };
        let pipe_error = |cause| SolveError::Io {
            what: "pipe".into(),
            cause,
        };
        // Close-on-exec: other stages and builds of this process spawn sandboxes meanwhile,
        // and one that inherited a writer would hold the step's output open (no end of file)
        // until it exits. One pipe per stream, so that front ends can tell stderr apart.
        let (out_reader, out_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| pipe_error(e.into()))?;
        let (err_reader, err_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| pipe_error(e.into()))?;
        let stdio = kiln_sandbox::Stdio {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::from(out_writer),
            stderr: std::process::Stdio::from(err_writer),
        };
        let child = kiln_sandbox::spawn(&spec, &process, stdio)
            .map_err(|e| self.step_error(ins, label, e.into()))?;

        let pid = child.pid();
        // While the step's processes only wait, its stage lends its `--jobs` slot.
        let (stop_sampling, stopped) = std::sync::mpsc::channel::<()>();
        let (stop_watching, unwatched) = std::sync::mpsc::channel::<()>();
        let cancel = &self.engine.cancel;
        // Both streams feed one tail (for the error message), in the order lines arrive.
        let tail: Mutex<VecDeque<String>> = Mutex::new(VecDeque::with_capacity(OUTPUT_TAIL_LINES));
        let exit = std::thread::scope(|scope| {
            if let Some(slot) = self.slot {
                scope.spawn(move || crate::schedule::lend_while_idle(slot, pid, &stopped));
            }
            let watcher = scope.spawn(move || kill_when_cancelled(cancel, pid, &unwatched));
            let tail = &tail;
            let stderr = scope.spawn(move || {
                self.forward_output(label, OutputStream::Stderr, err_reader, tail);
            });
            self.forward_output(label, OutputStream::Stdout, out_reader, tail);
            let _ = stderr.join();
            // The watcher signals by pid, so it must be gone before the pid is reaped (and
            // could be reused).
            drop(stop_watching);
            let _ = watcher.join();
            let exit = child.wait();
            drop(stop_sampling);
            exit
        });
        let tail = tail.into_inner().unwrap_or_else(|e| e.into_inner());
        // What follows (committing the layer, the next step) waits for room if the slot is lent.
        if let Some(slot) = self.slot {
            slot.resume();
        }
        let code = exit
            .map_err(|e| self.step_error(ins, label, e.into()))?
            .code();
        if code != 0 {
            let location = self.src.at(ins);
            // Before anything of the step is cleaned up (`work`, the mounts): the caller may
            // open a shell in it or keep it (`--on-error`). Not for a step killed because the
            // build was cancelled (Ctrl-C): that is no failure to look into.
            let hook = self
                .req
                .on_run_failure
                .as_ref()
                .filter(|_| !self.engine.cancel.is_cancelled());
            if let Some(hook) = hook {
                (hook.0)(&crate::failed_step::FailedRun {
                    step: label,
                    location: &location,
                    code,
                    sandbox: &spec,
                    process: &process,
                    secret_vars,
                    config: &state.config,
                    layers: &state.layers,
                    store,
                });
            }
            return Err(SolveError::RunFailed {
                step: label.to_string(),
                command: argv.join(" "),
                code,
                output_tail: tail.into_iter().collect(),
                location,
            });
        }
        self.commit_upper(ins, label, &upper)
    }

    /// Writes an overlay upper dir as a layer and keeps the dir as that layer's snapshot.
    pub(crate) fn commit_upper(
        &self,
        ins: &Instruction,
        label: &StepLabel,
        upper: &std::path::Path,
    ) -> Result<Option<LayerRef>> {
        let store = &self.engine.store;
        // With SOURCE_DATE_EPOCH, no mtime in the layer is newer than it (the snapshot kept
        // from the upper dir keeps the real times, as BuildKit's snapshots do).
        let tar = crate::epoch::SourceDateEpoch::tar_options(self.epoch());
        let layer =
            kiln_layer::write_layer_with(store, upper, self.req.compression.compression, tar)
                .map_err(|e| self.step_error(ins, label, e.into()))?;
        if let Some(l) = &layer {
            // The upper dir already holds the layer in overlay form (whiteouts as 0:0 devices),
            // exactly what a snapshot is: keep it instead of unpacking the blob again.
            let _lock = store.lock_object(kiln_store::ObjectLock::Snapshot(&l.diff_id))?;
            store.adopt_snapshot(upper, &l.diff_id)?;
        }
        Ok(layer)
    }

    /// Reads one of a RUN's output pipes to its end, a progress event per line.
    fn forward_output(
        &self,
        label: &StepLabel,
        stream: OutputStream,
        reader: rustix::fd::OwnedFd,
        tail: &Mutex<VecDeque<String>>,
    ) {
        let mut lines = BufReader::new(std::fs::File::from(reader));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    {
                        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if tail.len() == OUTPUT_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                    }
                    (self.progress)(ProgressEvent::StepOutput {
                        step: label.clone(),
                        stream,
                        line,
                    });
                }
            }
        }
    }

    pub(crate) fn step_error(
        &self,
        ins: &Instruction,
        label: &StepLabel,
        source: SolveError,
    ) -> SolveError {
        SolveError::Step {
            step: label.to_string(),
            location: self.src.at(ins),
            source: Box::new(source),
        }
    }
}

/// How often a running RUN step looks at its build's cancel token.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Kills the sandbox whose outer init is `pid` once `cancel` is cancelled, until `stop` is
/// dropped. SIGKILL to the outer init is enough: the namespace's PID 1 has it as parent-death
/// signal source and takes the whole PID namespace with it, so the step's output pipe closes and
/// the step ends (failing, so nothing of it is recorded).
fn kill_when_cancelled(
    cancel: &crate::CancelToken,
    pid: u32,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match stop.recv_timeout(CANCEL_POLL) {
            Err(RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                let pid = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw);
                if let Some(pid) = pid {
                    // It may have exited already (not yet reaped: the pid is still its own).
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
