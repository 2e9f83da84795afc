//! Source trees for COPY/ADD: the build context (filtered by `.dockerignore`) and another stage's
//! root filesystem (`COPY --from`).
//!
//! A source pattern is resolved the way BuildKit does it: relative to the tree root (a leading
//! `/` means the root too, `..` never climbs above it), wildcard components are Go
//! `filepath.Match` globs matched one component at a time, and symlinks met on the way are
//! resolved as if the tree root were `/` (a chroot), so nothing outside the tree is ever named.
//! A source that is itself a symlink is taken as the link, not its target. Paths excluded by
//! `.dockerignore` are invisible: they neither match nor get walked. A path without wildcards
//! must exist (and be visible); a wildcard may match nothing, as in BuildKit.
//!
//! `--exclude` patterns (same syntax as `.dockerignore`) are attached to a resolved source with
//! [`Source::excluding`] and hide paths relative to that source during its walk.
//!
//! The walk of a source (`Source::entries`) lives in `walk`, and the cache hash over it in
//! `hashing`, built on the same walk so COPY and the cache see exactly the same set of files.
//! The build context remembers the digests of its files in the store across builds
//! ([`BuildContext::with_digest_cache`]), so a rebuild reads only files whose metadata changed.

mod hashing;
pub(crate) use hashing::manifest_path;
mod resolve;
mod walk;

use resolve::TreeRef;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use kiln_image::Digest;

use crate::dockerignore::{
    GlobError, IgnoreError, IgnoreMatcher, compile_component_glob, contains_wildcards, go_clean,
};

pub use hashing::{DigestCache, HashOptions, HashStats, SourcesDigest, hash_sources};
pub use walk::{SourceEntries, SourceEntry};

/// Linux gives up after 40 symlinks in one resolution; so do we.
const MAX_SYMLINKS: usize = 40;

/// Which kind of tree a pattern was resolved in, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    Context,
    Rootfs,
}

impl std::fmt::Display for TreeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TreeKind::Context => "build context",
            TreeKind::Rootfs => "source stage filesystem",
        })
    }
}

/// Errors resolving, walking or hashing sources.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {path}: {source}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build context {path} is not a directory")]
    RootNotDirectory { path: PathBuf },
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error("{pattern:?}: not found in {tree}{}", if *.excluded { " (it exists but is excluded by .dockerignore)" } else { "" })]
    NoSourceMatch {
        pattern: String,
        tree: TreeKind,
        /// Something matched but `.dockerignore` hides it.
        excluded: bool,
    },
    #[error("{pattern:?}: bad wildcard pattern: {reason}")]
    BadPattern { pattern: String, reason: GlobError },
    #[error("{pattern:?}: too many levels of symbolic links")]
    SymlinkLoop { pattern: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The build was cancelled while the context was being read.
    #[error("reading the build context was cancelled")]
    Cancelled,
}

type Result<T, E = ContextError> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory a build was started with, and its `.dockerignore`.
///
/// The Dockerfile and `.dockerignore` themselves stay readable through `root()` even when the
/// ignore file excludes them; only COPY/ADD sources are filtered.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    ignore: Arc<IgnoreMatcher>,
    /// Digests of the context's files known from earlier builds; `None`: every file is read.
    digests: Option<Arc<DigestCache>>,
    /// Hashing stops between entries once this is cancelled.
    cancel: Option<crate::CancelToken>,
}

impl BuildContext {
    /// Opens a context directory and reads its `.dockerignore` (none → nothing excluded).
    pub fn open(dir: &Path) -> Result<Self> {
        let root = std::fs::canonicalize(dir).map_err(|source| ContextError::OpenRoot {
            path: dir.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(ContextError::RootNotDirectory { path: root });
        }
        let ignore = IgnoreMatcher::from_context(&root)?;
        Ok(BuildContext {
            root,
            ignore: Arc::new(ignore),
            digests: None,
            cancel: None,
        })
    }

    /// Uses `<dockerfile>.dockerignore` (e.g. `app.Dockerfile.dockerignore`) instead of the
    /// context's `.dockerignore` when that file exists beside the Dockerfile, as BuildKit
    /// does, so several Dockerfiles can share one context with different exclusions.
    pub fn with_dockerfile_ignore(mut self, dockerfile: &Path) -> Result<Self> {
        let mut name = dockerfile.as_os_str().to_owned();
        name.push(crate::dockerignore::IGNORE_FILE_NAME);
        let path = PathBuf::from(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                self.ignore = Arc::new(IgnoreMatcher::parse(&String::from_utf8_lossy(&bytes))?);
                Ok(self)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(self),
            Err(source) => Err(crate::dockerignore::IgnoreError::Read { path, source }.into()),
        }
    }

    /// Makes hashing this context give up with [`ContextError::Cancelled`] once `cancel` is.
    pub fn with_cancel(mut self, cancel: crate::CancelToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Uses (and fills) the store's record of this directory's file digests; see
    /// [`kiln_store::FileDigestIndex`]. Call [`BuildContext::save_digest_cache`] after the build.
    pub fn with_digest_cache(mut self, store: &kiln_store::Store) -> Self {
        let index = store.file_digest_index(&self.root);
        self.digests = Some(Arc::new(DigestCache::new(self.root.clone(), index)));
        self
    }

    /// Writes the digests learnt in this build back into the store.
    pub fn save_digest_cache(
        &self,
        store: &kiln_store::Store,
    ) -> Result<(), kiln_store::StoreError> {
        match &self.digests {
            Some(digests) => digests.save(store),
            None => Ok(()),
        }
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed `.dockerignore`.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    /// Resolves COPY/ADD source patterns; see the module docs for the rules.
    pub fn resolve_sources(&self, patterns: &[String]) -> Result<Vec<Source>> {
        self.tree().resolve_sources(patterns)
    }

    /// The build-cache hash of a source set (see [`hash_sources`]).
    pub fn hash_sources(&self, sources: &[Source]) -> Result<Digest> {
        Ok(self.digest_sources(sources, false)?.digest)
    }

    /// The build-cache hash of a source set and what it took, reusing known file digests.
    pub fn digest_sources(&self, sources: &[Source], include_owner: bool) -> Result<SourcesDigest> {
        hash_sources(
            sources,
            &HashOptions {
                cache: self.digests.as_deref(),
                include_owner,
                cancel: self.cancel.as_ref(),
            },
        )
    }

    fn tree(&self) -> TreeRef<'_> {
        TreeRef {
            root: &self.root,
            ignore: (!self.ignore.is_empty()).then_some(&self.ignore),
            kind: TreeKind::Context,
        }
    }
}

/// Where COPY takes its sources from.
#[derive(Debug, Clone)]
pub enum SourceTree {
    /// The build context, filtered by `.dockerignore`.
    Context(BuildContext),
    /// Another stage's (or image's) root filesystem: no ignore file, symlinks confined to it.
    Rootfs(PathBuf),
}

impl SourceTree {
    /// The directory the tree is rooted at.
    pub fn root(&self) -> &Path {
        match self {
            SourceTree::Context(context) => context.root(),
            SourceTree::Rootfs(root) => root,
        }
    }

    /// Resolves COPY/ADD source patterns inside this tree.
    pub fn resolve_sources(&self, patterns: &[String]) -> Result<Vec<Source>> {
        match self {
            SourceTree::Context(context) => context.resolve_sources(patterns),
            SourceTree::Rootfs(root) => TreeRef {
                root,
                ignore: None,
                kind: TreeKind::Rootfs,
            }
            .resolve_sources(patterns),
        }
    }

    /// The build-cache hash of a source set (see [`hash_sources`]); for the context, known file
    /// digests are reused. `include_owner` for copies that keep the sources' ownership.
    pub fn digest_sources(&self, sources: &[Source], include_owner: bool) -> Result<SourcesDigest> {
        match self {
            SourceTree::Context(context) => context.digest_sources(sources, include_owner),
            SourceTree::Rootfs(_) => hash_sources(
                sources,
                &HashOptions {
                    cache: None,
                    include_owner,
                    cancel: None,
                },
            ),
        }
    }

    /// Resolves COPY/ADD source patterns with the flags that shape the selection: `--parents`
    /// (each source keeps its matched path, less the part before a `/./` pivot) and `--exclude`
    /// (see [`Source::excluding`]).
    pub fn select(&self, patterns: &[String], options: &SelectOptions) -> Result<Vec<Source>> {
        let mut selected = Vec::new();
        for pattern in patterns {
            let (pivot, full_pattern) = match pattern.split_once("/./") {
                Some((parent, rest)) if options.parents => {
                    let pivot = go_clean(&format!("/{parent}"))
                        .trim_start_matches('/')
                        .to_string();
                    (pivot, format!("{parent}/{rest}"))
                }
                _ => (String::new(), pattern.clone()),
            };
            for mut source in self.resolve_sources(std::slice::from_ref(&full_pattern))? {
                if options.parents {
                    let kept = if pivot.is_empty() {
                        source.rel_path.as_str()
                    } else if source.rel_path == pivot {
                        ""
                    } else {
                        source
                            .rel_path
                            .strip_prefix(&pivot)
                            .and_then(|rest| rest.strip_prefix('/'))
                            .unwrap_or(&source.rel_path)
                    };
                    source.parents_path = Some(kept.to_string());
                }
                selected.extend(source.excluding(&options.exclude));
            }
        }
        Ok(selected)
    }
}

/// The COPY/ADD flags that change which sources are taken and where they land.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    /// `--exclude` patterns (empty: nothing excluded).
    pub exclude: Arc<IgnoreMatcher>,
    /// `--parents`.
    pub parents: bool,
}

/// One resolved COPY source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where the source is on the host (symlinks in its parents already resolved).
    pub host_path: PathBuf,
    /// The path as the pattern matched it, relative to the tree root (`""` for the root).
    pub rel_path: String,
    /// A directory source copies its contents.
    pub is_dir: bool,
    /// `COPY --parents`: the path (relative to the destination) the source keeps, i.e. its
    /// matched path without the part before a `/./` pivot. `None` without `--parents`.
    pub parents_path: Option<String>,
    filter: Option<SourceFilter>,
    /// `--exclude` patterns, matched against paths relative to the source.
    exclude: Option<Arc<IgnoreMatcher>>,
}

impl Source {
    /// A single file that is not part of any tree (an ADD download, a COPY heredoc), copied
    /// under its own file name.
    pub fn standalone(host_path: PathBuf) -> Source {
        let rel_path = host_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Source {
            host_path,
            rel_path,
            is_dir: false,
            parents_path: None,
            filter: None,
            exclude: None,
        }
    }

    /// A directory that is not part of any tree (an archive ADD unpacked aside so that
    /// `--chown`/`--chmod` apply to its entries), whose contents are copied.
    pub fn standalone_dir(host_path: PathBuf) -> Source {
        Source {
            is_dir: true,
            rel_path: String::new(),
            ..Source::standalone(host_path)
        }
    }

    /// Applies `--exclude` patterns: `None` when the source itself is excluded (its matched name
    /// is, as for `COPY --exclude=*.txt hom* /dst/`), else the source with the patterns applied
    /// to everything below it.
    pub fn excluding(mut self, exclude: &Arc<IgnoreMatcher>) -> Option<Source> {
        if exclude.is_empty() {
            return Some(self);
        }
        let name = self.rel_path.rsplit('/').next().unwrap_or_default();
        if !name.is_empty() && exclude.is_excluded(name) {
            return None;
        }
        self.exclude = Some(Arc::clone(exclude));
        Some(self)
    }

    /// The source and, for a directory, every visible descendant in sorted order, without
    /// following symlinks.
    pub fn entries(&self) -> SourceEntries {
        SourceEntries::new(self)
    }
}

/// The `.dockerignore` view a context source carries into its walk.
#[derive(Debug, Clone)]
struct SourceFilter {
    ignore: Arc<IgnoreMatcher>,
    /// The source's real path relative to the context root, as the matcher expects it.
    base: String,
}

impl SourceFilter {
    fn tree_path(&self, rel: &str) -> String {
        match (self.base.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.base.clone(),
            (false, false) => format!("{}/{rel}", self.base),
        }
    }
}

fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn path_to_slash(path: &Path) -> String {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests;
