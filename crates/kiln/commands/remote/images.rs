//! `kiln --host … images`, `rmi`, `tag` and `inspect`, rendered as the in-process commands
//! render them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_client::ClientError;

use super::Remote;
use crate::commands::parse_reference;
use crate::render::{format_size, table, time_ago};

pub fn list(remote: &Remote, filters: &[String]) -> Result<ExitCode> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in filters {
        let Some((key, value)) = f.split_once('=') else {
            bail!("invalid filter {f:?}: expected KEY=VALUE");
        };
        by_key
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    let images = remote.call(remote.client.images(&by_key))?;
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    let now = chrono::Utc::now();
    for img in &images {
        let id = short_id(&img.id);
        let created = chrono::DateTime::from_timestamp(img.created, 0)
            .filter(|_| img.created > 0)
            .map(|t| time_ago(now, t))
            .unwrap_or_else(|| "N/A".into());
        let size = format_size(img.size.max(0) as u64);
        let tags = img.repo_tags.clone().unwrap_or_default();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repository, tag) in names {
            rows.push([repository, tag, id.clone(), created.clone(), size.clone()]);
        }
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `sha256:0123…` → the first 12 hex digits, as `docker images` shows IDs.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// `127.0.0.1:5000/app:1` → (`127.0.0.1:5000/app`, `1`); the tag is after the last `:` that
/// follows the last `/` (a registry port is not a tag).
fn split_tag(name: &str) -> (String, String) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_owned(),
            name[slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "<none>".to_owned()),
    }
}

/// `kiln rmi`: each name in turn; a failure is reported and the others still go.
pub fn remove(remote: &Remote, names: &[String], force: bool) -> Result<ExitCode> {
    let removed = crate::render::each_reporting(names, |name| {
        for item in remote.call(remote.client.image_remove(name, force))? {
            if let Some(untagged) = item.untagged {
                println!("Untagged: {untagged}");
            }
            if let Some(deleted) = item.deleted {
                println!("Deleted: {deleted}");
            }
        }
        Ok(())
    });
    Ok(if removed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn tag(remote: &Remote, source: &str, target: &str) -> Result<ExitCode> {
    let reference = parse_reference(target)?;
    if reference.digest().is_some() {
        bail!("a tag cannot be a digest: {target}");
    }
    let repo = reference.repository_with_registry();
    let tag = reference.tag().unwrap_or("latest");
    remote.call(remote.client.image_tag(source, &repo, tag))?;
    Ok(ExitCode::SUCCESS)
}

/// Each name as a container, else as an image, as `kiln inspect` does; the daemon's objects as
/// they came, one JSON array.
pub fn inspect(remote: &Remote, names: &[String]) -> Result<ExitCode> {
    let mut out = Vec::new();
    for name in names {
        match remote.call(remote.client.container_inspect(name)) {
            Ok(container) => {
                out.push(container);
                continue;
            }
            Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match remote.call(remote.client.image_inspect(name)) {
            Ok(image) => out.push(image),
            Err(ClientError::Api { status: 404, .. }) => {
                bail!("no such container or image: {name}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_tag("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/app:1"),
            ("127.0.0.1:5000/app".into(), "1".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app".into(), "<none>".into())
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
