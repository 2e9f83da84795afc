//! Test helpers: describing a directory tree for comparison, and building raw (hostile) tars.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_image::Digest;
use rustix::fs::{AtFlags, Timespec, Timestamps};

/// One line per entry of the tree under `dir`: kind, mode, owner, mtime, and content, link
/// target, device number, xattrs (portable and overlay's opaque) and hard-link group.
pub(crate) fn describe_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = entry.path().symlink_metadata().unwrap();
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else if ft.is_file() {
            let group = if meta.nlink() > 1 {
                inodes
                    .entry(meta.ino())
                    .or_insert_with(|| rel.clone())
                    .clone()
            } else {
                String::new()
            };
            format!(
                "file {} links={group}",
                Digest::of(&std::fs::read(entry.path()).unwrap()).short()
            )
        } else if ft.is_char_device() {
            format!(
                "char {}:{}",
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev())
            )
        } else if ft.is_block_device() {
            format!(
                "block {}:{}",
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev())
            )
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            "other".to_owned()
        };
        let mut xattrs = Vec::new();
        if let Ok(names) = list_xattrs(entry.path()) {
            for name in names {
                if crate::xattrs::is_portable(name.as_bytes())
                    || name == crate::xattrs::OVERLAY_OPAQUE
                {
                    let mut buf = vec![0u8; 4096];
                    let n =
                        rustix::fs::lgetxattr(entry.path(), name.as_str(), &mut buf[..]).unwrap();
                    xattrs.push(format!("{name}={}", String::from_utf8_lossy(&buf[..n])));
                }
            }
        }
        let mode = if ft.is_symlink() {
            0
        } else {
            meta.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode={mode:o} owner={}:{} mtime={} xattrs=[{}]",
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                xattrs.join(",")
            ),
        );
    }
    out
}

fn list_xattrs(path: &Path) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut buf[..])?;
    let mut names: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Sets a path's atime and mtime without following a final symlink.
pub(crate) fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let cwd = rustix::fs::CWD;
    rustix::fs::utimensat(
        cwd,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Sets every mtime in the tree (children first, so directories keep theirs).
pub(crate) fn set_all_mtimes(dir: &Path, secs: i64) {
    for entry in walkdir::WalkDir::new(dir).min_depth(1).contents_first(true) {
        set_mtime(entry.unwrap().path(), secs);
    }
}

/// One entry of a hand-built tar; the name is written into the header byte for byte, so it
/// can hold what the `tar` crate's own builder refuses (`..`, absolute paths).
pub(crate) struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub link: &'a str,
    pub data: &'a [u8],
    pub mode: u32,
}

pub(crate) fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        mode: 0o644,
    }
}

pub(crate) fn dir(name: &str) -> RawEntry<'_> {
    RawEntry {
        name,
        kind: tar::EntryType::Directory,
        link: "",
        data: b"",
        mode: 0o755,
    }
}

pub(crate) fn symlink<'a>(name: &'a str, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: tar::EntryType::Symlink,
        link: target,
        data: b"",
        mode: 0o777,
    }
}

pub(crate) fn hard_link<'a>(name: &'a str, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: tar::EntryType::Link,
        link: target,
        data: b"",
        mode: 0o644,
    }
}

pub(crate) fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_ustar();
        let old = header.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_size(e.data.len() as u64);
        header.set_mtime(1_000_000);
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The entry names of a tar, in order.
pub(crate) fn entry_names(tar_bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
