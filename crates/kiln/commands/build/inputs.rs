//! Where a build's context and Dockerfile come from: a directory, a tar or a lone Dockerfile
//! on stdin (`-`), a Dockerfile on stdin (`-f -`). What is read from stdin lives in the
//! store's context slots or temp dirs for the build's duration and is gone afterwards.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::super::Env;
use crate::cli::BuildArgs;

/// The most a Dockerfile read from stdin may hold, as for one inside a context tar.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// A resolved context directory and Dockerfile, and what keeps them alive for the build.
pub struct Inputs {
    pub context_dir: PathBuf,
    /// `None`: `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// Unpacked contexts and temp dirs, removed or released when the build is done.
    _keep: Vec<Box<dyn std::any::Any>>,
}

pub fn resolve(
    env: &Env,
    args: &BuildArgs,
    access: &kiln_solve::remote_context::GitAccess,
) -> Result<Inputs> {
    let stdin_file = args.file.as_deref().is_some_and(|f| f.as_os_str() == "-");
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    // `-f` as text, for the contexts that hold their Dockerfile (a tar, a repository).
    let file_name = args
        .file
        .as_deref()
        .map(|f| f.to_string_lossy().into_owned());
    if args.context.as_os_str() == "-" {
        if stdin_file {
            bail!("the context and the Dockerfile cannot both be read from stdin (`-` and `-f -`)");
        }
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::with_capacity(512);
        (&mut stdin)
            .take(512)
            .read_to_end(&mut head)
            .context("reading the build context from stdin")?;
        let engine = env.engine()?;
        // The names built pick the reused context directory (see `Engine::unpack_context`).
        let hint = args.tags.join(" ");
        let (context_dir, dockerfile, kept): (_, _, Box<dyn std::any::Any>) =
            if kiln_solve::looks_like_archive(&head) {
                let unpacked = engine
                    .unpack_context(std::io::Cursor::new(head).chain(stdin), &hint)
                    .context("reading the build context from stdin")?;
                // `-f` names the Dockerfile inside the tar, as with docker build.
                let dockerfile = unpacked.dockerfile(file_name.as_deref())?;
                (unpacked.path(), dockerfile, Box::new(unpacked))
            } else {
                // Not an archive: a lone Dockerfile, built with an empty context.
                if args.file.is_some() {
                    bail!(
                        "-f names a Dockerfile inside a context tar, but stdin holds a Dockerfile, not a tar"
                    );
                }
                let text = read_dockerfile(std::io::Cursor::new(head).chain(stdin))?;
                let (unpacked, dockerfile) = engine.context_of_dockerfile(&text, &hint)?;
                (unpacked.path(), dockerfile, Box::new(unpacked))
            };
        keep.push(kept);
        return Ok(Inputs {
            context_dir,
            dockerfile: Some(dockerfile),
            _keep: keep,
        });
    }
    let context_arg = args.context.to_string_lossy();
    if let Some(remote) = kiln_solve::remote_context::RemoteContext::parse(&context_arg) {
        if stdin_file {
            bail!("-f -: a remote context brings its own Dockerfile; name it with -f PATH");
        }
        let engine = env.engine()?;
        let fetched =
            engine.fetch_context(&remote, file_name.as_deref(), access, &args.tags.join(" "))?;
        let context_dir = fetched.context_dir.clone();
        let dockerfile = match (&fetched.dockerfile, &args.file) {
            (Some(path), _) => Some(path.clone()),
            // In a repository, -f is a path inside the context, as with docker build.
            (None, Some(file)) => Some(inside(&context_dir, file)?),
            (None, None) => None,
        };
        keep.push(Box::new(fetched));
        return Ok(Inputs {
            context_dir,
            dockerfile,
            _keep: keep,
        });
    }
    let context_dir = args
        .context
        .canonicalize()
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context_dir.is_dir() {
        bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    let dockerfile = if stdin_file {
        let text = read_dockerfile(std::io::stdin().lock())?;
        let dir = env.store.temp_dir("dockerfile-")?;
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        keep.push(Box::new(dir));
        Some(path)
    } else {
        args.file.clone()
    };
    Ok(Inputs {
        context_dir,
        dockerfile,
        _keep: keep,
    })
}

/// `file` inside the fetched context `dir`: a relative path that stays inside it, links
/// included.
fn inside(dir: &std::path::Path, file: &std::path::Path) -> Result<PathBuf> {
    let dir = dir.canonicalize()?;
    let path = dir.join(file);
    let resolved = path
        .canonicalize()
        .with_context(|| format!("-f {}: not in the remote context", file.display()))?;
    if !resolved.starts_with(&dir) {
        bail!("-f {}: outside the remote context", file.display());
    }
    Ok(resolved)
}

fn read_dockerfile(from: impl Read) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    from.take(MAX_DOCKERFILE + 1)
        .read_to_end(&mut text)
        .context("reading the Dockerfile from stdin")?;
    if text.len() as u64 > MAX_DOCKERFILE {
        bail!("the Dockerfile on stdin is larger than 16 MiB");
    }
    Ok(text)
}
