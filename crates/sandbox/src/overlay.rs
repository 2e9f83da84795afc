//! Mounting a stack of layer directories as one filesystem: overlayfs in general, with the
//! degenerate stacks (nothing, or a single read-only layer) handled without it. Used by the
//! init for the sandbox root and, through [`OverlayMount`], by the engine on the host side.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::SandboxError;

/// Options that keep the upper dir a plain, self-contained diff: no index, no metadata-only
/// copy-ups, no directory-rename redirects made or followed (renaming a lower dir then fails
/// with EXDEV and tools fall back to copying, as under Docker; `nofollow` rather than `off`
/// because `userxattr` mounts reject redirect following).
const DIFF_FRIENDLY_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "nofollow"),
];

/// Mounts `lowers` (topmost first) with an optional `(upper, work)` pair on `target`.
/// `empty_lower` must be an empty directory; it is used when there is an upper but no lower,
/// which overlayfs does not accept. `user_xattr` is needed inside a user namespace.
pub(crate) fn mount_layers(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    empty_lower: &Path,
    user_xattr: bool,
) -> io::Result<()> {
    match (lowers, upper) {
        ([], None) => rustix::mount::mount(
            "tmpfs",
            target,
            "tmpfs",
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=755",
        )
        .map_err(io::Error::from),
        ([single], None) => {
            rustix::mount::mount_bind(single, target)?;
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(io::Error::from)
        }
        ([], Some(_)) => mount_overlay(&[empty_lower.to_path_buf()], upper, target, user_xattr),
        _ => mount_overlay(lowers, upper, target, user_xattr),
    }
}

/// Mounts overlayfs, passing each lower dir separately through the new mount API so that
/// neither the one-page limit on mount options nor commas and colons in paths are a problem;
/// kernels without `lowerdir+` (before 6.8) get a classic escaped option string.
fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    user_xattr: bool,
) -> io::Result<()> {
    // Overlayfs refuses a directory listed twice with ELOOP, which names neither the directory
    // nor the cause; callers pass a repeated layer once (the higher copy shadows the lower).
    if let Some(twice) = lowers
        .iter()
        .enumerate()
        .find_map(|(i, l)| lowers[..i].contains(l).then_some(l))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "lower dir {} is listed twice (overlayfs takes a directory once)",
                twice.display()
            ),
        ));
    }
    match mount_overlay_fsconfig(lowers, upper, target, user_xattr) {
        Err(FsconfigError::Unsupported) => {}
        Err(FsconfigError::Failed(e)) => return Err(e),
        Ok(()) => return Ok(()),
    }
    let data = legacy_options(lowers, upper, user_xattr);
    let data = std::ffi::CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a layer path"))?;
    let flags = if upper.is_none() {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(io::Error::from)
}

enum FsconfigError {
    /// The kernel lacks the new mount API or `lowerdir+`; try the classic way.
    Unsupported,
    Failed(io::Error),
}

fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    user_xattr: bool,
) -> Result<(), FsconfigError> {
    use rustix::io::Errno;
    use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string};
    let failed = |e: Errno| FsconfigError::Failed(e.into());

    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|_| FsconfigError::Unsupported)?;
    for (i, lower) in lowers.iter().enumerate() {
        match fsconfig_set_string(&fs, "lowerdir+", lower) {
            Err(Errno::INVAL) if i == 0 => return Err(FsconfigError::Unsupported),
            other => other.map_err(failed)?,
        }
    }
    if let Some((upper, work)) = upper {
        fsconfig_set_string(&fs, "upperdir", upper).map_err(failed)?;
        fsconfig_set_string(&fs, "workdir", work).map_err(failed)?;
    }
    for (key, value) in DIFF_FRIENDLY_OPTIONS {
        fsconfig_set_string(&fs, key, value).map_err(failed)?;
    }
    if user_xattr {
        fsconfig_set_flag(&fs, "userxattr").map_err(failed)?;
    }
    fsconfig_create(&fs).map_err(failed)?;
    let attrs = if upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mount =
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(failed)?;
    rustix::mount::move_mount(
        &mount,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed)
}

/// Whether overlayfs accepts `lower` with `(upper, work)` on their filesystem, asked without
/// mounting anything: overlayfs checks the upper filesystem (xattrs, file handles, whiteouts,
/// tmpfiles) when the new mount API creates its superblock, which goes with the descriptor.
/// An attached mount would have to be unmounted again, and an unmount waits for an RCU grace
/// period (tens of milliseconds on a busy machine) — on the path of every container start.
/// `None` where the kernel lacks the new mount API (before 5.2).
pub(crate) fn overlay_superblock_accepted(
    lower: &Path,
    (upper, work): (&Path, &Path),
    user_xattr: bool,
) -> Option<bool> {
    use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string};
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).ok()?;
    // `lowerdir` (not `lowerdir+`, 6.8 on) is understood by every kernel with fsopen.
    let configured = fsconfig_set_string(&fs, "lowerdir", escape(lower))
        .and_then(|()| fsconfig_set_string(&fs, "upperdir", upper))
        .and_then(|()| fsconfig_set_string(&fs, "workdir", work))
        .and_then(|()| {
            DIFF_FRIENDLY_OPTIONS
                .iter()
                .try_for_each(|&(key, value)| fsconfig_set_string(&fs, key, value))
        })
        .and_then(|()| match user_xattr {
            true => fsconfig_set_flag(&fs, "userxattr"),
            false => Ok(()),
        });
    Some(configured.and_then(|()| fsconfig_create(&fs)).is_ok())
}

/// [`overlay_superblock_accepted`], or on a kernel without the new mount API a classic mount
/// on the empty directory `target`, unmounted at once.
pub(crate) fn overlay_accepted(
    lower: &Path,
    (upper, work): (&Path, &Path),
    target: &Path,
    user_xattr: bool,
) -> bool {
    if let Some(accepted) = overlay_superblock_accepted(lower, (upper, work), user_xattr) {
        return accepted;
    }
    let mounted = mount_layers(
        &[lower.to_path_buf()],
        Some((upper, work)),
        target,
        Path::new("/"),
        user_xattr,
    )
    .is_ok();
    if mounted {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
    }
    mounted
}

/// A path as an element of overlayfs's classic option string: `\`, `:` and `,` escaped by a
/// backslash, as its option parser expects.
fn escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The classic `lowerdir=a:b,upperdir=...` string (paths escaped by [`escape`]).
fn legacy_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, user_xattr: bool) -> String {
    let lowers: Vec<String> = lowers.iter().map(|l| escape(l)).collect();
    let mut options = vec![format!("lowerdir={}", lowers.join(":"))];
    if let Some((upper, work)) = upper {
        options.push(format!("upperdir={}", escape(upper)));
        options.push(format!("workdir={}", escape(work)));
    }
    options.extend(
        DIFF_FRIENDLY_OPTIONS
            .iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    if user_xattr {
        options.push("userxattr".to_string());
    }
    options.join(",")
}

/// A layer stack mounted on the host side (in the caller's mount namespace), unmounted on drop.
/// Read-only when there is no upper dir. Where overlayfs cannot be mounted, the stack is copied
/// into the target instead and the changes are written to the upper dir when it is unmounted
/// (see `copy_root`).
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
    /// Kept alive as the stand-in lower dir of an upper-only mount.
    _empty_lower: Option<tempfile::TempDir>,
    /// Set when the stack was copied rather than mounted.
    copied: Option<CopiedStack>,
}

#[derive(Debug)]
struct CopiedStack {
    upper: Option<PathBuf>,
    baseline: crate::copy_root::Baseline,
}

impl OverlayMount {
    /// Mounts `lower_dirs` (topmost first) and, if given, the `(upper, work)` pair on the
    /// existing directory `target`. Needs CAP_SYS_ADMIN in the caller's mount namespace.
    pub fn mount(
        lower_dirs: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
    ) -> Result<Self, SandboxError> {
        let empty_lower = match (lower_dirs, upper) {
            ([], Some(_)) => Some(
                tempfile::Builder::new()
                    .prefix("kiln-empty-lower-")
                    .tempdir()
                    .map_err(SandboxError::io("create an empty lower dir"))?,
            ),
            _ => None,
        };
        let empty_path = empty_lower
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"));
        let user_xattr =
            !rustix::process::geteuid().is_root() || crate::rootless::in_user_namespace();
        let probe = crate::copy_root::Probe::for_mount(lower_dirs, upper, target);
        if crate::copy_root::copy_fallback_needed(probe, user_xattr) {
            return Self::copy(lower_dirs, upper.map(|(u, _)| u), target);
        }
        mount_layers(lower_dirs, upper, target, empty_path, user_xattr).map_err(
            SandboxError::io(format!(
                "mount {} layer(s){} on {}",
                lower_dirs.len(),
                if upper.is_some() {
                    " with an upper dir"
                } else {
                    ""
                },
                target.display()
            )),
        )?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
            _empty_lower: empty_lower,
            copied: None,
        })
    }

    /// The copying fallback: the upper dir's and lower dirs' files are copied into `target`.
    fn copy(
        lower_dirs: &[PathBuf],
        upper: Option<&Path>,
        target: &Path,
    ) -> Result<Self, SandboxError> {
        let layers: Vec<&Path> = upper
            .into_iter()
            .chain(lower_dirs.iter().map(PathBuf::as_path))
            .collect();
        let baseline =
            crate::copy_root::materialize(&layers, target).map_err(SandboxError::io(format!(
                "copy {} layer(s) into {} (overlayfs cannot be mounted here)",
                layers.len(),
                target.display()
            )))?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
            _empty_lower: None,
            copied: Some(CopiedStack {
                upper: upper.map(Path::to_path_buf),
                baseline,
            }),
        })
    }

    /// For a copied stack: writes the changes into the upper dir and empties the target.
    fn finish_copy(&mut self) -> Result<(), SandboxError> {
        let Some(copied) = self.copied.take() else {
            return Ok(());
        };
        self.mounted = false;
        if let Some(upper) = &copied.upper {
            crate::copy_root::write_diff(&self.target, &copied.baseline, upper).map_err(
                SandboxError::io(format!(
                    "write the changes in {} to {}",
                    self.target.display(),
                    upper.display()
                )),
            )?;
        }
        crate::copy_root::clear(&self.target)
            .map_err(SandboxError::io(format!("empty {}", self.target.display())))
    }

    /// Whether the stack was copied into the target instead of mounted (no overlayfs here):
    /// nothing may be mounted inside it then, since finishing the copy empties the target.
    pub fn is_copied(&self) -> bool {
        self.copied.is_some()
    }

    /// Where the merged filesystem is visible.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (dropping unmounts too, lazily if busy, silently).
    pub fn unmount(mut self) -> Result<(), SandboxError> {
        if self.copied.is_some() {
            return self.finish_copy();
        }
        self.mounted = false;
        unmount_quiesced(&self.target, UnmountFlags::empty())
            .map_err(|e| SandboxError::io(format!("unmount {}", self.target.display()))(e.into()))
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.copied.is_some() {
            let _ = self.finish_copy();
            return;
        }
        if self.mounted && unmount_quiesced(&self.target, UnmountFlags::empty()).is_err() {
            let _ = unmount_quiesced(&self.target, UnmountFlags::DETACH);
        }
    }
}

/// Unmounts `target` while no child still holds copies of our descriptors (see `fork_window`).
fn unmount_quiesced(target: &Path, flags: UnmountFlags) -> rustix::io::Result<()> {
    crate::fork_window::quiesced(|| rustix::mount::unmount(target, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_options_escape_separators_and_keep_order() {
        let lowers = [PathBuf::from("/l/top"), PathBuf::from("/l/a:b,c")];
        let options = legacy_options(&lowers, Some((Path::new("/u"), Path::new("/w"))), false);
        assert_eq!(
            options,
            "lowerdir=/l/top:/l/a\\:b\\,c,upperdir=/u,workdir=/w,index=off,metacopy=off,redirect_dir=nofollow"
        );
        let options = legacy_options(&lowers[..1], None, true);
        assert!(options.ends_with(",userxattr"), "{options}");
        assert!(!options.contains("upperdir"));
    }

    #[test]
    fn a_lower_dir_listed_twice_is_refused_by_name_before_mounting() {
        let lowers = [
            PathBuf::from("/l/top"),
            PathBuf::from("/l/same"),
            PathBuf::from("/l/same"),
        ];
        let err =
            mount_overlay(&lowers, None, Path::new("/nonexistent-target"), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("/l/same is listed twice"), "{err}");
    }
}
