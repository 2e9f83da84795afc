//! Writing images from the store as one tar: an OCI image layout, or a docker archive.

use std::collections::BTreeSet;
use std::io::{self, Write};

use kiln_image::layout::{
    DockerArchiveEntry, NamedManifest, OciLayoutFile, blob_path, familiar_name, oci_index,
};
use kiln_image::{Digest, Manifest, media_type, to_canonical_json};
use kiln_store::Store;

use crate::{ExportError, Result};

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`), as `--output type=oci`.
    Oci,
    /// What `docker save` writes and `docker load` reads: the OCI layout plus a `manifest.json`
    /// listing each image's config, tags and layers, as BuildKit's docker exporter writes it.
    Docker,
}

/// Writes `images` (manifests in the store, with their full names) to `out` as one tar and
/// returns `out`. Blobs shared between images are written once; each is streamed from the store.
/// Headers are fixed (mode 0644, owner 0, mtime 0) so the same images give the same bytes.
pub fn write_archive<W: Write>(
    store: &Store,
    images: &[NamedManifest],
    format: ArchiveFormat,
    out: W,
) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    append_bytes(
        &mut tar,
        "oci-layout",
        &serde_json::to_vec(&OciLayoutFile::default()).expect("serialises"),
    )?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    let mut written = BTreeSet::new();
    let mut docker_entries = Vec::new();
    for image in images {
        let manifest_digest = &image.manifest.digest;
        if media_type::is_index(&image.manifest.media_type) {
            // An image with attestations: the index and every manifest it lists go in, and
            // index.json names the index. A docker archive's manifest.json, which has no
            // place for an index, lists the image for this host (else the first image), as
            // docker's containerd store writes it.
            let index: kiln_image::Index =
                serde_json::from_slice(&store.read_blob(manifest_digest)?).map_err(|e| {
                    ExportError::Invalid {
                        entry: format!("index {manifest_digest}"),
                        message: e.to_string(),
                    }
                })?;
            for child in &index.manifests {
                append_manifest(store, &mut tar, &child.digest, &mut written)?;
            }
            append_blob(store, &mut tar, manifest_digest, &mut written)?;
            if format == ArchiveFormat::Docker {
                let chosen = index
                    .select(&kiln_image::Platform::host())
                    .or_else(|| {
                        index.manifests.iter().find(|d| {
                            media_type::is_manifest(&d.media_type)
                                && d.platform.as_ref().is_some_and(|p| p.os != "unknown")
                        })
                    })
                    .ok_or_else(|| ExportError::NotAnImageManifest(manifest_digest.clone()))?;
                let manifest: Manifest = serde_json::from_slice(&store.read_blob(&chosen.digest)?)
                    .map_err(|e| ExportError::Invalid {
                        entry: format!("manifest {}", chosen.digest),
                        message: e.to_string(),
                    })?;
                let repo_tags = image.names.iter().map(|n| familiar_name(n)).collect();
                docker_entries.push(DockerArchiveEntry::for_blobs(
                    &manifest.config.digest,
                    &manifest.layers,
                    repo_tags,
                ));
            }
            continue;
        }
        let manifest_bytes = store.read_blob(manifest_digest)?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| ExportError::Invalid {
                entry: format!("manifest {manifest_digest}"),
                message: e.to_string(),
            })?;
        if !media_type::is_manifest(manifest.effective_media_type()) {
            return Err(ExportError::NotAnImageManifest(manifest_digest.clone()));
        }
        append_blob(store, &mut tar, &manifest.config.digest, &mut written)?;
        for layer in &manifest.layers {
            append_blob(store, &mut tar, &layer.digest, &mut written)?;
        }
        append_blob(store, &mut tar, manifest_digest, &mut written)?;
        let repo_tags = image.names.iter().map(|n| familiar_name(n)).collect();
        docker_entries.push(DockerArchiveEntry::for_blobs(
            &manifest.config.digest,
            &manifest.layers,
            repo_tags,
        ));
    }
    append_bytes(
        &mut tar,
        "index.json",
        &to_canonical_json(&oci_index(images)),
    )?;
    if format == ArchiveFormat::Docker {
        let json = serde_json::to_vec(&docker_entries).expect("serialises");
        append_bytes(&mut tar, "manifest.json", &json)?;
    }
    tar.into_inner().map_err(ExportError::Write)
}

/// Appends an image manifest's config, layers and the manifest itself.
fn append_manifest<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    digest: &Digest,
    written: &mut BTreeSet<Digest>,
) -> Result<()> {
    let manifest: Manifest =
        serde_json::from_slice(&store.read_blob(digest)?).map_err(|e| ExportError::Invalid {
            entry: format!("manifest {digest}"),
            message: e.to_string(),
        })?;
    append_blob(store, tar, &manifest.config.digest, written)?;
    for layer in &manifest.layers {
        append_blob(store, tar, &layer.digest, written)?;
    }
    append_blob(store, tar, digest, written)
}

fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(0, tar::EntryType::Directory, 0o755);
    tar.append_data(&mut h, path, io::empty())
        .map_err(ExportError::Write)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(bytes.len() as u64, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, path, bytes)
        .map_err(ExportError::Write)
}

/// Streams one blob from the store into the tar, once per archive.
fn append_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    digest: &Digest,
    written: &mut BTreeSet<Digest>,
) -> Result<()> {
    if !written.insert(digest.clone()) {
        return Ok(());
    }
    let size = store.blob_size(digest)?;
    let file = store.open_blob(digest)?;
    let mut h = header(size, tar::EntryType::Regular, 0o644);
    tar.append_data(
        &mut h,
        blob_path(digest),
        io::BufReader::with_capacity(256 * 1024, file),
    )
    .map_err(ExportError::Write)
}
