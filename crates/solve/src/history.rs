//! Recording a build in the store's build history (`docs/build-history.md`) from its progress
//! events, for every front end alike (`kiln build`, `kiln serve`'s `POST /build`).
//!
//! The key decision: the history is fed the same [`ProgressEvent`]s the front end renders,
//! not a second channel out of the engine, so what is recorded is exactly what was shown, and
//! the engine stays unaware of it. Each output line goes to the store's log as it arrives (the
//! store appends it at once; nothing is held), step records are updated in memory and written
//! when a step starts running and when the build ends. Recording never fails a build: what
//! goes wrong is returned as a warning for the front end to show.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use kiln_store::{
    BuildFailure, BuildInputs, BuildStatus, HistoryRetention, HistoryWriter, StepRecord,
    StepStatus, Store,
};

use crate::build::{BuildRequest, BuildResult};
use crate::error::SolveError;
use crate::progress::{OutputStream, ProgressEvent, StepLabel};

/// One build being recorded. Dropped without [`BuildHistory::finish`], it records the build
/// as cancelled; a process that dies leaves it `running` with no holder: read as interrupted.
#[derive(Debug)]
pub struct BuildHistory {
    store: Store,
    retention: HistoryRetention,
    writer: Mutex<Option<HistoryWriter>>,
    /// Step index by (stage, position).
    steps: Mutex<HashMap<(String, usize), usize>>,
}

/// What the request says it builds, as the record keeps it. `context` names the context as
/// the user gave it (a directory, `-` for a tar on stdin, an upload through the API).
pub fn inputs(req: &BuildRequest, context: &str) -> BuildInputs {
    let dockerfile = req
        .dockerfile
        .clone()
        .unwrap_or_else(|| req.context_dir.join("Dockerfile"));
    BuildInputs {
        // Read again (it is small): the digest of the bytes this build parses.
        dockerfile_digest: std::fs::read(&dockerfile)
            .ok()
            .map(|b| kiln_image::Digest::of(&b)),
        dockerfile,
        context: context.to_owned(),
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        // One platform, or a build for several as `--platform` lists them.
        platform: req
            .platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        tags: req.tags.iter().map(ToString::to_string).collect(),
    }
}

impl BuildHistory {
    /// Starts the record of a build of `inputs`; `retention` is applied when it ends.
    pub fn begin(
        store: &Store,
        inputs: BuildInputs,
        retention: HistoryRetention,
    ) -> Result<BuildHistory, kiln_store::StoreError> {
        let writer = store.history_begin(inputs)?;
        Ok(BuildHistory {
            store: store.clone(),
            retention,
            writer: Mutex::new(Some(writer)),
            steps: Mutex::new(HashMap::new()),
        })
    }

    /// The build's id in the history.
    pub fn id(&self) -> Option<String> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.as_ref().map(HistoryWriter::id)
    }

    /// Updates the step `label` names (adding it when new); `checkpoint` writes the record.
    /// Returns the step's index.
    fn step(
        &self,
        label: &StepLabel,
        checkpoint: bool,
        change: impl FnOnce(&mut StepRecord),
    ) -> Option<usize> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let writer = writer.as_ref()?;
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let key = (label.stage.clone(), label.position);
        let mut at = None;
        let _ = writer.update(checkpoint, |record| {
            let index = *steps.entry(key).or_insert_with(|| {
                record.steps.push(StepRecord {
                    index: record.steps.len() + 1,
                    stage: label.stage.clone(),
                    position: label.position,
                    total: label.total,
                    text: label.text.clone(),
                    status: StepStatus::Running,
                    started: None,
                    duration_ms: None,
                    cache_source: None,
                    miss_cause: None,
                    miss_reason: None,
                    output_lines: 0,
                });
                record.steps.len()
            });
            change(&mut record.steps[index - 1]);
            at = Some(index);
        });
        at
    }

    /// Records one progress event.
    pub fn event(&self, event: &ProgressEvent) {
        match event {
            // Written at once when a step starts running, so a build killed during a long step
            // shows it; not for FROM, which every build starts (a no-op build then writes its
            // record twice: when it starts and when it ends; docs/benchmarks.md).
            ProgressEvent::StepStarted(label) => {
                let from = label
                    .text
                    .get(..4)
                    .is_some_and(|k| k.eq_ignore_ascii_case("FROM"));
                self.step(label, !from, |s| {
                    s.status = StepStatus::Running;
                    s.started = Some(Utc::now());
                });
            }
            ProgressEvent::StepExplained { step, cause } => {
                self.step(step, false, |s| {
                    s.miss_cause = Some(cause.kind().to_owned());
                    s.miss_reason = Some(cause.reason());
                });
            }
            ProgressEvent::StepOutput { step, stream, line } => {
                let Some(index) = self.step(step, false, |s| s.output_lines += 1) else {
                    return;
                };
                let stream = match stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                };
                let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = writer.as_ref() {
                    // A full disk loses lines, not the build.
                    let _ = w.log_line(index, stream, line);
                }
            }
            ProgressEvent::StepMetadata(label) => {
                self.step(label, false, |s| s.status = StepStatus::Metadata);
            }
            ProgressEvent::StepDone { step, elapsed } => {
                self.step(step, false, |s| {
                    s.status = StepStatus::Done;
                    s.duration_ms = Some(elapsed.as_millis() as u64);
                });
            }
            ProgressEvent::StepCached(label) => {
                self.step(label, false, |s| s.status = StepStatus::Cached);
            }
            ProgressEvent::StepCachedRemote { step, source } => {
                self.step(step, false, |s| {
                    s.status = StepStatus::Cached;
                    s.cache_source = Some(source.clone());
                });
            }
            _ => {}
        }
    }

    /// Ends the record with the build's outcome (the image, or the error with its Dockerfile
    /// location and causes), then applies the retention rules. Returns what went wrong, for
    /// the front end to show as warnings.
    pub fn finish(&self, outcome: Result<&BuildResult, &SolveError>) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return warnings;
        };
        let (status, image, failure) = match outcome {
            Ok(result) => (
                BuildStatus::Succeeded,
                Some(result.image.config_digest.to_string()),
                None,
            ),
            Err(err) => {
                let status = if matches!(err, SolveError::Cancelled) {
                    BuildStatus::Cancelled
                } else {
                    BuildStatus::Failed
                };
                (status, None, Some(failure(err)))
            }
        };
        if let Err(e) = writer.finish(status, image, failure) {
            warnings.push(format!(
                "the build history record could not be completed: {e}"
            ));
        }
        if let Err(e) = self.store.history_prune(self.retention, Utc::now()) {
            warnings.push(format!(
                "the build history's retention could not be applied: {e}"
            ));
        }
        warnings
    }
}

/// A build dropped before it finished was abandoned in this process (an API client that went
/// away cancels its build by dropping it): recorded as cancelled. Only a build whose process
/// died reads as interrupted.
impl Drop for BuildHistory {
    fn drop(&mut self) {
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.finish(
                BuildStatus::Cancelled,
                None,
                Some(BuildFailure {
                    message: "the build was abandoned before it ended (its client went away)"
                        .to_owned(),
                    file: None,
                    line: None,
                }),
            );
        }
    }
}

/// The error as the record keeps it: its message with every cause, and where.
fn failure(err: &SolveError) -> BuildFailure {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        // Many messages already end with their cause (`{step}: {source}`).
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    let location = err.location();
    BuildFailure {
        message,
        file: location.map(|l| l.file.clone()),
        line: location.map(|l| l.line),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::path::Path;

    use kiln_store::StepStatus;

    use super::*;
    use crate::explain::MissCause;

    fn label(stage: &str, position: usize, text: &str) -> StepLabel {
        StepLabel {
            stage: stage.into(),
            position,
            total: 3,
            text: text.into(),
        }
    }

    #[test]
    fn events_become_steps_and_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let inputs = BuildInputs::default();
        let h = BuildHistory::begin(&store, inputs, HistoryRetention::default()).unwrap();
        let id = h.id().unwrap();
        let (from, run, env) = (
            label("app", 1, "FROM busybox"),
            label("app", 2, "RUN make"),
            label("app", 3, "ENV A=1"),
        );
        let other = label("base", 2, "COPY . /");
        for event in [
            ProgressEvent::StepStarted(from.clone()),
            ProgressEvent::StepDone {
                step: from,
                elapsed: Duration::from_millis(1),
            },
            ProgressEvent::StepCachedRemote {
                step: other,
                source: "reg/cache".into(),
            },
            ProgressEvent::StepStarted(run.clone()),
            ProgressEvent::StepExplained {
                step: run.clone(),
                cause: MissCause::Changed(vec!["build-arg V 1 → 2".into()]),
            },
            ProgressEvent::StepOutput {
                step: run.clone(),
                stream: OutputStream::Stderr,
                line: "warning: x".into(),
            },
            ProgressEvent::StepMetadata(env),
        ] {
            h.event(&event);
        }
        // Running when the build is dropped: the build was abandoned.
        drop(h);
        let r = store.history_load(&id).unwrap();
        assert_eq!(r.status, BuildStatus::Cancelled);
        let steps: Vec<(&str, StepStatus)> = r
            .steps
            .iter()
            .map(|s| (s.text.as_str(), s.status))
            .collect();
        assert_eq!(
            steps,
            [
                ("FROM busybox", StepStatus::Done),
                ("COPY . /", StepStatus::Cached),
                ("RUN make", StepStatus::Cancelled),
                ("ENV A=1", StepStatus::Metadata),
            ]
        );
        assert_eq!(r.steps[1].cache_source.as_deref(), Some("reg/cache"));
        assert_eq!(r.steps[2].miss_cause.as_deref(), Some("inputs-changed"));
        assert_eq!(r.steps[2].miss_reason.as_deref(), Some("build-arg V 1 → 2"));
        assert_eq!(r.steps[2].output_lines, 1);
        let mut lines = Vec::new();
        store
            .history_logs(&id, Some(3), &mut |l| {
                lines.push(format!("{} {}", l.stream, l.line));
                Ok(())
            })
            .unwrap();
        assert_eq!(lines, ["stderr warning: x"]);
    }

    #[test]
    fn a_failure_keeps_its_causes_once() {
        let err = SolveError::Step {
            step: "[app 2/3] RUN make".into(),
            location: crate::build::location_in(Path::new("/ctx/Dockerfile"), "A\nB\n", 2, 1, 1),
            source: Box::new(SolveError::Cancelled),
        };
        let f = failure(&err);
        assert_eq!(f.line, Some(2));
        assert_eq!(f.file.as_deref(), Some(Path::new("/ctx/Dockerfile")));
        let cause = SolveError::Cancelled.to_string();
        assert_eq!(f.message.matches(&cause).count(), 1, "{}", f.message);
    }
}
