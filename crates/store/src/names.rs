//! Image names (`docker.io/library/app:latest`) → manifest digests, in `names.json`.
//!
//! The file is small and rewritten whole under an exclusive `flock` on `names.lock`, so
//! concurrent `kiln` processes never lose each other's tags.

use std::collections::BTreeMap;
use std::io;

use kiln_image::Digest;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::locks::lock_file;
use crate::{Result, Store, StoreError};

/// One named image as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub manifest: Digest,
}

type Names = BTreeMap<String, NameRecord>;

impl Store {
    fn with_names<T>(&self, write: bool, f: impl FnOnce(&mut Names) -> T) -> Result<T> {
        let op = if write {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        let _lock = lock_file(&self.root.join("names.lock"), op)?;
        let path = self.root.join("names.json");
        let original = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let mut names: Names = match &original {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            None => Names::new(),
        };
        let out = f(&mut names);
        if write {
            let bytes = serde_json::to_vec_pretty(&names).expect("names serialise");
            // A rebuild that names the same image again changes nothing: no write, no fsync
            // (which can wait long behind other writeback).
            if original.as_deref() != Some(bytes.as_slice()) {
                self.write_atomic(&path, &bytes)?;
            }
        }
        Ok(out)
    }

    /// Points `name` at `manifest`, replacing what it pointed at before.
    pub fn set_name(&self, name: &str, manifest: &Digest) -> Result<()> {
        self.with_names(true, |n| {
            n.insert(
                name.to_owned(),
                NameRecord {
                    manifest: manifest.clone(),
                },
            );
        })
    }

    pub fn get_name(&self, name: &str) -> Result<Option<Digest>> {
        self.with_names(false, |n| n.get(name).map(|r| r.manifest.clone()))
    }

    /// Removes `name`; returns what it pointed at.
    pub fn remove_name(&self, name: &str) -> Result<Option<Digest>> {
        self.with_names(true, |n| n.remove(name).map(|r| r.manifest))
    }

    /// Every name, sorted.
    pub fn list_names(&self) -> Result<Vec<(String, Digest)>> {
        self.with_names(false, |n| {
            n.iter()
                .map(|(k, v)| (k.clone(), v.manifest.clone()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_persist_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"m");
        s.set_name("docker.io/library/app:latest", &d).unwrap();
        let s2 = Store::open(dir.path()).unwrap();
        assert_eq!(
            s2.get_name("docker.io/library/app:latest").unwrap(),
            Some(d.clone())
        );
        assert_eq!(s2.list_names().unwrap().len(), 1);
        assert_eq!(
            s2.remove_name("docker.io/library/app:latest").unwrap(),
            Some(d)
        );
        assert_eq!(s.get_name("docker.io/library/app:latest").unwrap(), None);
    }

    #[test]
    fn naming_the_same_image_again_does_not_rewrite_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"m");
        s.set_name("docker.io/library/app:latest", &d).unwrap();
        let path = dir.path().join("names.json");
        let inode = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().ino()
        };
        let first = inode(&path);
        s.set_name("docker.io/library/app:latest", &d).unwrap();
        // Every write is a rename of a new file, so the same inode means no write.
        assert_eq!(inode(&path), first);
        s.set_name("docker.io/library/app:latest", &Digest::of(b"n"))
            .unwrap();
        assert_ne!(inode(&path), first);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.set_name(&format!("img{i}:latest"), &Digest::of(&[i]))
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(s.list_names().unwrap().len(), 8);
    }

    #[test]
    fn corrupt_names_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("names.json"), b"{not json").unwrap();
        let err = s.get_name("x").unwrap_err().to_string();
        assert!(err.contains("names.json"), "{err}");
    }
}
