//! A build context given as a tar stream (docker build sends one; `kiln build -` reads one from
//! stdin), unpacked into a directory of the store that the build reads like a context directory.
//!
//! The key decision: the directory is one of a few kept between builds (`build-contexts/<n>/`,
//! each held by one build at a time through a lock file), and a tar is synced into it
//! ([`kiln_layer::sync_build_context`]) rather than unpacked afresh: a rebuild sent the same
//! files creates none of them again, and since the directory's path is stable, the build's
//! file digest index (`kiln_store::FileDigestIndex`) knows them too. Unpacking afresh and
//! hashing every COPY source again was most of what a no-op rebuild through `docker build`
//! cost over `kiln build DIR` (docs/benchmarks.md). The slot tried first is picked from a hint
//! (the build's names), so that different projects built in turn tend to keep their own.
//! With every slot taken, a private temp dir under `tmp/` is used and removed afterwards. A
//! sync that fails leaves the slot's context emptied, never half of one. `build-contexts/` is
//! private (0700), and a store prune removes the slots no build holds.
//!
//! Entries that could reach outside the context are refused by the layer crate's extraction
//! ([`kiln_layer::extract_build_context`]). COPY and ADD already resolve their sources inside
//! the context; the two files the engine opens by name — the Dockerfile and `.dockerignore` —
//! are resolved inside it here too (a chain of symlinks can look harmless link by link) and read
//! into regular files.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};

use crate::build::Engine;
use crate::error::{Result, SolveError};

/// Where the context is unpacked inside its temp dir.
const CONTEXT_DIR: &str = "context";

/// Reusable context directories kept in the store (`build-contexts/0` to `/3`).
const SLOTS: u64 = 4;

/// A build context unpacked from a tar: in a slot (kept, its lock released when dropped) or in
/// a temp dir (removed, whatever is in it, when dropped).
#[derive(Debug)]
pub struct UnpackedContext {
    dir: ContextDir,
}

#[derive(Debug)]
enum ContextDir {
    Temp(tempfile::TempDir),
    Slot {
        dir: PathBuf,
        /// Holds the slot's flock for as long as the build reads the context.
        _lock: std::fs::File,
    },
}

impl UnpackedContext {
    /// The context directory, for [`crate::BuildRequest::context_dir`].
    pub fn path(&self) -> PathBuf {
        self.base().join(CONTEXT_DIR)
    }

    /// The directory holding the context and the files staged beside it.
    fn base(&self) -> &std::path::Path {
        match &self.dir {
            ContextDir::Temp(t) => t.path(),
            ContextDir::Slot { dir, .. } => dir,
        }
    }

    /// The Dockerfile at `name` inside the context (Docker's `dockerfile` parameter, default
    /// `Dockerfile`), for [`crate::BuildRequest::dockerfile`]: a regular file beside the
    /// context with what `name` resolves to inside it, however it was linked.
    pub fn dockerfile(&self, name: Option<&str>) -> Result<PathBuf> {
        let name = name.unwrap_or("Dockerfile");
        let error = |source| SolveError::ReadFile {
            path: PathBuf::from(name),
            source,
        };
        let content = self.read_inside(name).map_err(error)?.ok_or_else(|| {
            error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file in the build context",
            ))
        })?;
        let path = self.base().join("Dockerfile");
        std::fs::write(&path, content).map_err(error)?;
        // `<name>.dockerignore` beside the Dockerfile goes beside the copy, where the build
        // looks for it (`BuildContext::with_dockerfile_ignore`); none must leave none there.
        let ignore_name = format!("{name}{}", crate::dockerignore::IGNORE_FILE_NAME);
        let ignore_path = self.base().join(format!(
            "Dockerfile{}",
            crate::dockerignore::IGNORE_FILE_NAME
        ));
        let ignore_error = |source| SolveError::ReadFile {
            path: PathBuf::from(&ignore_name),
            source,
        };
        match self.read_inside(&ignore_name).map_err(ignore_error)? {
            Some(content) => std::fs::write(&ignore_path, content).map_err(ignore_error)?,
            None => match std::fs::remove_file(&ignore_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(ignore_error(e)),
                _ => {}
            },
        }
        Ok(path)
    }

    /// Writes `content` as this context's Dockerfile, beside the context (`-f -`, or a lone
    /// Dockerfile on stdin), and returns its path for [`crate::BuildRequest::dockerfile`].
    pub fn write_dockerfile(&self, content: &[u8]) -> Result<PathBuf> {
        let path = self.base().join("Dockerfile");
        let error = |source| SolveError::ReadFile {
            path: path.clone(),
            source,
        };
        std::fs::write(&path, content).map_err(error)?;
        // An earlier build's ignore file in this slot is not this Dockerfile's.
        let ignore = self.base().join(format!(
            "Dockerfile{}",
            crate::dockerignore::IGNORE_FILE_NAME
        ));
        match std::fs::remove_file(&ignore) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error(e)),
            _ => Ok(path),
        }
    }

    /// The content of the regular file `rel` resolves to inside the context (symlinks followed
    /// as if the context were `/`), or `None` when there is none.
    fn read_inside(&self, rel: &str) -> std::io::Result<Option<Vec<u8>>> {
        let root_fd = rustix::fs::open(
            self.path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let file = match crate::copy::openat2_in_root(
            root_fd.as_fd(),
            std::ffi::OsStr::new(rel.trim_start_matches('/')),
            OFlags::RDONLY,
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut content = Vec::new();
        file.take(MAX_NAMED_FILE + 1).read_to_end(&mut content)?;
        if content.len() as u64 > MAX_NAMED_FILE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "larger than 16 MiB",
            ));
        }
        Ok(Some(content))
    }
}

/// The most the Dockerfile or `.dockerignore` may hold (a context's other files have no limit).
const MAX_NAMED_FILE: u64 = 16 << 20;

impl Engine {
    /// Unpacks a build context sent as a (possibly compressed) tar stream into a context
    /// directory of the store (a reused slot, see the module docs; `hint` names what is built,
    /// to pick the slot). An entry that could reach outside the context fails with an error
    /// naming it, and no part of the context is left behind. Its `.dockerignore` is made a
    /// regular file as described in the module docs.
    pub fn unpack_context(&self, tar: impl Read, hint: &str) -> Result<UnpackedContext> {
        let unpacked = match self.free_slot(hint)? {
            Some(dir) => dir,
            None => UnpackedContext {
                dir: ContextDir::Temp(self.store.temp_dir("context-")?),
            },
        };
        let root = unpacked.path();
        let io_error = |source| SolveError::ReadFile {
            path: root.clone(),
            source,
        };
        match &unpacked.dir {
            ContextDir::Temp(_) => {
                std::fs::create_dir(&root).map_err(io_error)?;
                kiln_layer::extract_build_context(tar, &root)?;
            }
            ContextDir::Slot { .. } => {
                match std::fs::create_dir(&root) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(io_error(e));
                    }
                    _ => {}
                }
                if let Err(e) = kiln_layer::sync_build_context(tar, &root) {
                    // Half a context must not be what the next build starts from.
                    let _ = std::fs::remove_dir_all(&root);
                    return Err(e.into());
                }
            }
        }
        // `.dockerignore` is read by name from the context's root (a real directory), so a
        // regular file renamed over it replaces any link there.
        let ignore_error = |source| SolveError::ReadFile {
            path: PathBuf::from(".dockerignore"),
            source,
        };
        if let Some(content) = unpacked
            .read_inside(".dockerignore")
            .map_err(ignore_error)?
        {
            let staged = unpacked.base().join("dockerignore");
            std::fs::write(&staged, content).map_err(ignore_error)?;
            std::fs::rename(&staged, root.join(".dockerignore")).map_err(ignore_error)?;
        }
        Ok(unpacked)
    }
}

/// Whether a stream starting with `head` (its first 512 bytes, or all of a shorter one) is
/// an archive (a tar, or a compressed stream) rather than a lone Dockerfile, as `docker
/// build -` tells them apart.
pub fn looks_like_archive(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 4] = [
        &[0x1f, 0x8b],                         // gzip
        b"BZh",                                // bzip2
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00], // xz
        &[0x28, 0xb5, 0x2f, 0xfd],             // zstd
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
        || head.get(257..262) == Some(b"ustar".as_slice())
        // An empty tar: zero blocks only.
        || (head.len() >= 512 && head.iter().all(|&b| b == 0))
}

impl Engine {
    /// An empty build context whose Dockerfile is `dockerfile`: `docker build - < Dockerfile`.
    pub fn context_of_dockerfile(
        &self,
        dockerfile: &[u8],
        hint: &str,
    ) -> Result<(UnpackedContext, PathBuf)> {
        // Two zero blocks are an empty tar: the slot ends up empty the usual way.
        let unpacked = self.unpack_context(std::io::repeat(0).take(1024), hint)?;
        let path = unpacked.write_dockerfile(dockerfile)?;
        Ok((unpacked, path))
    }
}

impl Engine {
    /// A slot nobody holds, locked, trying first the one `hint` hashes to.
    fn free_slot(&self, hint: &str) -> Result<Option<UnpackedContext>> {
        use rustix::fs::{FlockOperation, flock};
        let slots = self.store.root().join(kiln_store::BUILD_CONTEXTS);
        // Private, as the temp dirs under tmp/ were: a context can hold anything of the user's.
        match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&slots)
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(SolveError::ReadFile {
                    path: slots.clone(),
                    source: e,
                });
            }
            _ => {}
        }
        let digest = kiln_image::Digest::of(hint.as_bytes());
        let first = u64::from_str_radix(&digest.hex()[..16], 16).unwrap_or(0) % SLOTS;
        for i in 0..SLOTS {
            let n = (first + i) % SLOTS;
            let lock_path = slots.join(format!("{n}.lock"));
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|source| SolveError::ReadFile {
                    path: lock_path.clone(),
                    source,
                })?;
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => {
                    return Err(SolveError::ReadFile {
                        path: lock_path,
                        source: e.into(),
                    });
                }
            }
            let dir = slots.join(n.to_string());
            std::fs::create_dir_all(&dir).map_err(|source| SolveError::ReadFile {
                path: dir.clone(),
                source,
            })?;
            return Ok(Some(UnpackedContext {
                dir: ContextDir::Slot { dir, _lock: lock },
            }));
        }
        Ok(None)
    }
}
