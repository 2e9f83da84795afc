//! What changes when kiln runs rootless, inside a user namespace of its own (see
//! `kiln_sandbox::rootless`): overlayfs is mounted with `userxattr`, so opaque directories are
//! marked with `user.overlay.opaque` (setting `trusted.*` needs privileges over the initial
//! namespace); ids without a mapping cannot be given to files; and device nodes other than
//! whiteouts (char 0:0) cannot be created.

use kiln_store::in_user_namespace;

use crate::xattrs::{OVERLAY_OPAQUE, OVERLAY_OPAQUE_USER};

/// The xattr marking an overlay directory opaque, in the namespace the overlay mounts of this
/// process read.
pub(crate) fn opaque_xattr() -> &'static str {
    opaque_xattr_for(in_user_namespace())
}

fn opaque_xattr_for(in_userns: bool) -> &'static str {
    if in_userns {
        OVERLAY_OPAQUE_USER
    } else {
        OVERLAY_OPAQUE
    }
}

/// Whether a failed `chown` should be retried as owner 0:0: inside a user namespace an id
/// without a mapping (a user with no `/etc/subuid` range has only their own id, seen as 0)
/// gives `EINVAL`. The file is then stored as root's, as podman does with
/// `ignore_chown_errors`; the binary warns about the single-id map once.
pub(crate) fn squash_unmapped_owner(err: rustix::io::Errno) -> bool {
    err == rustix::io::Errno::INVAL && in_user_namespace()
}

/// Whether a failed `mknod` of a device node should be skipped: a user namespace may not
/// create devices (as Docker and containerd do rootless, the node is left out of the
/// snapshot; the layer blob itself keeps it).
pub(crate) fn skip_device_node(err: rustix::io::Errno) -> bool {
    err == rustix::io::Errno::PERM && in_user_namespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_marker_follows_the_namespace() {
        assert_eq!(opaque_xattr_for(false), "trusted.overlay.opaque");
        assert_eq!(opaque_xattr_for(true), "user.overlay.opaque");
    }

    #[test]
    fn failures_are_only_excused_inside_a_user_namespace() {
        // The tests run as real root in the initial namespace: nothing is excused there.
        if !in_user_namespace() {
            assert!(!squash_unmapped_owner(rustix::io::Errno::INVAL));
            assert!(!skip_device_node(rustix::io::Errno::PERM));
        }
        assert!(!squash_unmapped_owner(rustix::io::Errno::PERM));
        assert!(!skip_device_node(rustix::io::Errno::INVAL));
    }
}
