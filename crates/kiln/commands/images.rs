//! `kiln images`, `rmi`, `tag` and `inspect`: the local names of images.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_registry::Reference;
use kiln_solve::StoredImage;
use serde_json::json;

use super::{Env, parse_reference};
use crate::render::{format_size, time_ago};

/// Loads the image `name` refers to: a local name, or an image ID (full or short config digest).
pub fn find_image(env: &Env, name: &str) -> Result<StoredImage> {
    if let Ok(reference) = name.parse::<Reference>()
        && let Some(img) = StoredImage::load_by_name(&env.store, &reference)?
    {
        return Ok(img);
    }
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut found: Option<StoredImage> = None;
        for (_, manifest) in env.store.list_names()? {
            let img = StoredImage::load(&env.store, &manifest)?;
            if img.config_digest.hex().starts_with(id) {
                found = Some(img);
                break;
            }
        }
        if let Some(img) = found {
            return Ok(img);
        }
    }
    bail!("no such image: {name}")
}

pub fn list(env: &Env) -> Result<ExitCode> {
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    let now = chrono::Utc::now();
    for (name, manifest) in env.store.list_names()? {
        let img =
            StoredImage::load(&env.store, &manifest).with_context(|| format!("image {name}"))?;
        let reference = parse_reference(&name)?;
        let created = img
            .config
            .created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| time_ago(now, t.with_timezone(&chrono::Utc)))
            .unwrap_or_else(|| "N/A".into());
        rows.push([
            reference.repository_with_registry(),
            reference.tag().unwrap_or("<none>").to_owned(),
            img.config_digest.short().to_owned(),
            created,
            format_size(img.size()),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(env: &Env, names: &[String]) -> Result<ExitCode> {
    let mut failed = false;
    for name in names {
        let reference = parse_reference(name)?;
        match env.store.remove_name(&reference.to_string())? {
            Some(_) => println!("Untagged: {}", reference.familiar()),
            None => {
                eprintln!("Error: no such image: {name}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn tag(env: &Env, source: &str, target: &str) -> Result<ExitCode> {
    let img = find_image(env, source)?;
    let target = parse_reference(target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference: {target}");
    }
    env.store
        .set_name(&target.to_string(), &img.manifest_digest)?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(env: &Env, names: &[String]) -> Result<ExitCode> {
    let all = env.store.list_names()?;
    let mut out = Vec::new();
    for name in names {
        if let Some(container) = super::containers::inspect_json(&env.store, name)? {
            out.push(container);
            continue;
        }
        let img = find_image(env, name)
            .map_err(|_| anyhow::anyhow!("no such container or image: {name}"))?;
        let repo_tags: Vec<String> = all
            .iter()
            .filter(|(_, d)| *d == img.manifest_digest)
            .filter_map(|(n, _)| n.parse::<Reference>().ok().map(|r| r.familiar()))
            .collect();
        let c = &img.config;
        out.push(json!({
            "Id": img.config_digest.to_string(),
            "RepoTags": repo_tags,
            "ManifestDigest": img.manifest_digest.to_string(),
            "Created": c.created,
            "Author": c.author,
            "Architecture": c.architecture,
            "Os": c.os,
            "Variant": c.variant,
            "Config": c.config,
            "RootFS": { "Type": c.rootfs.kind, "Layers": c.rootfs.diff_ids },
            "Layers": img.manifest.layers,
            "History": c.history,
            "Size": img.size(),
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
