//! The tar writer of `docker cp` out and `docker export`: a walk of a directory tree through
//! descriptors only (`openat(O_NOFOLLOW)` below the starting directory, `fstat` of what was
//! opened), so a symlink is archived as a link and one swapped in during the walk fails the
//! open instead of being followed (docker CVE-2018-15664).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tar::{EntryType, Header};

use super::DIR_FLAGS;

/// Filesystems whose contents are the kernel's, not files: a running container's `/proc`,
/// `/sys` and the like are archived as empty directories (dockerd's copy of a container's
/// root has only their mount points).
const KERNEL_FS: [i64; 7] = [
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x7363_6673, // securityfs
];

pub(super) struct TarWalk<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, inode) of regular files with several links → the name first archived.
    links: HashMap<(u64, u64), String>,
}

/// Appends an entry named exactly `name` (the tar crate would drop a leading `./`, which
/// `docker cp` of `dir/.` keeps), with GNU long-name records where a name or link target does
/// not fit its field.
pub(super) fn append_raw<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    for (bytes, kind) in [
        (Some(name), EntryType::GNULongName),
        (link, EntryType::GNULongLink),
    ] {
        if let Some(bytes) = bytes.filter(|b| b.len() > 100) {
            let mut long = Header::new_gnu();
            long.as_gnu_mut().expect("made as GNU").name[..13].copy_from_slice(b"././@LongLink");
            long.set_entry_type(kind);
            long.set_mode(0o644);
            long.set_size(bytes.len() as u64 + 1);
            long.set_cksum();
            builder.append(&long, bytes.chain(&[0u8][..]))?;
        }
    }
    let old = header.as_old_mut();
    let n = name.len().min(100);
    old.name = [0; 100];
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let n = link.len().min(100);
        old.linkname = [0; 100];
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    header.set_cksum();
    builder.append(&header, data)
}

impl<W: Write> TarWalk<W> {
    pub(super) fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        TarWalk {
            builder,
            links: HashMap::new(),
        }
    }

    pub(super) fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    fn header(st: &rustix::fs::Stat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Archives `name` of `parent` as `tar_name`, recursively for a directory.
    pub(super) fn entry(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        tar_name: &str,
    ) -> io::Result<()> {
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let dir =
                    rustix::fs::openat(parent, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
                self.dir_entry(&dir, tar_name, true)
            }
            FileType::RegularFile => self.file(parent, name, tar_name, &st),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new())?;
                let h = Self::header(&st, EntryType::Symlink);
                append_raw(
                    &mut self.builder,
                    h,
                    tar_name.as_bytes(),
                    Some(target.as_bytes()),
                    io::empty(),
                )
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                let entry_type = match kind {
                    FileType::CharacterDevice => EntryType::Char,
                    FileType::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = Self::header(&st, entry_type);
                if entry_type != EntryType::Fifo {
                    h.set_device_major(rustix::fs::major(st.st_rdev))?;
                    h.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                }
                append_raw(&mut self.builder, h, tar_name.as_bytes(), None, io::empty())
            }
            // Sockets cannot be archived (tar has no type for them), as in Docker.
            _ => Ok(()),
        }
    }

    fn file(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        tar_name: &str,
        st: &rustix::fs::Stat,
    ) -> io::Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let h = Self::header(st, EntryType::Link);
                let first = first.clone();
                return append_raw(
                    &mut self.builder,
                    h,
                    tar_name.as_bytes(),
                    Some(first.as_bytes()),
                    io::empty(),
                );
            }
            self.links.insert(key, tar_name.to_owned());
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The size of what was opened, not of what was looked at before.
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{tar_name} changed while being archived"
            )));
        }
        let mut h = Self::header(&st, EntryType::Regular);
        h.set_size(st.st_size as u64);
        let file = std::fs::File::from(fd);
        // A file that shrinks meanwhile is padded, one that grows cut: the header's size holds.
        let data = file
            .take(st.st_size as u64)
            .chain(io::repeat(0))
            .take(st.st_size as u64);
        append_raw(&mut self.builder, h, tar_name.as_bytes(), None, data)
    }

    /// Archives the open directory `dir` as `tar_name` (with its children when `recurse`).
    pub(super) fn dir_entry(
        &mut self,
        dir: &OwnedFd,
        tar_name: &str,
        recurse: bool,
    ) -> io::Result<()> {
        let st = rustix::fs::fstat(dir)?;
        if tar_name != "." || !recurse {
            let mut h = Self::header(&st, EntryType::Directory);
            self.builder.append_data(
                &mut h,
                format!("{}/", tar_name.trim_end_matches('/')),
                io::empty(),
            )?;
        } else {
            let mut h = Self::header(&st, EntryType::Directory);
            self.builder.append_data(&mut h, "./", io::empty())?;
        }
        let kernel = rustix::fs::fstatfs(dir)
            // `f_type`'s width differs between architectures.
            .map(|s| {
                #[allow(clippy::unnecessary_cast)]
                let magic = s.f_type as i64;
                KERNEL_FS.contains(&magic)
            })
            .unwrap_or(false);
        if recurse && !kernel {
            let prefix = if tar_name == "." {
                "./".to_owned()
            } else {
                format!("{}/", tar_name.trim_end_matches('/'))
            };
            self.children(dir, &prefix)?;
        }
        Ok(())
    }

    /// Archives the entries of `dir`, sorted, named `prefix` + name.
    pub(super) fn children(&mut self, dir: &OwnedFd, prefix: &str) -> io::Result<()> {
        let mut names: Vec<OsString> = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        for name in names {
            let tar_name = format!("{prefix}{}", name.to_string_lossy());
            match self.entry(dir, &name, &tar_name) {
                // Removed since it was listed: a running container changes its files.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }
}
