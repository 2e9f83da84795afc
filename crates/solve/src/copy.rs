//! Docker's COPY semantics, writing resolved sources into a container root filesystem.
//!
//! Rules (as BuildKit's Dockerfile frontend applies them): each source — every match of every
//! pattern, in order — is copied on its own. A directory source copies its *contents* into the
//! destination directory (made if missing); a file (or symlink, fifo, device) source goes inside
//! the destination when that is a directory — because it ends with `/` (or `/.`), or because it
//! exists as one when the source is copied — and otherwise becomes the destination. So several
//! file sources to a destination without a trailing slash each replace the one before, the last
//! one winning: what BuildKit does (fsutil's `copy.Copy` per source, moby/buildkit#1853 and
//! #4550), reported as a warning ([`CopyOutcome::replaced_at_dest`]).
//! Permission bits and modification times come from the source (`--chmod`, octal or symbolic,
//! changes the bits of every copied file and directory), ownership is `0:0` for context sources,
//! the source's own for `--from` sources, or `--chown`'s. Symlinks are copied as symlinks;
//! sockets are skipped. With `--parents` a source keeps its path (see [`Source::parents_path`])
//! below the destination, which is then always a directory.
//!
//! All writes go through `confined`, which keeps every path resolution inside the root even when
//! the image contains hostile symlinks.

mod chmod;
mod confined;
mod owner;
mod reuse;

pub(crate) use reuse::xattrs_of;

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::context::{ContextError, Source, SourceEntry};
use crate::dockerignore::go_clean;
pub(crate) use confined::openat2_in_root;
use confined::{ConfinedRoot, display, set_owner_and_mode, split_target};

pub use chmod::Chmod;
pub use owner::{parse_chown, workdir_owner};
pub use reuse::{CopyOutcome, CopyReuse, PreviousCopy, ReuseStats, link_reused};

/// The flags of a COPY instruction that change what is written.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown`, already resolved (see [`parse_chown`]).
    pub owner: Option<(u32, u32)>,
    /// `--chmod`, applied to every copied file and directory.
    pub chmod: Option<Chmod>,
    /// Keep the sources' uid/gid when there is no `--chown`: true for `COPY --from`, false for
    /// the build context (whose files Docker gives to root).
    pub keep_source_owner: bool,
}

/// Why a COPY could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Source(#[from] ContextError),
    #[error("{path}: {source}")]
    Io {
        /// A path inside the container (absolute) or a host source path.
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: cannot replace a directory with a non-directory")]
    DirectoryInTheWay { path: String },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("--chown={spec}: {reason}")]
    BadOwner { spec: String, reason: String },
    #[error("--chown: unknown user {name:?} (not in the image's /etc/passwd)")]
    UnknownUser { name: String },
    #[error("--chown: unknown group {name:?} (not in the image's /etc/group)")]
    UnknownGroup { name: String },
    #[error("--chmod={spec}: invalid mode: {reason}")]
    BadChmod { spec: String, reason: String },
}

/// Creates the directory `dir` (absolute inside the container) and its missing parents under
/// `root`, owned by `owner` (default 0:0), as WORKDIR does. Symlinks on the way are followed
/// inside the root; existing directories are left as they are.
pub fn mkdir_all(root: &Path, dir: &str, owner: Option<(u32, u32)>) -> Result<(), CopyError> {
    let root = ConfinedRoot::open(root)?;
    let cleaned = go_clean(&format!("/{dir}"));
    root.ensure_dir(
        Path::new(cleaned.trim_start_matches('/')),
        owner.unwrap_or((0, 0)),
    )?;
    Ok(())
}

/// Copies `sources` to `dest` (absolute inside the container) under the root filesystem `root`.
pub fn copy_into(
    root: &Path,
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let outcome = copy_into_reusing(root, sources, dest, opts, CopyReuse::default())?;
    debug_assert!(outcome.links.is_empty(), "nothing to reuse from");
    Ok(())
}

/// [`copy_into`], but files that `reuse.previous` holds unchanged are left to be linked
/// ([`link_reused`]) once `root`'s overlay is unmounted; see `reuse.rs`.
pub fn copy_into_reusing(
    root: &Path,
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
    reuse: CopyReuse<'_>,
) -> Result<CopyOutcome, CopyError> {
    let root = ConfinedRoot::open(root)?;
    let cleaned = go_clean(&format!("/{dest}"));
    let dest_rel = PathBuf::from(cleaned.trim_start_matches('/'));
    // Whether the destination is written as a directory whatever exists there; otherwise a
    // file source takes its name unless it is a directory by then (maybe made by an earlier
    // source of this copy).
    let dest_is_dir = dest.ends_with('/')
        || dest.ends_with("/.")
        || sources.iter().any(|source| source.parents_path.is_some())
        || dest_rel.as_os_str().is_empty();
    let mut wrote_dest_file = false;
    let mut copier = Copier {
        root: &root,
        opts,
        new_dir_owner: opts.owner.unwrap_or((0, 0)),
        dir_times: Vec::new(),
        parent_cache: None,
        reuse,
        outcome: CopyOutcome::default(),
    };
    for source in sources {
        // With --parents the source's own path is kept below the destination.
        let base = match &source.parents_path {
            Some(kept) => dest_rel.join(kept.trim_start_matches('/')),
            None => dest_rel.clone(),
        };
        if source.is_dir {
            // A directory source copies its contents; a destination it creates takes the source
            // directory's metadata (mode after --chmod, owner, times), an existing one keeps its
            // own, as BuildKit's copier does.
            let created = !root.is_dir(&base)?;
            for entry in source.entries() {
                let entry = entry?;
                if entry.rel.as_os_str().is_empty() {
                    if created {
                        copier.place(&base, &entry, None)?;
                    } else {
                        copier.root.ensure_dir(&base, copier.new_dir_owner)?;
                    }
                    continue;
                }
                let fingerprint = copier.fingerprint(source, &entry);
                copier.place(&base.join(&entry.rel), &entry, fingerprint)?;
            }
        } else {
            let Some(entry) = source.entries().next().transpose()? else {
                continue;
            };
            let target = if source.parents_path.is_some() {
                base
            } else if dest_is_dir || root.is_dir(&dest_rel)? {
                copier.root.ensure_dir(&dest_rel, copier.new_dir_owner)?;
                let name = source.host_path.file_name().unwrap_or_default();
                dest_rel.join(name)
            } else {
                if wrote_dest_file {
                    copier.outcome.replaced_at_dest += 1;
                }
                wrote_dest_file = true;
                dest_rel.clone()
            };
            let fingerprint = copier.fingerprint(source, &entry);
            copier.place(&target, &entry, fingerprint)?;
        }
    }
    copier.finish()
}

struct Copier<'a> {
    root: &'a ConfinedRoot,
    opts: &'a CopyOptions,
    new_dir_owner: (u32, u32),
    /// Directories written, with their times, set last (writing inside a dir changes its mtime).
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// The last parent directory opened (as asked for, the fd, and its resolved path); entries
    /// of one directory come one after another.
    parent_cache: Option<(PathBuf, std::os::fd::OwnedFd, PathBuf)>,
    reuse: CopyReuse<'a>,
    outcome: CopyOutcome,
}

impl<'a> Copier<'a> {
    /// The fingerprint hashing recorded for `entry` of `source`, when the copy was given them.
    fn fingerprint(&self, source: &Source, entry: &SourceEntry) -> Option<&'a String> {
        let fingerprints = self.reuse.fingerprints?;
        fingerprints.get(&crate::context::manifest_path(&source.rel_path, &entry.rel))
    }

    fn place(
        &mut self,
        target: &Path,
        entry: &SourceEntry,
        fingerprint: Option<&String>,
    ) -> Result<(), CopyError> {
        let metadata = &entry.metadata;
        let owner = self.opts.owner.unwrap_or(if self.opts.keep_source_owner {
            (metadata.uid(), metadata.gid())
        } else {
            (0, 0)
        });
        let file_type = metadata.file_type();
        let mode = match &self.opts.chmod {
            Some(chmod) => chmod.apply(metadata.mode() & 0o7777, file_type.is_dir()),
            None => metadata.mode() & 0o7777,
        };
        let times = times_of(metadata);
        let fail = |errno: Errno| CopyError::Io {
            path: display(target),
            source: errno.into(),
        };

        if file_type.is_dir() {
            let (dir, resolved) = self.root.ensure_dir(target, self.new_dir_owner)?;
            set_owner_and_mode(&dir, owner, mode).map_err(fail)?;
            self.dir_times.push((resolved, times));
            return Ok(());
        }
        if file_type.is_socket() {
            return Ok(());
        }
        let Some((parent, name)) = split_target(target) else {
            return Err(CopyError::DirectoryInTheWay {
                path: display(target),
            });
        };
        let (_, resolved_parent) = self.parent_dir(parent)?;
        let resolved = resolved_parent.join(name);
        // Whatever this entry replaces is no longer what the copy wrote there.
        let resolved_key = resolved.to_str().map(str::to_owned);
        if let Some(key) = &resolved_key {
            self.outcome.written.remove(key);
        }
        self.outcome.links.remove(&resolved);
        let parent_dir = &self.parent_cache.as_ref().expect("opened just above").1;
        let replaced = match rustix::fs::statat(parent_dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(CopyError::DirectoryInTheWay {
                    path: display(target),
                });
            }
            // Replace, never write through: the old entry may be a symlink pointing anywhere.
            Ok(_) => {
                rustix::fs::unlinkat(parent_dir, name, AtFlags::empty()).map_err(fail)?;
                true
            }
            Err(Errno::NOENT) => false,
            Err(errno) => return Err(fail(errno)),
        };

        if file_type.is_file() {
            // Names that are not UTF-8 are neither recorded nor reused: a lossy form could
            // stand for two names.
            let recorded = resolved_key.zip(fingerprint);
            if let Some((key, fingerprint)) = &recorded {
                self.outcome
                    .written
                    .insert(key.clone(), (*fingerprint).clone());
            }
            let reusable = recorded.as_ref().and_then(|(key, fingerprint)| {
                let previous = self.reuse.previous?;
                let expected = reuse::Expected {
                    size: metadata.len(),
                    mode,
                    owner,
                    mtime: (metadata.mtime(), metadata.mtime_nsec()),
                };
                let path = previous.snapshot.join(&resolved);
                (previous.files.get(key) == Some(*fingerprint)
                    && reuse::previous_matches(&path, &expected))
                .then_some(path)
            });
            let create = || {
                rustix::fs::openat(
                    parent_dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(fail)
            };
            if let Some(previous) = reusable {
                // A new name in a directory the upper dir already has needs nothing from the
                // overlay: the link goes straight there. Otherwise an empty placeholder with the
                // final metadata makes the overlay copy the directory up and hide what it
                // replaces; `link_reused` swaps it. (Creating an inode costs as much as the
                // link saves, so the placeholder is only made when needed.)
                let upper_has_parent = !replaced
                    && self.reuse.upper.is_some_and(|upper| {
                        std::fs::symlink_metadata(upper.join(&resolved_parent))
                            .is_ok_and(|meta| meta.is_dir())
                    });
                if !upper_has_parent {
                    let placeholder = create()?;
                    set_owner_and_mode(&placeholder, owner, mode).map_err(fail)?;
                    rustix::fs::futimens(&placeholder, &times).map_err(fail)?;
                }
                self.outcome.links.insert(
                    resolved,
                    reuse::PendingLink {
                        previous,
                        source: entry.host_path.clone(),
                        times,
                        mode,
                        owner,
                        placeholder: !upper_has_parent,
                    },
                );
                return Ok(());
            }
            let created = create()?;
            let source_path = &entry.host_path;
            let source_fd = rustix::fs::open(
                source_path,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| CopyError::Io {
                path: source_path.display().to_string(),
                source: errno.into(),
            })?;
            let mut output = File::from(created);
            std::io::copy(&mut File::from(source_fd), &mut output).map_err(|source| {
                CopyError::Io {
                    path: display(target),
                    source,
                }
            })?;
            let written: std::os::fd::OwnedFd = output.into();
            set_owner_and_mode(&written, owner, mode).map_err(fail)?;
            rustix::fs::futimens(&written, &times).map_err(fail)?;
            return Ok(());
        }

        if file_type.is_symlink() {
            let link = std::fs::read_link(&entry.host_path).map_err(|source| CopyError::Io {
                path: entry.host_path.display().to_string(),
                source,
            })?;
            rustix::fs::symlinkat(&link, parent_dir, name).map_err(fail)?;
        } else {
            // fifo or device node
            rustix::fs::mknodat(
                parent_dir,
                name,
                FileType::from_raw_mode(metadata.mode()),
                Mode::from_raw_mode(mode),
                metadata.rdev(),
            )
            .map_err(fail)?;
        }
        let owner_ids = (
            Some(rustix::fs::Uid::from_raw(owner.0)),
            Some(rustix::fs::Gid::from_raw(owner.1)),
        );
        rustix::fs::chownat(
            parent_dir,
            name,
            owner_ids.0,
            owner_ids.1,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(fail)?;
        if !file_type.is_symlink() {
            // mknod's mode went through the umask; a node is not a symlink, so this cannot
            // follow one.
            rustix::fs::chmodat(
                parent_dir,
                name,
                Mode::from_raw_mode(mode),
                AtFlags::empty(),
            )
            .map_err(fail)?;
        }
        rustix::fs::utimensat(parent_dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
        Ok(())
    }

    /// The directory `parent` (opened, and its resolved root-relative path).
    fn parent_dir(&mut self, parent: &Path) -> Result<(&std::os::fd::OwnedFd, PathBuf), CopyError> {
        let cached = matches!(&self.parent_cache, Some((path, _, _)) if path == parent);
        if !cached {
            let (fd, resolved) = self.root.ensure_dir(parent, self.new_dir_owner)?;
            self.parent_cache = Some((parent.to_path_buf(), fd, resolved));
        }
        let (_, fd, resolved) = self.parent_cache.as_ref().expect("filled just above");
        Ok((fd, resolved.clone()))
    }

    fn finish(self) -> Result<CopyOutcome, CopyError> {
        // Children were pushed after their parents; going backwards sets a parent's time after
        // everything inside it is written.
        for (resolved, times) in self.dir_times.iter().rev() {
            let dir = self.root.reopen_dir(resolved)?;
            rustix::fs::futimens(&dir, times).map_err(|errno| CopyError::Io {
                path: display(resolved),
                source: errno.into(),
            })?;
        }
        Ok(self.outcome)
    }
}

/// The source's modification time, used for access time too so layers are reproducible.
fn times_of(metadata: &Metadata) -> Timestamps {
    let modified = Timespec {
        tv_sec: metadata.mtime(),
        tv_nsec: metadata.mtime_nsec() as _,
    };
    Timestamps {
        last_access: modified,
        last_modification: modified,
    }
}

#[cfg(test)]
mod tests;
