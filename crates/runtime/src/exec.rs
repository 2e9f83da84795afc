//! Exec instances, as the Engine API has them: `exec_create` records a process to run in a
//! running container (`containers/<id>/execs/<exec id>.json`), `exec_start` starts it in the
//! container's namespaces and cgroup with the container's own confinement, and the record then
//! says whether it runs and, once it ended, its exit code (`exec_inspect`). The records go with
//! their container.

use std::path::PathBuf;

use kiln_sandbox::{ProcessSpec, SandboxChild};
use kiln_store::{ContainerRecord, Digest};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::spec::ContainerSpec;

/// What to run (the Engine API's `ExecConfig`, the fields kiln implements).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    /// `K=V` entries over the container's environment.
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub tty: bool,
    pub attach_stdin: bool,
}

/// An exec instance (what `exec_inspect` gives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecRecord {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub process: ProcessSpec,
    pub running: bool,
    /// `None` until the process ended.
    pub exit_code: Option<i32>,
    /// Host pid of the exec helper while it runs.
    pub pid: u32,
}

fn exec_path(rt_store: &kiln_store::Store, container: &str, exec: &str) -> PathBuf {
    rt_store
        .container_dir(container)
        .join("execs")
        .join(format!("{exec}.json"))
}

/// A started exec; [`Exec::wait`] records its exit code.
#[derive(Debug)]
pub struct Exec {
    pub child: SandboxChild,
    record: ExecRecord,
    path: PathBuf,
}

impl Exec {
    /// Waits for the process and records its exit code.
    pub fn wait(mut self) -> Result<i32> {
        let code = self.child.wait()?.code();
        self.record.running = false;
        self.record.exit_code = Some(code);
        self.record.pid = 0;
        write(&self.path, &self.record)?;
        Ok(code)
    }
}

fn write(path: &PathBuf, record: &ExecRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| RuntimeError::CorruptSpec {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Written whole under another name and renamed, so a reader never sees half of it.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(RuntimeError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(RuntimeError::io(path))
}

impl<H: Host> Runtime<H> {
    /// Records an exec of `config` in the running container `query`; returns its ID.
    pub fn exec_create(&self, query: &str, config: &ExecConfig) -> Result<ExecRecord> {
        let c = self.container(query)?;
        c.state.can_exec().map_err(RuntimeError::state(&c.name))?;
        if config.cmd.is_empty() {
            return Err(RuntimeError::NoCommand);
        }
        let process = exec_process(&c, config)?;
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let id = Digest::of(format!("{}\0{nanos}\0{}", c.id, std::process::id()).as_bytes())
            .hex()
            .to_owned();
        let record = ExecRecord {
            id,
            container_id: c.id.clone(),
            process,
            running: false,
            exit_code: None,
            pid: 0,
        };
        let dir = self.store.container_dir(&c.id).join("execs");
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io(&dir))?;
        write(&exec_path(&self.store, &c.id, &record.id), &record)?;
        Ok(record)
    }

    /// The exec `id` (full, or a unique prefix), wherever its container is.
    pub fn exec_inspect(&self, id: &str) -> Result<ExecRecord> {
        for c in self.store.list_containers()? {
            let dir = self.store.container_dir(&c.id).join("execs");
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(exec) = name.strip_suffix(".json")
                    && !id.is_empty()
                    && exec.starts_with(id)
                {
                    let bytes =
                        std::fs::read(entry.path()).map_err(RuntimeError::io(entry.path()))?;
                    return serde_json::from_slice(&bytes).map_err(|e| RuntimeError::CorruptSpec {
                        path: entry.path(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(RuntimeError::NoSuchExec(id.to_owned()))
    }

    /// Starts the exec `id` with `stdio`, confined exactly as its container's own process.
    pub fn exec_start(&self, id: &str, stdio: kiln_sandbox::Stdio) -> Result<Exec> {
        let mut record = self.exec_inspect(id)?;
        let c = self.container(&record.container_id)?;
        c.state.can_exec().map_err(RuntimeError::state(&c.name))?;
        if record.running || record.exit_code.is_some() {
            return Err(RuntimeError::ExecStarted(record.id));
        }
        let security = ContainerSpec::read(&self.store, &c.id)?.sandbox.security;
        let path = exec_path(&self.store, &c.id, &record.id);
        let child = match kiln_sandbox::spawn_in(c.state.pid, &record.process, &security, stdio) {
            Ok(child) => child,
            Err(e) => {
                // A process that could not start has ended, with dockerd's code for it.
                let e = RuntimeError::from(e);
                record.exit_code = Some(exec_failure_code(&e));
                write(&path, &record)?;
                return Err(e);
            }
        };
        record.running = true;
        record.pid = child.pid();
        write(&path, &record)?;
        Ok(Exec {
            child,
            record,
            path,
        })
    }
}

/// dockerd's exit code of an exec that could not start: 127 when its program does not exist,
/// else 126 (dockerd's code for any failed exec start).
pub fn exec_failure_code(error: &RuntimeError) -> i32 {
    use kiln_sandbox::{InitFailure, SandboxError};
    match error {
        RuntimeError::Sandbox(SandboxError::Init(InitFailure::ExecutableNotFound { .. })) => 127,
        _ => 126,
    }
}

/// The exec'd process: the container's user, working directory and environment, overridden
/// as `config` says.
fn exec_process(c: &ContainerRecord, config: &ExecConfig) -> Result<ProcessSpec> {
    let mut env = c.config.env.clone();
    for entry in config.env.iter().filter(|e| e.contains('=')) {
        let key = entry.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| Some(c.config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(RuntimeError::Invalid {
            what: "working directory",
            value: cwd,
            reason: "not an absolute path",
        });
    }
    Ok(ProcessSpec {
        args: config.cmd.clone(),
        env,
        cwd,
        user: config
            .user
            .clone()
            .or_else(|| Some(c.config.user.clone()))
            .filter(|u| !u.is_empty()),
        terminal: config.tty,
    })
}
