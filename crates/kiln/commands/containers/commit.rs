//! `kiln commit`: a new image from a container's changes.

use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_image::{Descriptor, History, Reference};

use super::super::{Env, parse_reference};

/// `kiln commit`: the container's writable layer as a new layer on its image, with the
/// container's command, environment, user and working directory as the new image's config,
/// as `docker commit` does.
pub fn commit(
    env: &Env,
    query: &str,
    name: &str,
    message: Option<&str>,
    author: Option<&str>,
) -> Result<ExitCode> {
    let reference: Reference = parse_reference(name)?;
    let c = env.store.find_container(query)?;
    let manifest = c.manifest.parse().context("the container's image digest")?;
    let img = kiln_images::StoredImage::load(&env.store, &manifest)
        .with_context(|| format!("loading the image of container {}", c.name))?;
    let upper = env.store.container_dir(&c.id).join("upper");
    let layer = kiln_layer::write_layer(&env.store, &upper, kiln_layer::Compression::default())
        .with_context(|| format!("writing the changes of container {}", c.name))?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut config = img.config.clone();
    config.created = Some(created.clone());
    if let Some(a) = author {
        config.author = Some(a.to_owned());
    }
    let cfg = &mut config.config;
    cfg.cmd = Some(c.config.cmd.clone()).filter(|v| !v.is_empty());
    cfg.entrypoint = Some(c.config.entrypoint.clone()).filter(|v| !v.is_empty());
    cfg.env = c.config.env.clone();
    cfg.user = Some(c.config.user.clone()).filter(|u| !u.is_empty());
    cfg.working_dir = Some(c.config.working_dir.clone()).filter(|w| !w.is_empty());
    let mut layers: Vec<Descriptor> = img.manifest.layers.clone();
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("kiln commit {}", c.name)),
        author: author.map(str::to_owned),
        comment: message.map(str::to_owned),
        empty_layer: layer.is_none(),
    });
    if let Some(layer) = layer {
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        layers.push(Descriptor::new(layer.media_type, layer.digest, layer.size));
    }
    let new = kiln_images::write_image(&env.store, &config, layers)?;
    env.store
        .set_name(&reference.to_string(), &new.manifest_digest)?;
    println!("{}", new.config_digest);
    Ok(ExitCode::SUCCESS)
}
