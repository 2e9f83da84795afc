//! Keeps host-side unmounts out of the window in which a child this process starts still holds
//! copies of its descriptors.
//!
//! `fork` (and the `clone(CLONE_VFORK)` behind `posix_spawn`) gives the child a copy of the
//! whole descriptor table. Its `O_CLOEXEC` descriptors are closed by `execve`, but the files
//! are released only by task work that runs as the new program first returns to user space;
//! until then each keeps its file, and so the mount the file lives on, referenced.
//! `Command::spawn` returning (it waits for its close-on-exec error pipe to close) is not that
//! point: the pipe may be released before the other files. A build works on several stages at
//! once: while one thread holds a descriptor inside its step's overlay (`…/tmp/copy-XXXX/merged`,
//! opened to write through `openat2`), another starts a sandbox init; the first thread closes
//! its descriptor and unmounts, and `umount2` fails with `EBUSY` because the new init has not
//! yet dropped its copy (issue 16 item 7: seen within a few dozen builds of eight parallel
//! stages; holding unmounts off until each init had reported from user space made fifty
//! builds pass).
//!
//! The decision: every child this crate starts, and every other child a process that mounts
//! overlays starts (supervisors, `nft`, `git`, `ssh-agent`), is started inside a [`Spawning`]
//! window (a shared lock) that lasts until the child has shown a sign of life from its own
//! program — the sandbox init's and exec helper's `Started` report, slirp4netns's ready fd, a
//! supervisor's first process ending, a short helper's end ([`output`]) — and every
//! host-side unmount runs under `quiesced`, which takes the lock exclusively. An unmount
//! never overlaps a child holding inherited descriptors. Retrying on `EBUSY` or detaching
//! lazily would only hide a holder, including a real leak; this removes the transient one.

use std::sync::{RwLock, RwLockReadGuard};

static FORK_WINDOW: RwLock<()> = RwLock::new(());

/// Held from before a child is started until it has run in user space (see the module
/// documentation). A thread holding one must not start another child before dropping it: a
/// waiting unmount blocks new windows. Every process that mounts overlays (a build, `kiln
/// serve`) starts its other children inside one too: supervisors, `nft`, `git`, `ssh-agent`.
#[derive(Debug)]
pub struct Spawning {
    _shared: RwLockReadGuard<'static, ()>,
}

/// Opens a window for starting a child.
pub fn spawning() -> Spawning {
    // A panic elsewhere while holding the lock leaves nothing inconsistent to guard.
    Spawning {
        _shared: FORK_WINDOW.read().unwrap_or_else(|e| e.into_inner()),
    }
}

/// Runs `command` to its end inside a window and returns its output: for short helpers
/// (`nft`, `ssh-add`, `git`), whose end is the surest sign their copies of our descriptors
/// are gone.
pub fn output(command: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    let _window = spawning();
    command.output()
}

/// Runs `f` (an unmount) while no child of this process holds copies of its descriptors.
pub(crate) fn quiesced<T>(f: impl FnOnce() -> T) -> T {
    let _exclusive = FORK_WINDOW.write().unwrap_or_else(|e| e.into_inner());
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};

    /// The property the windows rely on: once the child's program has written something, the
    /// child holds none of this process's close-on-exec descriptors.
    #[test]
    fn a_child_that_reported_holds_no_close_on_exec_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("held-by-the-parent");
        let _file = std::fs::File::create(&marker).unwrap();
        let window = spawning();
        let mut child = Command::new("sh")
            .args(["-c", "echo started; exec sleep 5"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        drop(window);
        assert_eq!(line, "started\n");
        let held = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| target == marker);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!held, "the child still held {}", marker.display());
    }

    #[test]
    fn quiesced_waits_for_an_open_window() {
        let window = spawning();
        let ran = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Barrier::new(2));
        let unmount = {
            let (ran, started) = (ran.clone(), started.clone());
            std::thread::spawn(move || {
                started.wait();
                quiesced(|| ran.store(true, Ordering::SeqCst));
            })
        };
        started.wait();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !ran.load(Ordering::SeqCst),
            "ran while a child was starting"
        );
        drop(window);
        unmount.join().unwrap();
        assert!(ran.load(Ordering::SeqCst));
    }
}
