//! A detached container's output log: one JSON object per line, as Docker's `json-file`
//! driver writes it (`{"log":"text\n","stream":"stdout","time":"2026-…Z"}`), so the stream
//! and the time of every line survive.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Lines longer than this are split, as Docker splits at 16 KiB, so a process that never
/// prints a newline cannot grow one entry without bound.
const MAX_ENTRY: usize = 16 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Appends entries to the log; shared by the threads copying stdout and stderr.
#[derive(Debug, Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    pub fn create(path: &Path) -> Result<LogWriter> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the log {}", path.display()))?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Copies `input` into the log until its end, one entry per line.
    pub fn copy(&self, stream: &str, input: impl Read) -> Result<()> {
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_ENTRY as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            self.write_entry(stream, &line)?;
        }
    }

    fn write_entry(&self, stream: &str, bytes: &[u8]) -> Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.to_owned(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        let mut json = serde_json::to_vec(&entry)?;
        json.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&json)?;
        Ok(())
    }
}

/// A reader that also writes everything it reads to `echo` (a foreground container's output
/// goes to the caller as it comes and into the log).
#[derive(Debug)]
pub struct Tee<R, W> {
    pub input: R,
    pub echo: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        // The caller going away (a closed pipe) must not stop the logging.
        let _ = self
            .echo
            .write_all(&buf[..n])
            .and_then(|()| self.echo.flush());
        Ok(n)
    }
}

/// A pty master read until the slave side is gone, which Linux reports as EIO, not EOF.
#[derive(Debug)]
pub struct PtyReader(pub File);

impl Read for PtyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => Ok(0),
            other => other,
        }
    }
}

/// Reads complete entries from `reader`, leaving a partial last line (still being written)
/// for the next call.
pub fn read_entries(reader: &mut BufReader<File>, pending: &mut Vec<u8>) -> Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    loop {
        let n = reader.read_until(b'\n', pending)?;
        if n == 0 || pending.last() != Some(&b'\n') {
            return Ok(entries);
        }
        let entry: LogEntry = serde_json::from_slice(pending)
            .with_context(|| format!("corrupt log line {}", String::from_utf8_lossy(pending)))?;
        entries.push(entry);
        pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::create(&path).unwrap();
        w.copy("stdout", &b"one\ntwo"[..]).unwrap();
        w.copy("stderr", &b"err\n"[..]).unwrap();
        let mut reader = BufReader::new(File::open(&path).unwrap());
        let mut pending = Vec::new();
        let entries = read_entries(&mut reader, &mut pending).unwrap();
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            got,
            [("stdout", "one\n"), ("stdout", "two"), ("stderr", "err\n")]
        );
        assert!(entries[0].time.ends_with('Z'));

        // A half-written line is returned once it is complete.
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(br#"{"log":"late\n","stream":"stdout","#)
            .unwrap();
        assert!(read_entries(&mut reader, &mut pending).unwrap().is_empty());
        f.write_all(b"\"time\":\"t\"}\n").unwrap();
        let late = read_entries(&mut reader, &mut pending).unwrap();
        assert_eq!(late[0].log, "late\n");
    }

    #[test]
    fn tee_echoes_what_it_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::create(&path).unwrap();
        let mut echoed = Vec::new();
        w.copy(
            "stdout",
            Tee {
                input: &b"a\nb\n"[..],
                echo: &mut echoed,
            },
        )
        .unwrap();
        assert_eq!(echoed, b"a\nb\n");
        let mut reader = BufReader::new(File::open(&path).unwrap());
        assert_eq!(read_entries(&mut reader, &mut Vec::new()).unwrap().len(), 2);
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::create(&path).unwrap();
        let long = vec![b'x'; MAX_ENTRY * 2 + 10];
        w.copy("stdout", &long[..]).unwrap();
        let mut reader = BufReader::new(File::open(&path).unwrap());
        let entries = read_entries(&mut reader, &mut Vec::new()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries.iter().map(|e| e.log.len()).sum::<usize>(),
            long.len()
        );
    }
}
