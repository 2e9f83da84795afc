//! Build contexts that are not on this machine: a git repository
//! (`https://host/org/repo.git#ref:subdir`, `git@host:org/repo.git`, `git://…`) or an HTTP(S)
//! URL of a tarball (or of a lone Dockerfile), as `docker build URL` takes them; and the git
//! checkout `ADD <git URL>` uses.
//!
//! The key decision: git is Debian's `git`, run as a child process, not a reimplementation —
//! it brings every transport (smart HTTP with the user's credential helpers, `git://`, SSH
//! through the forwarded agent) and its own protocol checks. kiln fetches only the one ref
//! asked for, at depth 1, into a fresh directory under the store's `tmp/`; the directory is
//! the build's context and is removed when the build ends, so a failed fetch (a ref that does
//! not exist, an unreachable host) leaves nothing behind. Transports are limited to http,
//! https, git and ssh (`GIT_ALLOW_PROTOCOL`), so a URL (or a submodule) cannot reach `file://`
//! or `ext::` commands. The `.git` directory is dropped unless asked for (`--keep-git-dir`,
//! BuildKit's `BUILDKIT_CONTEXT_KEEP_GIT_DIR`). A tarball is downloaded through the registry
//! client's transport like `ADD <url>` and unpacked with the same confinement as a context
//! tar on stdin.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::build::Engine;
use crate::context_tar::UnpackedContext;

/// A git repository, a ref in it and a directory of it, as Docker's URL fragment names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository URL, fragment removed.
    pub url: String,
    /// A branch, tag, `refs/…` name or commit; the remote's HEAD when `None`.
    pub reference: Option<String>,
    /// The directory of the checkout to use, relative.
    pub subdir: Option<String>,
}

impl GitSource {
    /// Parses `value` when it is a git URL by Docker's rules: `git://`, `git@`, `ssh://`,
    /// `github.com/…`, or an http(s) URL whose path ends in `.git`; `#REF[:SUBDIR]` after it.
    pub fn parse(value: &str) -> Option<GitSource> {
        let (url, fragment) = match value.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (value, None),
        };
        let is_git = url.starts_with("git://")
            || url.starts_with("git@")
            || url.starts_with("ssh://")
            || url.starts_with("github.com/")
            || ((url.starts_with("https://") || url.starts_with("http://"))
                && url.trim_end_matches('/').ends_with(".git"));
        if !is_git {
            return None;
        }
        let url = if url.starts_with("github.com/") {
            format!("https://{url}")
        } else {
            url.to_owned()
        };
        let (reference, subdir) = match fragment {
            Some(f) => match f.split_once(':') {
                Some((r, s)) => (r, Some(s)),
                None => (f, None),
            },
            None => ("", None),
        };
        Some(GitSource {
            url,
            reference: (!reference.is_empty()).then(|| reference.to_owned()),
            subdir: subdir.filter(|s| !s.is_empty()).map(str::to_owned),
        })
    }

    /// The URL as given, for messages: `URL#REF:SUBDIR`.
    pub fn display(&self) -> String {
        let mut s = self.url.clone();
        if self.reference.is_some() || self.subdir.is_some() {
            s.push('#');
            s.push_str(self.reference.as_deref().unwrap_or(""));
            if let Some(sub) = &self.subdir {
                s.push(':');
                s.push_str(sub);
            }
        }
        s
    }
}

/// A context to fetch before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteContext {
    Git(GitSource),
    /// An http(s) URL of a (possibly compressed) tar, or of a lone Dockerfile.
    Tarball(String),
}

impl RemoteContext {
    /// The remote context `arg` names, or `None` for a local path (or `-`).
    pub fn parse(arg: &str) -> Option<RemoteContext> {
        if let Some(git) = GitSource::parse(arg) {
            return Some(RemoteContext::Git(git));
        }
        (arg.starts_with("https://") || arg.starts_with("http://"))
            .then(|| RemoteContext::Tarball(arg.to_owned()))
    }
}

/// Why a remote context could not be fetched; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum RemoteContextError {
    #[error("git context {repo}: the ref {reference:?} does not exist in the repository")]
    NoSuchRef { repo: String, reference: String },
    #[error("git context {repo}: {detail}")]
    Git { repo: String, detail: String },
    #[error("git context {repo}: cannot run git: {cause}")]
    NoGit { repo: String, cause: std::io::Error },
    #[error("git context {repo}: subdirectory {subdir:?}: {reason}")]
    Subdir {
        repo: String,
        subdir: String,
        reason: String,
    },
    /// The download failed: the URL and the server's answer or the transport's error.
    #[error("remote context {message}")]
    Download {
        message: String,
        kind: kiln_error::ErrorKind,
    },
    #[error("remote context {url}: {cause}")]
    Io { url: String, cause: std::io::Error },
    #[error("remote context {url}: {source}")]
    Unpack {
        url: String,
        source: Box<crate::SolveError>,
    },
}

impl RemoteContextError {
    pub fn kind(&self) -> kiln_error::ErrorKind {
        use kiln_error::ErrorKind;
        match self {
            RemoteContextError::NoSuchRef { .. } | RemoteContextError::Subdir { .. } => {
                ErrorKind::NotFound
            }
            RemoteContextError::Git { .. } => ErrorKind::Unavailable,
            RemoteContextError::NoGit { .. } | RemoteContextError::Io { .. } => ErrorKind::Internal,
            RemoteContextError::Download { kind, .. } => *kind,
            RemoteContextError::Unpack { source, .. } => source.kind(),
        }
    }
}

/// A fetched context: its directory and, for a tarball, the Dockerfile beside it.
#[derive(Debug)]
pub struct FetchedContext {
    pub context_dir: PathBuf,
    /// Set when the context came with its Dockerfile outside the directory (a tarball's
    /// Dockerfile, a lone Dockerfile); else the build reads `-f` inside `context_dir`.
    pub dockerfile: Option<PathBuf>,
    _keep: Keep,
}

#[derive(Debug)]
enum Keep {
    Temp(#[allow(dead_code)] tempfile::TempDir),
    Unpacked(#[allow(dead_code)] UnpackedContext),
}

/// How git reaches repositories: the SSH agent to use for `ssh` URLs.
#[derive(Debug, Clone, Default)]
pub struct GitAccess {
    /// The agent socket (`SSH_AUTH_SOCK`) for ssh transports.
    pub ssh_auth_sock: Option<PathBuf>,
}

/// Checks `source` out into `dest` (which must not exist): its ref at depth 1, `.git` kept
/// only with `keep_git_dir`. Returns the directory to use (the subdirectory, if named).
pub fn git_checkout(
    source: &GitSource,
    dest: &Path,
    keep_git_dir: bool,
    access: &GitAccess,
) -> Result<PathBuf, RemoteContextError> {
    let shown = source.display();
    let git = |dir: Option<&Path>, args: &[&str]| -> Result<(), RemoteContextError> {
        let mut cmd = Command::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
            // No host key prompt can be answered; a host seen for the first time is trusted
            // as ssh's accept-new does, a changed key still fails.
            .env(
                "GIT_SSH_COMMAND",
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
            )
            .stdin(std::process::Stdio::null());
        if let Some(sock) = &access.ssh_auth_sock {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        // `ADD <git URL>` runs while other stages unmount overlays: see
        // `kiln_sandbox::fork_window`.
        let out = kiln_sandbox::fork_window::output(&mut cmd).map_err(|cause| {
            RemoteContextError::NoGit {
                repo: shown.clone(),
                cause,
            }
        })?;
        if out.status.success() {
            return Ok(());
        }
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.contains("couldn't find remote ref")
            || detail.contains("not our ref")
            || detail.contains("unadvertised object")
        {
            return Err(RemoteContextError::NoSuchRef {
                repo: shown.clone(),
                reference: source
                    .reference
                    .clone()
                    .unwrap_or_else(|| "HEAD".to_owned()),
            });
        }
        Err(RemoteContextError::Git {
            repo: shown.clone(),
            detail: format!("git {}: {detail}", args.first().copied().unwrap_or("")),
        })
    };
    let dest_str = dest.to_string_lossy().into_owned();
    git(None, &["init", "-q", &dest_str])?;
    let reference = source.reference.as_deref().unwrap_or("HEAD");
    git(
        Some(dest),
        &[
            "fetch",
            "-q",
            "--depth=1",
            "--no-tags",
            "--",
            &source.url,
            reference,
        ],
    )?;
    git(
        Some(dest),
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "FETCH_HEAD",
        ],
    )?;
    if dest.join(".gitmodules").exists() {
        git(
            Some(dest),
            &[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ],
        )?;
    }
    if !keep_git_dir {
        std::fs::remove_dir_all(dest.join(".git")).map_err(|cause| RemoteContextError::Io {
            url: shown.clone(),
            cause,
        })?;
    }
    let Some(subdir) = &source.subdir else {
        return Ok(dest.to_owned());
    };
    let bad = |reason: &str| RemoteContextError::Subdir {
        repo: shown.clone(),
        subdir: subdir.clone(),
        reason: reason.to_owned(),
    };
    if Path::new(subdir)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad("must be a relative path inside the repository"));
    }
    // A symlink in the repository could point anywhere: the resolved path must stay inside.
    let resolved =
        std::fs::canonicalize(dest.join(subdir)).map_err(|_| bad("not in the repository"))?;
    let root = std::fs::canonicalize(dest).map_err(|cause| RemoteContextError::Io {
        url: shown.clone(),
        cause,
    })?;
    if !resolved.starts_with(&root) || !resolved.is_dir() {
        return Err(bad("not a directory of the repository"));
    }
    Ok(resolved)
}

impl Engine {
    /// Fetches a remote context for a build (`hint` names what is built, as for
    /// [`Engine::unpack_context`]). `dockerfile` names the Dockerfile inside a tarball.
    pub fn fetch_context(
        &self,
        remote: &RemoteContext,
        dockerfile: Option<&str>,
        access: &GitAccess,
        hint: &str,
    ) -> Result<FetchedContext, RemoteContextError> {
        match remote {
            RemoteContext::Git(source) => {
                let io = |cause| RemoteContextError::Io {
                    url: source.display(),
                    cause,
                };
                let temp = self
                    .store
                    .temp_dir("git-context-")
                    .map_err(|e| io(std::io::Error::other(e)))?;
                let checkout = temp.path().join("checkout");
                let context_dir = git_checkout(source, &checkout, false, access)?;
                Ok(FetchedContext {
                    context_dir,
                    dockerfile: None,
                    _keep: Keep::Temp(temp),
                })
            }
            RemoteContext::Tarball(url) => self.fetch_tarball(url, dockerfile, hint),
        }
    }

    fn fetch_tarball(
        &self,
        url: &str,
        dockerfile: Option<&str>,
        hint: &str,
    ) -> Result<FetchedContext, RemoteContextError> {
        use std::io::Read;
        let io = |cause| RemoteContextError::Io {
            url: url.to_owned(),
            cause,
        };
        let unpack = |source| RemoteContextError::Unpack {
            url: url.to_owned(),
            source: Box::new(source),
        };
        let download_dir = self
            .store
            .temp_dir("remote-context-")
            .map_err(|e| io(std::io::Error::other(e)))?;
        let downloaded = crate::download::download(
            &self.rt,
            &self.cancel,
            &self.registry,
            url,
            download_dir.path(),
            None,
        )
        .map_err(|e| {
            use crate::download::DownloadError as D;
            let kind = match &e {
                D::Status { status, .. } if status.starts_with("404") => {
                    kiln_error::ErrorKind::NotFound
                }
                D::BadUrl { .. } => kiln_error::ErrorKind::InvalidArgument,
                D::Cancelled { .. } => kiln_error::ErrorKind::Cancelled,
                _ => kiln_error::ErrorKind::Unavailable,
            };
            RemoteContextError::Download {
                message: e.to_string(),
                kind,
            }
        })?;
        let mut file = std::fs::File::open(&downloaded.path).map_err(io)?;
        let mut head = Vec::with_capacity(512);
        (&mut file).take(512).read_to_end(&mut head).map_err(io)?;
        let mut file = std::fs::File::open(&downloaded.path).map_err(io)?;
        let (unpacked, dockerfile) = if crate::context_tar::looks_like_archive(&head) {
            let unpacked = self.unpack_context(&mut file, hint).map_err(unpack)?;
            let path = unpacked.dockerfile(dockerfile).map_err(unpack)?;
            (unpacked, path)
        } else {
            // A URL of a Dockerfile: built with an empty context, as docker build does.
            let mut text = Vec::new();
            file.take(16 << 20).read_to_end(&mut text).map_err(io)?;
            self.context_of_dockerfile(&text, hint).map_err(unpack)?
        };
        Ok(FetchedContext {
            context_dir: unpacked.path(),
            dockerfile: Some(dockerfile),
            _keep: Keep::Unpacked(unpacked),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_by_dockers_rules() {
        let g = GitSource::parse("https://example.com/org/repo.git#v1.2:docs/site").unwrap();
        assert_eq!(g.url, "https://example.com/org/repo.git");
        assert_eq!(g.reference.as_deref(), Some("v1.2"));
        assert_eq!(g.subdir.as_deref(), Some("docs/site"));
        assert_eq!(
            g.display(),
            "https://example.com/org/repo.git#v1.2:docs/site"
        );
        let g = GitSource::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!((g.reference, g.subdir), (None, None));
        let g = GitSource::parse("github.com/org/repo#:sub").unwrap();
        assert_eq!(g.url, "https://github.com/org/repo");
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("sub")));
        assert!(GitSource::parse("git://127.0.0.1:9418/repo").is_some());
        assert!(GitSource::parse("https://example.com/context.tar.gz").is_none());
        assert_eq!(
            RemoteContext::parse("https://example.com/context.tar.gz"),
            Some(RemoteContext::Tarball(
                "https://example.com/context.tar.gz".into()
            ))
        );
        assert_eq!(RemoteContext::parse("./dir"), None);
        assert_eq!(RemoteContext::parse("-"), None);
    }
}
