//! A double of the host's processes for the container runtime's unit tests: containers that
//! "run" without namespaces or root. It knows nothing of the runtime's types (testkit depends on
//! no kiln crate but `image`); the runtime's tests implement its `Host` trait over it.
//!
//! Signals follow a simple model of a container's process: a signal in `fatal` ends a running
//! container with exit code 128 + signal, as an unhandled signal ends a real one; others are
//! recorded and ignored (a process that traps them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Table {
    /// id → pid of running containers.
    running: BTreeMap<String, u32>,
    /// id → exit code left by the last run.
    exits: BTreeMap<String, i32>,
    signals: Vec<(String, i32)>,
    launches: Vec<String>,
    fatal: BTreeSet<i32>,
    next_pid: u32,
    /// Launches that fail with this message instead of running.
    fail_launch: Option<String>,
}

/// The fake process table.
#[derive(Debug)]
pub struct FakeProcesses {
    table: Mutex<Table>,
}

impl Default for FakeProcesses {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProcesses {
    /// SIGKILL (9) and SIGTERM (15) end a container; nothing else does.
    pub fn new() -> Self {
        FakeProcesses {
            table: Mutex::new(Table {
                fatal: [9, 15].into(),
                next_pid: 1000,
                ..Table::default()
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `signal` ignored (a process that traps SIGTERM, so `stop` must escalate).
    pub fn ignore(&self, signal: i32) {
        self.table().fatal.remove(&signal);
    }

    /// The next launches fail with `message`.
    pub fn fail_launches(&self, message: &str) {
        self.table().fail_launch = Some(message.to_owned());
    }

    /// Starts a container's "process"; returns its pid, or the configured failure.
    pub fn launch(&self, id: &str) -> Result<u32, String> {
        let mut t = self.table();
        t.launches.push(id.to_owned());
        if let Some(message) = t.fail_launch.clone() {
            return Err(message);
        }
        t.next_pid += 1;
        let pid = t.next_pid;
        t.running.insert(id.to_owned(), pid);
        Ok(pid)
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.table().running.contains_key(id)
    }

    /// Delivers `signal`; false when the container is not running (nothing received it).
    pub fn signal(&self, id: &str, signal: i32) -> bool {
        let mut t = self.table();
        if !t.running.contains_key(id) {
            return false;
        }
        t.signals.push((id.to_owned(), signal));
        if t.fatal.contains(&signal) {
            t.running.remove(id);
            t.exits.insert(id.to_owned(), 128 + signal);
        }
        true
    }

    /// The process ends by itself with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        let mut t = self.table();
        t.running.remove(id);
        t.exits.insert(id.to_owned(), code);
    }

    pub fn exit_code(&self, id: &str) -> Option<i32> {
        self.table().exits.get(id).copied()
    }

    /// Signals delivered, in order.
    pub fn signals(&self) -> Vec<(String, i32)> {
        self.table().signals.clone()
    }

    /// Containers launched, in order (failed launches included).
    pub fn launches(&self) -> Vec<String> {
        self.table().launches.clone()
    }
}
