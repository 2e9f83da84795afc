//! Volumes: directories that live outside any container, as Docker's `local` driver keeps
//! them.
//!
//! ```text
//! volumes/<name>/_data         what containers see at the mount point
//! volumes/<name>/volume.json   name, creation time, labels, anonymous or named
//! ```
//!
//! A volume is in use while any container record (running or not) mounts it; such a volume is
//! never removed. Removing a container never removes a named volume; anonymous ones (made for
//! an image's `VOLUME` paths or `-v /path`) go with `rm -v`, `--rm` or `volume prune`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::containers::{ContainerError, ContainerResult, remove_tree, validate_name};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRecord {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    /// Made for a container without a name from the user (64 hex digits).
    pub anonymous: bool,
}

const RECORD_FILE: &str = "volume.json";

impl Store {
    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// The directory containers see: `volumes/<name>/_data`.
    pub fn volume_data_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    /// Creates the volume `name` (a fresh anonymous one when `None`), or returns the existing
    /// one of that name, as `docker volume create` does. The flag says whether it was created.
    pub fn create_volume(
        &self,
        name: Option<&str>,
        created_at: &str,
        labels: BTreeMap<String, String>,
    ) -> ContainerResult<(VolumeRecord, bool)> {
        let _lock = self.lock_containers()?;
        let (name, anonymous) = match name {
            Some(n) => {
                validate_name(n, "volume")?;
                (n.to_owned(), false)
            }
            None => (self.new_container_id("volume"), true),
        };
        if let Some(existing) = self.read_volume(&name)? {
            return Ok((existing, false));
        }
        let record = VolumeRecord {
            name: name.clone(),
            created_at: created_at.to_owned(),
            labels,
            anonymous,
        };
        let data = self.volume_data_dir(&name);
        std::fs::create_dir_all(&data).map_err(StoreError::io(&data))?;
        let path = self.volumes_dir().join(&name).join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.write_atomic(&path, &json)?;
        Ok((record, true))
    }

    fn read_volume(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let path = self.volumes_dir().join(name).join(RECORD_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    pub fn volume(&self, name: &str) -> ContainerResult<VolumeRecord> {
        if validate_name(name, "volume").is_err() {
            return Err(ContainerError::NoSuchVolume(name.to_owned()));
        }
        self.read_volume(name)?
            .ok_or_else(|| ContainerError::NoSuchVolume(name.to_owned()))
    }

    /// Every volume, by name.
    pub fn list_volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let dir = self.volumes_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir)(e)),
        };
        let mut volumes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&dir))?;
            if let Some(v) = entry
                .file_name()
                .to_str()
                .map(|n| self.read_volume(n))
                .transpose()?
                .flatten()
            {
                volumes.push(v);
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// IDs of the containers that mount the volume.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_containers()?
            .into_iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.kind == crate::MountKind::Volume && m.name == name)
            })
            .map(|c| c.id)
            .collect())
    }

    /// Removes a volume and its data; refused while a container mounts it.
    pub fn remove_volume(&self, name: &str) -> ContainerResult<()> {
        self.volume(name)?;
        let _lock = self.lock_containers()?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(ContainerError::VolumeInUse {
                name: name.to_owned(),
                containers: users.iter().map(|id| id[..12].to_owned()).collect(),
            });
        }
        let dir = self.volumes_dir().join(name);
        // The record first: a crash mid-way leaves a directory `list_volumes` skips.
        std::fs::remove_file(dir.join(RECORD_FILE))
            .map_err(StoreError::io(dir.join(RECORD_FILE)))?;
        remove_tree(&dir).map_err(StoreError::io(&dir))?;
        Ok(())
    }

    /// Removes every volume no container uses: the anonymous ones, or with `all` named ones
    /// too (`docker volume prune [-a]`). Returns the names removed.
    pub fn prune_volumes(&self, all: bool) -> ContainerResult<Vec<String>> {
        let mut removed = Vec::new();
        for volume in self.list_volumes()? {
            if !(all || volume.anonymous) {
                continue;
            }
            match self.remove_volume(&volume.name) {
                Ok(()) => removed.push(volume.name),
                Err(ContainerError::VolumeInUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Removes every volume no container uses that `prune` selects (the API's
    /// `volumes/prune`, whose 1.41 version takes named volumes too), with the bytes each held.
    pub fn prune_volumes_where(
        &self,
        prune: impl Fn(&VolumeRecord) -> bool,
    ) -> ContainerResult<Vec<(String, u64)>> {
        let mut removed = Vec::new();
        for volume in self.list_volumes()? {
            if !prune(&volume) {
                continue;
            }
            let bytes = crate::inventory::disk_usage(&self.volume_data_dir(&volume.name));
            match self.remove_volume(&volume.name) {
                Ok(()) => removed.push((volume.name, bytes)),
                Err(ContainerError::VolumeInUse { .. } | ContainerError::NoSuchVolume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// The bytes a volume's data takes on disk.
    pub fn volume_bytes(&self, name: &str) -> u64 {
        crate::inventory::disk_usage(&self.volume_data_dir(name))
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;
    use crate::test_support::store;

    #[test]
    fn prune_takes_the_selected_unused_volumes_with_their_size() {
        let (_d, s) = store();
        let (keep, _) = s
            .create_volume(
                Some("keep"),
                "t",
                [("keep".to_owned(), "1".to_owned())].into(),
            )
            .unwrap();
        s.create_volume(Some("data"), "t", BTreeMap::new()).unwrap();
        std::fs::write(s.volume_data_dir("data").join("f"), vec![0u8; 8192]).unwrap();
        let removed = s
            .prune_volumes_where(|v| !v.labels.contains_key("keep"))
            .unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].0, "data");
        assert!(removed[0].1 >= 8192, "{removed:?}");
        assert!(s.volume(&keep.name).is_ok());
        assert!(s.volume("data").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::tests::record;
    use crate::test_support::store;
    use crate::{MountKind, MountRecord};

    #[test]
    fn create_is_idempotent_and_anonymous_volumes_get_ids() {
        let (_d, s) = store();
        let (v, created) = s.create_volume(Some("data"), "t", BTreeMap::new()).unwrap();
        assert!(created && !v.anonymous);
        std::fs::write(s.volume_data_dir("data").join("f"), "x").unwrap();
        let (again, created) = s
            .create_volume(Some("data"), "t2", BTreeMap::new())
            .unwrap();
        assert!(!created);
        assert_eq!(again.created_at, "t");
        assert!(s.volume_data_dir("data").join("f").exists());
        let (anon, _) = s.create_volume(None, "t", BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        assert_eq!(s.list_volumes().unwrap().len(), 2);
        assert!(matches!(
            s.volume("missing"),
            Err(ContainerError::NoSuchVolume(_))
        ));
        assert!(matches!(
            s.volume("../x"),
            Err(ContainerError::NoSuchVolume(_))
        ));
    }

    #[test]
    fn volumes_in_use_stay_and_prune_spares_named_ones() {
        let (_d, s) = store();
        s.create_volume(Some("named"), "t", BTreeMap::new())
            .unwrap();
        let (anon, _) = s.create_volume(None, "t", BTreeMap::new()).unwrap();
        let (used, _) = s.create_volume(None, "t", BTreeMap::new()).unwrap();
        let mut c = record(&s, "user", "t");
        c.mounts.push(MountRecord {
            kind: MountKind::Volume,
            name: used.name.clone(),
            source: s.volume_data_dir(&used.name),
            destination: "/data".into(),
            rw: true,
        });
        s.create_container(&mut c).unwrap();
        let err = s.remove_volume(&used.name).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert_eq!(err.kind(), kiln_error::ErrorKind::Conflict);
        let missing = s.remove_volume("missing").unwrap_err();
        assert_eq!(missing.kind(), kiln_error::ErrorKind::NotFound);
        assert_eq!(s.prune_volumes(false).unwrap(), vec![anon.name.clone()]);
        s.remove_container(&c.id).unwrap();
        let mut left = s.prune_volumes(true).unwrap();
        left.sort();
        let mut expected = vec!["named".to_owned(), used.name.clone()];
        expected.sort();
        assert_eq!(left, expected);
        assert!(s.list_volumes().unwrap().is_empty());
    }
}
