//! Where a rootless kiln's bridge networks live: one per-user network namespace, kept by a
//! small process (`kiln_sandbox::netns_keeper`) and recorded in
//! `<store>/networks/user-netns.json` (its pid and start time), so every later kiln command
//! and `kiln serve` of this store finds the same namespace.
//!
//! The key decision: the namespace is owned by the keeper's user namespace, and a rootless
//! kiln command joins that user namespace instead of making one of its own while the keeper
//! runs (the re-exec in the binary asks [`user_namespace_to_join`]). Only then does it have
//! `CAP_NET_ADMIN` over both the per-user namespace and its containers' namespaces, which a
//! veth pair between them needs; a sibling user namespace never has it. A kiln still in
//! another user namespace (a `kiln serve` started before the keeper) gets a clear error
//! rather than a half-made network.
//!
//! The keeper is started when the first user-defined network is made (or when a container
//! needs the namespace and it is gone, after a reboot: the bridges are then made again from
//! the records) and ended when the last user-defined network is removed.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_sandbox::netns_keeper::{self, Keeper};
use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

#[derive(Debug, Serialize, Deserialize)]
struct KeeperRecord {
    pid: u32,
    start_time: u64,
}

fn record_path(store_root: &Path) -> PathBuf {
    store_root.join("networks").join("user-netns.json")
}

fn log_path(store_root: &Path) -> PathBuf {
    store_root
        .join("networks")
        .join("user-netns-slirp4netns.log")
}

/// The recorded keeper, if it still runs.
fn recorded(store_root: &Path) -> Option<Keeper> {
    let bytes = std::fs::read(record_path(store_root)).ok()?;
    let record: KeeperRecord = serde_json::from_slice(&bytes).ok()?;
    netns_keeper::find_keeper(record.pid, record.start_time)
}

/// For the binary's rootless re-exec, in the host's user namespace: the user namespace of
/// this store's running keeper, opened (so a keeper ending now cannot hand its pid to
/// another process in between), or `None` when there is none.
pub fn user_namespace_to_join(store_root: &Path) -> Option<File> {
    let keeper = recorded(store_root)?;
    let namespace = File::open(format!("/proc/{}/ns/user", keeper.pid)).ok()?;
    // Still the same process after the open: the namespace is the keeper's.
    keeper.is_alive().then_some(namespace)
}

fn namespace_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The running keeper of this store's per-user network namespace, checked to share this
/// process's user namespace; `None` when none runs.
pub(crate) fn find(store_root: &Path) -> Result<Option<u32>> {
    let Some(keeper) = recorded(store_root) else {
        return Ok(None);
    };
    let ours = namespace_inode("/proc/self/ns/user");
    let its = namespace_inode(&format!("/proc/{}/ns/user", keeper.pid));
    if ours.is_none() || ours != its {
        return Err(NetworkError::ForeignUserNamespace { pid: keeper.pid });
    }
    Ok(Some(keeper.pid))
}

/// The keeper's pid, starting a keeper (and recording it) when none runs. Call with the
/// records' exclusive lock held, so two commands never start two.
pub(crate) fn ensure(store_root: &Path) -> Result<u32> {
    if let Some(pid) = find(store_root)? {
        return Ok(pid);
    }
    let dir = store_root.join("networks");
    std::fs::create_dir_all(&dir).map_err(NetworkError::io(&dir))?;
    let keeper = netns_keeper::start_keeper(&log_path(store_root))
        .map_err(|e| NetworkError::UserNamespace(Box::new(e)))?;
    let record = KeeperRecord {
        pid: keeper.pid,
        start_time: keeper.start_time,
    };
    let path = record_path(store_root);
    let tmp = dir.join("user-netns.json.tmp");
    let written = serde_json::to_vec(&record)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        keeper.stop();
        return Err(NetworkError::io(path)(e));
    }
    Ok(keeper.pid)
}

/// Ends the keeper (the namespace, its bridges and rules, and slirp4netns go with it) and
/// forgets it. Call with the records' exclusive lock held, once no user-defined network is
/// left.
pub(crate) fn stop(store_root: &Path) {
    if let Some(keeper) = recorded(store_root) {
        keeper.stop();
    }
    let _ = std::fs::remove_file(record_path(store_root));
    let _ = std::fs::remove_file(log_path(store_root));
}
