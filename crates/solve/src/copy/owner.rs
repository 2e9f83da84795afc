//! `--chown` values.
//!
//! Names in `--chown` are looked up in the image's own `/etc/passwd` and `/etc/group`, read with
//! the same root confinement as every other access to the container filesystem.

use std::io::Read;
use std::path::Path;

use rustix::fs::OFlags;
use rustix::io::Errno;

use super::CopyError;
use super::confined::ConfinedRoot;

/// Resolves `--chown`: `uid`, `uid:gid`, `user`, `user:group` (numbers and names may mix).
/// A user given without a group gets its primary group from `/etc/passwd`; a bare numeric uid
/// gets the same number as gid, as Docker does.
pub fn parse_chown(spec: &str, root: &Path) -> Result<(u32, u32), CopyError> {
    let bad = |reason: &str| CopyError::BadOwner {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() || group == Some("") {
        return Err(bad("expected user[:group]"));
    }
    let root = ConfinedRoot::open(root)?;
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => {
            let passwd = read_in_root(&root, "etc/passwd")?;
            lookup(&passwd, user)
                .and_then(|fields| {
                    Some((fields.first()?.parse().ok()?, fields.get(1)?.parse().ok()?))
                })
                .ok_or_else(|| CopyError::UnknownUser {
                    name: user.to_string(),
                })?
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_in_root(&root, "etc/group")?;
                lookup(&groups, group)
                    .and_then(|fields| fields.first()?.parse().ok())
                    .ok_or_else(|| CopyError::UnknownGroup {
                        name: group.to_string(),
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// Reads a small file of the image; a missing file reads as empty (so lookups just fail).
fn read_in_root(root: &ConfinedRoot, rel: &str) -> Result<String, CopyError> {
    let fail = |source: std::io::Error| CopyError::Io {
        path: format!("/{rel}"),
        source,
    };
    let fd = match root.open_in_root(Path::new(rel), OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(String::new()),
        Err(errno) => return Err(fail(errno.into())),
    };
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The fields after `name:password:` on the line for `name`, in passwd/group format.
fn lookup<'a>(database: &'a str, name: &str) -> Option<Vec<&'a str>> {
    database.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.skip(1).collect())
    })
}
