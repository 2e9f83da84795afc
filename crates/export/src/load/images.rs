//! Which images a read archive holds: each `manifest.json` entry or index entry followed to
//! its manifest, config and layers, every one checked against the blobs staged from the tar
//! (or already in the store) before the image is recorded. Apart from `load.rs`, which reads
//! the tar, because this part never sees it: it works on what was staged, once the whole
//! archive is read (its JSON files may come after the blobs).

use std::collections::BTreeMap;

use kiln_image::layout::{DockerArchiveEntry, name_in_index};
use kiln_image::{
    Descriptor, Digest, ImageConfig, Index, Manifest, Platform, media_type, to_canonical_json,
};

use super::{LoadedImage, StagedArchive, StagedBlob, clean_path, layer_media_type, parse_json};
use crate::{ExportError, Result};

impl StagedArchive {
    /// The size of a blob staged from the archive or already in the store.
    fn blob_size(&self, digest: &Digest) -> Option<u64> {
        match self.blobs.get(digest) {
            Some(b) => Some(b.size),
            None => self.store.blob_size(digest).ok(),
        }
    }

    /// The content of a small blob (manifest, config, index), from the archive or the store.
    fn small_blob(&self, digest: &Digest, referenced_by: &str) -> Result<Vec<u8>> {
        match self.blobs.get(digest) {
            Some(StagedBlob {
                bytes: Some(bytes), ..
            }) => Ok(bytes.clone()),
            Some(_) => Err(ExportError::Invalid {
                entry: format!("blob {digest}"),
                message: format!(
                    "too large for a manifest or config (referenced by {referenced_by})"
                ),
            }),
            None if self.store.has_blob(digest) => Ok(self.store.read_blob(digest)?),
            None => Err(ExportError::MissingBlob {
                what: format!("blob {digest}"),
                referenced_by: referenced_by.to_owned(),
            }),
        }
    }

    /// Checks that `desc` names a blob of the right size.
    fn require(&self, desc: &Descriptor, referenced_by: &str) -> Result<()> {
        match self.blob_size(&desc.digest) {
            Some(size) if size == desc.size => Ok(()),
            Some(size) => Err(ExportError::Invalid {
                entry: format!("blob {}", desc.digest),
                message: format!("it has {size} bytes but {referenced_by} says {}", desc.size),
            }),
            None => Err(ExportError::MissingBlob {
                what: format!("blob {}", desc.digest),
                referenced_by: referenced_by.to_owned(),
            }),
        }
    }

    /// Checks the config against the layers, and records the image.
    fn add_image(
        &mut self,
        manifest_digest: Digest,
        manifest: &Manifest,
        names: Vec<String>,
        root_digest: Option<Digest>,
    ) -> Result<()> {
        let what = format!("manifest {manifest_digest}");
        self.require(&manifest.config, &what)?;
        for layer in &manifest.layers {
            self.require(layer, &what)?;
        }
        let config_digest = manifest.config.digest.clone();
        let config: ImageConfig = parse_json(
            &self.small_blob(&config_digest, &what)?,
            &format!("config {config_digest}"),
        )?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ExportError::Invalid {
                entry: format!("config {config_digest}"),
                message: format!(
                    "it lists {} diff_ids but the image has {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        self.content.insert(config_digest.clone());
        self.content
            .extend(manifest.layers.iter().map(|l| l.digest.clone()));
        self.manifests.insert(manifest_digest.clone());
        // Several index entries (one per tag) may name one image: merge their names.
        if let Some(image) = self
            .images
            .iter_mut()
            .find(|i| i.manifest_digest == manifest_digest)
        {
            image.names.extend(names);
            return Ok(());
        }
        self.images.push(LoadedImage {
            names,
            root_digest: root_digest.unwrap_or_else(|| manifest_digest.clone()),
            manifest_digest,
            config_digest,
        });
        Ok(())
    }

    /// What the names of `image`, taken out of the archive's index `index_digest`, point
    /// at: that index (or one made of the image and its attestations) when the archive holds
    /// the image's attestation manifests, whose blobs are then published too; else `None`,
    /// the bare manifest.
    fn keep_attestations(
        &mut self,
        index_digest: &Digest,
        index: &Index,
        image: &Descriptor,
    ) -> Result<Option<Digest>> {
        let kept = kiln_image::attestation::keep(index, image);
        if kept == kiln_image::attestation::Kept::Manifest {
            return Ok(None);
        }
        let mut blobs = Vec::new();
        for att in kiln_image::attestation::of(index, &image.digest) {
            // An attestation the archive lacks (or cannot be read) leaves the image bare.
            let Some(m) = self
                .small_blob(&att.digest, "index.json")
                .ok()
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            else {
                return Ok(None);
            };
            let present = std::iter::once(&m.config)
                .chain(&m.layers)
                .all(|d| self.blob_size(&d.digest) == Some(d.size));
            if !present {
                return Ok(None);
            }
            blobs.push((att.digest.clone(), m));
        }
        for (digest, m) in blobs {
            self.content.insert(m.config.digest.clone());
            self.content
                .extend(m.layers.iter().map(|l| l.digest.clone()));
            self.manifests.insert(digest);
        }
        Ok(Some(match kept {
            kiln_image::attestation::Kept::Reduced(reduced) => {
                let bytes = to_canonical_json(&reduced);
                let digest = Digest::of(&bytes);
                self.made_manifests.push(bytes);
                digest
            }
            _ => {
                self.indexes.insert(index_digest.clone());
                index_digest.clone()
            }
        }))
    }

    /// One entry of an OCI `index.json`: a manifest, or a nested index (a multi-platform
    /// image) from which the host's manifest is taken.
    pub(super) fn add_index_entry(&mut self, desc: &Descriptor) -> Result<()> {
        let names: Vec<String> = name_in_index(desc).into_iter().collect();
        let mut desc = desc.clone();
        let mut root = None;
        if media_type::is_index(&desc.media_type) {
            self.require(&desc, "index.json")?;
            let nested: Index = parse_json(
                &self.small_blob(&desc.digest, "index.json")?,
                &format!("index {}", desc.digest),
            )?;
            let platform = Platform::host();
            let chosen = nested.select(&platform).cloned().ok_or_else(|| {
                ExportError::NoImageForPlatform {
                    index: desc.digest.clone(),
                    platform: platform.to_string(),
                }
            })?;
            // The host's manifest is what gets stored and named, with its attestations.
            root = self.keep_attestations(&desc.digest, &nested, &chosen)?;
            desc = chosen;
        }
        if !media_type::is_manifest(&desc.media_type) {
            // Attestations and other artifacts are not images.
            return Ok(());
        }
        self.require(&desc, "index.json")?;
        let manifest: Manifest = parse_json(
            &self.small_blob(&desc.digest, "index.json")?,
            &format!("manifest {}", desc.digest),
        )?;
        self.add_image(desc.digest.clone(), &manifest, names, root)
    }

    /// One entry of a docker archive's `manifest.json`. The image keeps the archive's own OCI
    /// manifest when its index has one for the same config and layers (so the manifest digest
    /// survives a save and load); otherwise an OCI manifest is made for it.
    pub(super) fn add_docker_entry(
        &mut self,
        entry: &DockerArchiveEntry,
        paths: &BTreeMap<String, Digest>,
        index: Option<&Index>,
    ) -> Result<()> {
        let lookup = |path: &str| -> Result<&Digest> {
            let cleaned = clean_path(path).map_err(|reason| ExportError::UnsafeEntry {
                entry: path.to_owned(),
                reason: reason.to_owned(),
            })?;
            paths.get(&cleaned).ok_or_else(|| ExportError::MissingBlob {
                what: format!("file {path:?}"),
                referenced_by: "manifest.json".into(),
            })
        };
        let config_digest = lookup(&entry.config)?.clone();
        let config_size = self.blob_size(&config_digest).unwrap_or_default();
        let mut layers = Vec::new();
        for path in &entry.layers {
            let digest = lookup(path)?;
            let blob = &self.blobs[digest];
            layers.push(Descriptor::new(
                layer_media_type(&blob.head),
                digest.clone(),
                blob.size,
            ));
        }
        // The archive's manifest for this entry: listed in index.json, or in an index it
        // lists (an image with attestations, as `kiln save` and BuildKit write it).
        let same = |m: &Manifest| {
            m.config.digest == config_digest
                && m.layers
                    .iter()
                    .map(|l| &l.digest)
                    .eq(layers.iter().map(|l| &l.digest))
        };
        let mut from_index = None;
        let mut in_nested = None;
        for desc in index.into_iter().flat_map(|i| &i.manifests) {
            let Ok(bytes) = self.small_blob(&desc.digest, "index.json") else {
                continue;
            };
            if media_type::is_index(&desc.media_type) {
                let Ok(nested) = serde_json::from_slice::<Index>(&bytes) else {
                    continue;
                };
                let found = nested.manifests.iter().find_map(|child| {
                    let b = self.small_blob(&child.digest, "index.json").ok()?;
                    let m: Manifest = serde_json::from_slice(&b).ok()?;
                    same(&m).then(|| (child.clone(), m))
                });
                if let Some((child, m)) = found {
                    from_index = Some((child.digest.clone(), m));
                    in_nested = Some((desc.digest.clone(), nested, child));
                    break;
                }
            } else if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
                && same(&m)
            {
                from_index = Some((desc.digest.clone(), m));
                break;
            }
        }
        let root = match in_nested {
            Some((index_digest, nested, child)) => {
                self.keep_attestations(&index_digest, &nested, &child)?
            }
            None => None,
        };
        let (manifest_digest, manifest) = match from_index {
            Some(found) => found,
            None => {
                let config = Descriptor::new(media_type::OCI_CONFIG, config_digest, config_size);
                let manifest = Manifest::oci(config, layers);
                let bytes = to_canonical_json(&manifest);
                let digest = Digest::of(&bytes);
                self.made_manifests.push(bytes);
                (digest, manifest)
            }
        };
        self.add_image(manifest_digest, &manifest, entry.repo_tags.clone(), root)
    }
}
