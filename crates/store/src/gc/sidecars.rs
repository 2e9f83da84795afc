//! Pruning the small files that describe other things: layer-variant records (which blob holds
//! a layer in which compression) whose blob is gone, and explain records (the last build's key
//! inputs of each Dockerfile step, written by `kiln-solve`'s `explain`) whose step is gone.
//!
//! An explain record's step is gone when the Dockerfile it names no longer exists; a record
//! naming none predates that field and is dropped too (the next build of its step writes a new
//! one). A record whose cache record was pruned stays while its Dockerfile exists: it lets the
//! next build say that the step missed because its cached result was pruned. `--all` drops every
//! explain record with the rest of the build cache. `until` spares records written more
//! recently; `--keep-storage` does not apply (they are a few KB and not counted as storage).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::{Pass, PrunedKind, remove_file};
use crate::variants::LayerVariant;
use crate::{Result, StoreError};

/// The part of an explain record prune reads.
#[derive(Deserialize)]
struct ExplainHeader {
    #[serde(default)]
    dockerfile: Option<PathBuf>,
}

impl Pass<'_> {
    /// Explain records whose Dockerfile is gone (all of them with `all`).
    pub(super) fn explain_records(&mut self) -> Result<()> {
        let dir = self.store.root.join("explain");
        for (path, name, bytes, modified) in files_in(&dir)? {
            if !self.old_enough(modified) {
                continue;
            }
            let stale = self.opts.all
                || std::fs::read(&path)
                    .ok()
                    .and_then(|text| serde_json::from_slice::<ExplainHeader>(&text).ok())
                    .and_then(|header| header.dockerfile)
                    .is_none_or(|dockerfile| !dockerfile.exists());
            if stale {
                remove_file(&path)?;
                self.report.removed.push(super::Pruned {
                    kind: PrunedKind::ExplainRecord,
                    id: name,
                    bytes,
                });
            }
        }
        Ok(())
    }

    /// Layer-variant records whose blob is no longer in the store, and the per-layer
    /// directories they leave empty.
    pub(super) fn layer_variants(&mut self) -> Result<()> {
        let dir = self.store.root.join("layer-variants");
        for (layer_dir, layer, _, _) in files_in(&dir)? {
            if !layer_dir.is_dir() {
                continue;
            }
            let mut left = 0;
            for (path, setting, bytes, _) in files_in(&layer_dir)? {
                let variant = std::fs::read(&path)
                    .ok()
                    .and_then(|text| serde_json::from_slice::<LayerVariant>(&text).ok());
                if variant.is_some_and(|v| self.store.has_blob(&v.digest)) {
                    left += 1;
                    continue;
                }
                remove_file(&path)?;
                self.report.removed.push(super::Pruned {
                    kind: PrunedKind::LayerVariant,
                    id: format!("{layer}/{setting}"),
                    bytes,
                });
            }
            if left == 0 {
                // Not empty after all only if a build recorded a variant meanwhile, which the
                // exclusive store lock rules out; either way nothing is lost.
                let _ = std::fs::remove_dir(&layer_dir);
            }
        }
        Ok(())
    }
}

/// The entries of `dir` (none if it does not exist): path, name, size and mtime.
fn files_in(dir: &Path) -> Result<Vec<(PathBuf, String, u64, SystemTime)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io(dir))?;
        let metadata = entry.metadata().map_err(StoreError::io(entry.path()))?;
        files.push((
            entry.path(),
            entry.file_name().to_string_lossy().into_owned(),
            metadata.len(),
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}
