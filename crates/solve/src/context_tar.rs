//! A build context given as a tar stream (docker build sends one; `kiln build -` reads one from
//! stdin), unpacked into a private directory under the store's `tmp/` that the build reads like
//! a context directory and that is removed when the build is done.
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

/// A build context unpacked from a tar, removed (whatever is in it) when dropped.
#[derive(Debug)]
pub struct UnpackedContext {
    dir: tempfile::TempDir,
}

impl UnpackedContext {
    /// The context directory, for [`crate::BuildRequest::context_dir`].
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(CONTEXT_DIR)
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
        let path = self.dir.path().join("Dockerfile");
        std::fs::write(&path, content).map_err(error)?;
        Ok(path)
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
    /// Unpacks a build context sent as a (possibly compressed) tar stream into a temp dir of
    /// the store. An entry that could reach outside the context fails with an error naming it,
    /// and nothing is left behind. Its `.dockerignore` is made a regular file as described in
    /// the module docs.
    pub fn unpack_context(&self, tar: impl Read) -> Result<UnpackedContext> {
        let dir = self.store.temp_dir("context-")?;
        let unpacked = UnpackedContext { dir };
        let root = unpacked.path();
        std::fs::create_dir(&root).map_err(|source| SolveError::ReadFile {
            path: root.clone(),
            source,
        })?;
        kiln_layer::extract_build_context(tar, &root)?;
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
            let staged = unpacked.dir.path().join("dockerignore");
            std::fs::write(&staged, content).map_err(ignore_error)?;
            std::fs::rename(&staged, root.join(".dockerignore")).map_err(ignore_error)?;
        }
        Ok(unpacked)
    }
}
