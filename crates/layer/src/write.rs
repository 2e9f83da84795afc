//! Directory → layer tar, and layer tar → compressed blob in the store, in one streaming pass.
//!
//! The tar is deterministic for a given tree: entries are visited depth first with each
//! directory's children in byte-wise name order (so a parent always precedes its children),
//! headers carry no user/group names, atimes or ctimes, and xattrs are sorted. File timestamps
//! are kept as they are (seconds), unless [`TarOptions::mtime_ceiling`] is set
//! (`SOURCE_DATE_EPOCH`): then every mtime newer than the ceiling is written as the ceiling and
//! older ones are kept, as BuildKit's `rewrite-timestamp=true` does. The clamp is applied to the
//! header as it is written, in the same pass that reads the tree, and never to the files on
//! disk: an upper dir becomes a snapshot whose inodes may be shared with other snapshots
//! (snapshot reuse hard-links them), so touching them would change committed snapshots.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_image::{DiffId, LayerRef};
use kiln_store::Store;
use tar::{EntryType, Header};

use crate::LayerError;
use crate::compression::Compression;
use crate::encode::Encoder;
use crate::hashing::HashingWriter;
use crate::xattrs::{FileXattrs, PAX_XATTR_PREFIX};

/// Name of the marker entry that makes its directory opaque.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of a whiteout entry's name.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";

/// What the directory being archived is, which decides how overlay markers in it are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The upper dir of an overlay mount (after unmounting): char devices 0:0 and
    /// `trusted.overlay.whiteout` files become `.wh.` whiteouts, opaque dirs get `.wh..wh..opq`.
    OverlayUpper,
    /// An ordinary directory tree (a rootfs to import, a build result to export): archived as is.
    Plain,
}

/// How a tar is written beyond the tree itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarOptions {
    /// Seconds since the Unix epoch: no entry's mtime is written newer than this
    /// (`SOURCE_DATE_EPOCH`). `None` keeps every mtime as it is.
    pub mtime_ceiling: Option<u64>,
}

impl TarOptions {
    /// The mtime a header gets for a file whose mtime is `mtime` (negative ones become 0, which
    /// ustar cannot go below).
    fn header_mtime(&self, mtime: i64) -> u64 {
        let mtime = u64::try_from(mtime).unwrap_or(0);
        match self.mtime_ceiling {
            Some(ceiling) => mtime.min(ceiling),
            None => mtime,
        }
    }
}

/// Turns the upper dir of an overlay mount into a layer blob in `store`. `None` when the upper
/// dir is empty: an empty change adds no layer.
pub fn write_layer(
    store: &Store,
    upper: &Path,
    compression: Compression,
) -> Result<Option<LayerRef>, LayerError> {
    write_layer_from(store, upper, SourceKind::OverlayUpper, compression)
}

/// [`write_layer`] with [`TarOptions`] (a build's `SOURCE_DATE_EPOCH` clamp).
pub fn write_layer_with(
    store: &Store,
    upper: &Path,
    compression: Compression,
    options: TarOptions,
) -> Result<Option<LayerRef>, LayerError> {
    write_layer_inner(store, upper, SourceKind::OverlayUpper, compression, options)
}

/// [`write_layer`] for any kind of directory (e.g. a rootfs being imported).
pub fn write_layer_from(
    store: &Store,
    dir: &Path,
    kind: SourceKind,
    compression: Compression,
) -> Result<Option<LayerRef>, LayerError> {
    write_layer_inner(store, dir, kind, compression, TarOptions::default())
}

fn write_layer_inner(
    store: &Store,
    dir: &Path,
    kind: SourceKind,
    compression: Compression,
    options: TarOptions,
) -> Result<Option<LayerRef>, LayerError> {
    let encoder = Encoder::new(store.blob_writer()?, compression)?;
    // The buffer batches the tar crate's 512-byte header writes before they are hashed and
    // compressed.
    let out = BufWriter::with_capacity(256 * 1024, HashingWriter::new(encoder));
    let (out, entries) = write_tar_with(dir, kind, options, out)?;
    if entries == 0 {
        // Dropping the blob writer deletes its temp file.
        return Ok(None);
    }
    let blob_path = store.root().join("tmp");
    let hashing = out.into_inner().map_err(|e| LayerError::Io {
        path: blob_path.clone(),
        source: e.into_error(),
    })?;
    let (encoder, diff_id) = hashing.finish();
    let blob = encoder.finish().map_err(LayerError::io(&blob_path))?;
    commit_layer(store, blob, DiffId::from_tar_digest(diff_id), compression).map(Some)
}

/// Publishes a finished layer blob and records it as the layer's variant for `compression`, so
/// later builds and pushes asking for the same setting reuse it.
pub(crate) fn commit_layer(
    store: &Store,
    blob: kiln_store::BlobWriter,
    diff_id: DiffId,
    compression: Compression,
) -> Result<LayerRef, LayerError> {
    let (digest, size) = blob.commit(None)?;
    let layer = LayerRef {
        digest,
        diff_id,
        size,
        media_type: compression.media_type().to_owned(),
    };
    store.record_layer_variant(
        &layer.diff_id,
        &kiln_store::LayerVariant {
            compression: compression.setting_name(),
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size,
        },
    )?;
    Ok(layer)
}

/// Writes the tree under `dir` (not `dir` itself) as a tar into `out`, ending with the tar end
/// blocks. Returns the writer and the number of entries written (0 for an empty dir).
/// Sockets are skipped: tar cannot carry them.
pub fn write_tar<W: Write>(dir: &Path, kind: SourceKind, out: W) -> Result<(W, u64), LayerError> {
    write_tar_with(dir, kind, TarOptions::default(), out)
}

/// [`write_tar`] with [`TarOptions`].
pub fn write_tar_with<W: Write>(
    dir: &Path,
    kind: SourceKind,
    options: TarOptions,
    out: W,
) -> Result<(W, u64), LayerError> {
    let mut builder = tar::Builder::new(out);
    builder.sparse(false);
    let mut written = 0u64;
    // First path seen for each multiply-linked inode, to write later ones as hard links.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_owned();
            LayerError::Io {
                path,
                source: e.into(),
            }
        })?;
        let path = item.path();
        let rel = path
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root")
            .as_os_str()
            .as_bytes();
        let meta = item.metadata().map_err(|e| LayerError::Io {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let xattrs = FileXattrs::read(path).map_err(LayerError::io(path))?;
        let file_type = meta.file_type();
        if kind == SourceKind::OverlayUpper {
            if let Some(marker) = xattrs.not_a_diff_marker() {
                return Err(LayerError::Unsupported {
                    path: path.to_owned(),
                    reason: format!(
                        "has {marker}: mount the overlay with redirect_dir=off,metacopy=off"
                    ),
                });
            }
            let is_whiteout = (file_type.is_char_device() && meta.rdev() == 0)
                || (file_type.is_file() && xattrs.is_whiteout());
            if is_whiteout {
                let (parent, name) = split_last(rel);
                append_marker(
                    &mut builder,
                    &[parent, WHITEOUT_PREFIX.as_bytes(), name].concat(),
                )
                .map_err(LayerError::io(path))?;
                written += 1;
                continue;
            }
        }

        let mut header = Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        set_common(&mut header, &mut pax, &meta, &options);
        for (name, value) in xattrs.portable_values(path).map_err(LayerError::io(path))? {
            if let Ok(name) = std::str::from_utf8(name.as_bytes()) {
                pax.push((format!("{PAX_XATTR_PREFIX}{name}"), value));
            }
        }
        let mut name = rel.to_vec();
        let mut content: Option<File> = None;
        if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            name.push(b'/');
        } else if file_type.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = std::fs::read_link(path).map_err(LayerError::io(path))?;
            set_link_name(&mut header, &mut pax, target.as_os_str().as_bytes());
        } else if let Some(first) = (meta.nlink() > 1)
            .then(|| links.get(&(meta.dev(), meta.ino())))
            .flatten()
        {
            header.set_entry_type(EntryType::Link);
            set_link_name(&mut header, &mut pax, first);
        } else if file_type.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            if meta.len() >= 0o77777777777 {
                pax.push(("size".into(), meta.len().to_string().into_bytes()));
            }
            content = Some(File::open(path).map_err(LayerError::io(path))?);
        } else if file_type.is_char_device() || file_type.is_block_device() {
            header.set_entry_type(if file_type.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let dev = meta.rdev();
            header
                .set_device_major(rustix::fs::major(dev))
                .map_err(LayerError::io(path))?;
            header
                .set_device_minor(rustix::fs::minor(dev))
                .map_err(LayerError::io(path))?;
        } else if file_type.is_fifo() {
            header.set_entry_type(EntryType::Fifo);
        } else {
            continue; // a socket
        }
        if !file_type.is_dir() && meta.nlink() > 1 {
            links
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.to_vec());
        }
        if !set_name(&mut header, &name) {
            pax.push(("path".into(), name));
        }
        header.set_cksum();
        if !pax.is_empty() {
            builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(LayerError::io(path))?;
        }
        match content {
            Some(file) => builder.append(
                &header,
                ExactReader {
                    inner: file,
                    remaining: meta.len(),
                },
            ),
            None => builder.append(&header, io::empty()),
        }
        .map_err(LayerError::io(path))?;
        written += 1;

        if kind == SourceKind::OverlayUpper
            && file_type.is_dir()
            && xattrs.is_opaque(path).map_err(LayerError::io(path))?
        {
            append_marker(
                &mut builder,
                &[rel, b"/", OPAQUE_MARKER.as_bytes()].concat(),
            )
            .map_err(LayerError::io(path))?;
            written += 1;
        }
    }
    let out = builder.into_inner().map_err(LayerError::io(dir))?;
    Ok((out, written))
}

/// `(parent + "/", name)` of a relative path; the parent part is empty at the top level.
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Sets mode (with setuid/setgid/sticky), owner and mtime (clamped as `options` says), spilling numbers that do not fit
/// the ustar fields into PAX records.
fn set_common(
    header: &mut Header,
    pax: &mut Vec<(String, Vec<u8>)>,
    meta: &Metadata,
    options: &TarOptions,
) {
    zero_numeric_fields(header);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    for (key, id) in [("uid", meta.uid()), ("gid", meta.gid())] {
        if id > 0o7777777 {
            pax.push((key.into(), id.to_string().into_bytes()));
        }
    }
    header.set_mtime(options.header_mtime(meta.mtime()));
}

/// A fresh ustar header leaves its numeric fields NUL-filled, which strict readers (the `tar`
/// crate among them) reject; write explicit zeros.
fn zero_numeric_fields(header: &mut Header) {
    header.set_mode(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header.set_mtime(0);
    // Set on ustar headers, these never fail.
    let _ = header.set_device_major(0);
    let _ = header.set_device_minor(0);
}

/// An empty regular file entry: a whiteout or the opaque marker. Its metadata is fixed so that
/// deleting a file gives the same layer whenever it happens.
fn append_marker<W: Write>(builder: &mut tar::Builder<W>, name: &[u8]) -> io::Result<()> {
    let mut header = Header::new_ustar();
    zero_numeric_fields(&mut header);
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    if !set_name(&mut header, name) {
        builder.append_pax_extensions([("path", name)])?;
    }
    header.set_cksum();
    builder.append(&header, io::empty())
}

/// Puts `name` in the ustar name (and prefix) fields if it fits; otherwise stores a truncated
/// name (readers take the real one from the PAX `path` record) and returns false.
fn set_name(header: &mut Header, name: &[u8]) -> bool {
    let ustar = header.as_ustar_mut().expect("headers are created as ustar");
    if name.len() <= ustar.name.len() {
        ustar.name[..name.len()].copy_from_slice(name);
        true
    } else {
        // Split at a '/' so that the prefix fits 155 bytes and the rest fits 100.
        let split = name
            .iter()
            .enumerate()
            .filter(|&(i, &b)| {
                b == b'/' && i <= ustar.prefix.len() && name.len() - i - 1 <= ustar.name.len()
            })
            .map(|(i, _)| i)
            .find(|&i| i > 0 && i + 1 < name.len());
        match split {
            Some(i) => {
                ustar.prefix[..i].copy_from_slice(&name[..i]);
                ustar.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
                true
            }
            None => {
                let n = ustar.name.len();
                ustar.name.copy_from_slice(&name[..n]);
                false
            }
        }
    }
}

fn set_link_name(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, target: &[u8]) {
    let field = &mut header.as_old_mut().linkname;
    let n = target.len().min(field.len());
    field[..n].copy_from_slice(&target[..n]);
    if target.len() > field.len() {
        pax.push(("linkpath".into(), target.to_vec()));
    }
}

/// Yields exactly `remaining` bytes of a file whose size was recorded in its header, failing
/// rather than writing a corrupt tar if the file shrank meanwhile (extra bytes are ignored).
struct ExactReader {
    inner: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
