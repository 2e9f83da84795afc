//! A container's output log (`containers/<id>/container.log`): one JSON object per line, as
//! Docker's `json-file` driver writes it (`{"log":"text\n","stream":"stdout","time":"…Z"}`),
//! so the stream and the time of every line survive and stdout and stderr stay apart.
//!
//! Output is logged whether or not anyone is attached; attached clients get the same bytes as
//! they arrive (not line by line: a prompt without a newline must show at once).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;

/// Lines longer than this are split, as Docker splits at 16 KiB, so a process that never
/// prints a newline cannot grow one entry without bound.
pub const MAX_ENTRY: usize = 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

impl LogEntry {
    /// The entry's time, if it parses.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Appends entries to the log; shared by the threads copying stdout and stderr.
#[derive(Debug, Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
    path: PathBuf,
}

impl LogWriter {
    pub fn create(path: &Path) -> Result<LogWriter> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(RuntimeError::io(path))?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
            path: path.to_owned(),
        })
    }

    /// A line splitter for one stream of this log.
    pub fn stream(&self, stream: &'static str) -> StreamLog {
        StreamLog {
            log: self.clone(),
            stream,
            line: Vec::new(),
        }
    }

    fn write_entry(&self, stream: &str, bytes: &[u8]) -> Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.to_owned(),
            time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        let mut json = serde_json::to_vec(&entry).map_err(|e| RuntimeError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        json.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&json).map_err(RuntimeError::io(&self.path))
    }
}

/// Cuts one stream's bytes into entries: at each newline, at [`MAX_ENTRY`], and at the end.
#[derive(Debug)]
pub struct StreamLog {
    log: LogWriter,
    stream: &'static str,
    line: Vec<u8>,
}

impl StreamLog {
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = MAX_ENTRY - self.line.len();
            let take = match bytes[..bytes.len().min(room)]
                .iter()
                .position(|&b| b == b'\n')
            {
                Some(i) => i + 1,
                None => bytes.len().min(room),
            };
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.line.last() == Some(&b'\n') || self.line.len() == MAX_ENTRY {
                self.log.write_entry(self.stream, &self.line)?;
                self.line.clear();
            }
        }
        Ok(())
    }

    /// Writes a last line without a newline, if any.
    pub fn finish(mut self) -> Result<()> {
        if !self.line.is_empty() {
            self.log.write_entry(self.stream, &self.line)?;
            self.line.clear();
        }
        Ok(())
    }
}

/// Reads complete entries from `reader`, leaving a partial last line (still being written)
/// for the next call.
pub fn read_entries(reader: &mut BufReader<File>, pending: &mut Vec<u8>) -> Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    loop {
        let n = reader
            .read_until(b'\n', pending)
            .map_err(RuntimeError::io("container.log"))?;
        if n == 0 || pending.last() != Some(&b'\n') {
            return Ok(entries);
        }
        let entry: LogEntry =
            serde_json::from_slice(pending).map_err(|e| RuntimeError::CorruptSpec {
                path: "container.log".into(),
                message: format!("line {:?}: {e}", String::from_utf8_lossy(pending)),
            })?;
        entries.push(entry);
        pending.clear();
    }
}

/// Which entries `logs` shows: Docker's `--since`, `--until`, `--tail`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The last N entries only.
    pub tail: Option<usize>,
}

impl LogFilter {
    /// Keeps the entries inside the time window, then the last `tail` of them.
    pub fn apply(&self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        let mut kept: Vec<LogEntry> = entries
            .into_iter()
            .filter(|e| {
                let t = e.timestamp();
                self.since.is_none_or(|s| t.is_some_and(|t| t >= s))
                    && self.until.is_none_or(|u| t.is_some_and(|t| t <= u))
            })
            .collect();
        if let Some(n) = self.tail {
            let skip = kept.len().saturating_sub(n);
            kept.drain(..skip);
        }
        kept
    }
}

/// How `logs` reads: the filter, and whether to keep reading while the container runs.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub filter: LogFilter,
    /// Keep passing new entries on until the container stops.
    pub follow: bool,
}

impl<H: Host> Runtime<H> {
    /// Passes the container's log entries to `emit`, oldest first, as `options` select them;
    /// with `follow`, until the container is no longer running. Stdout and stderr entries stay
    /// apart (each says its stream).
    pub fn logs(
        &self,
        query: &str,
        options: &LogOptions,
        mut emit: impl FnMut(LogEntry) -> Result<()>,
    ) -> Result<()> {
        let c = self.container(query)?;
        let path = self.store.container_dir(&c.id).join("container.log");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NoLog(c.name));
            }
            Err(e) => return Err(RuntimeError::io(&path)(e)),
        };
        let mut reader = BufReader::new(file);
        let mut pending = Vec::new();
        // The tail applies to what is there at first; followed output all comes.
        let mut filter = options.filter.clone();
        loop {
            // Checked before reading, so the last read after the container stopped sees all.
            let running = options.follow && self.host.is_running(&c.id)?;
            for entry in filter.apply(read_entries(&mut reader, &mut pending)?) {
                emit(entry)?;
            }
            filter.tail = None;
            if !running {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> Vec<LogEntry> {
        let mut reader = BufReader::new(File::open(path).unwrap());
        read_entries(&mut reader, &mut Vec::new()).unwrap()
    }

    #[test]
    fn lines_keep_their_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::create(&path).unwrap();
        let mut out = w.stream("stdout");
        out.push(b"one\ntw").unwrap();
        out.push(b"o").unwrap();
        let mut err = w.stream("stderr");
        err.push(b"err\n").unwrap();
        out.finish().unwrap();
        let entries = read_all(&path);
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            got,
            [("stdout", "one\n"), ("stderr", "err\n"), ("stdout", "two")]
        );
        assert!(entries[0].time.ends_with('Z'));

        // A half-written line is returned once it is complete.
        let mut reader = BufReader::new(File::open(&path).unwrap());
        let mut pending = Vec::new();
        read_entries(&mut reader, &mut pending).unwrap();
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(br#"{"log":"late\n","stream":"stdout","#)
            .unwrap();
        assert!(read_entries(&mut reader, &mut pending).unwrap().is_empty());
        f.write_all(b"\"time\":\"t\"}\n").unwrap();
        let late = read_entries(&mut reader, &mut pending).unwrap();
        assert_eq!(late[0].log, "late\n");
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::create(&path).unwrap();
        let long = vec![b'x'; MAX_ENTRY * 2 + 10];
        let mut out = w.stream("stdout");
        out.push(&long).unwrap();
        out.finish().unwrap();
        let entries = read_all(&path);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries.iter().map(|e| e.log.len()).sum::<usize>(),
            long.len()
        );
    }

    #[test]
    fn filters_pick_a_window_and_a_tail() {
        let entry = |t: &str, log: &str| LogEntry {
            log: log.into(),
            stream: "stdout".into(),
            time: t.into(),
        };
        let entries = vec![
            entry("2026-01-01T00:00:01Z", "a"),
            entry("2026-01-01T00:00:02Z", "b"),
            entry("2026-01-01T00:00:03Z", "c"),
            entry("2026-01-01T00:00:04Z", "d"),
        ];
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let logs = |f: LogFilter| -> String {
            f.apply(entries.clone())
                .iter()
                .map(|e| e.log.clone())
                .collect()
        };
        assert_eq!(logs(LogFilter::default()), "abcd");
        assert_eq!(
            logs(LogFilter {
                since: at("2026-01-01T00:00:02Z"),
                ..LogFilter::default()
            }),
            "bcd"
        );
        assert_eq!(
            logs(LogFilter {
                until: at("2026-01-01T00:00:02Z"),
                ..LogFilter::default()
            }),
            "ab"
        );
        assert_eq!(
            logs(LogFilter {
                since: at("2026-01-01T00:00:02Z"),
                tail: Some(1),
                ..LogFilter::default()
            }),
            "d"
        );
        assert_eq!(
            logs(LogFilter {
                tail: Some(0),
                ..LogFilter::default()
            }),
            ""
        );
    }
}
