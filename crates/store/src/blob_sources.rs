//! Where blobs have been seen in registries: per registry and blob, the repositories known to
//! hold it (because kiln pulled it from there or pushed it there). A push to another repository
//! of the same registry can then ask the registry to mount the blob from one of them instead of
//! uploading it again.
//!
//! One small file per (registry, blob): `blob-sources/<registry>/<blob hex>.json`, a JSON list of
//! repositories, most recently seen first. Updates are read-modify-write without a lock: two
//! processes racing may lose one entry, which only costs an upload instead of a mount later.

use std::io;

use kiln_image::Digest;

use crate::{Result, Store, StoreError};

/// Repositories remembered per blob; older ones are forgotten first.
const MAX_SOURCES: usize = 8;

impl Store {
    /// The repositories of `registry` (as references name it, `host[:port]`) known to hold
    /// `digest`, most recently seen first.
    pub fn blob_sources(&self, registry: &str, digest: &Digest) -> Result<Vec<String>> {
        let path = self.blob_sources_path(registry, digest)?;
        match std::fs::read(&path) {
            // An unreadable record is treated as empty: it is a hint, and is rewritten on the
            // next push or pull of the blob.
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Records that `repository` of `registry` holds `digest`.
    pub fn record_blob_source(
        &self,
        registry: &str,
        digest: &Digest,
        repository: &str,
    ) -> Result<()> {
        let mut sources = self.blob_sources(registry, digest)?;
        if sources.first().is_some_and(|first| first == repository) {
            return Ok(());
        }
        sources.retain(|r| r != repository);
        sources.insert(0, repository.to_owned());
        sources.truncate(MAX_SOURCES);
        let path = self.blob_sources_path(registry, digest)?;
        let dir = path.parent().expect("the path has a registry directory");
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let bytes = serde_json::to_vec(&sources).expect("source lists serialise");
        self.write_atomic(&path, &bytes)
    }

    fn blob_sources_path(&self, registry: &str, digest: &Digest) -> Result<std::path::PathBuf> {
        // Registry names are host[:port]; anything else must not become a path component.
        let valid = !registry.is_empty()
            && !registry.starts_with('.')
            && registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !valid {
            return Err(StoreError::Corrupt {
                path: self.root.join("blob-sources"),
                message: format!("invalid registry name {registry:?}"),
            });
        }
        Ok(self
            .root
            .join("blob-sources")
            .join(registry)
            .join(format!("{}.json", digest.hex())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_kept_per_registry_most_recent_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = Digest::of(b"layer");
        assert!(
            store
                .blob_sources("127.0.0.1:5000", &blob)
                .unwrap()
                .is_empty()
        );
        store
            .record_blob_source("127.0.0.1:5000", &blob, "a/one")
            .unwrap();
        store
            .record_blob_source("127.0.0.1:5000", &blob, "b/two")
            .unwrap();
        store
            .record_blob_source("127.0.0.1:5000", &blob, "a/one")
            .unwrap();
        assert_eq!(
            store.blob_sources("127.0.0.1:5000", &blob).unwrap(),
            ["a/one", "b/two"]
        );
        assert!(store.blob_sources("docker.io", &blob).unwrap().is_empty());
        assert!(
            store
                .blob_sources("127.0.0.1:5000", &Digest::of(b"x"))
                .unwrap()
                .is_empty()
        );

        for i in 0..20 {
            store
                .record_blob_source("docker.io", &blob, &format!("r{i}"))
                .unwrap();
        }
        let sources = Store::open(dir.path())
            .unwrap()
            .blob_sources("docker.io", &blob)
            .unwrap();
        assert_eq!(sources.len(), MAX_SOURCES);
        assert_eq!(sources[0], "r19");
    }

    #[test]
    fn registry_names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = Digest::of(b"layer");
        for bad in ["", "..", "../x", "a/b"] {
            assert!(store.record_blob_source(bad, &blob, "r").is_err(), "{bad}");
        }
    }
}
