//! Freezing a running container while its writable layer is read (`commit`), as Docker pauses
//! it: a process caught half-way through writing a set of files must not leave half of them in
//! the layer. The freezer stops every process of the container without any of them noticing
//! (unlike SIGSTOP, which a parent sees through `waitpid`).
//!
//! A container has a cgroup of its own only when it has resource limits, so the container's
//! processes (every process in the PID namespace of its PID 1, `exec`'d ones included) are
//! moved into a freezer cgroup made for the commit and moved back afterwards. On cgroup v1
//! that touches the freezer hierarchy only, so the container's limits and accounting in the
//! other controllers stay as they are. On cgroup v2 a move would change every controller, so
//! there only a container with its own (`kiln-…`) cgroup is frozen in place; any other is
//! stopped with SIGSTOP/SIGCONT, the one fallback left.
//!
//! `pause` is the same freeze kept past the call ([`Frozen::keep`]), in a freezer cgroup named
//! after the container, so that `resume` (another request, another process, a restarted
//! daemon) finds it again from the container's PID 1 alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Result, RuntimeError};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A frozen container; thawed when dropped.
#[derive(Debug)]
pub struct Frozen {
    how: How,
}

#[derive(Debug)]
enum How {
    /// A freezer v1 cgroup made for this, and where each process came from.
    V1 {
        dir: PathBuf,
        home: Vec<(u32, PathBuf)>,
    },
    /// The container's own v2 cgroup.
    V2 { dir: PathBuf },
    /// Stopped processes.
    Stopped { pids: Vec<u32> },
}

/// The pids of every process in the PID namespace of `pid` (the container's PID 1).
pub(crate) fn container_processes(pid: u32) -> Result<Vec<u32>> {
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(theirs) = ns(pid) else {
        return Err(RuntimeError::Io {
            path: format!("/proc/{pid}/ns/pid").into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    };
    let mut pids = Vec::new();
    let proc = std::fs::read_dir("/proc").map_err(RuntimeError::io("/proc"))?;
    for entry in proc.flatten() {
        if let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok())
            && ns(p).as_ref() == Some(&theirs)
        {
            pids.push(p);
        }
    }
    Ok(pids)
}

/// The path of `pid`'s cgroup in the hierarchy whose controllers `pick` accepts.
fn cgroup_of(pid: u32, pick: impl Fn(&str) -> bool) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        pick(controllers).then(|| path.to_owned())
    })
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(RuntimeError::io(path))
}

/// Freezes the container whose PID 1 is `pid`; `name` names the freezer cgroup.
pub fn freeze(pid: u32, name: &str) -> Result<Frozen> {
    let freezer_v1 = Path::new(CGROUP_ROOT).join("freezer");
    if freezer_v1.join("cgroup.procs").exists() {
        return freeze_v1(pid, name, &freezer_v1);
    }
    let unified = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    if unified
        && let Some(own) = cgroup_of(pid, str::is_empty)
        && own
            .rsplit('/')
            .next()
            .is_some_and(|leaf| leaf.starts_with("kiln-"))
    {
        let dir = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
        write(&dir.join("cgroup.freeze"), "1")?;
        let frozen = Frozen {
            how: How::V2 { dir: dir.clone() },
        };
        wait_for(&dir.join("cgroup.events"), "frozen 1")?;
        return Ok(frozen);
    }
    let pids = container_processes(pid)?;
    for &p in &pids {
        if let Some(p) = Pid::from_raw(p as i32) {
            let _ = kill_process(p, Signal::STOP);
        }
    }
    Ok(Frozen {
        how: How::Stopped { pids },
    })
}

fn freeze_v1(pid: u32, name: &str, root: &Path) -> Result<Frozen> {
    let own = cgroup_of(std::process::id(), |c| c.split(',').any(|c| c == "freezer"))
        .unwrap_or_else(|| "/".into());
    let dir = root.join(own.trim_start_matches('/')).join(name);
    std::fs::create_dir(&dir).map_err(RuntimeError::io(&dir))?;
    let mut frozen = Frozen {
        how: How::V1 {
            dir: dir.clone(),
            home: Vec::new(),
        },
    };
    // Children are born in their parent's cgroup, so once a pass finds nothing new, every
    // process of the container is inside.
    loop {
        let How::V1 { home, .. } = &mut frozen.how else {
            unreachable!("made as V1 above")
        };
        let mut moved = false;
        for p in container_processes(pid)? {
            if home.iter().any(|(q, _)| *q == p) {
                continue;
            }
            let from = cgroup_of(p, |c| c.split(',').any(|c| c == "freezer"))
                .unwrap_or_else(|| "/".into());
            // A process that exited in the meantime is no error.
            if std::fs::write(dir.join("cgroup.procs"), p.to_string()).is_ok() {
                home.push((p, root.join(from.trim_start_matches('/'))));
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    write(&dir.join("freezer.state"), "FROZEN")?;
    wait_for(&dir.join("freezer.state"), "FROZEN")?;
    Ok(frozen)
}

/// The prefix of the freezer cgroups of paused containers.
const PAUSE_PREFIX: &str = "kiln-pause-";

impl Frozen {
    /// Leaves the container frozen when this is dropped (a `pause`).
    pub fn keep(mut self) {
        self.how = How::Stopped { pids: Vec::new() };
    }
}

/// Freezes the container whose PID 1 is `pid` until [`resume`]; `id` names the cgroup.
pub fn pause(pid: u32, id: &str) -> Result<()> {
    let short = id.get(..12).unwrap_or(id);
    freeze(pid, &format!("{PAUSE_PREFIX}{short}"))?.keep();
    Ok(())
}

/// Thaws a container [`pause`] froze, by the same mechanism.
pub fn resume(pid: u32) -> Result<()> {
    let freezer_v1 = Path::new(CGROUP_ROOT).join("freezer");
    if freezer_v1.join("cgroup.procs").exists() {
        let Some(own) = cgroup_of(pid, |c| c.split(',').any(|c| c == "freezer")) else {
            return Ok(());
        };
        let dir = freezer_v1.join(own.trim_start_matches('/'));
        if !dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PAUSE_PREFIX))
        {
            return Ok(());
        }
        write(&dir.join("freezer.state"), "THAWED")?;
        wait_for(&dir.join("freezer.state"), "THAWED")?;
        // Back where pause took them from: the cgroup the pause cgroup was made in.
        if let (Ok(left), Some(parent)) = (
            std::fs::read_to_string(dir.join("cgroup.procs")),
            dir.parent(),
        ) {
            for p in left.lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&dir);
        return Ok(());
    }
    if let Some(own) = cgroup_of(pid, str::is_empty)
        && own
            .rsplit('/')
            .next()
            .is_some_and(|leaf| leaf.starts_with("kiln-"))
    {
        let dir = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
        write(&dir.join("cgroup.freeze"), "0")?;
        return wait_for(&dir.join("cgroup.events"), "frozen 0");
    }
    for p in container_processes(pid)? {
        if let Some(p) = Pid::from_raw(p as i32) {
            let _ = kill_process(p, Signal::CONT);
        }
    }
    Ok(())
}

/// Polls `file` until it holds `want` (freezing takes a moment per process).
fn wait_for(file: &Path, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).map_err(RuntimeError::io(file))?;
        if text.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Io {
                path: file.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not {want} after 10 s"),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        match &self.how {
            How::V1 { dir, home } => {
                let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
                let _ = wait_for(&dir.join("freezer.state"), "THAWED");
                for (p, from) in home {
                    let _ = std::fs::write(from.join("cgroup.procs"), p.to_string());
                }
                // Anything born while thawing is still inside: move it to the parent.
                if let Ok(left) = std::fs::read_to_string(dir.join("cgroup.procs"))
                    && let Some(parent) = dir.parent()
                {
                    for p in left.lines() {
                        let _ = std::fs::write(parent.join("cgroup.procs"), p);
                    }
                }
                let _ = std::fs::remove_dir(dir);
            }
            How::V2 { dir } => {
                let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            }
            How::Stopped { pids } => {
                for &p in pids {
                    if let Some(p) = Pid::from_raw(p as i32) {
                        let _ = kill_process(p, Signal::CONT);
                    }
                }
            }
        }
    }
}
