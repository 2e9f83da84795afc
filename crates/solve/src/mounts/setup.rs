//! Setting planned mounts up on the host side before the sandbox starts, and keeping what they
//! need alive until it has exited.
//!
//! The build context and other stages' snapshots are never exposed as they are: a context
//! source is copied (only what `.dockerignore` lets through) into a scratch directory, and a
//! stage or image is mounted as an overlay — read-only, or with a throwaway upper dir for
//! `rw` — so a step can never change them. Paths inside a tree are resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so symlinks are followed as if the tree were `/` and nothing
//! outside it can be reached.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use kiln_dockerfile::Instruction;
use kiln_image::Digest;
use kiln_sandbox::{BindMount, FileMount, Mount, OverlayMount, TmpfsMount};
use kiln_store::CacheMountLease;
use rustix::fs::{Mode, OFlags};

use super::{PlannedMount, TreeSource};
use crate::context::{BuildContext, Source, SourceTree};
use crate::copy::{CopyOptions, copy_into};
use crate::error::{Result, SolveError};
use crate::stage::StageBuilder;

/// The mounts of one running step and everything backing them. Fields drop in order: the
/// overlays are unmounted before the leases are released and the scratch dir is removed.
pub(crate) struct ActiveMounts {
    pub mounts: Vec<Mount>,
    /// `NAME=value` for secrets exposed as environment variables.
    pub env: Vec<String>,
    overlays: Vec<OverlayMount>,
    leases: Vec<CacheMountLease>,
    /// Relays to SSH agents; they stop accepting when the step's mounts are dropped.
    ssh: Vec<crate::ssh::SshProxy>,
    scratch: tempfile::TempDir,
}

impl std::fmt::Debug for ActiveMounts {
    // `env` holds secrets: show only what is mounted where.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveMounts")
            .field("mounts", &self.mounts)
            .field("env", &format_args!("<{} variables>", self.env.len()))
            .finish_non_exhaustive()
    }
}

impl ActiveMounts {
    /// A new, empty directory under the scratch dir.
    fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir(&dir).map_err(|source| SolveError::ReadFile {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }
}

impl StageBuilder<'_> {
    /// Prepares every planned mount of a step that is about to run.
    pub(crate) fn materialize_mounts(
        &self,
        ins: &Instruction,
        planned: &[PlannedMount],
    ) -> Result<ActiveMounts> {
        let mut active = ActiveMounts {
            mounts: Vec::new(),
            env: Vec::new(),
            overlays: Vec::new(),
            leases: Vec::new(),
            ssh: Vec::new(),
            scratch: self.engine.store.temp_dir("mounts-")?,
        };
        // Two mounts of the same cache in one step share one lease (a second `locked` lease
        // would wait for the first forever).
        let mut caches: BTreeMap<Digest, PathBuf> = BTreeMap::new();
        for (n, mount) in planned.iter().enumerate() {
            match mount {
                PlannedMount::Cache {
                    target,
                    dir_key,
                    sharing,
                    settings,
                    readonly,
                    seed,
                    ..
                } => {
                    let path = match caches.get(dir_key) {
                        Some(path) => path.clone(),
                        None => {
                            let seed_dir = active.scratch.path().join(format!("seed-{n}"));
                            // A new directory starts as an imported cache mount
                            // (`--cache-from`, docs/cache-mounts.md), else as its `from=`.
                            // An import failure is kept as it is (it names the blob).
                            let import_failure = std::cell::RefCell::new(None);
                            let fill = |dir: &Path| {
                                match self.remote.import_cache_mount(
                                    self.engine,
                                    dir_key,
                                    dir,
                                    self.progress,
                                ) {
                                    Ok(true) => return Ok(()),
                                    Ok(false) => {}
                                    Err(e) => {
                                        let message = e.to_string();
                                        *import_failure.borrow_mut() = Some(e);
                                        return Err(io::Error::other(message));
                                    }
                                }
                                match seed {
                                    Some(seed) => self
                                        .seed_cache(seed, &seed_dir, dir)
                                        .map_err(|e| io::Error::other(e.to_string())),
                                    None => Ok(()),
                                }
                            };
                            let lease = self
                                .engine
                                .store
                                .acquire_cache_mount(dir_key, *sharing, *settings, &fill)
                                .map_err(|e| match import_failure.borrow_mut().take() {
                                    Some(failure) => failure,
                                    None => self.fail(ins, format!("cache mount {target}: {e}")),
                                })?;
                            let path = lease.path().to_owned();
                            active.leases.push(lease);
                            caches.insert(dir_key.clone(), path.clone());
                            path
                        }
                    };
                    active.mounts.push(Mount::Bind(BindMount {
                        source: path,
                        target: target.clone(),
                        readonly: *readonly,
                    }));
                }
                PlannedMount::Bind {
                    target,
                    source,
                    readonly,
                } => {
                    let path = self
                        .expose_tree(source, !*readonly, n, &mut active)
                        .map_err(|e| self.fail(ins, format!("bind mount {target}: {e}")))?;
                    active.mounts.push(Mount::Bind(BindMount {
                        source: path,
                        target: target.clone(),
                        readonly: *readonly,
                    }));
                }
                PlannedMount::Tmpfs { target, size } => {
                    active.mounts.push(Mount::Tmpfs(TmpfsMount {
                        target: target.clone(),
                        size: *size,
                    }));
                }
                PlannedMount::SecretFile {
                    target,
                    secret,
                    mode,
                    uid,
                    gid,
                    ..
                } => {
                    // An optional secret that was not given is simply absent, as in BuildKit.
                    if let Some(secret) = secret {
                        active.mounts.push(Mount::File(FileMount {
                            target: target.clone(),
                            contents: secret.bytes().to_vec(),
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        }));
                    }
                }
                PlannedMount::SecretEnv { name, secret, .. } => {
                    if let Some(secret) = secret {
                        let value = String::from_utf8_lossy(secret.bytes());
                        active.env.push(format!("{name}={value}"));
                    }
                }
                PlannedMount::Ssh {
                    target,
                    agent,
                    mode,
                    uid,
                    gid,
                    ..
                } => {
                    // An optional agent that was not given is simply absent, as in BuildKit.
                    let (Some(agent), Some(target)) = (agent, target) else {
                        continue;
                    };
                    let socket = active.scratch.path().join(format!("ssh-{n}.sock"));
                    let proxy = crate::ssh::SshProxy::start(agent, &socket, *uid, *gid, *mode)
                        .map_err(|e| self.fail(ins, format!("ssh mount {target}: {e}")))?;
                    active.mounts.push(Mount::Bind(BindMount {
                        source: proxy.path().to_owned(),
                        target: target.clone(),
                        readonly: false,
                    }));
                    if active.ssh.is_empty() {
                        active.env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    active.ssh.push(proxy);
                }
            }
        }
        // A mount must not hide one nested inside it: shallower targets go first.
        active
            .mounts
            .sort_by_key(|m| m.target().split('/').filter(|c| !c.is_empty()).count());
        Ok(active)
    }

    /// A host path showing `tree` for a bind mount; with `writable`, one whose changes are
    /// thrown away afterwards.
    fn expose_tree(
        &self,
        tree: &TreeSource,
        writable: bool,
        n: usize,
        active: &mut ActiveMounts,
    ) -> Result<PathBuf> {
        match tree {
            TreeSource::Context { source, .. } => {
                let dir = active.scratch_dir(&format!("context-{n}"))?;
                copy_context_source(source, &dir)
            }
            TreeSource::Layers { layers, path, .. } => {
                let root = active.scratch_dir(&format!("tree-{n}"))?;
                let upper_work = if writable {
                    Some((
                        active.scratch_dir(&format!("tree-{n}-upper"))?,
                        active.scratch_dir(&format!("tree-{n}-work"))?,
                    ))
                } else {
                    None
                };
                let lowers = self.lower_dirs(layers.iter().cloned())?;
                let overlay = OverlayMount::mount(
                    &lowers,
                    upper_work.as_ref().map(|(u, w)| (u.as_path(), w.as_path())),
                    &root,
                )?;
                let resolved =
                    resolve_in_root(overlay.path(), path).map_err(|cause| SolveError::Io {
                        what: format!("source {path}"),
                        cause,
                    })?;
                active.overlays.push(overlay);
                Ok(resolved)
            }
        }
    }

    /// Fills a new cache directory from its `from=` source (a directory).
    fn seed_cache(&self, seed: &TreeSource, scratch: &Path, dir: &Path) -> Result<()> {
        let opts = CopyOptions {
            keep_source_owner: matches!(seed, TreeSource::Layers { .. }),
            ..CopyOptions::default()
        };
        let not_a_dir = |path: &str| SolveError::CacheSourceNotADirectory {
            path: path.to_owned(),
        };
        match seed {
            TreeSource::Context { source, path, .. } => {
                if !source.is_dir {
                    return Err(not_a_dir(path));
                }
                copy_into(dir, std::slice::from_ref(source), "/", &opts).map_err(SolveError::Copy)
            }
            TreeSource::Layers { layers, path, .. } => {
                std::fs::create_dir_all(scratch).map_err(|source| SolveError::ReadFile {
                    path: scratch.to_owned(),
                    source,
                })?;
                let lowers = self.lower_dirs(layers.iter().cloned())?;
                let overlay = OverlayMount::mount(&lowers, None, scratch)?;
                let root = std::fs::canonicalize(overlay.path()).map_err(|source| {
                    SolveError::ReadFile {
                        path: overlay.path().to_owned(),
                        source,
                    }
                })?;
                let resolved = resolve_in_root(&root, path).map_err(|cause| SolveError::Io {
                    what: format!("cache source {path}"),
                    cause,
                })?;
                let rel = resolved.strip_prefix(&root).unwrap_or(Path::new(""));
                let sources = SourceTree::Rootfs(root.clone())
                    .resolve_sources(&[escape_glob(&rel.to_string_lossy())])
                    .map_err(|e| SolveError::Copy(e.into()))?;
                if !sources.iter().all(|s| s.is_dir) {
                    return Err(not_a_dir(path));
                }
                copy_into(dir, &sources, "/", &opts).map_err(SolveError::Copy)
            }
        }
    }
}

/// Copies a context source into `dir` and returns the path to bind: `dir` itself for a
/// directory (its contents copied), `dir/file` for anything else.
fn copy_context_source(source: &Source, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let copy_error = SolveError::Copy;
    if source.is_dir {
        copy_into(
            dir,
            std::slice::from_ref(source),
            "/",
            &CopyOptions::default(),
        )
        .map_err(copy_error)?;
        // The mounted directory itself looks like a normal one, not like a private temp dir.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(
            |source| SolveError::ReadFile {
                path: dir.to_owned(),
                source,
            },
        )?;
        Ok(dir.to_owned())
    } else {
        copy_into(
            dir,
            std::slice::from_ref(source),
            "/file",
            &CopyOptions::default(),
        )
        .map_err(copy_error)?;
        Ok(dir.join("file"))
    }
}

/// Resolves a path of the build context for a bind mount: symlinks followed inside the context,
/// then looked up like a COPY source so that `.dockerignore` applies.
pub(crate) fn resolve_context_source(
    context: &BuildContext,
    path: &str,
) -> std::result::Result<Source, String> {
    let resolved = resolve_in_root(context.root(), path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "not found in the build context".to_owned(),
        _ => e.to_string(),
    })?;
    let rel = resolved
        .strip_prefix(context.root())
        .map_err(|_| "resolves outside the build context".to_owned())?;
    let mut sources = context
        .resolve_sources(&[escape_glob(&rel.to_string_lossy())])
        .map_err(|e| e.to_string())?;
    match sources.len() {
        1 => Ok(sources.remove(0)),
        _ => Err("does not name exactly one file or directory".into()),
    }
}

/// The real host path of `path` inside `root`, every symlink on the way resolved as if `root`
/// were `/`. The result always lies inside `root` (which should be canonical).
fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let fd = crate::copy::openat2_in_root(
        &root_fd,
        std::ffi::OsStr::new(if rel.is_empty() { "." } else { rel }),
        OFlags::PATH,
    )?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Quotes the wildcard characters of a literal path so that COPY-style source matching takes
/// it as written.
fn escape_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("a/up")).unwrap();
        assert_eq!(resolve_in_root(&root, "/abs").unwrap(), root.join("a/b"));
        assert_eq!(resolve_in_root(&root, "").unwrap(), root);
        // `..` stops at the root: the link cannot reach the host's /etc.
        assert_eq!(
            resolve_in_root(&root, "a/up").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn context_sources_follow_links_and_respect_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.c"), "int main;").unwrap();
        std::fs::write(dir.path().join("secret.key"), "k").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "secret.key\n").unwrap();
        std::os::unix::fs::symlink("src", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/secret.key", dir.path().join("key-link")).unwrap();
        let context = BuildContext::open(dir.path()).unwrap();
        let source = resolve_context_source(&context, "/link").unwrap();
        assert!(source.is_dir);
        assert_eq!(source.rel_path, "src");
        assert!(resolve_context_source(&context, "/secret.key").is_err());
        assert!(resolve_context_source(&context, "/key-link").is_err());
        assert!(resolve_context_source(&context, "/missing").is_err());

        let out = tempfile::tempdir().unwrap();
        let bound = copy_context_source(&source, out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(bound.join("main.c")).unwrap(),
            "int main;"
        );
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a[1]/b*?\\"), "a\\[1\\]/b\\*\\?\\\\");
    }
}
