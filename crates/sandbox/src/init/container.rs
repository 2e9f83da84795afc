//! The namespace init, PID 1 of the sandbox: it builds the sandbox around itself, forks the
//! process, and then supervises it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;
use rustix::mount::MountPropagationFlags;
use rustix::process::Signal;
use rustix::thread::UnshareFlags;

use super::process::{self, Prepared};
use super::{report_failure, rootfs, supervise};
use crate::error::InitFailure;
use crate::protocol::{InitRequest, StatusMessage, send};
use crate::spec::{NetworkMode, ProcessSpec, SecurityOptions};
use crate::stubs::Stub;
use crate::sys;
use crate::user::resolve_user;

/// Search path used to find `args[0]` when the process environment has no PATH (the value
/// Docker puts in a container's default environment).
const DEFAULT_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the namespace init to completion and returns its exit code.
pub(super) fn run(request: &InitRequest, mut status: File) -> i32 {
    let mut stubs = Vec::new();
    let prepared = prepare(request, &mut stubs);
    // Sent even after a failure: stubs made before it must still be cleaned up.
    if !stubs.is_empty() && send(&mut status, &StatusMessage::Stubs(stubs)).is_err() {
        return report_failure(
            &mut status,
            InitFailure::Setup {
                step: "report stubs".into(),
                message: "host is gone".into(),
            },
        );
    }
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(failure) => return report_failure(&mut status, failure),
    };
    match sys::fork() {
        Err(e) => report_failure(&mut status, InitFailure::setup("fork the process")(e)),
        Ok(None) => process::exec(&prepared, status),
        Ok(Some(pid)) => {
            drop(status);
            supervise::supervise(pid)
        }
    }
}

fn prepare(request: &InitRequest, stubs: &mut Vec<Stub>) -> Result<Prepared, InitFailure> {
    let spec = &request.sandbox;
    // The outer init is our parent; if it is killed, the whole sandbox must go.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| InitFailure::setup("set the parent-death signal")(e.into()))?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    // A fork inherits dumpability: set again in case a kernel resets it on the way.
    super::make_non_dumpable()?;

    let mut namespaces = UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    if spec.network == NetworkMode::None {
        namespaces |= UnshareFlags::NEWNET;
    }
    sys::unshare(namespaces).map_err(InitFailure::setup("create namespaces"))?;
    // Nothing mounted from here on may propagate back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| InitFailure::setup("make mounts private")(e.into()))?;

    rootfs::build_and_enter(request, stubs)?;

    if !spec.hostname.is_empty() {
        rustix::system::sethostname(spec.hostname.as_bytes()).map_err(|e| {
            InitFailure::setup(format!("set hostname {:?}", spec.hostname))(e.into())
        })?;
    }
    if !spec.names.domainname.is_empty() {
        rustix::system::setdomainname(spec.names.domainname.as_bytes()).map_err(|e| {
            InitFailure::setup(format!("set domain name {:?}", spec.names.domainname))(e.into())
        })?;
    }
    if matches!(spec.network, NetworkMode::None | NetworkMode::Prepared) {
        sys::set_loopback_up().map_err(InitFailure::setup("bring up the loopback interface"))?;
    }

    // While the init still has CAP_SYS_RESOURCE: a hard limit may be raised, and the
    // program and everything it starts inherit them.
    for ulimit in &spec.ulimits {
        ulimit.apply()?;
    }
    prepare_process(
        &request.process,
        &spec.security,
        request.id_map.is_none() && crate::rootless::setgroups_allowed(),
    )
}

/// Resolves the process's user, working directory and program inside the current root (the
/// container's, already entered), as both the container's own process and `kiln exec` need.
pub(crate) fn prepare_process(
    process: &ProcessSpec,
    security: &SecurityOptions,
    set_groups: bool,
) -> Result<Prepared, InitFailure> {
    let user = resolve_user(
        process.user.as_deref(),
        read_optional("/etc/passwd")?.as_deref(),
        read_optional("/etc/group")?.as_deref(),
    )?;
    super::workdir::enter_workdir(&process.cwd)?;

    let search_path = process
        .env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_SEARCH_PATH);
    let program = find_executable(&process.args[0], search_path)?;
    refuse_magic_links(&program)?;
    Ok(Prepared {
        program: c_string(program.as_os_str().as_encoded_bytes(), "program path")?,
        args: process
            .args
            .iter()
            .map(|a| c_string(a.as_bytes(), "argument"))
            .collect::<Result<_, _>>()?,
        env: with_home(&process.env, &user.home)
            .iter()
            .map(|e| c_string(e.as_bytes(), "environment entry"))
            .collect::<Result<_, _>>()?,
        user,
        set_groups,
        terminal: process.terminal,
        security: security.clone(),
    })
}

/// Refuses a program, or a `#!` interpreter on the way to one, reached through a /proc magic
/// link: `/proc/self/exe` here is the host's kiln binary (the CVE-2019-5736 pattern), and
/// `/proc/<pid>/fd/N` could name any file an init holds. Everything else already resolves
/// inside the root after `pivot_root`.
fn refuse_magic_links(program: &Path) -> Result<(), InitFailure> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    // The kernel follows at most four levels of interpreters (binfmt_script).
    let mut current = program.to_path_buf();
    for _ in 0..5 {
        let opened = rustix::fs::openat2(
            rustix::fs::CWD,
            &current,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::NO_MAGICLINKS,
        );
        let file = match opened {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::LOOP) => {
                return Err(InitFailure::Exec {
                    path: current.to_string_lossy().into_owned(),
                    message: "refusing to execute through a /proc magic link (it can name a file \
                              outside the sandbox, such as the host's kiln binary)"
                        .into(),
                });
            }
            // Not readable (execute-only) or missing: execve reports what it finds.
            Err(_) => return Ok(()),
        };
        let mut head = [0u8; 256];
        let mut read = 0;
        let mut file = file;
        while read < head.len() {
            match file.read(&mut head[read..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        let Some(line) = head[..read].strip_prefix(b"#!") else {
            return Ok(());
        };
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let Some(interpreter) = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|word| !word.is_empty())
        else {
            return Ok(());
        };
        current = PathBuf::from(std::ffi::OsStr::from_bytes(interpreter));
    }
    Ok(())
}

fn c_string(bytes: &[u8], what: &str) -> Result<CString, InitFailure> {
    CString::new(bytes).map_err(|_| InitFailure::Setup {
        step: "prepare the command".into(),
        message: format!(
            "{what} {:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        ),
    })
}

/// Reads a file of the container root, `None` if it does not exist.
fn read_optional(path: &str) -> Result<Option<String>, InitFailure> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InitFailure::setup(format!("read {path}"))(e)),
    }
}

/// Finds `name` the way a shell does: as a path if it contains a slash, else in each directory
/// of `search_path` (an empty entry meaning the current directory) as an executable file.
pub(super) fn find_executable(name: &str, search_path: &str) -> Result<PathBuf, InitFailure> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if !name.is_empty() {
        for dir in search_path.split(':') {
            let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(name);
            if is_executable_file(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(InitFailure::ExecutableNotFound {
        name: name.to_string(),
    })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Adds `HOME` from the user's passwd entry when the caller did not set it, as runc does.
fn with_home(env: &[String], home: &str) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn executable_lookup_follows_path_order_and_skips_non_executables() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        std::fs::write(first.join("tool"), "").unwrap();
        std::fs::write(second.join("tool"), "").unwrap();
        std::fs::set_permissions(second.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let search = format!("{}:{}", first.display(), second.display());
        assert_eq!(
            find_executable("tool", &search).unwrap(),
            second.join("tool")
        );
        assert_eq!(
            find_executable("missing", &search),
            Err(InitFailure::ExecutableNotFound {
                name: "missing".into()
            })
        );
        assert_eq!(
            find_executable("./x/y", &search).unwrap(),
            PathBuf::from("./x/y")
        );
        assert!(find_executable("", &search).is_err());
    }

    #[test]
    fn not_found_message_matches_docker() {
        let message = InitFailure::ExecutableNotFound { name: "foo".into() }.to_string();
        assert_eq!(message, "exec: \"foo\": executable file not found in $PATH");
    }
}
