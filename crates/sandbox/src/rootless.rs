//! Rootless mode: an ordinary user's kiln runs its mount work inside a user namespace of its
//! own, where it is root over the ids it was given.
//!
//! Creating the namespace takes two processes, because only a process *outside* a user
//! namespace can run the setuid helpers (`newuidmap`/`newgidmap` from Debian's `uidmap`) that
//! map the user's subordinate ids (`/etc/subuid`, `/etc/subgid`) into it. So
//! [`reexec_in_user_namespace`] re-executes the current binary with the same arguments and
//! waits for it: the child calls [`maybe_join_user_namespace`] first thing in `main`
//! (single-threaded, as `unshare(CLONE_NEWUSER)` requires), creates the namespace, tells the
//! parent, which writes the maps, and then carries on as uid 0 of the namespace: it can chown
//! to every mapped id, mount overlayfs (Linux ≥ 5.11, with `userxattr`), create whiteouts (char
//! device 0:0) and mount /proc for a sandbox's PID namespace. Inside, the host user is 0 and
//! subordinate id `start + n` is `1 + n`.
//!
//! A user without subordinate ranges gets a single-id map (the user is 0 and nothing else is
//! mapped): files of other owners are then stored as owned by 0 and a `USER` other than root
//! cannot be switched to; [`UserNamespacePlan::is_single_id`] lets the binary warn about it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use rustix::pipe::PipeFlags;
use rustix::thread::UnshareFlags;

use crate::error::SandboxError;
use crate::sys;

/// Environment variable naming, in the re-executed child, the fds of the two handshake pipes
/// (`READ_FD,WRITE_FD`). Removed from the environment as soon as it is read.
const HANDSHAKE_ENV: &str = "_KILN_USERNS_HANDSHAKE";

/// Exit status of a child that could not enter its namespace (as for the sandbox init).
pub const SETUP_FAILED: u8 = 125;

/// One line of a uid or gid map: `count` ids from `outside` (host) appear from `inside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps an ordinary user's namespace gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespacePlan {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
}

impl UserNamespacePlan {
    /// The maps for the user `name` (uid `uid`, gid `gid`) given the text of `/etc/subuid` and
    /// `/etc/subgid`: the user's own id becomes 0, the subordinate ranges follow from 1 in file
    /// order.
    pub fn new(name: Option<&str>, uid: u32, gid: u32, subuid: &str, subgid: &str) -> Self {
        UserNamespacePlan {
            uid_map: id_map(uid, &subordinate_ranges(subuid, name, uid)),
            gid_map: id_map(gid, &subordinate_ranges(subgid, name, uid)),
        }
    }

    /// The plan for the calling (non-root) user, from the system's files; a missing file means
    /// no ranges.
    pub fn for_current_user() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| user_name(&passwd, uid))
            .or_else(|| std::env::var("USER").ok());
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        UserNamespacePlan::new(
            name.as_deref(),
            uid,
            gid,
            &read("/etc/subuid"),
            &read("/etc/subgid"),
        )
    }

    /// Whether the user has no subordinate uids or gids, so only their own id is mapped.
    pub fn is_single_id(&self) -> bool {
        self.uid_map.len() == 1 || self.gid_map.len() == 1
    }
}

/// `0 → own`, then the ranges from inside id 1 on, skipping the user's own id should a range
/// (wrongly) contain it, and stopping before the inside ids would overflow.
fn id_map(own: u32, ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next_inside: u32 = 1;
    for &(start, count) in ranges {
        if count == 0 || (start..start.saturating_add(count)).contains(&own) {
            continue;
        }
        let Some(end) = next_inside.checked_add(count) else {
            break;
        };
        map.push(IdRange {
            inside: next_inside,
            outside: start,
            count,
        });
        next_inside = end;
    }
    map
}

/// The `start:count` ranges of `/etc/subuid`-format text whose first field is the user's name
/// or numeric uid, in file order. Comments and malformed lines are skipped.
pub fn subordinate_ranges(text: &str, name: Option<&str>, uid: u32) -> Vec<(u32, u32)> {
    let uid = uid.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            (owner == uid || Some(owner) == name).then_some((start, count))
        })
        .collect()
}

/// The login name of `uid` in `/etc/passwd`-format text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Whether this process runs in a user namespace other than the initial one, where overlayfs
/// needs `userxattr` and `trusted.*` xattrs cannot be set. The initial namespace maps every id
/// to itself (`0 0 4294967295`).
pub fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|map| !is_identity_map(&map))
            .unwrap_or(false)
    })
}

fn is_identity_map(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// Whether `gid` has a mapping in this process's user namespace (always so in the initial one).
pub(crate) fn gid_is_mapped(gid: u32) -> bool {
    std::fs::read_to_string("/proc/self/gid_map")
        .map(|map| map_contains(&map, gid))
        .unwrap_or(true)
}

/// Whether a `/proc/PID/[ug]id_map` text maps inside id `id`.
fn map_contains(map: &str, id: u32) -> bool {
    map.lines().any(|line| {
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        matches!(fields[..], [inside, _, count] if (inside..inside + count).contains(&u64::from(id)))
    })
}

/// Whether `setgroups(2)` is allowed here (a single-id gid map written without `newgidmap`
/// needs it denied).
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// Environment variable naming, in the re-executed child, an fd of the existing user namespace
/// to join instead of making one (the per-user network namespace's, `netns_keeper`).
const JOIN_ENV: &str = "_KILN_USERNS_JOIN";

/// Runs the current binary again with the same arguments inside a new user namespace mapped by
/// `plan` — or inside the existing namespace `join` (`/proc/PID/ns/user` of the per-user
/// network namespace's keeper, mapped alike) —, with `extra_env` added, and returns its exit
/// code (128 + signal if killed). Call it before any thread is started that could hold the
/// terminal, and exit with the result.
pub fn reexec_in_user_namespace(
    plan: &UserNamespacePlan,
    extra_env: &[(OsString, OsString)],
    join: Option<std::fs::File>,
) -> Result<i32, SandboxError> {
    if let Some(namespace) = join {
        // Joining needs no maps: the namespace has them. The host user owns it (its kiln
        // made it), which is what lets the child `setns` into it.
        let mut command = Command::new("/proc/self/exe");
        command
            .args(std::env::args_os().skip(1))
            .env(JOIN_ENV, namespace.as_raw_fd().to_string());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        sys::keep_fds_across_exec(&mut command, vec![namespace.as_raw_fd()]);
        let mut child = command
            .spawn()
            .map_err(SandboxError::io("re-execute kiln in the user namespace"))?;
        drop(namespace);
        return wait_code(&mut child);
    }
    // child → parent: "namespace created"; parent → child: "maps written".
    let (ready_read, ready_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(pipe_error)?;
    let (go_read, go_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(pipe_error)?;
    let mut command = Command::new("/proc/self/exe");
    command.args(std::env::args_os().skip(1)).env(
        HANDSHAKE_ENV,
        format!("{},{}", go_read.as_raw_fd(), ready_write.as_raw_fd()),
    );
    for (key, value) in extra_env {
        command.env(key, value);
    }
    sys::keep_fds_across_exec(
        &mut command,
        vec![go_read.as_raw_fd(), ready_write.as_raw_fd()],
    );
    let mut child = command
        .spawn()
        .map_err(SandboxError::io("re-execute kiln in a user namespace"))?;
    drop((go_read, ready_write));

    let mut ready = [0u8; 1];
    let handshake = std::fs::File::from(ready_read).read(&mut ready);
    if !matches!(handshake, Ok(1)) {
        // The child died before creating its namespace; it said why on stderr.
        return wait_code(&mut child);
    }
    if let Err(e) = write_maps(child.id(), plan) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // A failed write means the child is gone; its exit status tells.
    let _ = std::fs::File::from(go_write).write_all(b"1");
    wait_code(&mut child)
}

fn pipe_error(e: rustix::io::Errno) -> SandboxError {
    SandboxError::io("create a pipe to the user-namespace child")(e.into())
}

fn wait_code(child: &mut std::process::Child) -> Result<i32, SandboxError> {
    let status = child
        .wait()
        .map_err(SandboxError::io("wait for the user-namespace child"))?;
    Ok(crate::host::shell_exit_code(status))
}

/// Writes the child's uid and gid maps: through `newuidmap`/`newgidmap` when there are
/// subordinate ranges (only those setuid helpers may map ids the user does not own), else
/// directly, which the kernel allows for the single line mapping the writer's own id.
fn write_maps(pid: u32, plan: &UserNamespacePlan) -> Result<(), SandboxError> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    if plan.uid_map.len() > 1 {
        run_map_helper("newuidmap", pid, &plan.uid_map)?;
    } else {
        write_proc(&proc_dir.join("uid_map"), &map_text(&plan.uid_map))?;
    }
    if plan.gid_map.len() > 1 {
        run_map_helper("newgidmap", pid, &plan.gid_map)?;
    } else {
        // The kernel refuses an unprivileged gid map while setgroups could drop groups.
        write_proc(&proc_dir.join("setgroups"), "deny")?;
        write_proc(&proc_dir.join("gid_map"), &map_text(&plan.gid_map))?;
    }
    Ok(())
}

fn map_text(map: &[IdRange]) -> String {
    map.iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_proc(path: &Path, contents: &str) -> Result<(), SandboxError> {
    std::fs::write(path, contents).map_err(SandboxError::io(format!("write {}", path.display())))
}

fn run_map_helper(helper: &str, pid: u32, map: &[IdRange]) -> Result<(), SandboxError> {
    let mut command = Command::new(helper);
    command.arg(pid.to_string());
    for r in map {
        command.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let output = command.output().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (install the uidmap package, or remove the user's /etc/subuid and /etc/subgid \
             entries to use a single-id map)"
        } else {
            ""
        };
        SandboxError::io(format!("run {helper}{hint}"))(e)
    })?;
    if !output.status.success() {
        return Err(SandboxError::Io {
            what: format!("map the user namespace's ids with {helper}"),
            source: std::io::Error::other(format!(
                "{} ({}; are the user's /etc/subuid and /etc/subgid ranges right?)",
                String::from_utf8_lossy(&output.stderr).trim(),
                output.status
            )),
        });
    }
    Ok(())
}

/// In a child started by [`reexec_in_user_namespace`], creates the user namespace and waits
/// until the parent has mapped it; otherwise returns at once. Call it first thing in `main`,
/// before any thread is started. When it fails, the process cannot go on: the caller reports
/// the error and exits with [`SETUP_FAILED`].
pub fn maybe_join_user_namespace() -> Result<(), SandboxError> {
    let setup_failed = |message: String| SandboxError::RootlessSetup(message);
    if let Some(value) = std::env::var_os(JOIN_ENV) {
        let single = sys::SingleThreaded::check().map_err(|e| setup_failed(e.to_string()))?;
        remove_env(&single, JOIN_ENV);
        return join_existing(&value.to_string_lossy()).map_err(setup_failed);
    }
    let Some(value) = std::env::var_os(HANDSHAKE_ENV) else {
        return Ok(());
    };
    // Both the environment change and `unshare(CLONE_NEWUSER)` need a single-threaded process.
    let single = sys::SingleThreaded::check().map_err(|e| setup_failed(e.to_string()))?;
    // It must not reach the processes this one starts (a sandbox init would try to join).
    remove_env(&single, HANDSHAKE_ENV);
    join(&value.to_string_lossy()).map_err(setup_failed)
}

#[allow(unsafe_code)]
fn remove_env(_checked: &sys::SingleThreaded, name: &str) {
    // SAFETY: the process had one thread when `_checked` was made and nothing started one
    // since (this runs first thing in `main`), so no other thread can read or write the
    // environment during the call.
    unsafe { std::env::remove_var(name) };
}

/// Joins the user namespace whose fd the parent passed (`setns` into a user namespace needs a
/// single-threaded caller, checked by the caller).
fn join_existing(fd: &str) -> Result<(), String> {
    let fd = fd
        .parse()
        .map_err(|_| format!("bad {JOIN_ENV} value {fd:?}"))?;
    let namespace = sys::take_inherited_fd(fd).map_err(|e| format!("user namespace fd: {e}"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("set the parent-death signal: {e}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&namespace),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(|e| format!("join the per-user network namespace's user namespace: {e}"))?;
    if !rustix::process::geteuid().is_root() {
        return Err("the joined user namespace does not map this user to root".into());
    }
    Ok(())
}

fn join(fds: &str) -> Result<(), String> {
    let (go, ready) = fds
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("bad {HANDSHAKE_ENV} value {fds:?}"))?;
    let go = sys::take_inherited_fd(go).map_err(|e| format!("handshake pipe: {e}"))?;
    let ready = sys::take_inherited_fd(ready).map_err(|e| format!("handshake pipe: {e}"))?;
    // The parent only waits for us; if it dies, so must we (nobody would report our status).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("set the parent-death signal: {e}"))?;
    sys::unshare(UnshareFlags::NEWUSER).map_err(|e| {
        format!(
            "create a user namespace: {e} (are unprivileged user namespaces disabled? \
             see /proc/sys/kernel/unprivileged_userns_clone and \
             /proc/sys/user/max_user_namespaces)"
        )
    })?;
    std::fs::File::from(ready)
        .write_all(b"1")
        .map_err(|e| format!("tell the parent: {e}"))?;
    let mut go_byte = [0u8; 1];
    match std::fs::File::from(go).read(&mut go_byte) {
        Ok(1) => {}
        _ => return Err("the parent could not map the user namespace's ids".into()),
    }
    if !rustix::process::geteuid().is_root() {
        return Err("the user namespace's ids were not mapped".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "\
# comment
alice:100000:65536
1001:200000:1000
bob:300000:65536
alice:500000:10
broken line
carol:x:1
";

    #[test]
    fn ranges_match_by_name_or_uid_in_file_order() {
        assert_eq!(
            subordinate_ranges(SUBUID, Some("alice"), 1000),
            vec![(100000, 65536), (500000, 10)]
        );
        assert_eq!(
            subordinate_ranges(SUBUID, Some("dave"), 1001),
            vec![(200000, 1000)]
        );
        assert!(subordinate_ranges(SUBUID, Some("carol"), 1002).is_empty());
        assert!(subordinate_ranges(SUBUID, None, 4242).is_empty());
    }

    #[test]
    fn plan_maps_the_user_to_zero_and_ranges_from_one() {
        let plan = UserNamespacePlan::new(Some("alice"), 1000, 1000, SUBUID, "alice:100000:65536");
        assert_eq!(
            plan.uid_map,
            vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
                IdRange {
                    inside: 65537,
                    outside: 500000,
                    count: 10
                },
            ]
        );
        assert_eq!(plan.gid_map.len(), 2);
        assert!(!plan.is_single_id());
        assert_eq!(map_text(&plan.gid_map), "0 1000 1\n1 100000 65536\n");
    }

    #[test]
    fn no_ranges_give_a_single_id_map() {
        let plan = UserNamespacePlan::new(Some("zed"), 1005, 1006, SUBUID, "");
        assert!(plan.is_single_id());
        assert_eq!(map_text(&plan.uid_map), "0 1005 1\n");
        assert_eq!(map_text(&plan.gid_map), "0 1006 1\n");
    }

    #[test]
    fn a_range_holding_the_users_own_id_is_skipped() {
        let map = id_map(100010, &[(100000, 65536), (300000, 5)]);
        assert_eq!(map.len(), 2);
        assert_eq!(map[1].outside, 300000);
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000::/home/kiln:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("kiln"));
        assert_eq!(user_name(passwd, 7), None);
    }

    #[test]
    fn the_initial_namespace_has_the_identity_map() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
    }

    #[test]
    fn map_lookup_covers_every_line() {
        let map = "0 1000 1\n1 100000 65536\n";
        assert!(map_contains(map, 0));
        assert!(map_contains(map, 5));
        assert!(map_contains(map, 65536));
        assert!(!map_contains(map, 65537));
        assert!(!map_contains("0 1000 1\n", 5));
        assert!(map_contains("0 0 4294967295\n", 4294967294));
    }
}
