//! A cgroup per sandbox carrying its [`ResourceLimits`], on cgroup v2 (unified) or v1 (one
//! hierarchy per controller), whichever the host mounts at /sys/fs/cgroup.
//!
//! The cgroup is made below the caller's own (so the limits nest inside whatever limits kiln
//! already runs under), the sandbox's outer init is moved into it before it reads its spec
//! (so every process of the sandbox is born inside), and it is removed once the sandbox is gone.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::SandboxError;
use crate::spec::ResourceLimits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period Docker uses for `--cpus` (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The sandbox's cgroup: one directory on v2, one per controller on v1.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dirs: Vec<PathBuf>,
    unified: bool,
}

impl Cgroup {
    /// Creates `kiln-<name>` with `limits` below the calling process's cgroup(s).
    pub(crate) fn create(name: &str, limits: &ResourceLimits) -> Result<Cgroup, SandboxError> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(SandboxError::io("read /proc/self/cgroup"))?;
        let leaf = format!("kiln-{name}");
        let unified = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
        let created = if unified {
            Self::create_v2(&own, &leaf, limits)
        } else {
            Self::create_v1(&own, &leaf, limits)
        };
        created.map_err(|e| explain_denial(e, crate::rootless::in_user_namespace(), unified))
    }

    fn create_v2(own: &str, leaf: &str, limits: &ResourceLimits) -> Result<Cgroup, SandboxError> {
        let parent = own_path(own, |controllers| controllers.is_empty())
            .map(|p| Path::new(CGROUP_ROOT).join(p.trim_start_matches('/')))
            .ok_or_else(|| limit_error("find this process's cgroup v2 in /proc/self/cgroup"))?;
        // The parent must delegate the controllers to its children. A cgroup with processes
        // of its own cannot (the "no internal processes" rule) unless it is the root.
        let wanted = v2_controllers(limits);
        let subtree = parent.join("cgroup.subtree_control");
        std::fs::write(&subtree, wanted.join(" ")).map_err(|e| SandboxError::Io {
            what: format!(
                "enable {} in {} (kiln must run in a cgroup without processes of its own, \
                 or in the root cgroup, to set resource limits on cgroup v2)",
                wanted.join(" "),
                subtree.display()
            ),
            source: e,
        })?;
        let dir = parent.join(leaf);
        std::fs::create_dir(&dir).map_err(SandboxError::io(format!("create {}", dir.display())))?;
        let cgroup = Cgroup {
            dirs: vec![dir.clone()],
            unified: true,
        };
        if let Some(bytes) = limits.memory_bytes {
            write(&dir, "memory.max", &bytes.to_string())?;
            // Docker's default --memory-swap is twice --memory: as much swap again.
            if dir.join("memory.swap.max").exists() {
                write(&dir, "memory.swap.max", &bytes.to_string())?;
            }
        }
        if let Some(pids) = limits.pids {
            write(&dir, "pids.max", &pids.to_string())?;
        }
        if let Some(nano) = limits.nano_cpus {
            write(
                &dir,
                "cpu.max",
                &format!("{} {CPU_PERIOD_US}", quota_us(nano)),
            )?;
        }
        Ok(cgroup)
    }

    fn create_v1(own: &str, leaf: &str, limits: &ResourceLimits) -> Result<Cgroup, SandboxError> {
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            unified: false,
        };
        let mut settings: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
        if let Some(bytes) = limits.memory_bytes {
            settings.push((
                "memory",
                vec![
                    ("memory.limit_in_bytes", bytes.to_string()),
                    // memory + swap; written after the memory limit, which it may not undercut.
                    (
                        "memory.memsw.limit_in_bytes",
                        bytes.saturating_mul(2).to_string(),
                    ),
                ],
            ));
        }
        if let Some(pids) = limits.pids {
            settings.push(("pids", vec![("pids.max", pids.to_string())]));
        }
        if let Some(nano) = limits.nano_cpus {
            settings.push((
                "cpu",
                vec![
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota_us(nano).to_string()),
                ],
            ));
        }
        for (controller, files) in settings {
            let hierarchy = Path::new(CGROUP_ROOT).join(controller);
            let parent = own_path(own, |controllers| {
                controllers.split(',').any(|c| c == controller)
            })
            .map(|p| hierarchy.join(p.trim_start_matches('/')))
            .filter(|_| hierarchy.is_dir())
            .ok_or_else(|| limit_error(&format!("find the {controller} cgroup controller (v1)")))?;
            let dir = parent.join(leaf);
            std::fs::create_dir(&dir)
                .map_err(SandboxError::io(format!("create {}", dir.display())))?;
            cgroup.dirs.push(dir.clone());
            for (file, value) in files {
                // Without swap accounting the kernel has no memsw file: there is no swap to limit.
                if file.contains("memsw") && !dir.join(file).exists() {
                    continue;
                }
                write(&dir, file, &value)?;
            }
        }
        Ok(cgroup)
    }

    /// Moves `pid` (and so every process it will start) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> Result<(), SandboxError> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Kills whatever is left and removes the cgroup. The sandbox's processes die with its
    /// PID 1, but the kernel may take a moment to let go of them.
    pub(crate) fn remove(mut self) -> Result<(), SandboxError> {
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in std::mem::take(&mut self.dirs) {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(
                            SandboxError::io(format!("remove cgroup {}", dir.display()))(e),
                        );
                    }
                    Err(_) => {
                        self.kill_members(&dir);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        Ok(())
    }

    fn kill_members(&self, dir: &Path) {
        if self.unified && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = crate::sys::send_signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.remove_dirs();
    }
}

/// Changes the limits of the running sandbox whose process is `pid`, in the `kiln-` cgroup it
/// was given at start (`docker update`). Returns the limits that could not be applied because
/// the sandbox has no cgroup of its own for them (it was started without such a limit); those
/// apply from its next start.
pub fn apply_limits(pid: u32, limits: &ResourceLimits) -> Result<Vec<&'static str>, SandboxError> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(SandboxError::io(format!("read /proc/{pid}/cgroup")))?;
    let unified = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    // The sandbox's own directory for a controller, if it has one.
    let own = |controller: &str| -> Option<PathBuf> {
        let (root, path) = if unified {
            (
                PathBuf::from(CGROUP_ROOT),
                own_path(&cgroups, |c| c.is_empty())?,
            )
        } else {
            (
                Path::new(CGROUP_ROOT).join(controller),
                own_path(&cgroups, |c| c.split(',').any(|c| c == controller))?,
            )
        };
        let leaf = path.rsplit('/').next()?;
        leaf.starts_with("kiln-")
            .then(|| root.join(path.trim_start_matches('/')))
            .filter(|dir| !unified || controller_enabled(dir, controller))
    };
    let mut not_applied = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        match own("memory") {
            Some(dir) if unified => write(&dir, "memory.max", &bytes.to_string())?,
            Some(dir) => {
                // memory + swap may not be below memory: lower memory first when shrinking,
                // raise memsw first when growing.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                let swap = bytes.saturating_mul(2).to_string();
                if memsw.exists() {
                    let _ = std::fs::write(&memsw, &swap);
                }
                write(&dir, "memory.limit_in_bytes", &bytes.to_string())?;
                if memsw.exists() {
                    write(&dir, "memory.memsw.limit_in_bytes", &swap)?;
                }
            }
            None => not_applied.push("memory"),
        }
    }
    if let Some(pids) = limits.pids {
        match own("pids") {
            Some(dir) => write(&dir, "pids.max", &pids.to_string())?,
            None => not_applied.push("pids"),
        }
    }
    if let Some(nano) = limits.nano_cpus {
        match own("cpu") {
            Some(dir) if unified => write(
                &dir,
                "cpu.max",
                &format!("{} {CPU_PERIOD_US}", quota_us(nano)),
            )?,
            Some(dir) => {
                write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(&dir, "cpu.cfs_quota_us", &quota_us(nano).to_string())?;
            }
            None => not_applied.push("cpus"),
        }
    }
    Ok(not_applied)
}

/// Whether a v2 cgroup has `controller` (its parent enabled it for its children).
fn controller_enabled(dir: &Path, controller: &str) -> bool {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
}

/// The cgroup path of this process in the hierarchy whose controller list satisfies `pick`,
/// from `/proc/self/cgroup` lines `ID:CONTROLLERS:PATH` (v2's line is `0::PATH`).
fn own_path(own: &str, pick: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        pick(controllers).then(|| path.to_string())
    })
}

fn v2_controllers(limits: &ResourceLimits) -> Vec<&'static str> {
    let mut wanted = Vec::new();
    if limits.memory_bytes.is_some() {
        wanted.push("+memory");
    }
    if limits.pids.is_some() {
        wanted.push("+pids");
    }
    if limits.nano_cpus.is_some() {
        wanted.push("+cpu");
    }
    wanted
}

/// CFS quota for a share of CPUs over [`CPU_PERIOD_US`], at least the kernel's 1 ms minimum.
fn quota_us(nano_cpus: u64) -> u64 {
    (nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), SandboxError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(SandboxError::io(format!(
        "write {value} to {}",
        path.display()
    )))
}

/// Rootless kiln is root only inside its user namespace: the host's cgroup tree stays the real
/// root's unless a manager delegated a v2 subtree to the user (systemd's `Delegate=yes`), so
/// a denied cgroup write there is a limit of the setup, told as such rather than as an errno.
fn explain_denial(err: SandboxError, rootless: bool, unified: bool) -> SandboxError {
    let denied = matches!(
        &err,
        SandboxError::Io { source, .. } if matches!(
            source.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        )
    );
    if !(rootless && denied) {
        return err;
    }
    let host = if unified {
        "this process's cgroup is not delegated to the user"
    } else {
        "this host has cgroup v1, which cannot be delegated"
    };
    SandboxError::InvalidSpec(format!(
        "resource limits (--memory, --pids-limit, --cpus) need root or a delegated cgroup v2 \
         subtree; running rootless, {host} ({err})"
    ))
}

fn limit_error(what: &str) -> SandboxError {
    SandboxError::InvalidSpec(format!(
        "resource limits need cgroups, but kiln could not {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str =
        "9:name=systemd:/\n8:pids:/user\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn own_cgroup_is_found_per_hierarchy() {
        let has = |name: &'static str| move |c: &str| c.split(',').any(|x| x == name);
        assert_eq!(own_path(HYBRID, has("memory")).unwrap(), "/process_api/abc");
        assert_eq!(own_path(HYBRID, has("pids")).unwrap(), "/user");
        assert_eq!(own_path(HYBRID, has("cpu")).unwrap(), "/");
        assert_eq!(own_path(HYBRID, |c| c.is_empty()).unwrap(), "/");
        assert_eq!(own_path(HYBRID, has("rdma")), None);
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period() {
        assert_eq!(quota_us(1_500_000_000), 150_000);
        assert_eq!(quota_us(500_000_000), 50_000);
        assert_eq!(quota_us(1), 1000, "the kernel's minimum quota");
    }

    #[test]
    fn denials_are_explained_only_when_rootless() {
        let denied = || {
            SandboxError::io("create /sys/fs/cgroup/memory/kiln-x")(io::Error::from_raw_os_error(
                libc::EACCES,
            ))
        };
        let explained = explain_denial(denied(), true, false).to_string();
        assert!(
            explained.contains("need root or a delegated cgroup v2 subtree")
                && explained.contains("cgroup v1")
                && explained.contains("kiln-x"),
            "{explained}"
        );
        assert!(
            explain_denial(denied(), true, true)
                .to_string()
                .contains("not delegated")
        );
        assert!(matches!(
            explain_denial(denied(), false, false),
            SandboxError::Io { .. }
        ));
        let missing = SandboxError::io("create x")(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(
            explain_denial(missing, true, true),
            SandboxError::Io { .. }
        ));
    }

    #[test]
    fn only_the_needed_v2_controllers_are_enabled() {
        let limits = ResourceLimits {
            memory_bytes: Some(1 << 20),
            pids: None,
            nano_cpus: Some(1),
        };
        assert_eq!(v2_controllers(&limits), ["+memory", "+cpu"]);
    }
}
