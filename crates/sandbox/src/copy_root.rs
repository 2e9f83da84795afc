//! The copying fallback for where overlayfs cannot be mounted (a kernel before 5.11 in a user
//! namespace, an upper dir on a filesystem overlayfs refuses): the layers are copied into one
//! plain directory, the process changes that, and afterwards the changes are written into the
//! upper dir in overlay form (changed and new entries copied, deleted ones as 0:0 whiteouts),
//! so everything downstream sees what an overlay would have left. Slower (every file of the
//! lower layers is copied), but it works anywhere.
//!
//! Changes are found by comparing each entry's inode number and ctime with a baseline taken
//! right after the copy: any write, chmod, chown, rename or replacement updates one of them, and
//! neither can be set back by a process. A directory is compared by inode, mode and owner
//! only: its ctime also moves when an entry is added or removed (the sandbox's own mount-point
//! stubs do that), and a changed entry brings its parents into the upper dir anyway.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};

/// Overlay's markers, in both xattr namespaces; never copied, only interpreted.
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// What overlayfs is asked about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe<'a> {
    /// The very directories about to be mounted (a lower dir, the upper and work dirs, all
    /// existing): the answer is the one the mount would give, and no scratch directory is made
    /// and removed on each start (on a busy ext4 with online discard, several milliseconds).
    Dirs {
        lower: &'a Path,
        upper: &'a Path,
        work: &'a Path,
    },
    /// A scratch directory beside this upper dir (where there is no lower dir yet, or the
    /// directories do not exist yet).
    Beside(&'a Path),
}

impl<'a> Probe<'a> {
    /// [`Probe::Dirs`] when `lowers` has a first dir and `upper`'s dirs exist, else a scratch
    /// probe beside `upper` (or `fallback` without one).
    pub(crate) fn for_mount(
        lowers: &'a [PathBuf],
        upper: Option<(&'a Path, &'a Path)>,
        fallback: &'a Path,
    ) -> Probe<'a> {
        match (lowers.first(), upper) {
            (Some(lower), Some((upper, work))) if upper.is_dir() && work.is_dir() => {
                Probe::Dirs { lower, upper, work }
            }
            (_, Some((upper, _))) => Probe::Beside(upper),
            (_, None) => Probe::Beside(fallback),
        }
    }
}

/// Whether overlayfs must be replaced by copying: forced with `KILN_OVERLAY=copy`, else when
/// overlayfs refuses the probe. The answer is kept for the process.
pub(crate) fn copy_fallback_needed(probe: Probe<'_>, user_xattr: bool) -> bool {
    static NEEDED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEEDED.get_or_init(|| {
        std::env::var("KILN_OVERLAY").as_deref() == Ok("copy") || !accepted(probe, user_xattr)
    })
}

/// Asks overlayfs whether it would take the probe's directories (see
/// `overlay::overlay_accepted`: nothing is mounted where the kernel can avoid it).
fn accepted(probe: Probe<'_>, user_xattr: bool) -> bool {
    let upper_dir = match probe {
        Probe::Dirs { lower, upper, work } => {
            match crate::overlay::overlay_superblock_accepted(lower, (upper, work), user_xattr) {
                Some(accepted) => return accepted,
                // An old kernel needs a mount point: a scratch one beside the upper dir.
                None => upper,
            }
        }
        Probe::Beside(upper_dir) => upper_dir,
    };
    let parent = upper_dir.parent().unwrap_or(Path::new("/tmp"));
    let Ok(scratch) = tempfile::Builder::new()
        .prefix("kiln-overlay-probe-")
        .tempdir_in(parent)
        .or_else(|_| tempfile::tempdir())
    else {
        return false;
    };
    let dir = |name: &str| {
        let path = scratch.path().join(name);
        std::fs::create_dir(&path).map(|()| path)
    };
    let (Ok(lower), Ok(upper), Ok(work), Ok(target)) =
        (dir("lower"), dir("upper"), dir("work"), dir("target"))
    else {
        return false;
    };
    crate::overlay::overlay_accepted(&lower, (&upper, &work), &target, user_xattr)
}

/// What identifies an entry's state: inode, ctime and type (for a directory: inode, mode and
/// owner). Any change updates one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    ino: u64,
    ctime: (i64, i64),
    mode: u32,
    owner: (u32, u32),
}

impl Signature {
    fn of(meta: &std::fs::Metadata) -> Self {
        if meta.is_dir() {
            Signature {
                ino: meta.ino(),
                ctime: (0, 0),
                mode: meta.mode(),
                owner: (meta.uid(), meta.gid()),
            }
        } else {
            Signature {
                ino: meta.ino(),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                mode: meta.mode() & libc::S_IFMT,
                owner: (0, 0),
            }
        }
    }
}

/// The state of the copied root right after it was made, by path relative to it.
#[derive(Debug, Default)]
pub(crate) struct Baseline {
    entries: BTreeMap<PathBuf, Signature>,
}

/// Copies `layers` (topmost first, as overlay takes them; an upper dir is simply the topmost)
/// into the empty directory `dest`, applying whiteouts and opaque dirs as overlay would, and
/// records the baseline.
pub(crate) fn materialize(layers: &[&Path], dest: &Path) -> io::Result<Baseline> {
    for layer in layers.iter().rev() {
        apply_layer(layer, dest, Path::new(""))?;
    }
    let mut baseline = Baseline::default();
    walk(dest, Path::new(""), &mut |rel, meta| {
        baseline
            .entries
            .insert(rel.to_path_buf(), Signature::of(meta));
        Ok(())
    })?;
    Ok(baseline)
}

/// Writes what changed in `merged` since `baseline` into `upper`, in overlay form.
pub(crate) fn write_diff(merged: &Path, baseline: &Baseline, upper: &Path) -> io::Result<()> {
    let mut present = std::collections::BTreeSet::new();
    walk(merged, Path::new(""), &mut |rel, meta| {
        present.insert(rel.to_path_buf());
        if baseline.entries.get(rel) == Some(&Signature::of(meta)) {
            return Ok(());
        }
        ensure_parents(merged, upper, rel)?;
        let dest = upper.join(rel);
        if meta.is_dir() {
            make_dir(&dest, || true)?;
            copy_metadata(&merged.join(rel), &dest, meta)
        } else {
            remove_any(&dest)?;
            copy_entry(&merged.join(rel), &dest, meta)
        }
    })?;
    for rel in baseline.entries.keys() {
        if present.contains(rel) {
            continue;
        }
        // Only the topmost deleted entry needs a whiteout, and none is needed below something
        // that is no longer a directory (the new entry hides everything under it).
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent_is_dir = parent.as_os_str().is_empty()
            || std::fs::symlink_metadata(merged.join(parent)).is_ok_and(|m| m.is_dir());
        if !parent_is_dir || !present_or_root(&present, parent) {
            continue;
        }
        ensure_parents(merged, upper, rel)?;
        let dest = upper.join(rel);
        remove_any(&dest)?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &dest,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )?;
    }
    Ok(())
}

fn present_or_root(present: &std::collections::BTreeSet<PathBuf>, dir: &Path) -> bool {
    dir.as_os_str().is_empty() || present.contains(dir)
}

/// Creates the parent directories of `rel` in `upper` that are missing, with the metadata
/// they have in `merged` (what overlay's copy-up does).
fn ensure_parents(merged: &Path, upper: &Path, rel: &Path) -> io::Result<()> {
    let mut partial = PathBuf::new();
    let components: Vec<_> = rel.components().collect();
    for component in &components[..components.len().saturating_sub(1)] {
        partial.push(component);
        let dest = upper.join(&partial);
        if !make_dir(&dest, || true)? {
            continue;
        }
        let source = merged.join(&partial);
        copy_metadata(&source, &dest, &std::fs::symlink_metadata(&source)?)?;
    }
    Ok(())
}

/// Visits every entry under `dir` (parents before children), not following symlinks.
fn walk(
    root: &Path,
    rel: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    for name in sorted_names(&root.join(rel))? {
        let child = rel.join(&name);
        let meta = std::fs::symlink_metadata(root.join(&child))?;
        visit(&child, &meta)?;
        if meta.is_dir() {
            walk(root, &child, visit)?;
        }
    }
    Ok(())
}

/// Applies one layer directory onto `dest` (the layers below it already there).
fn apply_layer(layer: &Path, dest: &Path, rel: &Path) -> io::Result<()> {
    for name in sorted_names(&layer.join(rel))? {
        let child = rel.join(&name);
        let source = layer.join(&child);
        let target = dest.join(&child);
        let meta = std::fs::symlink_metadata(&source)?;
        if is_whiteout(&meta) {
            remove_any(&target)?;
            continue;
        }
        if meta.is_dir() {
            make_dir(&target, || !is_opaque(&source))?;
            apply_layer(layer, dest, &child)?;
            copy_metadata(&source, &target, &meta)?;
        } else {
            remove_any(&target)?;
            copy_entry(&source, &target, &meta)?;
        }
    }
    Ok(())
}

/// The entry names of `dir`, sorted so that copies and diffs are deterministic.
fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Makes `target` a directory: an existing one is kept (and merged into) when `keep_existing`
/// says so, anything else there is removed first. `keep_existing` is asked only when a
/// directory is there (for a layer it reads the opaque xattr). True if it made a new one.
fn make_dir(target: &Path, keep_existing: impl Fn() -> bool) -> io::Result<bool> {
    match std::fs::symlink_metadata(target) {
        Ok(existing) if existing.is_dir() && keep_existing() => return Ok(false),
        Ok(_) => remove_any(target)?,
        Err(_) => {}
    }
    std::fs::create_dir(target)?;
    Ok(true)
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    OPAQUE_XATTRS.iter().any(
        |name| matches!(rustix::fs::lgetxattr(dir, *name, &mut value), Ok(1) if value[0] == b'y'),
    )
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies one non-directory entry with its metadata. Device nodes that cannot be created (a
/// user namespace) are left out, as layer extraction does.
fn copy_entry(source: &Path, dest: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(source)?, dest)?;
    } else if file_type.is_file() {
        std::fs::copy(source, dest)?;
    } else {
        let kind = if file_type.is_fifo() {
            FileType::Fifo
        } else if file_type.is_socket() {
            FileType::Socket
        } else if file_type.is_char_device() {
            FileType::CharacterDevice
        } else {
            FileType::BlockDevice
        };
        match rustix::fs::mknodat(rustix::fs::CWD, dest, kind, Mode::empty(), meta.rdev()) {
            Err(rustix::io::Errno::PERM) if kind != FileType::Fifo => return Ok(()),
            other => other?,
        }
    }
    copy_metadata(source, dest, meta)
}

/// Owner, then mode (chown clears set-id bits), xattrs other than overlay's, then times.
fn copy_metadata(source: &Path, dest: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        dest,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if !meta.file_type().is_symlink() {
        rustix::fs::chmod(dest, Mode::from_raw_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(source, dest)?;
    let time = |sec: i64, nsec: i64| Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &Timestamps {
            last_access: time(meta.atime(), meta.atime_nsec()),
            last_modification: time(meta.mtime(), meta.mtime_nsec()),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn copy_xattrs(source: &Path, dest: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let len = match rustix::fs::llistxattr(source, &mut names[..]) {
        Ok(len) => len,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::new(std::str::from_utf8(name).unwrap_or_default());
        let skip = name.is_empty()
            || name.as_encoded_bytes().starts_with(b"trusted.overlay.")
            || name.as_encoded_bytes().starts_with(b"user.overlay.");
        if skip {
            continue;
        }
        let mut value = vec![0u8; 65536];
        if let Ok(n) = rustix::fs::lgetxattr(source, name, &mut value[..]) {
            match rustix::fs::lsetxattr(dest, name, &value[..n], XattrFlags::empty()) {
                Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// Empties `dir` (the copied root) without removing it.
pub(crate) fn clear(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

/// A root made by the copying fallback: the directory and its state when the process started.
#[derive(Debug)]
pub(crate) struct CopiedRoot {
    pub(crate) merged: tempfile::TempDir,
    pub(crate) baseline: Baseline,
}

/// Copies the layers into a fresh directory beside the upper dir when overlayfs cannot be
/// mounted (see this module).
pub(crate) fn copy_layers_if_needed(
    spec: &crate::spec::SandboxSpec,
    not_root: bool,
) -> Result<Option<CopiedRoot>, crate::error::SandboxError> {
    let user_xattr = not_root || crate::rootless::in_user_namespace();
    let probe = Probe::for_mount(
        &spec.lower_dirs,
        Some((&spec.upper_dir, &spec.work_dir)),
        &spec.upper_dir,
    );
    if !copy_fallback_needed(probe, user_xattr) {
        return Ok(None);
    }
    let parent = spec.upper_dir.parent().unwrap_or(Path::new("/tmp"));
    let merged = tempfile::Builder::new()
        .prefix("kiln-copied-root-")
        .tempdir_in(parent)
        .map_err(crate::error::SandboxError::io(format!(
            "create a directory for the copied root in {}",
            parent.display()
        )))?;
    let layers: Vec<&Path> = std::iter::once(spec.upper_dir.as_path())
        .chain(spec.lower_dirs.iter().map(PathBuf::as_path))
        .collect();
    let baseline =
        materialize(&layers, merged.path()).map_err(crate::error::SandboxError::io(format!(
            "copy {} layer(s) into {} (overlayfs cannot be mounted here)",
            layers.len(),
            merged.path().display()
        )))?;
    Ok(Some(CopiedRoot { merged, baseline }))
}

#[cfg(test)]
mod tests;
