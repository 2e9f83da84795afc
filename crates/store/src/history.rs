//! Build history: one directory per build under `history/`, so yesterday's build's output is
//! still there (`kiln build history`, `docs/build-history.md`).
//!
//! ```text
//! history/<id>/record.json   what was built and how it went (BuildRecord, schema 1)
//! history/<id>/logs.jsonl    every output line of every step, one JSON object a line
//! history/<id>/lock          flock'd by the building process for as long as it runs
//! ```
//!
//! Key decisions. The log is appended a line at a time as the step prints it, through one
//! `write` on an `O_APPEND` file, never buffered and never held in memory, so a log has no
//! size limit and a killed build loses at most the line being written (a reader skips a torn
//! last line). The record is rewritten whole (temp file, fsync, rename) when the build starts,
//! when a step starts running and when the build ends, so it is always a complete JSON
//! document; a record still `running` whose lock nobody holds belongs to a build that died,
//! and is reported as `interrupted` — the store is never left with a half-written record.
//! Retention is by count and age ([`HistoryRetention`]), applied after each build and by
//! `kiln prune`; a running build's record is never removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_image::Digest;
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError};

/// The version of [`BuildRecord`]'s layout.
pub const HISTORY_SCHEMA: u32 = 1;

/// How a build ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped by the user (Ctrl-C) or its API client.
    Cancelled,
    /// The building process died (killed, crashed) before it could say how it ended.
    Interrupted,
}

impl std::fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::Interrupted => "interrupted",
        })
    }
}

/// What a build was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildInputs {
    /// The Dockerfile's path, and the digest of its bytes as built.
    pub dockerfile: PathBuf,
    pub dockerfile_digest: Option<Digest>,
    /// The context: a directory, or `-` for a tar on stdin.
    pub context: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: String,
    pub tags: Vec<String>,
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Started and not finished (when the build ended: it failed, or was stopped).
    Running,
    /// Ran to completion.
    Done,
    /// Taken from the cache.
    Cached,
    /// A metadata instruction (ENV, LABEL, …): applied to the config, neither run nor cached.
    Metadata,
    /// Was running when the build failed: the failed step (or one stopped with it).
    Failed,
    /// Was running when the build was cancelled or its process died.
    Cancelled,
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Cached => "cached",
            StepStatus::Metadata => "metadata",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        })
    }
}

/// One step of a build, in the order the build reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based, in the order steps were reached (`logs --step N`).
    pub index: usize,
    pub stage: String,
    /// 1-based position in its stage (FROM is 1) and the stage's number of steps.
    pub position: usize,
    pub total: usize,
    /// The instruction as written.
    pub text: String,
    pub status: StepStatus,
    /// When it started running (steps that ran), and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The `--cache-from` a cached step came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_source: Option<String>,
    /// Why a step that ran missed the cache: the explain cause and its one-line reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss_cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss_reason: Option<String>,
    /// Output lines the step printed (all of them are in the log).
    #[serde(default)]
    pub output_lines: u64,
}

/// Why a build failed, with where in the Dockerfile when the error knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildFailure {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// One build, as `record.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub schema: u32,
    pub id: String,
    pub started: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    pub status: BuildStatus,
    pub inputs: BuildInputs,
    /// The image built (its ID, the config digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<BuildFailure>,
    pub steps: Vec<StepRecord>,
}

impl BuildRecord {
    /// How long the build took (or has taken until its last checkpoint).
    pub fn duration(&self) -> Option<Duration> {
        let ended = self.ended?;
        (ended - self.started).to_std().ok()
    }
}

/// A line of a step's output, as `logs.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The step's [`StepRecord::index`].
    pub step: usize,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// How many builds the history keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRetention {
    pub max_builds: usize,
    pub max_age: Duration,
}

impl Default for HistoryRetention {
    /// 50 builds, 7 days: BuildKit keeps 50 too, and a week still has Friday's builds on Monday.
    fn default() -> Self {
        HistoryRetention {
            max_builds: 50,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A build being recorded. Dropping it without [`HistoryWriter::finish`] leaves the record
/// `running` with its lock released: later readers report it as interrupted.
#[derive(Debug)]
pub struct HistoryWriter {
    store: Store,
    dir: PathBuf,
    record: Mutex<BuildRecord>,
    log: Mutex<File>,
    /// Held (flock) for the writer's life.
    _lock: File,
}

impl Store {
    fn history_root(&self) -> PathBuf {
        self.root.join("history")
    }

    /// Starts recording a build: its directory, lock, log and first record.
    pub fn history_begin(&self, inputs: BuildInputs) -> Result<HistoryWriter> {
        let root = self.history_root();
        std::fs::create_dir_all(&root).map_err(StoreError::io(&root))?;
        let started = Utc::now();
        // Time first, so ids sort by age; the rest tells builds of the same instant apart.
        let id = format!(
            "{}{}",
            started.format("%y%m%d%H%M%S"),
            &self.new_container_id(&inputs.context)[..12]
        );
        // Made complete in tmp/ (lock, empty log, record), then renamed into place, so a
        // reader never sees a build directory without its record.
        let staging = self.temp_dir("history-")?;
        let lock_path = staging.path().join("lock");
        let lock = File::create(&lock_path).map_err(StoreError::io(&lock_path))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| StoreError::Io {
            path: lock_path.clone(),
            source: e.into(),
        })?;
        let log_path = staging.path().join("logs.jsonl");
        File::create(&log_path).map_err(StoreError::io(&log_path))?;
        let record = BuildRecord {
            schema: HISTORY_SCHEMA,
            id: id.clone(),
            started,
            ended: None,
            status: BuildStatus::Running,
            inputs,
            image: None,
            error: None,
            steps: Vec::new(),
        };
        let record_path = staging.path().join("record.json");
        std::fs::write(&record_path, to_json(&record)).map_err(StoreError::io(&record_path))?;
        let dir = root.join(&id);
        let staged = staging.keep();
        std::fs::rename(&staged, &dir).map_err(StoreError::io(&dir))?;
        let log_path = dir.join("logs.jsonl");
        let log = File::options()
            .append(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&log_path)
            .map_err(StoreError::io(&log_path))?;
        Ok(HistoryWriter {
            store: self.clone(),
            dir,
            record: Mutex::new(record),
            log: Mutex::new(log),
            _lock: lock,
        })
    }

    /// Every recorded build, newest first. A record that cannot be read is skipped (it is
    /// reported by [`Store::history_load`] when asked for by id).
    pub fn history_list(&self) -> Result<Vec<BuildRecord>> {
        let mut records: Vec<BuildRecord> = self
            .history_ids()?
            .iter()
            .filter_map(|id| self.history_load(id).ok())
            .collect();
        records.sort_by(|a, b| b.started.cmp(&a.started).then(b.id.cmp(&a.id)));
        Ok(records)
    }

    fn history_ids(&self) -> Result<Vec<String>> {
        let root = self.history_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&root)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&root))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }

    /// The build `query` names: its full id, or a prefix of exactly one.
    pub fn history_find(&self, query: &str) -> Result<Option<String>> {
        let ids = self.history_ids()?;
        if ids.iter().any(|id| id == query) {
            return Ok(Some(query.to_owned()));
        }
        let matching: Vec<&String> = ids
            .iter()
            .filter(|id| !query.is_empty() && id.starts_with(query))
            .collect();
        match matching.as_slice() {
            [one] => Ok(Some((*one).clone())),
            [] => Ok(None),
            _ => Err(StoreError::Corrupt {
                path: self.history_root().join(query),
                message: format!("{} builds start with {query:?}", matching.len()),
            }),
        }
    }

    /// One build's record; a `running` record whose builder is gone reads as `interrupted`.
    pub fn history_load(&self, id: &str) -> Result<BuildRecord> {
        let dir = self.history_root().join(id);
        let path = dir.join("record.json");
        let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
        let mut record: BuildRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if record.status == BuildStatus::Running && !is_locked(&dir.join("lock")) {
            record.status = BuildStatus::Interrupted;
        }
        Ok(record)
    }

    /// Streams a build's log lines (of one step, or all) to `each`, in the order they were
    /// written, never holding the log in memory. A torn last line (a killed build) is skipped.
    pub fn history_logs(
        &self,
        id: &str,
        step: Option<usize>,
        each: &mut dyn FnMut(LogLine) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = self.history_root().join(id).join("logs.jsonl");
        let file = File::open(&path).map_err(StoreError::io(&path))?;
        let mut reader = std::io::BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(StoreError::io(&path))?;
            if n == 0 {
                return Ok(());
            }
            let Ok(line) = serde_json::from_slice::<LogLine>(&buf) else {
                continue;
            };
            if step.is_none_or(|s| s == line.step) {
                each(line).map_err(StoreError::io(&path))?;
            }
        }
    }

    /// Removes one build's record and log. A build still running is refused.
    pub fn history_remove(&self, id: &str) -> Result<bool> {
        let dir = self.history_root().join(id);
        if !dir.join("record.json").exists() {
            return Ok(false);
        }
        if is_locked(&dir.join("lock")) {
            return Err(StoreError::Io {
                path: dir,
                source: std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "the build is still running",
                ),
            });
        }
        // Renamed out of the way first, so the build disappears at once and whole.
        let tmp = self.temp_dir("history-rm-")?;
        let gone = tmp.path().join(id);
        std::fs::rename(&dir, &gone).map_err(StoreError::io(&dir))?;
        std::fs::remove_dir_all(&gone).map_err(StoreError::io(&gone))?;
        Ok(true)
    }

    /// Applies `retention` at `now`: removes the builds beyond the newest `max_builds` and
    /// those that ended longer than `max_age` ago (never a running one). Returns the ids
    /// removed and the bytes they held.
    pub fn history_prune(
        &self,
        retention: HistoryRetention,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (n, record) in self.history_list()?.into_iter().enumerate() {
            if record.status == BuildStatus::Running {
                continue;
            }
            let when = record.ended.unwrap_or(record.started);
            let age = (now - when).to_std().unwrap_or_default();
            if n < retention.max_builds && age <= retention.max_age {
                continue;
            }
            let size = self.history_size(&record.id);
            if self.history_remove(&record.id)? {
                bytes += size;
                removed.push(record.id);
            }
        }
        Ok((removed, bytes))
    }

    /// The bytes of one build's files (for `system df` and prune).
    pub fn history_size(&self, id: &str) -> u64 {
        let dir = self.history_root().join(id);
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl HistoryWriter {
    pub fn id(&self) -> String {
        self.record().id.clone()
    }

    fn record(&self) -> std::sync::MutexGuard<'_, BuildRecord> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the record in memory; `checkpoint` also writes it (a step started running).
    pub fn update(&self, checkpoint: bool, change: impl FnOnce(&mut BuildRecord)) -> Result<()> {
        let mut record = self.record();
        change(&mut record);
        if checkpoint {
            self.write(&record)?;
        }
        Ok(())
    }

    /// Appends one output line of step `step` to the log, at once.
    pub fn log_line(&self, step: usize, stream: &str, line: &str) -> Result<()> {
        let mut json = serde_json::to_vec(&LogLine {
            step,
            stream: stream.to_owned(),
            line: line.to_owned(),
        })
        .unwrap_or_default();
        json.push(b'\n');
        let path = self.dir.join("logs.jsonl");
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.write_all(&json).map_err(StoreError::io(path))
    }

    /// Ends the record with `status` (and the image or the error) and writes it durably.
    pub fn finish(
        self,
        status: BuildStatus,
        image: Option<String>,
        error: Option<BuildFailure>,
    ) -> Result<BuildRecord> {
        let mut record = self.record().clone();
        let ended = Utc::now();
        record.status = status;
        record.ended = Some(ended);
        // Steps still running end with the build: the failed one, or those it stopped.
        for step in &mut record.steps {
            if step.status == StepStatus::Running {
                step.status = match status {
                    BuildStatus::Failed => StepStatus::Failed,
                    _ => StepStatus::Cancelled,
                };
                step.duration_ms = step
                    .started
                    .and_then(|s| (ended - s).to_std().ok())
                    .map(|d| d.as_millis() as u64);
            }
        }
        record.image = image;
        record.error = error;
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let log_path = self.dir.join("logs.jsonl");
        log.sync_all().map_err(StoreError::io(log_path))?;
        drop(log);
        self.write(&record)?;
        Ok(record)
    }

    fn write(&self, record: &BuildRecord) -> Result<()> {
        // Staged beside the record, not in tmp/, which `kiln prune` cleans while builds run.
        self.store
            .write_atomic_via(&self.dir, &self.dir.join("record.json"), &to_json(record))
    }
}

fn to_json(record: &BuildRecord) -> Vec<u8> {
    serde_json::to_vec_pretty(record).unwrap_or_default()
}

/// Whether some process holds `path`'s flock (a build still running).
fn is_locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BuildInputs {
        BuildInputs {
            dockerfile: "/ctx/Dockerfile".into(),
            dockerfile_digest: Some(Digest::of(b"FROM scratch\n")),
            context: "/ctx".into(),
            build_args: BTreeMap::from([("A".into(), "1".into())]),
            target: Some("app".into()),
            platform: "linux/amd64".into(),
            tags: vec!["app:1".into()],
        }
    }

    fn step(index: usize) -> StepRecord {
        StepRecord {
            index,
            stage: "app".into(),
            position: index,
            total: 3,
            text: "RUN make".into(),
            status: StepStatus::Running,
            started: Some(Utc::now()),
            duration_ms: None,
            cache_source: None,
            miss_cause: None,
            miss_reason: None,
            output_lines: 0,
        }
    }

    #[test]
    fn a_build_is_recorded_with_its_whole_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let w = store.history_begin(inputs()).unwrap();
        let id = w.id();
        assert_eq!(
            store.history_load(&id).unwrap().status,
            BuildStatus::Running
        );
        w.update(true, |r| r.steps.push(step(1))).unwrap();
        let long = "x".repeat(3 << 20);
        w.log_line(1, "stdout", &long).unwrap();
        w.log_line(1, "stderr", "second").unwrap();
        let done = w
            .finish(BuildStatus::Succeeded, Some("sha256:ab".into()), None)
            .unwrap();
        let loaded = store.history_load(&id).unwrap();
        assert_eq!(loaded, done);
        assert_eq!(loaded.inputs, inputs());
        let mut lines = Vec::new();
        store
            .history_logs(&id, Some(1), &mut |l| {
                lines.push(l);
                Ok(())
            })
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line.len(), 3 << 20, "nothing is cut");
        assert_eq!(lines[1].stream, "stderr");
        assert_eq!(store.history_find(&id[..14]).unwrap(), Some(id.clone()));
        assert!(store.history_remove(&id).unwrap());
        assert!(store.history_list().unwrap().is_empty());
    }

    #[test]
    fn a_build_whose_process_died_reads_as_interrupted_and_a_torn_line_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let w = store.history_begin(inputs()).unwrap();
        let id = w.id();
        w.log_line(1, "stdout", "whole").unwrap();
        // A write cut short by a kill.
        w.log
            .lock()
            .unwrap()
            .write_all(b"{\"step\":1,\"str")
            .unwrap();
        // Removing a running build is refused.
        assert!(store.history_remove(&id).is_err());
        drop(w);
        assert_eq!(
            store.history_load(&id).unwrap().status,
            BuildStatus::Interrupted
        );
        let mut n = 0;
        store
            .history_logs(&id, None, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn retention_keeps_the_newest_builds_within_the_age() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..4 {
            let w = store.history_begin(inputs()).unwrap();
            ids.push(w.id());
            w.finish(BuildStatus::Failed, None, None).unwrap();
        }
        let running = store.history_begin(inputs()).unwrap();
        let keep_two = HistoryRetention {
            max_builds: 2,
            max_age: Duration::from_secs(3600),
        };
        // The running build counts among the newest two.
        let (mut removed, bytes) = store.history_prune(keep_two, Utc::now()).unwrap();
        removed.sort();
        let mut oldest = ids[..3].to_vec();
        oldest.sort();
        assert_eq!(removed, oldest);
        assert!(bytes > 0);
        // Past the age, only the running build is left: it is kept whatever the rule says.
        let later = Utc::now() + chrono::Duration::hours(2);
        let (removed, _) = store.history_prune(keep_two, later).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        let left: Vec<String> = store
            .history_list()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, vec![running.id()]);
    }
}
