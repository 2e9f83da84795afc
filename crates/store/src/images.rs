//! Reading image blobs (manifests and indexes) found in the store, for the passes that follow
//! references from names to layers: `check`, `df` and `prune`. Configs are read only for their
//! layer diffIDs.

use std::collections::BTreeSet;

use kiln_image::{DiffId, Digest, ImageConfig, Index, Manifest, media_type};

use crate::{Result, Store, StoreError};

/// A blob that is the root of an image.
#[derive(Debug, Clone)]
pub(crate) enum ImageBlob {
    Manifest(Manifest),
    Index(Index),
}

/// Parses `bytes` as a manifest or an index, by media type when present, else by shape.
pub(crate) fn parse_image_blob(bytes: &[u8]) -> Option<ImageBlob> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    // Layers are big and never JSON: skip anything that does not look like an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    let is_index = match probe.media_type.as_deref() {
        Some(mt) if media_type::is_index(mt) => true,
        Some(mt) if media_type::is_manifest(mt) => false,
        _ if probe.manifests.is_some() => true,
        _ if probe.layers.is_some() => false,
        _ => return None,
    };
    if is_index {
        serde_json::from_slice(bytes).ok().map(ImageBlob::Index)
    } else {
        serde_json::from_slice(bytes).ok().map(ImageBlob::Manifest)
    }
}

/// Largest blob worth reading when looking for manifests and indexes.
pub(crate) const MAX_IMAGE_BLOB: u64 = 4 << 20;

/// The blobs and snapshots a set of images needs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Reachable {
    /// Manifests reached.
    pub manifests: BTreeSet<Digest>,
    /// Every blob reached: indexes, manifests, configs, layers.
    pub blobs: BTreeSet<Digest>,
    /// Diff IDs of the layers reached (their snapshots).
    pub diff_ids: BTreeSet<DiffId>,
}

impl Store {
    /// Adds everything `root` (a manifest or an index) needs to `into`. Missing or unreadable
    /// blobs are skipped: whatever exists of a broken image is still kept.
    pub(crate) fn reach(&self, root: &Digest, into: &mut Reachable) -> Result<()> {
        let mut todo = vec![root.clone()];
        // Attestation manifests (BuildKit's layout) are content of an image, not images.
        let mut attestations = BTreeSet::new();
        while let Some(d) = todo.pop() {
            if !into.blobs.insert(d.clone()) {
                continue;
            }
            let bytes = match self.read_blob(&d) {
                Ok(b) => b,
                Err(StoreError::BlobNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match parse_image_blob(&bytes) {
                Some(ImageBlob::Index(i)) => {
                    for m in i.manifests {
                        if m.annotations
                            .get("vnd.docker.reference.type")
                            .map(String::as_str)
                            == Some("attestation-manifest")
                        {
                            attestations.insert(m.digest.clone());
                        }
                        todo.push(m.digest);
                    }
                }
                Some(ImageBlob::Manifest(m)) => {
                    if !attestations.contains(&d) {
                        into.manifests.insert(d.clone());
                    }
                    into.blobs.insert(m.config.digest.clone());
                    into.blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
                    if let Ok(cfg) = self.read_blob(&m.config.digest)
                        && let Ok(cfg) = serde_json::from_slice::<ImageConfig>(&cfg)
                    {
                        into.diff_ids.extend(cfg.rootfs.diff_ids);
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Every blob name under `blobs/sha256` that is a digest.
    pub(crate) fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(crate::records::hex_digest)
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                out.push((d, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every image manifest in the store with its config's media type, named or not (indexes
    /// are left out). This reads every small blob: for listings that ask for untagged images,
    /// not for lookups.
    pub fn list_image_manifests(&self) -> Result<Vec<(Digest, String)>> {
        let blobs = self.list_blobs()?;
        Ok(self
            .list_image_roots(&blobs)?
            .into_iter()
            .filter_map(|(d, blob)| match blob {
                ImageBlob::Manifest(m) => Some((d, m.config.media_type)),
                ImageBlob::Index(_) => None,
            })
            .collect())
    }

    /// The whole blob `d` if it starts like a JSON object, judged from its first bytes, so that
    /// a listing never reads layers (gzip, zstd or tar, never `{`) through; `None` for any other
    /// blob or one removed meanwhile.
    fn read_json_blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut file = match self.open_blob(d) {
            Ok(f) => f,
            Err(StoreError::BlobNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.blob_path(d);
        let mut head = [0u8; 256];
        let n = file.read(&mut head).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        if head[..n].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Ok(None);
        }
        let mut bytes = head[..n].to_vec();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::Io { path, source: e })?;
        Ok(Some(bytes))
    }

    /// Every manifest and index in the store (blobs small enough that parse as one).
    pub(crate) fn list_image_roots(
        &self,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<(Digest, ImageBlob)>> {
        let mut out = Vec::new();
        for (d, size) in blobs {
            if *size > MAX_IMAGE_BLOB {
                continue;
            }
            let Some(bytes) = self.read_json_blob(d)? else {
                continue;
            };
            if let Some(parsed) = parse_image_blob(&bytes) {
                out.push((d.clone(), parsed));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_indexes_and_other_blobs_are_told_apart() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(matches!(parse_image_blob(m), Some(ImageBlob::Manifest(_))));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_image_blob(i), Some(ImageBlob::Index(_))));
        let cfg =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(parse_image_blob(cfg).is_none());
        assert!(parse_image_blob(&[0x1f, 0x8b, 8, 0]).is_none());
    }
}
