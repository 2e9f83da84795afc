//! `kiln --host … save`, `load`, `import` and `commit`: archives streamed to and from the
//! daemon (never held whole in memory), printed as the in-process commands print them.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_client::Upload;

use super::Remote;
use crate::commands::parse_reference;

/// A file to read, or stdin for `None` and `-`.
fn upload(input: Option<&Path>) -> Result<Upload> {
    Ok(match input {
        Some(path) if path != Path::new("-") => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Upload::new(file, path)
        }
        _ => Upload::new(std::io::stdin(), Path::new("-")),
    })
}

/// `kiln save`: the daemon's docker-archive tar of the images, to a file or stdout. A file is
/// written beside its final name and renamed once complete, so a failed save leaves nothing.
pub fn save(remote: &Remote, output: Option<&Path>, names: &[String]) -> Result<ExitCode> {
    match output {
        Some(path) if path != Path::new("-") => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
                .with_context(|| format!("writing {}", path.display()))?;
            remote.call(
                remote
                    .client
                    .image_save(names, &mut |chunk| tmp.write_all(chunk)),
            )?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: use -o FILE or redirect stdout"
                );
            }
            let mut out = stdout.lock();
            remote.call(
                remote
                    .client
                    .image_save(names, &mut |chunk| out.write_all(chunk)),
            )?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn load(remote: &Remote, input: Option<&Path>, quiet: bool) -> Result<ExitCode> {
    let archive = upload(input)?;
    remote.call(remote.client.image_load(archive, &mut |m| {
        if let (Some(text), false) = (&m.stream, quiet) {
            print!("{text}");
        }
        Ok(())
    }))?;
    Ok(ExitCode::SUCCESS)
}

pub fn import(remote: &Remote, file: &Path, name: &str) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let tag = reference.tag().unwrap_or("latest").to_owned();
    let rootfs = upload(Some(file))?;
    remote.call(remote.client.image_import(
        rootfs,
        &reference.repository_with_registry(),
        &tag,
        &mut |m| {
            // The new image's ID, as `kiln import` prints it.
            if let Some(status) = m.status.as_deref().filter(|s| s.starts_with("sha256:")) {
                println!("{status}");
            }
            Ok(())
        },
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn commit(
    remote: &Remote,
    container: &str,
    name: Option<&str>,
    message: Option<&str>,
    author: Option<&str>,
) -> Result<ExitCode> {
    let target = match name {
        Some(name) => {
            let reference = parse_reference(name)?;
            let tag = reference.tag().unwrap_or("latest").to_owned();
            Some((reference.repository_with_registry(), tag))
        }
        None => None,
    };
    let id = remote.call(remote.client.commit(
        container,
        target.as_ref().map(|(r, t)| (r.as_str(), t.as_str())),
        message,
        author,
    ))?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}
