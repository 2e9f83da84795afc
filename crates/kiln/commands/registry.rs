//! `kiln pull` and `kiln push`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_image::Platform;
use kiln_layer::CompressionRequest;
use kiln_registry::PushEvent;

use super::{Env, parse_reference};
use crate::cli::CompressionArgs;
use crate::commands::images::find_image;
use crate::render::ProgressPrinter;

pub fn pull(env: &Env, name: &str, platform: Option<&str>) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let printer = ProgressPrinter::new(false);
    let img = kiln_solve::pull_image(
        &env.store,
        env.registry(),
        env.rt.handle(),
        &reference,
        &platform,
        &|e| printer.event(e),
    )?;
    println!("Digest: {}", img.manifest_digest);
    println!("Status: Downloaded image for {}", reference.familiar());
    Ok(ExitCode::SUCCESS)
}

pub fn push(env: &Env, name: &str, compression: &CompressionArgs) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    if reference.digest().is_some() {
        bail!("push needs a tag, not a digest: {name}");
    }
    let request = match (&compression.compression, compression.compression_level) {
        (None, None) => None,
        (None, Some(_)) => bail!("--compression-level needs --compression on push"),
        (Some(algorithm), level) => Some(CompressionRequest::from_flags(algorithm, level)?),
    };
    let mut img = find_image(env, name)?;
    if let Some(request) = &request {
        // Layers not yet in this setting are compressed once here; the store keeps the result
        // for every later push.
        let (converted, reencoded) = kiln_solve::image_in_compression(&env.store, &img, request)?;
        if reencoded > 0 {
            println!(
                "Compressed {reencoded} layer{} as {}",
                if reencoded == 1 { "" } else { "s" },
                request.compression.setting_name()
            );
        }
        img = converted;
    }
    println!(
        "The push refers to repository [{}]",
        reference.repository_with_registry()
    );
    let on_event = |e: PushEvent| match e {
        PushEvent::BlobExists { digest } => println!("{}: Layer already exists", digest.short()),
        PushEvent::BlobUploaded { digest } => println!("{}: Pushed", digest.short()),
        _ => {}
    };
    let digest = env.rt.block_on(env.registry().push(
        &env.store,
        &img.manifest_digest,
        &reference,
        &on_event,
    ))?;
    println!(
        "{}: digest: {} size: {}",
        reference.tag().unwrap_or("latest"),
        digest,
        env.store.blob_size(&digest)?
    );
    Ok(ExitCode::SUCCESS)
}
