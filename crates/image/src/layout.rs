//! The JSON files of image archives: the OCI image layout (`oci-layout`, `index.json`) and the
//! `manifest.json` of the `docker save` format.
//!
//! Facts used (OCI image-spec v1.1 "image-layout.md" and "annotations.md"; Docker's
//! `image/tarexport` format): an OCI layout has an `oci-layout` file `{"imageLayoutVersion":
//! "1.0.0"}`, an `index.json` whose manifest descriptors may carry
//! `org.opencontainers.image.ref.name`, and blobs under `blobs/<algorithm>/<hex>`. A docker
//! archive's `manifest.json` is a list of `{Config, RepoTags, Layers}` with paths into the tar.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Descriptor, Digest, Index, media_type};

/// The name of an image inside an OCI layout (a tag, or a full reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full image name containerd (and so BuildKit) records beside the OCI ref name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The layout version this crate writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// Contents of the `oci-layout` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

impl Default for OciLayoutFile {
    fn default() -> Self {
        OciLayoutFile {
            image_layout_version: LAYOUT_VERSION.to_owned(),
        }
    }
}

/// Where a blob lives inside a layout or archive: `blobs/sha256/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// The digest a `blobs/<algorithm>/<hex>` path names, if it is one.
pub fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("./").unwrap_or(path);
    let hex = rest.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}

/// One image of an archive, as the writer is given it: its manifest and the names it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedManifest {
    pub manifest: Descriptor,
    /// Full references (`docker.io/library/app:latest`), normalised by the caller.
    pub names: Vec<String>,
}

/// The tag part of a full reference, as BuildKit puts it into `ref.name`: `app:1.0` → `1.0`,
/// `host:5000/app` → `latest`; a digest reference has none.
pub fn tag_of(name: &str) -> Option<&str> {
    if name.contains('@') {
        return None;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    Some(last.split_once(':').map_or("latest", |(_, tag)| tag))
}

/// The `index.json` of an OCI layout holding `images`: one manifest descriptor per name (a
/// descriptor carries one `ref.name`), or one unnamed descriptor for an image without names.
/// As BuildKit does, `ref.name` is the tag and `io.containerd.image.name` the full name.
pub fn oci_index(images: &[NamedManifest]) -> Index {
    let mut manifests = Vec::new();
    for image in images {
        if image.names.is_empty() {
            manifests.push(image.manifest.clone());
        }
        for name in &image.names {
            let mut desc = image.manifest.clone();
            desc.annotations
                .insert(ANNOTATION_CONTAINERD_NAME.to_owned(), name.clone());
            if let Some(tag) = tag_of(name) {
                desc.annotations
                    .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
            }
            manifests.push(desc);
        }
    }
    Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests,
        annotations: BTreeMap::new(),
    }
}

/// The name an `index.json` entry gives its image: the full containerd name when present,
/// else `ref.name` (which may be a bare tag, meaningless without a repository: then none).
pub fn name_in_index(desc: &Descriptor) -> Option<String> {
    if let Some(full) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return Some(full.clone());
    }
    let ref_name = desc.annotations.get(ANNOTATION_REF_NAME)?;
    // A bare tag has no `/` and no `:`; `app:1` or `host/app` name an image.
    (ref_name.contains(':') || ref_name.contains('/')).then(|| ref_name.clone())
}

/// A full reference as Docker shows it (and `docker save` writes `RepoTags`): Docker Hub's
/// `docker.io/` and `library/` prefixes dropped.
pub fn familiar_name(full: &str) -> String {
    match full.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_owned(),
        None => full.to_owned(),
    }
}

/// One entry of a docker archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerArchiveEntry {
    /// Path of the config blob inside the archive.
    #[serde(rename = "Config")]
    pub config: String,
    /// Familiar names (`app:latest`), as `docker save` writes them; null when none.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// Paths of the layer blobs inside the archive, bottom first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl DockerArchiveEntry {
    /// The entry for an image stored as `blobs/sha256/<hex>` files, as BuildKit's docker exporter
    /// and Docker 25+ write it.
    pub fn for_blobs(config: &Digest, layers: &[Descriptor], repo_tags: Vec<String>) -> Self {
        DockerArchiveEntry {
            config: blob_path(config),
            repo_tags,
            layers: layers.iter().map(|l| blob_path(&l.digest)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_canonical_json;

    fn manifest_desc() -> Descriptor {
        Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"m"), 1)
    }

    #[test]
    fn layout_file_is_the_spec_text() {
        assert_eq!(
            serde_json::to_string(&OciLayoutFile::default()).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
    }

    #[test]
    fn blob_paths_round_trip_and_reject_others() {
        let d = Digest::of(b"x");
        let path = blob_path(&d);
        assert_eq!(path, format!("blobs/sha256/{}", d.hex()));
        assert_eq!(digest_of_blob_path(&path), Some(d.clone()));
        assert_eq!(digest_of_blob_path(&format!("./{path}")), Some(d));
        assert_eq!(digest_of_blob_path("blobs/sha256/zz"), None);
        assert_eq!(digest_of_blob_path("abc/layer.tar"), None);
    }

    #[test]
    fn tags_as_buildkit_names_them() {
        assert_eq!(tag_of("docker.io/library/app:1.0"), Some("1.0"));
        assert_eq!(tag_of("127.0.0.1:5000/app"), Some("latest"));
        assert_eq!(tag_of("127.0.0.1:5000/app:v2"), Some("v2"));
        assert_eq!(tag_of("app@sha256:abcd"), None);
    }

    #[test]
    fn index_has_one_annotated_entry_per_name_and_oci_spec_reads_it() {
        let index = oci_index(&[
            NamedManifest {
                manifest: manifest_desc(),
                names: vec![
                    "docker.io/library/app:latest".into(),
                    "docker.io/library/app:v1".into(),
                ],
            },
            NamedManifest {
                manifest: manifest_desc(),
                names: vec![],
            },
        ]);
        assert_eq!(index.manifests.len(), 3);
        let a = &index.manifests[1].annotations;
        assert_eq!(a[ANNOTATION_REF_NAME], "v1");
        assert_eq!(a[ANNOTATION_CONTAINERD_NAME], "docker.io/library/app:v1");
        assert!(index.manifests[2].annotations.is_empty());
        let bytes = to_canonical_json(&index);
        let parsed: oci_spec::image::ImageIndex = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.manifests().len(), 3);
        assert_eq!(
            name_in_index(&index.manifests[0]).as_deref(),
            Some("docker.io/library/app:latest")
        );
    }

    #[test]
    fn familiar_names_drop_docker_hub_prefixes() {
        assert_eq!(familiar_name("docker.io/library/app:latest"), "app:latest");
        assert_eq!(familiar_name("docker.io/me/app:1"), "me/app:1");
        assert_eq!(
            familiar_name("127.0.0.1:5000/app:1"),
            "127.0.0.1:5000/app:1"
        );
    }

    #[test]
    fn names_from_index_entries() {
        let mut d = manifest_desc();
        assert_eq!(name_in_index(&d), None);
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "latest".into());
        assert_eq!(name_in_index(&d), None, "a bare tag names no repository");
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "example.com/app:1".into());
        assert_eq!(name_in_index(&d).as_deref(), Some("example.com/app:1"));
    }

    #[test]
    fn docker_manifest_json_matches_docker_save() {
        let config = Digest::of(b"config");
        let layer = Descriptor::new(media_type::OCI_LAYER_GZIP, Digest::of(b"l"), 1);
        let entry = DockerArchiveEntry::for_blobs(
            &config,
            std::slice::from_ref(&layer),
            vec!["app:latest".into()],
        );
        let text = serde_json::to_string(&vec![entry.clone()]).unwrap();
        assert_eq!(
            text,
            format!(
                r#"[{{"Config":"blobs/sha256/{}","RepoTags":["app:latest"],"Layers":["blobs/sha256/{}"]}}]"#,
                config.hex(),
                layer.digest.hex()
            )
        );
        // `docker save` of an untagged image writes `"RepoTags":null`.
        let legacy: Vec<DockerArchiveEntry> = serde_json::from_str(
            r#"[{"Config":"abc.json","RepoTags":null,"Layers":["d1/layer.tar"]}]"#,
        )
        .unwrap();
        assert!(legacy[0].repo_tags.is_empty());
        assert_eq!(legacy[0].layers, ["d1/layer.tar"]);
    }
}
