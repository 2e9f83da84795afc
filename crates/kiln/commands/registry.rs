//! `kiln pull` and `kiln push`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_image::Platform;
use kiln_registry::PushEvent;

use super::{Env, parse_reference};
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

pub fn push(env: &Env, name: &str) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    if reference.digest().is_some() {
        bail!("push needs a tag, not a digest: {name}");
    }
    let img = find_image(env, name)?;
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
