//! `--chown` values.
//!
//! Names in `--chown` are looked up in the image's own `/etc/passwd` and `/etc/group`, read with
//! the same root confinement as every other access to the container filesystem. An explicit
//! `--chown` naming an unknown user or group is an error; the owner WORKDIR gives its directory
//! for the current USER follows BuildKit instead, where only a RUN has to resolve the user
//! ([`workdir_owner`]).

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

/// The owner of the directories WORKDIR creates while `user` (the USER, `user[:group]`) is
/// current, as BuildKit's file backend resolves it (solver/llbsolver/ops/user_linux.go
/// `readUser`, with client/llb/fileop.go `WithUser` splitting the value): start from 0:0; a
/// numeric user (or `root`) sets uid and gid, a name found in `/etc/passwd` sets both from its
/// entry; then a numeric group (or `root`) or a name found in `/etc/group` sets the gid. Names
/// that are not found (or a missing file) change nothing, so `USER docker` with no such user
/// builds and its WORKDIR directories stay root's.
pub fn workdir_owner(user: &str, root: &Path) -> Result<(u32, u32), CopyError> {
    let numeric = |part: &str| match part {
        "root" => Some(0),
        _ => part.parse::<u32>().ok(),
    };
    let (user, group) = match user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (user, None),
    };
    let root = ConfinedRoot::open(root)?;
    let (mut uid, mut gid) = (0, 0);
    if let Some(id) = numeric(user) {
        (uid, gid) = (id, id);
    } else if let Some((found_uid, found_gid)) = lookup(&read_in_root(&root, "etc/passwd")?, user)
        .and_then(|fields| Some((fields.first()?.parse().ok()?, fields.get(1)?.parse().ok()?)))
    {
        (uid, gid) = (found_uid, found_gid);
    }
    match group.map(|group| (group, numeric(group))) {
        None => {}
        Some((_, Some(id))) => gid = id,
        Some((group, None)) => {
            if let Some(found) = lookup(&read_in_root(&root, "etc/group")?, group)
                .and_then(|fields| fields.first()?.parse().ok())
            {
                gid = found;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// BuildKit's `readUser` resolution of the USER for WORKDIR, case by case.
    #[test]
    fn workdir_owner_follows_buildkit_and_never_fails_on_unknown_names() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1001::/home/kiln:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nkiln:x:1001:\nstaff:x:50:\n",
        )
        .unwrap();
        let cases: [(&str, (u32, u32)); 10] = [
            ("docker", (0, 0)),
            ("docker:root", (0, 0)),
            ("docker:staff", (0, 50)),
            ("docker:nogroup", (0, 0)),
            ("kiln", (1000, 1001)),
            ("kiln:staff", (1000, 50)),
            ("kiln:nogroup", (1000, 1001)),
            ("1234", (1234, 1234)),
            ("1234:nogroup", (1234, 1234)),
            ("root:77", (0, 77)),
        ];
        for (user, want) in cases {
            assert_eq!(workdir_owner(user, root.path()).unwrap(), want, "{user}");
        }
        // No /etc/passwd at all (a scratch image): names resolve to root, nothing fails.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(workdir_owner("docker", empty.path()).unwrap(), (0, 0));
        // An explicit --chown stays strict.
        assert!(matches!(
            parse_chown("docker", root.path()),
            Err(CopyError::UnknownUser { .. })
        ));
    }
}
