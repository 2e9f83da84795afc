//! An entry's metadata (mode, owner, mtime, portable xattrs) read from its tar header and
//! applied to what was written, owner first: a chown clears setuid bits and file
//! capabilities, so the mode comes after it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};

use crate::userns;
use crate::xattrs::{self, PAX_XATTR_PREFIX};

/// Metadata of one entry, as it will be applied.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

/// The entry's metadata; `owner` replaces its uid and gid.
pub(super) fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    owner: Option<(u32, u32)>,
) -> io::Result<Meta> {
    let header = entry.header();
    let old = header.as_old();
    let to_id = |id: u64| {
        u32::try_from(id).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("id {id} out of range"))
        })
    };
    let mut meta = Meta {
        mode: lenient(&old.mode, header.mode().map(u64::from))? as u32 & 0o7777,
        uid: to_id(lenient(&old.uid, header.uid())?)?,
        gid: to_id(lenient(&old.gid, header.gid())?)?,
        mtime: i64::try_from(lenient(&old.mtime, header.mtime())?).unwrap_or(i64::MAX),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for record in pax {
            let record = record?;
            if let Some(name) = record.key_bytes().strip_prefix(PAX_XATTR_PREFIX.as_bytes())
                && xattrs::is_portable(name)
            {
                meta.xattrs.push((
                    OsStr::from_bytes(name).to_owned(),
                    record.value_bytes().to_vec(),
                ));
            }
        }
    }
    if let Some((uid, gid)) = owner {
        (meta.uid, meta.gid) = (uid, gid);
    }
    Ok(meta)
}

/// Some writers leave numeric fields blank (all NUL or spaces); like GNU tar and Go's reader,
/// read those as 0.
fn lenient(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// Owner first (it clears setuid bits and file capabilities), then mode, xattrs, and mtime.
pub(super) fn apply_fd_meta(fd: &impl AsFd, meta: &Meta) -> io::Result<()> {
    let uid = rustix::fs::Uid::from_raw(meta.uid);
    let gid = rustix::fs::Gid::from_raw(meta.gid);
    match rustix::fs::fchown(fd, Some(uid), Some(gid)) {
        Err(e) if userns::squash_unmapped_owner(e) => {
            rustix::fs::fchown(fd, Some(Uid::ROOT), Some(Gid::ROOT))?
        }
        other => other?,
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    for (name, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()) {
            // The filesystem cannot store it; as with cp -a, the data matters more.
            Err(rustix::io::Errno::NOTSUP) => {}
            other => other?,
        }
    }
    rustix::fs::futimens(fd, &timestamps(meta.mtime))?;
    Ok(())
}

pub(super) fn chown_at(parent: &OwnedFd, name: &OsStr, meta: &Meta) -> io::Result<()> {
    let uid = rustix::fs::Uid::from_raw(meta.uid);
    let gid = rustix::fs::Gid::from_raw(meta.gid);
    let chown = |uid, gid| {
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    };
    match chown(uid, gid) {
        Err(e) if userns::squash_unmapped_owner(e) => chown(Uid::ROOT, Gid::ROOT)?,
        other => other?,
    }
    Ok(())
}

pub(super) fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
