//! Running another process in a sandbox that is already running (`kiln exec`, health checks).
//!
//! The host re-executes `/proc/self/exe __kiln-sandbox-exec SPEC_FD STATUS_FD`, like the init.
//! That helper joins the namespaces of the sandbox's PID 1 (user if it has its own, cgroup
//! v2 group or v1 groups, IPC, UTS, network, PID, mount) with `setns`, enters its root with
//! `fchdir` + `chroot`, and forks: only a child is inside a joined PID namespace. The child
//! goes through the same process setup as the sandbox's own process (`init::process`), so
//! whatever that applies (user, groups, terminal, descriptors, signal state) applies here too;
//! the helper forwards signals to it and exits with its code.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::FdFlags;
use rustix::process::Signal;
use rustix::thread::LinkNameSpaceType;
use serde::{Deserialize, Serialize};

use crate::error::{InitFailure, SandboxError};
use crate::host::{HelperProcess, SandboxChild, read_status, spawn_helper};
use crate::init::container::prepare_process;
use crate::init::{process, report_failure, supervise};
use crate::protocol::{StatusMessage, send};
use crate::spec::{ProcessSpec, SecurityOptions, Stdio};
use crate::sys;

/// argv[1] marking a re-executed binary as the exec helper.
pub(crate) const EXEC_MARKER: &str = "__kiln-sandbox-exec";

/// What the host asks of the exec helper.
#[derive(Debug, Serialize, Deserialize)]
struct ExecRequest {
    /// Host pid of the sandbox's PID 1.
    target_pid: u32,
    process: ProcessSpec,
    /// The container's confinement: an exec'd process gets exactly what its own process got.
    security: SecurityOptions,
}

/// Starts `process` inside the running sandbox whose PID 1 has the host pid `target_pid`.
/// Returns once the process has been executed (or setup failed, as [`SandboxError::Init`]);
/// the child's `wait` gives its exit code. `security` must be the container's own (its
/// `SandboxSpec::security`), so that exec is no way around its confinement.
pub fn spawn_in(
    target_pid: u32,
    process: &ProcessSpec,
    security: &SecurityOptions,
    stdio: Stdio,
) -> Result<SandboxChild, SandboxError> {
    if process.args.is_empty() {
        return Err(SandboxError::InvalidSpec(
            "the command line is empty".into(),
        ));
    }
    match std::fs::symlink_metadata(format!("/proc/{target_pid}/ns/mnt")) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SandboxError::InvalidSpec(format!(
                "process {target_pid} does not exist (the container is not running)"
            )));
        }
        // /proc hides another user's namespaces: a container of root (or of another user)
        // cannot be joined by this one.
        Err(e) => {
            return Err(SandboxError::InvalidSpec(format!(
                "cannot reach the namespaces of the container's process {target_pid} ({e}); \
                 a container can only be joined by the user who started it, or root"
            )));
        }
    }
    let request = serde_json::to_vec(&ExecRequest {
        target_pid,
        process: process.clone(),
        security: security.clone(),
    })
    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
    let HelperProcess {
        child,
        spec_write,
        status_read,
    } = spawn_helper(EXEC_MARKER, "exec helper", stdio, None)?;
    let mut child = SandboxChild::for_exec(child);
    let _ = std::io::Write::write_all(&mut File::from(spec_write), &request);
    read_status(&mut child, status_read, None)?;
    Ok(child)
}

/// The helper's side; returns its exit code.
#[allow(
    clippy::print_stderr,
    reason = "runs as the exec helper's own process (kiln re-executed): where no status pipe to the \
              host is usable, its stderr is the only channel left"
)]
pub(crate) fn run_helper(spec_fd: i32, status_fd: i32) -> i32 {
    // The exec'd process must not outlive whoever started it (a timed-out health check is
    // killed through the helper).
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        return 125;
    }
    let status = match sys::take_inherited_fd(status_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("kiln exec helper: status pipe: {e}");
            return 125;
        }
    };
    let _ = rustix::io::fcntl_setfd(&status, FdFlags::CLOEXEC);
    let mut status = File::from(status);
    if send(&mut status, &StatusMessage::Started).is_err() {
        return 125;
    }
    let joined = read_request(spec_fd).and_then(|request| {
        sys::block_signals().map_err(InitFailure::setup("block signals"))?;
        let single = sys::SingleThreaded::check().map_err(InitFailure::setup("count threads"))?;
        let own_user_ns = join_namespaces(request.target_pid)?;
        Ok((request, own_user_ns, single))
    });
    let (request, own_user_ns, single) = match joined {
        Ok(joined) => joined,
        Err(failure) => return report_failure(&mut status, failure),
    };
    match sys::fork_checked(&single) {
        Err(e) => report_failure(&mut status, InitFailure::setup("fork the process")(e)),
        Ok(None) => {
            let prepared = rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(|e| InitFailure::setup("set the parent-death signal")(e.into()))
                .and_then(|()| {
                    prepare_process(
                        &request.process,
                        &request.security,
                        !own_user_ns && crate::rootless::setgroups_allowed(),
                    )
                });
            match prepared {
                Ok(prepared) => process::exec(&prepared, status),
                Err(failure) => report_failure(&mut status, failure),
            }
        }
        Ok(Some(pid)) => {
            drop(status);
            supervise::supervise(pid)
        }
    }
}

fn read_request(spec_fd: i32) -> Result<ExecRequest, InitFailure> {
    let fd = sys::take_inherited_fd(spec_fd).map_err(InitFailure::setup("spec pipe"))?;
    let mut json = Vec::new();
    File::from(fd)
        .read_to_end(&mut json)
        .map_err(InitFailure::setup("read the exec request"))?;
    serde_json::from_slice(&json).map_err(|e| InitFailure::Setup {
        step: "parse the exec request".into(),
        message: e.to_string(),
    })
}

/// Joins every namespace of `pid` and its root; returns whether a user namespace other than
/// ours was joined (then, as in a rootless sandbox, supplementary groups cannot be set).
fn join_namespaces(pid: u32) -> Result<bool, InitFailure> {
    let proc_dir = format!("/proc/{pid}");
    let open = |path: String| {
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(InitFailure::setup(format!("open {path}")))
    };
    // Everything is opened before the first setns: afterwards /proc is the container's.
    let root = open(format!("{proc_dir}/root"))?;
    let user_ns = open(format!("{proc_dir}/ns/user"))?;
    let other_user_ns = different_namespace(&user_ns, "/proc/self/ns/user")?;
    let namespaces = [
        ("ipc", LinkNameSpaceType::InterProcessCommunication),
        ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
        ("net", LinkNameSpaceType::Network),
        ("pid", LinkNameSpaceType::ProcessID),
        ("mnt", LinkNameSpaceType::Mount),
    ]
    .into_iter()
    .map(|(name, kind)| Ok((name, kind, open(format!("{proc_dir}/ns/{name}"))?)))
    .collect::<Result<Vec<_>, InitFailure>>()?;
    join_cgroup(pid)?;
    let enter = |name: &str, kind: LinkNameSpaceType, fd: &OwnedFd| {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(kind)).map_err(|e| {
            InitFailure::setup(format!("join the container's {name} namespace"))(e.into())
        })
    };
    if other_user_ns {
        enter("user", LinkNameSpaceType::User, &user_ns)?;
    }
    for (name, kind, fd) in &namespaces {
        enter(name, *kind, fd)?;
    }
    let failed =
        |what: &'static str| move |e: rustix::io::Errno| InitFailure::setup(what)(e.into());
    rustix::process::fchdir(&root).map_err(failed("enter the container's root"))?;
    rustix::process::chroot(".").map_err(failed("chroot into the container's root"))?;
    rustix::process::chdir("/").map_err(failed("enter the container's root"))?;
    Ok(other_user_ns)
}

fn different_namespace(ns: &OwnedFd, ours: &str) -> Result<bool, InitFailure> {
    let theirs =
        rustix::fs::fstat(ns).map_err(|e| InitFailure::setup("stat a namespace")(e.into()))?;
    let ours =
        rustix::fs::stat(ours).map_err(|e| InitFailure::setup("stat a namespace")(e.into()))?;
    Ok((theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino))
}

/// Moves this process into the cgroup(s) of `pid` where they differ from ours, so limits set
/// on the container (`--memory`, `--pids-limit`, `--cpus`) bind what runs in it: its v2 group,
/// and on cgroup v1 its group in every controller hierarchy.
fn join_cgroup(pid: u32) -> Result<(), InitFailure> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let theirs = read(&format!("/proc/{pid}/cgroup"));
    let ours = read("/proc/self/cgroup");
    let unified_v2 = std::path::Path::new(CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists();
    for procs in cgroups_to_join(&theirs, &ours, unified_v2, |dir| {
        std::path::Path::new(CGROUP_ROOT).join(dir).is_dir()
    }) {
        std::fs::write(&procs, std::process::id().to_string()).map_err(InitFailure::setup(
            format!("join the container's cgroup ({procs})"),
        ))?;
    }
    Ok(())
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `cgroup.procs` files to write to enter `theirs` (a `/proc/PID/cgroup` text) from `ours`:
/// on a v2 host the unified group; on v1 (or hybrid) the group of each controller hierarchy
/// (`ID:CONTROLLERS:PATH`) that differs, found under the directory named after its
/// controllers (`cpu,cpuacct`) or its first one, as `mounted` says exists. Named hierarchies
/// (`name=systemd`) carry no limits and are left alone.
fn cgroups_to_join(
    theirs: &str,
    ours: &str,
    unified_v2: bool,
    mounted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let entries = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                Some((controllers.to_owned(), path.to_owned()))
            })
            .collect()
    };
    let ours = entries(ours);
    let mut joins = Vec::new();
    for (controllers, path) in entries(theirs) {
        let same = ours.iter().any(|(c, p)| *c == controllers && *p == path);
        // A path outside our cgroup namespace shows `..`: not one we could name.
        if same || path.contains("..") {
            continue;
        }
        let dir = if controllers.is_empty() {
            if !unified_v2 {
                continue;
            }
            String::new()
        } else if unified_v2 || controllers.starts_with("name=") {
            continue;
        } else if mounted(&controllers) {
            format!("/{controllers}")
        } else {
            match controllers.split(',').next() {
                Some(first) if mounted(first) => format!("/{first}"),
                _ => continue,
            }
        };
        joins.push(format!(
            "{CGROUP_ROOT}{dir}{}/cgroup.procs",
            path.trim_end_matches('/')
        ));
    }
    joins
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS_V1: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/job\n2:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn v1_joins_every_limited_hierarchy_that_differs() {
        let theirs = "9:name=systemd:/other\n8:pids:/kiln-c1\n4:memory:/job/kiln-c1\n2:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            cgroups_to_join(theirs, OURS_V1, false, |_| true),
            [
                "/sys/fs/cgroup/pids/kiln-c1/cgroup.procs",
                "/sys/fs/cgroup/memory/job/kiln-c1/cgroup.procs",
            ]
        );
        // A comma-joined hierarchy mounted only under its first controller's name.
        let theirs = "2:cpu,cpuacct:/kiln-c1\n";
        assert_eq!(
            cgroups_to_join(theirs, OURS_V1, false, |dir| dir == "cpu"),
            ["/sys/fs/cgroup/cpu/kiln-c1/cgroup.procs"]
        );
        assert!(cgroups_to_join(OURS_V1, OURS_V1, false, |_| true).is_empty());
    }

    #[test]
    fn v2_joins_only_the_unified_group() {
        assert_eq!(
            cgroups_to_join("0::/user/kiln-c1\n", "0::/user/kiln\n", true, |_| true),
            ["/sys/fs/cgroup/user/kiln-c1/cgroup.procs"]
        );
        assert!(cgroups_to_join("0::/../x\n", "0::/\n", true, |_| true).is_empty());
    }
}
