//! `kiln import`: an image from a root filesystem tarball, as `docker import` makes one.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_image::{Descriptor, History, ImageConfig, Platform};
use kiln_layer::Compression;

use super::{Env, parse_reference};

pub fn import(env: &Env, file: &Path, name: &str) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let input: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let layer = kiln_layer::import_tar(
        &env.store,
        std::io::BufReader::new(input),
        Compression::default(),
    )
    .with_context(|| format!("importing {}", file.display()))?;
    let platform = Platform::host();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut config = ImageConfig {
        created: Some(created.clone()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("kiln import {}", file.display())),
        comment: Some("Imported from tarball".into()),
        ..Default::default()
    });
    let layers = vec![Descriptor::new(
        layer.media_type.clone(),
        layer.digest.clone(),
        layer.size,
    )];
    let img = kiln_solve::write_image(&env.store, &config, layers)?;
    env.store
        .set_name(&reference.to_string(), &img.manifest_digest)?;
    println!("{}", img.config_digest);
    Ok(ExitCode::SUCCESS)
}
