//! `kiln import`: an image from a root filesystem tarball, as `docker import` makes one.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{Env, parse_reference};

pub fn import(env: &Env, file: &Path, name: &str) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let input: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let img = kiln_images::import_rootfs(
        &env.store,
        std::io::BufReader::new(input),
        &created,
        format!("kiln import {}", file.display()),
    )
    .with_context(|| format!("importing {}", file.display()))?;
    kiln_images::tag(&env.store, &img, &reference)?;
    println!("{}", img.config_digest);
    Ok(ExitCode::SUCCESS)
}
