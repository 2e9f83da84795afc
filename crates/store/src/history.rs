//! Build history: one directory per build under `history/`, so yesterday's build's output is
//! still there (`kiln build history`, `docs/build-history.md`).
//!
//! ```text
//! history/<id>/record.json   what was built and how it went (BuildRecord, schema 1)
//! history/<id>/log          every output line of every step: `<step> <o|e> <text>\n`
//! history/<id>/lock          flock'd by the building process for as long as it runs
//! ```
//!
//! Key decisions. The log is appended a line at a time as the step prints it, through one
//! `write` on an `O_APPEND` file, never buffered and never held in memory, so a log has no
//! size limit and a killed build loses at most the line being written (a reader skips a torn
//! last line). The record is rewritten whole (temp file, rename) when the build starts,
//! when a step starts running and when the build ends, so it is always a complete JSON
//! document; a record still `running` whose lock nobody holds belongs to a build that died,
//! and is reported as `interrupted` — the store is never left with a half-written record.
//! Retention is by count and age ([`HistoryRetention`]), applied after each build and by
//! `kiln prune`; a running build's record is never removed.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustix::fs::{FlockOperation, flock};

use crate::{Result, Store, StoreError};

mod record;
#[cfg(test)]
mod tests;

pub use record::{
    BuildFailure, BuildInputs, BuildRecord, BuildStatus, HISTORY_SCHEMA, LogLine, StepRecord,
    StepStatus,
};

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

impl HistoryRetention {
    /// The defaults, overridden by `KILN_HISTORY_MAX_BUILDS` (a number) and
    /// `KILN_HISTORY_MAX_AGE` (a duration: `48h`, `7d`, `1h30m`). The error names the variable.
    pub fn from_env() -> std::result::Result<HistoryRetention, String> {
        let mut r = HistoryRetention::default();
        if let Some(n) = std::env::var_os("KILN_HISTORY_MAX_BUILDS") {
            let n = n.to_string_lossy();
            r.max_builds = n
                .trim()
                .parse()
                .map_err(|_| format!("KILN_HISTORY_MAX_BUILDS={n:?} is not a number"))?;
        }
        if let Some(age) = std::env::var_os("KILN_HISTORY_MAX_AGE") {
            let age = age.to_string_lossy();
            r.max_age = parse_age(&age).ok_or_else(|| {
                format!("KILN_HISTORY_MAX_AGE={age:?} is not a duration (e.g. 48h, 7d, 1h30m)")
            })?;
        }
        Ok(r)
    }
}

/// Go's duration syntax for whole numbers (`1h30m`, `90s`), plus `d` for days.
fn parse_age(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut secs = 0u64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return None,
        };
        secs = secs.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs(secs))
}

/// A build being recorded. Dropping it without [`HistoryWriter::finish`] leaves the record
/// `running` with its lock released: later readers report it as interrupted.
#[derive(Debug)]
pub struct HistoryWriter {
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
        if !root.is_dir() {
            // Build output may say more than the image does: the history is its owner's only.
            std::fs::create_dir_all(&root).map_err(StoreError::io(&root))?;
            std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(StoreError::io(&root))?;
        }
        let started = Utc::now();
        // Time first, so ids sort by age; the rest tells builds of the same instant apart.
        let id = format!(
            "{}{}",
            started.format(ID_TIME),
            &self.new_container_id(&inputs.context)[..8]
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
        let log_path = staging.path().join("log");
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
        let log_path = dir.join("log");
        let log = File::options()
            .append(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&log_path)
            .map_err(StoreError::io(&log_path))?;
        Ok(HistoryWriter {
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
        let path = self.history_root().join(id).join("log");
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
            let Some(line) = LogLine::decode(&buf) else {
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
    /// those started longer than `max_age` ago (never a running one). Returns the ids removed
    /// and the bytes they held. It runs after every build, so it reads no record: a build's
    /// start time is the beginning of its id, and only the builds to remove are looked at.
    pub fn history_prune(
        &self,
        retention: HistoryRetention,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, u64)> {
        let mut ids = self.history_ids()?;
        // Newest first.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (n, id) in ids.into_iter().enumerate() {
            let age = started_of(&id)
                .and_then(|started| (now - started).to_std().ok())
                .unwrap_or_default();
            if n < retention.max_builds && age <= retention.max_age {
                continue;
            }
            let dir = self.history_root().join(&id);
            if is_locked(&dir.join("lock")) {
                continue;
            }
            let size = self.history_size(&id);
            if self.history_remove(&id)? {
                bytes += size;
                removed.push(id);
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
        let encoded = LogLine::encode(step, stream, line);
        let path = self.dir.join("log");
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.write_all(&encoded).map_err(StoreError::io(path))
    }

    /// Ends the record with `status` (and the image or the error) and writes it.
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
        self.write(&record)?;
        Ok(record)
    }

    /// Replaces `record.json` by a rename, so a reader (or a kill) never meets half a record.
    /// Not fsynced, unlike the store's objects: nothing refers to a history record, so a power
    /// loss can at worst lose the newest records (an unreadable one is skipped), and three
    /// fsyncs a build cost more than a no-op build itself on a busy disk (docs/benchmarks.md).
    fn write(&self, record: &BuildRecord) -> Result<()> {
        // Staged beside the record, not in tmp/, which `kiln prune` cleans while builds run.
        let path = self.dir.join("record.json");
        let mut f =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(StoreError::io(&self.dir))?;
        f.write_all(&to_json(record))
            .map_err(StoreError::io(f.path()))?;
        f.persist(&path).map_err(|e| StoreError::Io {
            path,
            source: e.error,
        })?;
        Ok(())
    }
}

/// The time at the start of a build id (UTC, to the microsecond), so that ids sort by age.
const ID_TIME: &str = "%y%m%d%H%M%S%6f";

/// When the build `id` started, read from the id.
fn started_of(id: &str) -> Option<DateTime<Utc>> {
    let time = id.get(..18)?;
    chrono::NaiveDateTime::parse_from_str(time, ID_TIME)
        .ok()
        .map(|t| t.and_utc())
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
