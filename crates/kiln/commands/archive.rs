//! Images as files: `kiln save` and `kiln load` (the writing they share with
//! `kiln build --output` is in `image_outputs`).

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_export::ArchiveFormat;
use kiln_image::Digest;
use kiln_image::layout::NamedManifest;

use super::image_outputs::{Dest, named_root, write_to};
use super::{Env, parse_reference};

/// `kiln save`: images in the `docker save` format, to a file or stdout. An image with
/// attestations goes in as its index (in `index.json`, `manifest.json` listing the image), so
/// `kiln load` brings the attestations back.
pub fn save(env: &Env, output: Option<&Path>, names: &[String]) -> Result<ExitCode> {
    let mut images: Vec<NamedManifest> = Vec::new();
    for name in names {
        let image = kiln_images::find_image(&env.store, name)?;
        // An image named by ID goes in unnamed, as with `docker save`.
        let full = parse_reference(name)
            .ok()
            .filter(|r| r.digest().is_none())
            .filter(|_| !looks_like_id(name))
            .map(|r| r.to_string());
        match images
            .iter_mut()
            .find(|i| &i.manifest.digest == image.root_digest())
        {
            Some(existing) => existing.names.extend(full),
            None => images.push(named_root(env, &image, full.into_iter().collect())?),
        }
    }
    let dest = match output {
        Some(path) if path != Path::new("-") => Dest::File(path.to_owned()),
        _ => {
            if io::stdout().is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: use -o FILE or redirect stdout"
                );
            }
            Dest::Stdout
        }
    };
    write_to(&dest, |out| {
        kiln_export::write_archive(&env.store, &images, ArchiveFormat::Docker, out)
            .map(drop)
            .map_err(Into::into)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A (short or full) image ID rather than a name, as `find_image` accepts it.
fn looks_like_id(name: &str) -> bool {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kiln load`: images from a docker archive or OCI layout tar (file or stdin) into the store.
pub fn load(env: &Env, input: Option<&Path>, quiet: bool) -> Result<ExitCode> {
    let (reader, what): (Box<dyn io::Read>, String) = match input {
        Some(path) if path != Path::new("-") => (
            Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?),
            path.display().to_string(),
        ),
        _ => {
            if io::stdin().is_terminal() {
                bail!("no image archive on stdin: use -i FILE or redirect stdin");
            }
            (Box::new(io::stdin().lock()), "stdin".to_owned())
        }
    };
    let staged =
        kiln_export::read_archive(&env.store, io::BufReader::with_capacity(256 * 1024, reader))
            .with_context(|| format!("loading {what}"))?;
    // Names are checked before anything is published.
    let mut names = Vec::new();
    for image in staged.images() {
        let mut refs = Vec::new();
        for name in &image.names {
            refs.push(parse_reference(name).with_context(|| format!("loading {what}"))?);
        }
        // Names point at the image's index when it came with attestations.
        names.push((image.config_digest.clone(), image.root_digest.clone(), refs));
    }
    staged.commit().with_context(|| format!("loading {what}"))?;
    for (config_digest, root_digest, refs) in names {
        print_loaded(env, &config_digest, &root_digest, &refs, quiet)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_loaded(
    env: &Env,
    config_digest: &Digest,
    root_digest: &Digest,
    refs: &[kiln_image::Reference],
    quiet: bool,
) -> Result<()> {
    if refs.is_empty() {
        if !quiet {
            println!("Loaded image ID: {config_digest}");
        }
        return Ok(());
    }
    for reference in refs {
        env.store.set_name(&reference.to_string(), root_digest)?;
        if !quiet {
            println!("Loaded image: {}", reference.familiar());
        }
    }
    Ok(())
}
