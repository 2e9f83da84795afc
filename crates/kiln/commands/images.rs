//! `kiln images`, `rmi`, `tag` and `inspect`: the local names of images.

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_image::Reference;
use kiln_images::{ImageError, ListFilter, StoredImage, list_images};
use serde_json::json;

use super::{Env, parse_reference};
use crate::render::{format_size, table, time_ago};

/// Loads the image `name` refers to: a local name, or an image ID (full or a prefix).
pub fn find_image(env: &Env, name: &str) -> Result<StoredImage> {
    Ok(kiln_images::find_image(&env.store, name)?)
}

pub fn list(env: &Env, filters: &[String]) -> Result<ExitCode> {
    let filter = ListFilter::parse(filters)?;
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    let now = chrono::Utc::now();
    let listed = list_images(&env.store, &filter)?;
    // A multi-platform image is one row (its name points at an index) that lists its
    // platforms; the column is there only when some row has several.
    let multi = listed.iter().any(|r| r.platforms.len() > 1);
    let mut platforms = vec!["PLATFORMS".to_owned()];
    for row in listed {
        let img = &row.image;
        let created = img
            .config
            .created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| time_ago(now, t.with_timezone(&chrono::Utc)))
            .unwrap_or_else(|| "N/A".into());
        let (repository, tag) = match &row.name {
            Some(r) => (
                r.repository_with_registry(),
                r.tag().unwrap_or("<none>").to_owned(),
            ),
            None => ("<none>".to_owned(), "<none>".to_owned()),
        };
        rows.push([
            repository,
            tag,
            img.config_digest.short().to_owned(),
            created,
            format_size(img.size()),
        ]);
        platforms.push(match row.platforms.len() {
            0 => kiln_images::config_platform(&img.config).to_string(),
            _ => row.platforms.join(","),
        });
    }
    if multi {
        let rows: Vec<[String; 6]> = rows
            .into_iter()
            .zip(platforms)
            .map(|([a, b, c, d, e], p)| [a, b, c, d, e, p])
            .collect();
        print!("{}", table(&rows));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `kiln rmi`: each name or ID in turn; a failure is reported and the others still go, as
/// `docker rmi` does.
pub fn remove(env: &Env, names: &[String], force: bool) -> Result<ExitCode> {
    let removed = crate::render::each_reporting(names, |name| {
        let removed = kiln_images::remove(&env.store, name, force)?;
        for r in &removed.untagged {
            println!("Untagged: {}", r.familiar());
        }
        if let Some(id) = removed.deleted {
            println!("Deleted: {id}");
        }
        Ok(())
    });
    Ok(if removed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn tag(env: &Env, source: &str, target: &str) -> Result<ExitCode> {
    let img = find_image(env, source)?;
    kiln_images::tag(&env.store, &img, &parse_reference(target)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(env: &Env, names: &[String]) -> Result<ExitCode> {
    let all = env.store.list_names()?;
    let mut out = Vec::new();
    let runtime = kiln_runtime::Runtime::new(env.store.clone());
    for name in names {
        match runtime.inspect(name) {
            Ok(container) => {
                out.push(container);
                continue;
            }
            Err(kiln_runtime::RuntimeError::Container(
                kiln_store::ContainerError::NoSuchContainer(_),
            )) => {}
            Err(e) => return Err(e.into()),
        }
        let img = match kiln_images::find_image(&env.store, name) {
            Ok(img) => img,
            Err(ImageError::NotFound(_)) => bail!("no such container or image: {name}"),
            Err(e) => return Err(e.into()),
        };
        let repo_tags: Vec<String> = all
            .iter()
            .filter(|(_, d)| d == img.root_digest())
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
