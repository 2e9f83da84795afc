//! `kiln cp` and `kiln export`: thin commands over the runtime's `copy_out`, `copy_in` and
//! `export`, which `GET/PUT /containers/{id}/archive` and `/export` serve too. As `docker cp`:
//! a copy onto an existing directory goes into it, onto a missing path gets that name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_runtime::{CopyInRequest, Runtime};
use kiln_store::Store;

/// `CONTAINER:PATH` or a host path (`-`: stdin/stdout as a tar).
enum Side<'a> {
    Container(&'a str, &'a str),
    Host(&'a str),
}

fn side(arg: &str) -> Side<'_> {
    // A host path with a colon must be written with a slash before it (`./a:b`), as Docker says.
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() && !c.contains('/') => Side::Container(c, p),
        _ => Side::Host(arg),
    }
}

fn base_name(path: &str) -> Option<&str> {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .and_then(|n| n.to_str())
}

pub fn cp(store: &Store, src: &str, dest: &str, archive: bool) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    match (side(src), side(dest)) {
        (Side::Container(c, path), Side::Host("-")) => {
            let out = rt.copy_out(c, path, None, std::io::stdout().lock())?;
            drop(out);
        }
        (Side::Container(c, path), Side::Host(dest)) => copy_out(&rt, c, path, dest)?,
        (Side::Host(src), Side::Container(c, path)) => copy_in(&rt, src, c, path, archive)?,
        (Side::Container(..), Side::Container(..)) => {
            bail!("copying between containers is not supported (neither does docker)")
        }
        (Side::Host(_), Side::Host(_)) => {
            bail!("one of SRC and DEST must name a container path (CONTAINER:PATH)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn copy_out(rt: &Runtime, c: &str, path: &str, dest: &str) -> Result<()> {
    let dest = PathBuf::from(dest);
    // Onto an existing directory: into it under the source's name; else as `dest` itself.
    let (into, name) = if dest.is_dir() {
        (dest.clone(), None)
    } else {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("invalid destination {}", dest.display()))?;
        (parent, Some(name.to_owned()))
    };
    let mut tar = rt.copy_out(c, path, name.as_deref(), Vec::new())?;
    tar.flush()?;
    kiln_layer::extract_archive(&tar[..], &into, "/")
        .with_context(|| format!("writing into {}", into.display()))?;
    Ok(())
}

fn copy_in(rt: &Runtime, src: &str, c: &str, path: &str, archive: bool) -> Result<()> {
    let request = CopyInRequest {
        no_overwrite_dir_non_dir: true,
        copy_uid_gid: archive,
    };
    if src == "-" {
        rt.copy_in(c, path, std::io::stdin().lock(), &request)?;
        return Ok(());
    }
    let src_path = Path::new(src);
    std::fs::symlink_metadata(src_path).with_context(|| format!("{src}: cannot copy"))?;
    // Onto an existing directory: into it; else as `path` itself, in its parent.
    let (into, name) = match rt.stat_path(c, path) {
        Ok(stat) if stat.mode & (1 << 31) != 0 => {
            (path.to_owned(), base_name(src).map(str::to_owned))
        }
        Ok(_) | Err(kiln_runtime::RuntimeError::NoSuchPath { .. }) => {
            let trimmed = path.trim_end_matches('/');
            let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
            let parent = if parent.is_empty() { "/" } else { parent };
            (parent.to_owned(), Some(name.to_owned()))
        }
        Err(e) => return Err(e.into()),
    };
    let abs = std::fs::canonicalize(
        src_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?
    .join(
        src_path
            .file_name()
            .with_context(|| format!("invalid source {src}"))?,
    );
    let tar = kiln_layer::tar_path_in_root(
        Path::new("/"),
        &abs.to_string_lossy(),
        name.as_deref(),
        Vec::new(),
    )?;
    rt.copy_in(c, &into, &tar[..], &request)?;
    Ok(())
}

pub fn export(store: &Store, query: &str, output: Option<&Path>) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    match output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = rt.export(query, std::io::BufWriter::new(file));
            if let Err(e) = &mut out {
                let _ = std::fs::remove_file(path);
                bail!("{e}");
            }
            out?.flush()?;
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if rustix::termios::isatty(&stdout) {
                bail!("refusing to write a tar to a terminal: redirect the output or use -o FILE");
            }
            rt.export(query, &mut stdout)?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
