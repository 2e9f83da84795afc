//! Extended attributes: which ones travel in layers, and overlayfs's own markers.
//!
//! Only `security.capability` (file capabilities, e.g. `ping`) and `user.*` are carried in
//! layers, as PAX `SCHILY.xattr.<name>` records. `trusted.*` (overlayfs's bookkeeping among
//! others) and `security.selinux` are host state and never exported or restored; `user.overlay.*`
//! is overlayfs's bookkeeping in `userxattr` mode and is treated like `trusted.overlay.*`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// The PAX record prefix for xattrs used by GNU tar, Docker and containerd.
pub(crate) const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Marks an overlay upper/lower dir as hiding everything below it (value `y`).
pub(crate) const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";
pub(crate) const OVERLAY_OPAQUE_USER: &str = "user.overlay.opaque";
/// Marks a regular file as a whiteout (the xattr form, an alternative to char device 0:0).
const OVERLAY_WHITEOUT: &str = "trusted.overlay.whiteout";
const OVERLAY_WHITEOUT_USER: &str = "user.overlay.whiteout";
/// Overlay features whose upper-dir representation is not a plain diff.
const OVERLAY_NOT_A_DIFF: &[&str] = &[
    "trusted.overlay.redirect",
    "trusted.overlay.metacopy",
    "user.overlay.redirect",
    "user.overlay.metacopy",
];

/// Whether an xattr is carried in layers.
pub(crate) fn is_portable(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

/// The xattrs of one file (not following a final symlink), names sorted.
#[derive(Debug, Default)]
pub(crate) struct FileXattrs {
    names: Vec<OsString>,
}

impl FileXattrs {
    pub(crate) fn read(path: &Path) -> io::Result<FileXattrs> {
        let mut buf = vec![0u8; 1024];
        let len = loop {
            match rustix::fs::llistxattr(path, &mut buf[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => {
                    let needed = rustix::fs::llistxattr_query(path)?;
                    buf.resize(needed.max(buf.len() * 2), 0);
                }
                Err(rustix::io::Errno::NOTSUP) => return Ok(FileXattrs::default()),
                Err(e) => return Err(e.into()),
            }
        };
        let mut names: Vec<OsString> = buf[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect();
        names.sort();
        Ok(FileXattrs { names })
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Whether overlayfs marked this directory opaque.
    pub(crate) fn is_opaque(&self, path: &Path) -> io::Result<bool> {
        for name in [OVERLAY_OPAQUE, OVERLAY_OPAQUE_USER] {
            if self.has(name) && get(path, OsStr::new(name))?.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether overlayfs marked this file a whiteout with an xattr.
    pub(crate) fn is_whiteout(&self) -> bool {
        self.has(OVERLAY_WHITEOUT) || self.has(OVERLAY_WHITEOUT_USER)
    }

    /// The first overlay xattr that means the upper dir is not a plain diff, if any.
    pub(crate) fn not_a_diff_marker(&self) -> Option<&'static str> {
        OVERLAY_NOT_A_DIFF.iter().copied().find(|m| self.has(m))
    }

    /// The portable xattrs with their values, sorted by name.
    pub(crate) fn portable_values(&self, path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in self.names.iter().filter(|n| is_portable(n.as_bytes())) {
            // A name can vanish between list and get only if something else is changing the
            // tree; skipping it is then as good as any answer.
            if let Some(value) = get(path, name)? {
                out.push((name.clone(), value));
            }
        }
        Ok(out)
    }
}

/// One xattr's value, `None` if it is not set.
fn get(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => {
                let needed = rustix::fs::lgetxattr_query(path, name)?;
                buf.resize(needed.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_capabilities_and_user_xattrs_travel() {
        assert!(is_portable(b"security.capability"));
        assert!(is_portable(b"user.mime_type"));
        assert!(!is_portable(b"user.overlay.opaque"));
        assert!(!is_portable(b"trusted.overlay.opaque"));
        assert!(!is_portable(b"security.selinux"));
        assert!(!is_portable(b"system.posix_acl_access"));
    }

    #[test]
    fn reads_names_sorted_and_overlay_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        rustix::fs::setxattr(path, "user.b", b"2", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(path, "user.a", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(path, OVERLAY_OPAQUE, b"y", rustix::fs::XattrFlags::empty()).unwrap();
        let x = FileXattrs::read(path).unwrap();
        assert!(x.is_opaque(path).unwrap());
        assert!(!x.is_whiteout());
        assert_eq!(x.not_a_diff_marker(), None);
        let values = x.portable_values(path).unwrap();
        assert_eq!(
            values,
            vec![
                (OsString::from("user.a"), b"1".to_vec()),
                (OsString::from("user.b"), b"2".to_vec())
            ]
        );
    }
}
