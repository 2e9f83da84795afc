//! Images as dockerd 1.41 writes them: `ImageInspect` and `ImageSummary`, every field
//! present, absent values as dockerd gives them (`""`, `null`, `-1`, Go's zero time) — clients
//! and compose index into these objects, and podman's missing fields broke them.

use kiln_image::Reference;
use kiln_images::StoredImage;
use serde_json::{Value, json};

/// Go's zero `time.Time`, which dockerd writes for times it does not have.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// dockerd's `container.Config` with every field at its zero value, in its field order.
fn zero_container_config() -> serde_json::Map<String, Value> {
    let v = json!({
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": null,
        "Cmd": null,
        "Image": "",
        "Volumes": null,
        "WorkingDir": "",
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": null,
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The image's `config` in dockerd's shape: its own fields over the zero config.
pub fn docker_config(img: &StoredImage) -> Value {
    let mut out = zero_container_config();
    if let Ok(Value::Object(own)) = serde_json::to_value(&img.config.config) {
        for (k, v) in own {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// The image's creation time as RFC 3339, or Go's zero time.
fn created(img: &StoredImage) -> String {
    img.config
        .created
        .clone()
        .unwrap_or_else(|| ZERO_TIME.to_owned())
}

/// Unix seconds of the creation time (0 when unknown), as `/images/json` gives it.
fn created_unix(img: &StoredImage) -> i64 {
    img.config
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| t.timestamp())
}

/// `GET /images/{name}/json`.
pub fn inspect(img: &StoredImage, names: &[Reference]) -> Value {
    let c = &img.config;
    // The config's own top-level `comment` (docker import and commit set it), not history's.
    let comment = c
        .extra
        .get("comment")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut v = json!({
        "Id": img.config_digest.to_string(),
        "RepoTags": names.iter().map(Reference::familiar).collect::<Vec<_>>(),
        "RepoDigests": [],
        "Parent": "",
        "Comment": comment,
        "Created": created(img),
        "Container": "",
        "ContainerConfig": Value::Object(zero_container_config()),
        "DockerVersion": "",
        "Author": c.author.clone().unwrap_or_default(),
        "Config": docker_config(img),
        "Architecture": c.architecture,
        "Os": c.os,
        "Size": img.size(),
        "VirtualSize": img.size(),
        // An object, never null: moby's spec says `x-nullable: false` (dockerd fills in the
        // overlay directories; kiln's snapshots are not one image's, so none are named).
        "GraphDriver": { "Data": {}, "Name": "overlay2" },
        "RootFS": {
            "Type": if c.rootfs.kind.is_empty() { "layers" } else { c.rootfs.kind.as_str() },
            "Layers": c.rootfs.diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": ZERO_TIME },
    });
    // `omitempty` in dockerd.
    if let Some(variant) = &c.variant {
        v["Variant"] = json!(variant);
    }
    v
}

/// One entry of `GET /images/json`: an image with all its names.
pub fn summary(img: &StoredImage, names: &[Reference]) -> Value {
    let labels = &img.config.config.labels;
    json!({
        "Containers": -1,
        "Created": created_unix(img),
        "Id": img.config_digest.to_string(),
        // dockerd writes `null` for no labels; the spec wants an object, and clients take both.
        "Labels": labels,
        "ParentId": "",
        "RepoDigests": [],
        "RepoTags": names.iter().map(Reference::familiar).collect::<Vec<_>>(),
        "SharedSize": -1,
        "Size": img.size(),
        "VirtualSize": img.size(),
    })
}

/// `GET /images/{name}/history`: newest first; the newest entry carries the image ID and its
/// names, older ones `<missing>` (dockerd knows no IDs for them either, once pulled). `Size`
/// is the layer blob's size as stored (dockerd gives the unpacked size).
pub fn history(img: &StoredImage, names: &[Reference]) -> Value {
    let mut layers = img.manifest.layers.iter();
    let mut rows: Vec<Value> = img
        .config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().map_or(0, |l| l.size)
            };
            let created = h
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp());
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(img.config_digest.to_string());
        top["Tags"] = json!(names.iter().map(Reference::familiar).collect::<Vec<_>>());
    }
    Value::Array(rows)
}

/// List rows (one per image and name) grouped into one entry per image ID with all its
/// names, in first-seen order: `images/json` and `system/df` list images this way.
pub(crate) fn group_by_id(
    rows: Vec<kiln_images::ImageSummary>,
) -> Vec<(StoredImage, Vec<Reference>)> {
    let mut grouped: Vec<(StoredImage, Vec<Reference>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in rows {
        let id = row.image.config_digest.to_string();
        let at = *index.entry(id).or_insert_with(|| {
            grouped.push((row.image.clone(), Vec::new()));
            grouped.len() - 1
        });
        grouped[at].1.extend(row.name);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_config_has_dockerds_nulls() {
        let zero = zero_container_config();
        assert_eq!(zero["Env"], Value::Null);
        assert_eq!(zero["Labels"], Value::Null);
        assert_eq!(zero["User"], "");
        assert_eq!(zero.len(), 17);
    }
}
