//! Operations on containers as objects rather than processes: `changes` (`docker diff`),
//! `rename`, and `prune` of stopped containers, for `kiln diff`/`rename`/`container prune` and
//! their Engine API routes alike.
//!
//! The key decision: all three read only the store (records, the writable layer, the spec's
//! lower dirs), never a running process, so they work the same on running and stopped
//! containers and need no mount: the upper dir already is the container's diff.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_layer::Change;
use kiln_store::{ContainerRecord, Timestamp};

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::spec::ContainerSpec;

/// Which stopped containers `prune` removes (Docker's `until` and `label` filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilter {
    /// Only containers created before this time.
    pub until: Option<Timestamp>,
    /// `label=k`, `label=k=v` (must have), `label!=k`, `label!=k=v` (must not have).
    pub labels: Vec<LabelFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<String>,
    /// `label!=`: keep what does not match.
    pub negated: bool,
}

impl LabelFilter {
    /// Parses `k` or `k=v`.
    pub fn parse(spec: &str, negated: bool) -> LabelFilter {
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (spec.to_owned(), None),
        };
        LabelFilter {
            key,
            value,
            negated,
        }
    }

    /// Whether `labels` pass this filter.
    pub fn passes(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        let matches = match (&self.value, labels.get(&self.key)) {
            (None, found) => found.is_some(),
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        };
        matches != self.negated
    }
}

impl PruneFilter {
    /// Parses Docker's prune filters (`until`, `label`, `label!`), given as key/value pairs.
    pub fn parse(filters: &[(String, String)]) -> Result<PruneFilter> {
        let mut out = PruneFilter::default();
        for (key, value) in filters {
            match key.as_str() {
                "until" => out.until = Some(parse_until(value)?),
                "label" => out.labels.push(LabelFilter::parse(value, false)),
                "label!" => out.labels.push(LabelFilter::parse(value, true)),
                _ => {
                    return Err(RuntimeError::Invalid {
                        what: "prune filter",
                        value: format!("{key}={value}"),
                        reason: "expected until, label or label!",
                    });
                }
            }
        }
        Ok(out)
    }

    fn keeps(&self, c: &ContainerRecord) -> bool {
        self.until.is_some_and(|t| c.created >= t)
            || !self.labels.iter().all(|l| l.passes(&c.config.labels))
    }
}

/// Docker's `until`: Unix seconds (with a fraction), an RFC 3339 time, or a duration before
/// now (`10m`, `1h30m`, `45s`).
pub fn parse_until(value: &str) -> Result<Timestamp> {
    let invalid = || RuntimeError::Invalid {
        what: "until",
        value: value.to_owned(),
        reason: "expected Unix seconds, an RFC 3339 time or a duration like 10m",
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = value.parse::<f64>() {
        let nanos = (secs * 1e9) as i64;
        return Ok(chrono::DateTime::from_timestamp_nanos(nanos));
    }
    let (mut total, mut number) = (0i64, String::new());
    for ch in value.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(invalid()),
        };
        total += number.parse::<i64>().map_err(|_| invalid())? * unit;
        number.clear();
    }
    if !number.is_empty() || value.is_empty() {
        return Err(invalid());
    }
    Ok(chrono::Utc::now() - chrono::Duration::seconds(total))
}

/// A container `prune` removed, and the bytes its writable layer held.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub record: ContainerRecord,
    pub bytes: u64,
}

impl<H: Host> Runtime<H> {
    /// What the container's writable layer changed, as `docker diff` lists it.
    pub fn changes(&self, query: &str) -> Result<Vec<Change>> {
        let c = self.container(query)?;
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        Ok(kiln_layer::upper_changes(
            &spec.sandbox.upper_dir,
            &spec.sandbox.lower_dirs,
        )?)
    }

    /// Renames a container, in any state; its new name must be valid and free (Docker's 409
    /// otherwise). Its network endpoints take the new name too, so the embedded DNS answers
    /// it (docker-compose renames a container aside, as `<short id>_<name>`, before it
    /// creates the one that replaces it).
    pub fn rename(&self, query: &str, new_name: &str) -> Result<ContainerRecord> {
        let c = self.container(query)?;
        let new_name = new_name.trim_start_matches('/');
        if new_name == c.name {
            return Err(RuntimeError::Invalid {
                what: "new name",
                value: new_name.to_owned(),
                reason: "it is the container's name already",
            });
        }
        let renamed = self.store.rename_container(&c.id, new_name)?;
        kiln_network::Networks::open(self.store.root())
            .rename_container(&renamed.id, &renamed.name)?;
        Ok(renamed)
    }

    /// Removes every container that is not running and `filter` does not keep, with its
    /// anonymous volumes kept (as `docker container prune`). One that starts meanwhile is
    /// skipped.
    pub fn prune(&self, filter: &PruneFilter) -> Result<Vec<Pruned>> {
        let mut pruned = Vec::new();
        for c in self.store.list_containers()? {
            if c.state.is_running() || self.host.is_running(&c.id)? || filter.keeps(&c) {
                continue;
            }
            let bytes = tree_bytes(&self.store.container_dir(&c.id).join("upper"));
            match self.remove(&c.id, false, false) {
                Ok(()) => pruned.push(Pruned { record: c, bytes }),
                // Started or removed by someone else in the meantime.
                Err(e)
                    if matches!(
                        e.kind(),
                        kiln_error::ErrorKind::Conflict | kiln_error::ErrorKind::NotFound
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pruned)
    }
}

/// The bytes of the regular files under `dir` (a hard-linked file counted at each link, as
/// dockerd's `SizeRw` counts). An unreadable entry counts as nothing: this is an estimate.
pub fn layer_bytes(dir: &Path) -> u64 {
    tree_bytes(dir)
}

fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += tree_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.size();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_seconds_rfc3339_and_durations() {
        assert_eq!(
            parse_until("1700000000").unwrap().timestamp(),
            1_700_000_000
        );
        assert_eq!(
            parse_until("2026-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        let ago = chrono::Utc::now() - parse_until("1h30m").unwrap();
        assert!((5399..=5401).contains(&ago.num_seconds()), "{ago}");
        for bad in ["", "soon", "5d", "1h5"] {
            assert!(parse_until(bad).is_err(), "{bad}");
        }
    }

    fn record(rt: &Runtime, name: &str, labels: &[(&str, &str)]) -> String {
        let mut record = ContainerRecord {
            schema_version: kiln_store::CONTAINER_SCHEMA_VERSION,
            id: rt.store.new_container_id(name),
            name: name.into(),
            created: chrono::Utc::now(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            manifest: "sha256:11".into(),
            config: kiln_store::RunConfig {
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            },
            mounts: Vec::new(),
            auto_remove: false,
            state: kiln_store::ContainerState::default(),
        };
        rt.store.create_container(&mut record).unwrap();
        record.id
    }

    #[test]
    fn prune_removes_stopped_containers_the_filter_does_not_keep() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(kiln_store::Store::open(dir.path()).unwrap());
        let gone = record(&rt, "gone", &[]);
        let upper = rt.store.container_dir(&gone).join("upper");
        std::fs::create_dir_all(upper.join("d")).unwrap();
        std::fs::write(upper.join("d/f"), [0u8; 1000]).unwrap();
        let kept = record(&rt, "kept", &[("keep", "1")]);
        let filter = PruneFilter::parse(&[("label!".into(), "keep".into())]).unwrap();
        let pruned = rt.prune(&filter).unwrap();
        let pruned: Vec<(String, u64)> =
            pruned.into_iter().map(|p| (p.record.id, p.bytes)).collect();
        assert_eq!(pruned, vec![(gone.clone(), 1000)]);
        assert!(rt.container(&gone).is_err());
        assert!(rt.container(&kept).is_ok());
        // Nothing is older than an hour ago.
        let old = PruneFilter::parse(&[("until".into(), "1h".into())]).unwrap();
        assert!(rt.prune(&old).unwrap().is_empty());
        assert_eq!(rt.prune(&PruneFilter::default()).unwrap().len(), 1);
    }

    #[test]
    fn rename_refuses_a_name_in_use_and_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(kiln_store::Store::open(dir.path()).unwrap());
        let a = record(&rt, "alpha", &[]);
        record(&rt, "beta", &[]);
        let same = rt.rename("alpha", "alpha").unwrap_err();
        assert_eq!(same.kind(), kiln_error::ErrorKind::InvalidArgument);
        let taken = rt.rename("alpha", "beta").unwrap_err();
        assert_eq!(taken.kind(), kiln_error::ErrorKind::Conflict, "{taken}");
        assert_eq!(rt.rename(&a[..12], "gamma").unwrap().name, "gamma");
        assert_eq!(rt.container("gamma").unwrap().id, a);
    }

    #[test]
    fn filters_keep_what_they_exclude() {
        let f = PruneFilter::parse(&[
            ("label".into(), "team=web".into()),
            ("label!".into(), "keep".into()),
        ])
        .unwrap();
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("team".to_owned(), "web".to_owned());
        assert!(f.labels.iter().all(|l| l.passes(&labels)));
        labels.insert("keep".to_owned(), "1".to_owned());
        assert!(!f.labels.iter().all(|l| l.passes(&labels)));
        let bad = PruneFilter::parse(&[("dangling".into(), "true".into())]).unwrap_err();
        assert_eq!(bad.kind(), kiln_error::ErrorKind::InvalidArgument);
    }
}
