//! Reading and writing cache exports where they live: a registry repository (through the
//! registry client, with its credentials, retries and verified streaming) or an OCI image
//! layout directory (as BuildKit's `type=local` cache).

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_image::layout::{ANNOTATION_REF_NAME, OciLayoutFile, blob_path};
use kiln_image::{Descriptor, Digest, Index, Manifest, media_type, to_canonical_json};
use kiln_registry::{RegistryError, error_chain};
use kiln_store::Store;

use super::document::{CACHE_CONFIG_MEDIA_TYPE, CacheDocument};
use super::spec::CacheLocation;
use crate::build::Engine;

/// The largest cache document or layout manifest kiln reads.
const MAX_JSON_SIZE: u64 = 64 * 1024 * 1024;

/// Why an export could not be read.
pub(crate) enum ReadFailure {
    /// Nothing is there yet (a first build): BuildKit warns and builds without it.
    NotFound(String),
    Failed(String),
}

/// The export at `location`: its manifest and the cache document it holds.
pub(crate) fn read_export(
    engine: &Engine,
    location: &CacheLocation,
) -> Result<(Manifest, CacheDocument), ReadFailure> {
    let (manifest, document) = match location {
        CacheLocation::Registry(reference) => {
            let fetched = engine
                .block_on(engine.registry.fetch_image_manifest(reference))
                .map_err(|e| ReadFailure::Failed(e.to_string()))?
                .map_err(|e| match e {
                    RegistryError::NotFound { .. } => ReadFailure::NotFound(error_chain(&e)),
                    e => ReadFailure::Failed(error_chain(&e)),
                })?;
            let manifest = fetched.manifest;
            check_config(&manifest)?;
            // The document is small and read once: it is fetched into the store like any blob
            // (verified), where it stays until pruned.
            engine
                .block_on(
                    engine
                        .registry
                        .fetch_blob(&engine.store, reference, &manifest.config),
                )
                .map_err(|e| ReadFailure::Failed(e.to_string()))?
                .map_err(|e| ReadFailure::Failed(error_chain(&e)))?;
            let bytes = engine
                .store
                .read_blob(&manifest.config.digest)
                .map_err(|e| ReadFailure::Failed(e.to_string()))?;
            (manifest, bytes)
        }
        CacheLocation::Local { dir, tag } => {
            let descriptor = layout_manifest(dir, tag)?;
            let bytes = read_layout_blob(dir, &descriptor)?;
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| ReadFailure::Failed(format!("manifest {}: {e}", descriptor.digest)))?;
            check_config(&manifest)?;
            let bytes = read_layout_blob(dir, &manifest.config)?;
            (manifest, bytes)
        }
    };
    let document = CacheDocument::decode(&document)
        .map_err(|e| ReadFailure::Failed(format!("config {}: {e}", manifest.config.digest)))?;
    Ok((manifest, document))
}

fn check_config(manifest: &Manifest) -> Result<(), ReadFailure> {
    if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
        return Err(ReadFailure::Failed(format!(
            "not a kiln build cache (its config is {}, not {CACHE_CONFIG_MEDIA_TYPE})",
            manifest.config.media_type
        )));
    }
    if manifest.config.size > MAX_JSON_SIZE {
        return Err(ReadFailure::Failed(format!(
            "cache document of {} bytes is larger than kiln reads",
            manifest.config.size
        )));
    }
    Ok(())
}

/// The manifest descriptor `index.json` names `tag`; the only manifest when the default tag
/// is asked for and the layout has exactly one unnamed manifest.
fn layout_manifest(dir: &Path, tag: &str) -> Result<Descriptor, ReadFailure> {
    let path = dir.join("index.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadFailure::NotFound(format!(
                "{} does not exist",
                path.display()
            )));
        }
        Err(e) => return Err(ReadFailure::Failed(format!("{}: {e}", path.display()))),
    };
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| ReadFailure::Failed(format!("{}: {e}", path.display())))?;
    let named = index
        .manifests
        .iter()
        .find(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag));
    let only_unnamed = || match index.manifests.as_slice() {
        [one] if tag == "latest" && !one.annotations.contains_key(ANNOTATION_REF_NAME) => Some(one),
        _ => None,
    };
    named
        .or_else(only_unnamed)
        .cloned()
        .ok_or_else(|| ReadFailure::NotFound(format!("{} has no tag {tag:?}", path.display())))
}

/// A JSON blob of a layout, checked against its descriptor.
fn read_layout_blob(dir: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, ReadFailure> {
    let path = dir.join(blob_path(&descriptor.digest));
    if descriptor.size > MAX_JSON_SIZE {
        return Err(ReadFailure::Failed(format!(
            "{}: {} bytes is larger than kiln reads",
            path.display(),
            descriptor.size
        )));
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| ReadFailure::Failed(format!("{}: {e}", path.display())))?;
    let digest = Digest::of(&bytes);
    if digest != descriptor.digest || bytes.len() as u64 != descriptor.size {
        return Err(ReadFailure::Failed(format!(
            "{}: content is {digest} ({} bytes), not {} ({} bytes)",
            path.display(),
            bytes.len(),
            descriptor.digest,
            descriptor.size
        )));
    }
    Ok(bytes)
}

/// Puts the blob `descriptor` from `location` into the store (verified against its digest and
/// size before it gets its name). Returns whether it had to be fetched.
pub(crate) async fn fetch_blob(
    engine: &Engine,
    location: &CacheLocation,
    descriptor: &Descriptor,
) -> Result<bool, String> {
    if engine.store.has_blob(&descriptor.digest) {
        return Ok(false);
    }
    match location {
        CacheLocation::Registry(reference) => engine
            .registry
            .fetch_blob(&engine.store, reference, descriptor)
            .await
            .map_err(|e| error_chain(&e)),
        CacheLocation::Local { dir, .. } => copy_into_store(
            &engine.store,
            &dir.join(blob_path(&descriptor.digest)),
            descriptor,
        )
        .map(|()| true),
    }
}

fn copy_into_store(store: &Store, path: &Path, descriptor: &Descriptor) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
    std::io::copy(&mut file, &mut writer).map_err(|e| format!("{}: {e}", path.display()))?;
    writer
        .commit(Some((&descriptor.digest, descriptor.size)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// Writes the export whose manifest `manifest_digest` (and every blob it names) is in the
/// store to `location`: a push by tag, or an OCI layout whose `index.json` names it `tag`
/// (replacing what had that tag). Returns how many blobs were sent or written.
pub(crate) fn write_export(
    engine: &Engine,
    location: &CacheLocation,
    manifest_digest: &Digest,
    manifest: &Manifest,
) -> Result<usize, String> {
    match location {
        CacheLocation::Registry(reference) => {
            let sent = std::sync::atomic::AtomicUsize::new(0);
            let on_event = |event: kiln_registry::PushEvent| {
                if matches!(
                    event,
                    kiln_registry::PushEvent::BlobUploaded { .. }
                        | kiln_registry::PushEvent::BlobMounted { .. }
                ) {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            };
            engine
                .block_on(engine.registry.push(
                    &engine.store,
                    manifest_digest,
                    reference,
                    &on_event,
                ))
                .map_err(|e| e.to_string())?
                .map_err(|e| error_chain(&e))?;
            Ok(sent.into_inner())
        }
        CacheLocation::Local { dir, tag } => {
            write_layout(&engine.store, dir, tag, manifest_digest, manifest)
        }
    }
}

fn write_layout(
    store: &Store,
    dir: &Path,
    tag: &str,
    manifest_digest: &Digest,
    manifest: &Manifest,
) -> Result<usize, String> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| format!("{}: {e}", path.display())
    };
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io(dir))?;
    write_atomically(
        &dir.join("oci-layout"),
        &serde_json::to_vec(&OciLayoutFile::default()).expect("layout file serialises"),
    )?;
    let mut written = 0;
    let blobs = std::iter::once(manifest_digest)
        .chain(std::iter::once(&manifest.config.digest))
        .chain(manifest.layers.iter().map(|l| &l.digest));
    for digest in blobs {
        let dest = dir.join(blob_path(digest));
        // Content-addressed: a blob already there is the same bytes.
        if dest.is_file() {
            continue;
        }
        let source = store.blob_path(digest);
        let staging = temp_beside(&dest);
        std::fs::copy(&source, &staging).map_err(io(&source))?;
        std::fs::File::open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io(&staging))?;
        std::fs::rename(&staging, &dest).map_err(io(&dest))?;
        written += 1;
    }

    let index_path = dir.join("index.json");
    let mut index = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<Index>(&bytes)
            .map_err(|e| format!("{}: {e}", index_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: Default::default(),
        },
        Err(e) => return Err(format!("{}: {e}", index_path.display())),
    };
    index
        .manifests
        .retain(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(tag));
    let size = store
        .blob_size(manifest_digest)
        .map_err(|e| e.to_string())?;
    let mut descriptor = Descriptor::new(media_type::OCI_MANIFEST, manifest_digest.clone(), size);
    descriptor
        .annotations
        .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
    index.manifests.push(descriptor);
    write_atomically(&index_path, &to_canonical_json(&index))?;
    Ok(written)
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let staging = temp_beside(path);
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::create(&staging).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&staging, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding a two-layer export; returns its manifest digest and manifest.
    fn export_in_store(store: &Store, salt: &[u8]) -> (Digest, Manifest) {
        let layer = store.write_blob(&[b"layer-", salt].concat()).unwrap();
        let document = CacheDocument::new(
            [super::super::CachedStep {
                key: kiln_store::CacheKey::from_hash(Digest::of(salt)),
                created: "2026-01-01T00:00:00Z".into(),
                layer: Some(super::super::CachedLayer {
                    layer: kiln_image::LayerRef {
                        digest: layer,
                        diff_id: kiln_image::DiffId::of_tar(b"tar"),
                        size: 6 + salt.len() as u64,
                        media_type: media_type::OCI_LAYER_GZIP.into(),
                    },
                    compression: None,
                }),
            }],
            [],
        );
        let bytes = document.encode();
        let config = store.write_blob(&bytes).unwrap();
        let manifest = document.manifest(config, bytes.len() as u64);
        let digest = store.write_blob(&to_canonical_json(&manifest)).unwrap();
        (digest, manifest)
    }

    fn read(dir: &Path, tag: &str) -> Result<(Manifest, CacheDocument), String> {
        let descriptor = layout_manifest(dir, tag).map_err(|e| match e {
            ReadFailure::NotFound(m) => format!("not found: {m}"),
            ReadFailure::Failed(m) => m,
        })?;
        let fail = |e: ReadFailure| match e {
            ReadFailure::NotFound(m) | ReadFailure::Failed(m) => m,
        };
        let manifest: Manifest =
            serde_json::from_slice(&read_layout_blob(dir, &descriptor).map_err(fail)?).unwrap();
        let config = read_layout_blob(dir, &manifest.config).map_err(fail)?;
        Ok((manifest, CacheDocument::decode(&config).unwrap()))
    }

    #[test]
    fn layout_exports_are_found_by_tag_and_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let dir = tmp.path().join("cache");
        assert!(read(&dir, "latest").unwrap_err().starts_with("not found"));

        let (first, first_manifest) = export_in_store(&store, b"one");
        assert_eq!(
            write_layout(&store, &dir, "latest", &first, &first_manifest).unwrap(),
            3
        );
        let (second, second_manifest) = export_in_store(&store, b"two");
        write_layout(&store, &dir, "main", &second, &second_manifest).unwrap();
        // Writing the same export again writes no blob.
        assert_eq!(
            write_layout(&store, &dir, "latest", &first, &first_manifest).unwrap(),
            0
        );

        let (manifest, document) = read(&dir, "latest").unwrap();
        assert_eq!(manifest, first_manifest);
        assert_eq!(document.records[0].key.as_hash(), &Digest::of(b"one"));
        let (_, document) = read(&dir, "main").unwrap();
        assert_eq!(document.records[0].key.as_hash(), &Digest::of(b"two"));
        let index: Index =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests.len(), 2, "one entry per tag");
        assert!(
            read(&dir, "other")
                .unwrap_err()
                .contains("has no tag \"other\"")
        );

        // The layer is copied into another store only as the bytes its descriptor names.
        let other = Store::open(tmp.path().join("other")).unwrap();
        let layer = &manifest.layers[0];
        copy_into_store(&other, &dir.join(blob_path(&layer.digest)), layer).unwrap();
        assert!(other.has_blob(&layer.digest));
        let mut wrong = layer.clone();
        wrong.digest = Digest::of(b"something else");
        assert!(copy_into_store(&other, &dir.join(blob_path(&layer.digest)), &wrong).is_err());
        assert!(!other.has_blob(&wrong.digest));

        // A tampered document is refused.
        std::fs::write(dir.join(blob_path(&manifest.config.digest)), b"{}").unwrap();
        assert!(read(&dir, "latest").unwrap_err().contains("content is"));
    }
}
