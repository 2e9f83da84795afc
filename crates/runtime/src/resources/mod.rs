//! What a running container's processes use and may use: `top` (its process table),
//! `stats` (a sample of CPU, memory, pids, block I/O and network counters) and `update` (new
//! resource limits).
//!
//! The key decision: numbers come from `/proc` of the container's own processes (every
//! process in its PID namespace) rather than from a cgroup, because a container gets a cgroup
//! of its own only when it has limits; where it has one, its memory figures (which count the
//! page cache the way `docker stats` expects) are read from it instead. Network counters are
//! the container's network namespace's, read through its PID 1 (`/proc/<pid>/net/dev`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_sandbox::ResourceLimits;
use kiln_store::{ContainerRecord, Timestamp};

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::spec::ContainerSpec;

mod ps;

use ps::{PsFormat, boot_context};

/// Clock ticks per second of `/proc`'s times (USER_HZ, 100 on every Linux architecture kiln
/// runs on).
const TICKS: u64 = 100;

/// One process of a container, as `/proc` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// `/proc/<pid>/stat`'s `tty_nr` (0: none).
    pub tty: u64,
    /// CPU time used, in clock ticks.
    pub cpu_ticks: u64,
    /// Start, in clock ticks after boot.
    pub start_ticks: u64,
    pub rss_bytes: u64,
    pub vsz_bytes: u64,
    pub state: char,
    /// The command line, or `[comm]` for a kernel-style process without one.
    pub command: String,
}

/// `docker top`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// One sample of a container's resource use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSample {
    pub read: Option<Timestamp>,
    /// CPU time of the container's processes (and the children they reaped), nanoseconds.
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// The host's CPU time since boot, nanoseconds (`system_cpu_usage`).
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub memory_usage: u64,
    /// The cgroup's peak, where there is a cgroup v1 to say.
    pub memory_max_usage: Option<u64>,
    pub memory_limit: u64,
    /// The cgroup's `memory.stat` (page cache, inactive file, …), where there is a cgroup.
    pub memory_stats: BTreeMap<String, u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Interface → (rx bytes, rx packets, rx errors, rx dropped, tx bytes, tx packets, tx
    /// errors, tx dropped), without `lo`.
    pub networks: BTreeMap<String, [u64; 8]>,
}

/// What `update` may change (Docker's `POST /containers/{id}/update`); `None` keeps a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateRequest {
    /// Bytes; `Some(0)` removes the limit.
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// `Some(0)` or `Some(-1)` removes the limit.
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<crate::spec::RestartPolicy>,
}

impl<H: Host> Runtime<H> {
    fn running(&self, query: &str) -> Result<ContainerRecord> {
        let c = self.container(query)?;
        c.state.can_kill().map_err(RuntimeError::state(&c.name))?;
        Ok(c)
    }

    /// The container's processes.
    pub fn processes(&self, query: &str) -> Result<Vec<ProcessInfo>> {
        let c = self.running(query)?;
        let mut out = Vec::new();
        for pid in own_processes(c.state.pid)? {
            // A process that exited meanwhile is no error.
            if let Some(p) = process_info(pid) {
                out.push(p);
            }
        }
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    /// `docker top`: the container's processes as `ps` with `ps_args` would show them
    /// (`-ef` by default; `aux`, and `-o`/`-eo` with a field list, as well).
    pub fn top(&self, query: &str, ps_args: &str) -> Result<Top> {
        let format = PsFormat::parse(ps_args)?;
        let processes = self.processes(query)?;
        Ok(format.render(&processes, &boot_context()))
    }

    /// A sample of the container's resource use.
    pub fn stats(&self, query: &str) -> Result<StatsSample> {
        let c = self.running(query)?;
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        let limits = spec.sandbox.resources;
        let mut s = StatsSample {
            read: Some(chrono::Utc::now()),
            ..StatsSample::default()
        };
        let pids = own_processes(c.state.pid)?;
        let mut rss = 0;
        for &pid in &pids {
            let Some(stat) = read_stat(pid) else { continue };
            let tick_ns = 1_000_000_000 / TICKS;
            s.cpu_user_ns += (stat.utime + stat.cutime) * tick_ns;
            s.cpu_system_ns += (stat.stime + stat.cstime) * tick_ns;
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                rss += field(&status, "VmRSS:") * 1024;
            }
            if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
                s.io_read_bytes += field(&io, "read_bytes:");
                s.io_write_bytes += field(&io, "write_bytes:");
            }
        }
        s.cpu_total_ns = s.cpu_user_ns + s.cpu_system_ns;
        s.pids = pids.len() as u64;
        s.pids_limit = limits.pids;
        let (system_ns, cpus) = host_cpu();
        s.system_cpu_ns = system_ns;
        s.online_cpus = cpus;
        let host_memory = field(
            &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            "MemTotal:",
        ) * 1024;
        s.memory_limit = limits.memory_bytes.unwrap_or(host_memory);
        match memory_cgroup(c.state.pid) {
            Some(MemoryCgroup::V1(dir)) => {
                s.memory_usage = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(rss);
                s.memory_max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"));
                s.memory_stats = read_stat_file(&dir.join("memory.stat"));
            }
            Some(MemoryCgroup::V2(dir)) => {
                s.memory_usage = read_u64(&dir.join("memory.current")).unwrap_or(rss);
                s.memory_stats = read_stat_file(&dir.join("memory.stat"));
            }
            None => s.memory_usage = rss,
        }
        if let Ok(dev) = std::fs::read_to_string(format!("/proc/{}/net/dev", c.state.pid)) {
            s.networks = parse_net_dev(&dev);
        }
        Ok(s)
    }

    /// New resource limits: written to the container's spec (for its next start), and, while
    /// it runs, to its cgroup. Returns warnings for limits that could not be applied to the
    /// running container (it has no cgroup for them: it was started without such a limit).
    pub fn update(&self, query: &str, request: &UpdateRequest) -> Result<Vec<String>> {
        let c = self.container(query)?;
        let mut spec = ContainerSpec::read(&self.store, &c.id)?;
        if let Some(policy) = &request.restart_policy {
            policy.check()?;
            // dockerd's rule, as at create: a `--rm` container is never restarted.
            if c.auto_remove && policy.restarts() {
                return Err(RuntimeError::Invalid {
                    what: "restart policy",
                    value: policy.name.clone(),
                    reason: "cannot be updated because AutoRemove is enabled for the container",
                });
            }
        }
        let mut limits: ResourceLimits = spec.sandbox.resources;
        let mut check = crate::create::HostConfig::default();
        if let Some(m) = request.memory {
            check.memory = m;
            limits.memory_bytes = check.resource_limits()?.memory_bytes;
        }
        if let Some(n) = request.nano_cpus {
            check = crate::create::HostConfig {
                nano_cpus: n,
                ..Default::default()
            };
            limits.nano_cpus = check.resource_limits()?.nano_cpus;
        }
        if let Some(p) = request.pids_limit {
            check = crate::create::HostConfig {
                pids_limit: Some(p),
                ..Default::default()
            };
            limits.pids = check.resource_limits()?.pids;
        }
        let mut warnings = Vec::new();
        if c.state.is_running() && c.state.pid != 0 {
            let live = ResourceLimits {
                memory_bytes: request.memory.and(limits.memory_bytes),
                pids: request.pids_limit.and(limits.pids),
                nano_cpus: request.nano_cpus.and(limits.nano_cpus),
            };
            for what in kiln_sandbox::apply_limits(c.state.pid, &live)? {
                warnings.push(format!(
                    "the {what} limit applies from the container's next start: it was started \
                     without one, so it has no cgroup to change"
                ));
            }
        }
        spec.sandbox.resources = limits;
        if let Some(policy) = &request.restart_policy {
            spec.restart_policy = policy.clone();
        }
        spec.write(&self.store, &c.id)?;
        Ok(warnings)
    }
}

/// The processes of the container whose PID 1 is `pid`, without kiln's sandbox init (which
/// only starts the command and reaps orphans: dockerd's containers have no such process to
/// show, and `docker top` users look for their command).
fn own_processes(pid: u32) -> Result<Vec<u32>> {
    Ok(crate::freeze::container_processes(pid)?
        .into_iter()
        .filter(|&p| !is_sandbox_init(p))
        .collect())
}

/// Whether `pid` runs kiln's sandbox init (`<kiln> __kiln-sandbox-init …`).
fn is_sandbox_init(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .is_some_and(|c| c.split(|&b| b == 0).nth(1) == Some(b"__kiln-sandbox-init"))
}

/// The `/proc/<pid>/stat` fields kiln reads.
struct Stat {
    ppid: u32,
    state: char,
    tty: u64,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    start: u64,
    comm: String,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid …`, where comm may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // f[0] is field 3 (state).
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: n(1)? as u32,
        tty: n(4)?,
        utime: n(11)?,
        stime: n(12)?,
        cutime: f.get(13)?.parse::<i64>().ok()?.max(0) as u64,
        cstime: f.get(14)?.parse::<i64>().ok()?.max(0) as u64,
        start: n(19)?,
        comm,
    })
}

fn process_info(pid: u32) -> Option<ProcessInfo> {
    let stat = read_stat(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let command = if args.is_empty() {
        format!("[{}]", stat.comm)
    } else {
        args.join(" ")
    };
    Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        uid,
        tty: stat.tty,
        cpu_ticks: stat.utime + stat.stime,
        start_ticks: stat.start,
        // `VmRSS`/`VmSize` in kB (the page size is not needed).
        rss_bytes: field(&status, "VmRSS:") * 1024,
        vsz_bytes: field(&status, "VmSize:") * 1024,
        state: stat.state,
        command,
    })
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_stat_file(path: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The host's CPU time since boot (nanoseconds) and its number of CPUs, from `/proc/stat`.
fn host_cpu() -> (u64, u32) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut total = 0;
    let mut cpus = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            total = rest
                .split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
        } else if line.starts_with("cpu") {
            cpus += 1;
        }
    }
    (total * (1_000_000_000 / TICKS), cpus.max(1))
}

enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// The container's own (`kiln-…`) memory cgroup, if it has one.
fn memory_cgroup(pid: u32) -> Option<MemoryCgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !path.rsplit('/').next()?.starts_with("kiln-") {
            continue;
        }
        if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Some(MemoryCgroup::V2(
                Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            ));
        }
        if controllers.split(',').any(|c| c == "memory") {
            return Some(MemoryCgroup::V1(
                Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')),
            ));
        }
    }
    None
}

/// `/proc/net/dev`'s counters per interface, without `lo`.
fn parse_net_dev(text: &str) -> BTreeMap<String, [u64; 8]> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if v.len() >= 12 {
            out.insert(
                name.to_owned(),
                [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]],
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 34816 4242 4194560 100 0 0 0 7 3 2 1 20 0 1 0 12345 1048576 42 18446744073709551615 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "my (odd) cmd");
        assert_eq!((s.state, s.ppid, s.tty), ('S', 1, 34816));
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (7, 3, 2, 1));
        assert_eq!(s.start, 12345);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn net_dev_counters_skip_loopback() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 100 2 3 4 0 0 0 0 200 5 6 7 0 0 0 0\n";
        let nets = parse_net_dev(text);
        assert_eq!(nets.len(), 1);
        assert_eq!(nets["eth0"], [100, 2, 3, 4, 200, 5, 6, 7]);
    }
}
