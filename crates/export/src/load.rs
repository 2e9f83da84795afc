//! Reading an image archive (docker archive or OCI image layout tar) into the store.
//!
//! The tar is read once, front to back, since it may come from a pipe and its JSON files may
//! come before or after the blobs. Each regular file that is not one of the layout's JSON files
//! is streamed into a staged store blob (a temp file, hashed as it is written); a file named
//! `blobs/sha256/<hex>` must have that digest. Links are only other names for entries (Docker's
//! legacy format aliases repeated layers so) and must point inside the archive; absolute paths
//! and `..` in entry names are refused. Only when the whole archive is read and every
//! image's manifest, config and layers are present does [`StagedArchive::commit`] publish the
//! blobs the images use (layers and configs before the manifests that name them, indexes
//! last).
//!
//! An image taken out of an index keeps its attestation manifests (BuildKit's SBOM and
//! provenance) when the archive has them: the image's names then point at the index, or at an
//! index of that image and its attestations when the archive's index lists other platforms
//! too ([`kiln_image::attestation`]). An archive whose index names attestation manifests it
//! does not contain loads the bare image, as before.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use kiln_image::layout::{DockerArchiveEntry, LAYOUT_VERSION, OciLayoutFile, digest_of_blob_path};
use kiln_image::{Digest, Index, Sha256Hasher, media_type};
use kiln_store::{BlobWriter, Store};

use crate::{ExportError, Result};

mod images;

/// The layout's own files, read into memory (bounded) instead of staged as blobs.
const METADATA_FILES: [&str; 4] = ["oci-layout", "index.json", "manifest.json", "repositories"];
const MAX_METADATA_SIZE: u64 = 16 << 20;
/// JSON blobs up to this size (configs, manifests, indexes) are also kept in memory to be parsed.
const MAX_PARSED_BLOB_SIZE: u64 = 4 << 20;

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Names as the archive gives them (`RepoTags`, or the index's name annotations).
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// What the names point at: `manifest_digest`, or an index holding it and its
    /// attestation manifests.
    pub root_digest: Digest,
}

#[derive(Debug)]
struct StagedBlob {
    size: u64,
    /// The first bytes, to tell a compressed layer from a plain tar.
    head: Vec<u8>,
    /// The whole content, for JSON blobs small enough to parse.
    bytes: Option<Vec<u8>>,
    writer: BlobWriter,
}

/// An archive read and checked, its blobs staged in the store but not yet published.
#[derive(Debug)]
pub struct StagedArchive {
    store: Store,
    blobs: BTreeMap<Digest, StagedBlob>,
    images: Vec<LoadedImage>,
    /// Manifests made for docker-archive images whose archive has none (written on commit).
    made_manifests: Vec<Vec<u8>>,
    /// Blobs the images use, manifests excluded.
    content: BTreeSet<Digest>,
    manifests: BTreeSet<Digest>,
    /// Indexes kept for their attestations, published after the manifests they list.
    indexes: BTreeSet<Digest>,
}

impl StagedArchive {
    pub fn images(&self) -> &[LoadedImage] {
        &self.images
    }

    /// Publishes the blobs the images use, verified again by the store as it renames them into
    /// place, manifests last. Staged blobs no image uses are discarded.
    pub fn commit(mut self) -> Result<Vec<LoadedImage>> {
        for digest in self.content.iter().chain(&self.manifests) {
            if let Some(blob) = self.blobs.remove(digest) {
                blob.writer.commit(Some((digest, blob.size)))?;
            }
        }
        // Made manifests, then made and kept indexes (which may list the made manifests).
        for bytes in &self.made_manifests {
            self.store.write_blob(bytes)?;
        }
        for digest in &self.indexes {
            if let Some(blob) = self.blobs.remove(digest) {
                blob.writer.commit(Some((digest, blob.size)))?;
            }
        }
        Ok(self.images)
    }
}

/// Reads a docker archive (`manifest.json`) or an OCI image layout tar (`index.json`) from
/// `input`. When both are present, as in BuildKit's docker output, `manifest.json` names the
/// images and the index supplies their manifests.
pub fn read_archive(store: &Store, input: impl Read) -> Result<StagedArchive> {
    let mut paths: BTreeMap<String, Digest> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, StagedBlob> = BTreeMap::new();
    let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(ExportError::Read)? {
        let mut entry = entry.map_err(ExportError::Read)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refused = |reason: &str| ExportError::UnsafeEntry {
            entry: raw.clone(),
            reason: reason.to_owned(),
        };
        let path = clean_path(&raw).map_err(&refused)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                // Docker's legacy format (and skopeo's docker-archive) alias repeated layers
                // with relative symlinks. Nothing is extracted, so a link is only another name
                // for an entry of the archive; one that points outside it is refused.
                let target = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default())
                    .into_owned();
                let resolved = link_target(&path, &target, kind == tar::EntryType::Symlink)
                    .map_err(&refused)?;
                if links.insert(path, resolved).is_some() {
                    return Err(refused("the archive has two entries of this name"));
                }
                continue;
            }
            other => {
                return Err(refused(&format!(
                    "entries of type {other:?} are not allowed in an image archive"
                )));
            }
        }
        if raw.ends_with('/') {
            continue;
        }
        if paths.contains_key(&path) || metadata.contains_key(&path) || links.contains_key(&path) {
            return Err(refused("the archive has two entries of this name"));
        }
        let size = entry.header().size().map_err(ExportError::Read)?;
        if METADATA_FILES.contains(&path.as_str()) {
            if size > MAX_METADATA_SIZE {
                return Err(refused("too large for an image layout file"));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(ExportError::Read)?;
            if bytes.len() as u64 != size {
                return Err(truncated(&raw));
            }
            metadata.insert(path, bytes);
            continue;
        }
        let (digest, blob) = stage_blob(store, &mut entry, size, &raw)?;
        if let Some(named) = digest_of_blob_path(&path)
            && named != digest
        {
            return Err(ExportError::DigestMismatch {
                entry: raw,
                expected: named,
                actual: digest,
            });
        }
        paths.insert(path, digest.clone());
        // The same content twice (legacy archives may repeat layers): keep one staged copy.
        blobs.entry(digest).or_insert(blob);
    }
    resolve_links(&links, &mut paths);
    let mut staged = StagedArchive {
        store: store.clone(),
        blobs,
        images: Vec::new(),
        made_manifests: Vec::new(),
        content: BTreeSet::new(),
        manifests: BTreeSet::new(),
        indexes: BTreeSet::new(),
    };
    let index = match metadata.get("index.json") {
        Some(bytes) => Some(parse_json::<Index>(bytes, "index.json")?),
        None => None,
    };
    if let Some(bytes) = metadata.get("oci-layout") {
        let layout: OciLayoutFile = parse_json(bytes, "oci-layout")?;
        if layout.image_layout_version != LAYOUT_VERSION {
            return Err(ExportError::UnsupportedLayoutVersion(
                layout.image_layout_version,
            ));
        }
    }
    if let Some(bytes) = metadata.get("manifest.json") {
        let entries: Vec<DockerArchiveEntry> = parse_json(bytes, "manifest.json")?;
        for entry in &entries {
            staged.add_docker_entry(entry, &paths, index.as_ref())?;
        }
    } else if let Some(index) = &index {
        for desc in &index.manifests {
            staged.add_index_entry(desc)?;
        }
    } else {
        return Err(ExportError::NotAnArchive);
    }
    if staged.images.is_empty() {
        return Err(ExportError::NoImages);
    }
    Ok(staged)
}

fn truncated(entry: &str) -> ExportError {
    ExportError::Read(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("entry {entry:?} is cut short"),
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], entry: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ExportError::Invalid {
        entry: entry.to_owned(),
        message: e.to_string(),
    })
}

/// An archive path with `./` and `.` components removed; absolute paths and `..` are refused,
/// since a hostile archive could use them to name files outside any extraction root.
fn clean_path(raw: &str) -> std::result::Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed in an image archive");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("paths with `..` are not allowed in an image archive"),
            other => parts.push(other),
        }
    }
    if parts.is_empty() && !raw.ends_with('/') && raw != "." {
        return Err("empty path");
    }
    Ok(parts.join("/"))
}

/// The archive path a link at `path` names. A symlink's target is relative to the link's
/// directory, a hard link's to the archive root; either must stay inside the archive.
fn link_target(
    path: &str,
    target: &str,
    symlink: bool,
) -> std::result::Result<String, &'static str> {
    const OUTSIDE: &str = "links must point inside the image archive";
    if target.is_empty() || target.starts_with('/') {
        return Err(OUTSIDE);
    }
    let mut parts: Vec<&str> = Vec::new();
    if symlink {
        parts.extend(path.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or(OUTSIDE)?;
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// Gives each link the blob its target (followed through other links) holds. Links to nothing
/// stay unresolved: an error only if a manifest names them.
fn resolve_links(links: &BTreeMap<String, String>, paths: &mut BTreeMap<String, Digest>) {
    for (link, target) in links {
        let mut current = target;
        // Bounded, so a loop of links ends.
        for _ in 0..16 {
            if let Some(digest) = paths.get(current) {
                paths.insert(link.clone(), digest.clone());
                break;
            }
            match links.get(current) {
                Some(next) => current = next,
                None => break,
            }
        }
    }
}

/// Streams one entry into a staged blob, hashing it on the way.
fn stage_blob(
    store: &Store,
    entry: &mut impl Read,
    size: u64,
    name: &str,
) -> Result<(Digest, StagedBlob)> {
    let mut writer = store.blob_writer()?;
    let tmp = store.root().join("tmp");
    let mut hasher = Sha256Hasher::new();
    let mut bytes = (size <= MAX_PARSED_BLOB_SIZE).then(|| Vec::with_capacity(size as usize));
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExportError::Read(e)),
        };
        let chunk = &buf[..n];
        writer.write_all(chunk).map_err(|source| ExportError::Io {
            path: tmp.clone(),
            source,
        })?;
        hasher.update(chunk);
        // Only JSON (configs, manifests, indexes) is kept to be parsed: never a layer.
        if total == 0 && !chunk.starts_with(b"{") {
            bytes = None;
        }
        if let Some(b) = &mut bytes {
            b.extend_from_slice(chunk);
        }
        if head.len() < 8 {
            head.extend(chunk.iter().take(8 - head.len()));
        }
        total += n as u64;
    }
    if total != size {
        return Err(truncated(name));
    }
    Ok((
        hasher.finish(),
        StagedBlob {
            size,
            head,
            bytes,
            writer,
        },
    ))
}

/// A layer's media type from its first bytes (docker archives do not record it).
fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        media_type::OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        media_type::OCI_LAYER_ZSTD
    } else {
        media_type::OCI_LAYER
    }
}

#[cfg(test)]
mod tests;
