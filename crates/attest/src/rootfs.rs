//! A read-only view of an image's filesystem made of its layers' snapshot directories, as
//! overlayfs would merge them, without mounting anything or unpacking a layer again.
//!
//! The key decision: scanning reads the snapshots (the overlay lower dirs the build already
//! has) and applies overlay's rules itself — a name in a higher layer hides the same name
//! below; a whiteout (a 0/0 character device) hides it and shows nothing; an opaque directory
//! (`trusted.overlay.opaque` or, rootless, `user.overlay.opaque` = `y`) hides everything below
//! it; a non-directory hides a lower directory of the same name. So a scan needs no mount
//! namespace and no privileges, and costs one pass over the directories it visits. A single
//! plain directory (a build context) is the one-layer case.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a name in the merged tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One name in a merged directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    /// Where its content is: the path in the topmost layer that has it.
    pub path: PathBuf,
    /// Permission bits and size, of that topmost copy.
    pub mode: u32,
    pub size: u64,
    /// For a directory, the layers (indexes, top first) whose copies merge into it.
    layers: Vec<usize>,
}

/// The merged view of `layers`, top first.
#[derive(Debug, Clone)]
pub struct RootFs {
    layers: Vec<PathBuf>,
}

/// A directory of the merged tree: its path from the root and the layers that make it.
#[derive(Debug, Clone)]
pub struct Dir {
    pub rel: PathBuf,
    layers: Vec<usize>,
}

impl RootFs {
    /// The merge of `layers` given top first (as `kiln_images::lower_dirs` returns them).
    pub fn new(layers: Vec<PathBuf>) -> RootFs {
        RootFs { layers }
    }

    /// The root directory.
    pub fn root(&self) -> Dir {
        Dir {
            rel: PathBuf::new(),
            layers: (0..self.layers.len()).collect(),
        }
    }

    /// A directory entry as a directory to list, when it is one.
    pub fn dir_of(&self, parent: &Dir, entry: &Entry) -> Option<Dir> {
        (entry.kind == Kind::Dir).then(|| Dir {
            rel: parent.rel.join(&entry.name),
            layers: entry.layers.clone(),
        })
    }

    /// The merged entries of `dir`, sorted by name. A layer whose copy cannot be read is
    /// skipped (a scan reports what it can see).
    pub fn read_dir(&self, dir: &Dir) -> Vec<Entry> {
        // name → (entry, or None for a whiteout; whether lower layers may still add to it)
        let mut merged: std::collections::BTreeMap<OsString, (Option<Entry>, bool)> =
            Default::default();
        for &l in &dir.layers {
            let here = self.layers[l].join(&dir.rel);
            let Ok(read) = std::fs::read_dir(&here) else {
                continue;
            };
            for item in read.flatten() {
                let name = item.file_name();
                let Ok(meta) = item.metadata() else { continue };
                let ft = meta.file_type();
                let whiteout = ft.is_char_device() && meta.rdev() == 0;
                match merged.get_mut(&name) {
                    Some((Some(e), open)) if *open && e.kind == Kind::Dir => {
                        if ft.is_dir() {
                            e.layers.push(l);
                            *open = !is_opaque(&item.path());
                        } else {
                            *open = false;
                        }
                    }
                    Some(_) => {}
                    None if whiteout => {
                        merged.insert(name, (None, false));
                    }
                    None => {
                        let kind = if ft.is_dir() {
                            Kind::Dir
                        } else if ft.is_file() {
                            Kind::File
                        } else if ft.is_symlink() {
                            Kind::Symlink
                        } else {
                            Kind::Other
                        };
                        let open = kind == Kind::Dir && !is_opaque(&item.path());
                        let entry = Entry {
                            name: name.clone(),
                            kind,
                            path: item.path(),
                            mode: meta.mode() & 0o7777,
                            size: meta.len(),
                            layers: if kind == Kind::Dir {
                                vec![l]
                            } else {
                                Vec::new()
                            },
                        };
                        merged.insert(name, (Some(entry), open));
                    }
                }
            }
            if is_opaque(&here) {
                break;
            }
        }
        merged.into_values().filter_map(|(e, _)| e).collect()
    }

    /// The entry at `rel` (`var/lib/dpkg/status`), following no symlinks.
    pub fn lookup(&self, rel: &str) -> Option<Entry> {
        let mut dir = self.root();
        let mut parts = rel.split('/').filter(|p| !p.is_empty()).peekable();
        while let Some(part) = parts.next() {
            let entry = self
                .read_dir_named(&dir, OsStr::new(part))
                .filter(|e| parts.peek().is_none() || e.kind == Kind::Dir)?;
            if parts.peek().is_none() {
                return Some(entry);
            }
            dir = self.dir_of(&dir, &entry)?;
        }
        None
    }

    /// The directory at `rel`, when there is one.
    pub fn lookup_dir(&self, rel: &str) -> Option<Dir> {
        if rel.trim_matches('/').is_empty() {
            return Some(self.root());
        }
        let parent_rel = Path::new(rel).parent().map(Path::to_path_buf)?;
        let entry = self.lookup(rel)?;
        let parent = self
            .lookup_dir(&parent_rel.to_string_lossy())
            .unwrap_or(self.root());
        self.dir_of(&parent, &entry)
    }

    /// One name of `dir`, merged, without listing the whole directory.
    fn read_dir_named(&self, dir: &Dir, name: &OsStr) -> Option<Entry> {
        let mut found: Option<Entry> = None;
        for &l in &dir.layers {
            let path = self.layers[l].join(&dir.rel).join(name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                if is_opaque(&self.layers[l].join(&dir.rel)) {
                    break;
                }
                continue;
            };
            let ft = meta.file_type();
            match &mut found {
                None if ft.is_char_device() && meta.rdev() == 0 => return None,
                None => {
                    let kind = if ft.is_dir() {
                        Kind::Dir
                    } else if ft.is_file() {
                        Kind::File
                    } else if ft.is_symlink() {
                        Kind::Symlink
                    } else {
                        Kind::Other
                    };
                    let stop = kind != Kind::Dir || is_opaque(&path);
                    found = Some(Entry {
                        name: name.to_owned(),
                        kind,
                        path,
                        mode: meta.mode() & 0o7777,
                        size: meta.len(),
                        layers: if kind == Kind::Dir {
                            vec![l]
                        } else {
                            Vec::new()
                        },
                    });
                    if stop {
                        return found;
                    }
                }
                Some(e) => {
                    if !ft.is_dir() {
                        break;
                    }
                    e.layers.push(l);
                    if is_opaque(&path) {
                        break;
                    }
                }
            }
            if is_opaque(&self.layers[l].join(&dir.rel)) {
                break;
            }
        }
        found
    }

    /// Reads a regular file of the merged tree, if it is one.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        let entry = self.lookup(rel)?;
        (entry.kind == Kind::File)
            .then(|| std::fs::read(&entry.path).ok())
            .flatten()
    }

    /// Visits every entry below `dir` in sorted pre-order; `visit` returns false to skip a
    /// directory's contents.
    pub fn walk(&self, dir: &Dir, visit: &mut dyn FnMut(&Dir, &Entry) -> bool) {
        for entry in self.read_dir(dir) {
            let descend = visit(dir, &entry);
            if descend && let Some(sub) = self.dir_of(dir, &entry) {
                self.walk(&sub, visit);
            }
        }
    }
}

/// Whether overlayfs would treat `dir` as opaque (root's `trusted.` or rootless `user.` form).
fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(rustix::fs::lgetxattr(dir, *name, &mut buf), Ok(n) if buf[..n] == *b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whiteout(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn higher_layers_hide_lower_ones_and_whiteouts_remove_names() {
        let t = tempfile::tempdir().unwrap();
        let (low, high) = (t.path().join("low"), t.path().join("high"));
        for d in [&low, &high] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(low.join("etc/a"), "low a").unwrap();
        std::fs::write(low.join("etc/b"), "low b").unwrap();
        std::fs::write(low.join("etc/c"), "low c").unwrap();
        std::fs::write(high.join("etc/a"), "high a").unwrap();
        whiteout(&high.join("etc/b"));
        let fs = RootFs::new(vec![high.clone(), low.clone()]);
        assert_eq!(fs.read("etc/a").unwrap(), b"high a");
        assert!(fs.read("etc/b").is_none(), "whited out");
        assert_eq!(fs.read("etc/c").unwrap(), b"low c");
        let names: Vec<_> = fs
            .read_dir(&fs.lookup_dir("etc").unwrap())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn a_file_over_a_directory_hides_it_and_opaque_dirs_hide_lower_contents() {
        let t = tempfile::tempdir().unwrap();
        let (low, high) = (t.path().join("low"), t.path().join("high"));
        std::fs::create_dir_all(low.join("x/inner")).unwrap();
        std::fs::write(low.join("x/inner/f"), "f").unwrap();
        std::fs::create_dir_all(low.join("o")).unwrap();
        std::fs::write(low.join("o/old"), "old").unwrap();
        std::fs::create_dir_all(&high).unwrap();
        std::fs::write(high.join("x"), "now a file").unwrap();
        std::fs::create_dir_all(high.join("o")).unwrap();
        std::fs::write(high.join("o/new"), "new").unwrap();
        // The tests run as root, as kiln's snapshots are written: the `trusted.` form.
        rustix::fs::lsetxattr(
            high.join("o"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let fs = RootFs::new(vec![high, low]);
        assert_eq!(fs.read("x").unwrap(), b"now a file");
        assert!(fs.lookup("x/inner/f").is_none());
        let mut seen = Vec::new();
        fs.walk(&fs.root(), &mut |d, e| {
            seen.push(d.rel.join(&e.name).to_string_lossy().into_owned());
            true
        });
        assert_eq!(seen, ["o", "o/new", "x"]);
        assert!(fs.read("o/old").is_none());
    }
}
