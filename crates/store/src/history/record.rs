//! The build history's two files as they are on disk: `record.json` ([`BuildRecord`], its
//! schema versioned by [`HISTORY_SCHEMA`]) and the `log` ([`LogLine`]). What is written
//! here is read back by later releases (`testdata/history/`), so fields are only added, with
//! defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_image::Digest;
use serde::{Deserialize, Serialize};

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

/// A line of a step's output. In the `log` file it is `<step> <o|e> <text>\n` (`o` for
/// stdout, `e` for stderr): a few bytes a line, where JSON would add forty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The step's [`StepRecord::index`].
    pub step: usize,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

impl LogLine {
    /// The line as the log file holds it, newline included. A line has no newline of its own
    /// (output is split at them), so one line of text is one line of the file.
    pub(super) fn encode(step: usize, stream: &str, line: &str) -> Vec<u8> {
        let mark = if stream == "stderr" { 'e' } else { 'o' };
        let mut out = format!("{step} {mark} ").into_bytes();
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        out
    }

    /// One line of the log file; `None` for a torn line (no newline: the write was cut short by
    /// a kill) or one that is not in the format.
    pub(super) fn decode(raw: &[u8]) -> Option<LogLine> {
        let raw = raw.strip_suffix(b"\n")?;
        let text = std::str::from_utf8(raw).ok()?;
        let (step, rest) = text.split_once(' ')?;
        let (mark, line) = rest.split_once(' ').unwrap_or((rest, ""));
        let stream = match mark {
            "o" => "stdout",
            "e" => "stderr",
            _ => return None,
        };
        Some(LogLine {
            step: step.parse().ok()?,
            stream: stream.to_owned(),
            line: line.to_owned(),
        })
    }
}
