//! Build history (`docs/build-history.md`): every `kiln build` is recorded in the store while
//! it runs, and `kiln build history ls|inspect|logs|rm|prune` reads it back.
//!
//! The recording is a [`Renderer`] in front of the build's own: it sees the same events, turns
//! them into the store's record (`kiln_store::HistoryWriter`: steps with their cache result and
//! explain reason, timings) and appends each output line to the build's log as it arrives, so
//! the full output is on disk whatever the progress view showed. Recording never fails a build:
//! when the store cannot take the record, the build goes on with a warning.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use kiln_solve::{OutputStream, ProgressEvent, SolveError, StepLabel};
use kiln_store::{
    BuildFailure, BuildInputs, BuildRecord, BuildStatus, HistoryRetention, HistoryWriter,
    StepRecord, StepStatus, Store,
};

use super::system::{human_size, parse_duration};
use crate::cli::HistoryCommand;
use crate::progress::{Outcome, Renderer};

/// Retention settings from the environment (`KILN_HISTORY_MAX_BUILDS`,
/// `KILN_HISTORY_MAX_AGE`), else the defaults.
pub fn retention() -> Result<HistoryRetention> {
    let mut r = HistoryRetention::default();
    if let Some(n) = std::env::var_os("KILN_HISTORY_MAX_BUILDS") {
        let n = n.to_string_lossy();
        r.max_builds = n
            .parse()
            .with_context(|| format!("KILN_HISTORY_MAX_BUILDS={n:?} is not a number"))?;
    }
    if let Some(age) = std::env::var_os("KILN_HISTORY_MAX_AGE") {
        r.max_age = parse_duration(&age.to_string_lossy()).context("KILN_HISTORY_MAX_AGE")?;
    }
    Ok(r)
}

/// Records one build from its progress events, then hands them on to `inner`.
pub struct Recorder {
    inner: Arc<dyn Renderer>,
    store: Store,
    retention: HistoryRetention,
    writer: Mutex<Option<HistoryWriter>>,
    /// Step index by (stage, position).
    steps: Mutex<HashMap<(String, usize), usize>>,
}

impl Recorder {
    /// Starts the record; on failure the build is not recorded (a warning says so).
    pub fn begin(
        store: &Store,
        inputs: BuildInputs,
        retention: HistoryRetention,
        inner: Arc<dyn Renderer>,
    ) -> Arc<Recorder> {
        // `KILN_NO_BUILD_HISTORY=1`: not recorded (to measure what recording costs, or for
        // builds whose output must not be kept).
        let off = std::env::var_os("KILN_NO_BUILD_HISTORY").is_some_and(|v| !v.is_empty());
        let writer = match (!off).then(|| store.history_begin(inputs)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                inner.event(ProgressEvent::Warning(format!(
                    "this build is not recorded in the build history: {e}"
                )));
                None
            }
        };
        Arc::new(Recorder {
            inner,
            store: store.clone(),
            retention,
            writer: Mutex::new(writer),
            steps: Mutex::new(HashMap::new()),
        })
    }

    /// Updates the step `label` names (adding it when new); `checkpoint` writes the record.
    fn step(&self, label: &StepLabel, checkpoint: bool, change: impl FnOnce(&mut StepRecord)) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(writer) = writer.as_ref() else {
            return;
        };
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let key = (label.stage.clone(), label.position);
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
        });
    }

    fn record(&self, event: &ProgressEvent) {
        match event {
            // Written at once when a step starts running, so a build killed during a long step
            // shows it; not for FROM, which every build starts (a no-op build then writes its
            // record twice: when it starts and when it ends).
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
            ProgressEvent::StepExplained { step, cause } => self.step(step, false, |s| {
                s.miss_cause = Some(cause.kind().to_owned());
                s.miss_reason = Some(cause.reason());
            }),
            ProgressEvent::StepOutput { step, stream, line } => {
                let mut index = 0;
                self.step(step, false, |s| {
                    s.output_lines += 1;
                    index = s.index;
                });
                let stream = match stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                };
                let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = writer.as_ref() {
                    let _ = w.log_line(index, stream, line);
                }
            }
            ProgressEvent::StepMetadata(label) => {
                self.step(label, false, |s| s.status = StepStatus::Metadata);
            }
            ProgressEvent::StepDone { step, elapsed } => self.step(step, false, |s| {
                s.status = StepStatus::Done;
                s.duration_ms = Some(elapsed.as_millis() as u64);
            }),
            ProgressEvent::StepCached(label) => {
                self.step(label, false, |s| s.status = StepStatus::Cached);
            }
            ProgressEvent::StepCachedRemote { step, source } => self.step(step, false, |s| {
                s.status = StepStatus::Cached;
                s.cache_source = Some(source.clone());
            }),
            _ => {}
        }
    }

    /// Ends the record: the image built, or the error (with its Dockerfile location); then the
    /// retention rules drop what is now too old or too many.
    pub fn finish(
        &self,
        status: BuildStatus,
        image: Option<String>,
        error: Option<&anyhow::Error>,
    ) {
        let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let failure = error.map(|err| {
            let location = err
                .chain()
                .find_map(|e| e.downcast_ref::<SolveError>())
                .and_then(SolveError::location);
            BuildFailure {
                message: format!("{err:#}"),
                file: location.map(|l| l.file.clone()),
                line: location.map(|l| l.line),
            }
        });
        if let Err(e) = writer.finish(status, image, failure) {
            self.inner.event(ProgressEvent::Warning(format!(
                "the build history record could not be completed: {e}"
            )));
        }
        if let Err(e) = self.store.history_prune(self.retention, Utc::now()) {
            self.inner.event(ProgressEvent::Warning(format!(
                "the build history's retention could not be applied: {e}"
            )));
        }
    }
}

impl Renderer for Recorder {
    fn event(&self, event: ProgressEvent) {
        self.record(&event);
        self.inner.event(event);
    }

    fn finish(&self, outcome: Outcome<'_>) {
        self.inner.finish(outcome);
    }

    fn hold(&self, held: bool) {
        self.inner.hold(held);
    }
}

/// `kiln build history …`.
pub fn run(store: &Store, command: HistoryCommand) -> Result<ExitCode> {
    match command {
        HistoryCommand::Ls { quiet, json } => ls(store, quiet, json),
        HistoryCommand::Inspect { build, json } => {
            let record = store.history_load(&find(store, &build)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print!("{}", inspect_text(&record));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Logs { build, step } => logs(store, &build, step),
        HistoryCommand::Rm { all, builds } => rm(store, all, &builds),
        HistoryCommand::Prune { keep, max_age } => {
            let mut r = retention()?;
            if let Some(keep) = keep {
                r.max_builds = keep;
            }
            if let Some(age) = max_age {
                r.max_age = parse_duration(&age)?;
            }
            let (removed, bytes) = store.history_prune(r, Utc::now())?;
            for id in &removed {
                println!("removed {id}");
            }
            println!(
                "Total reclaimed space: {} ({} builds)",
                human_size(bytes),
                removed.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn find(store: &Store, query: &str) -> Result<String> {
    match store.history_find(query)? {
        Some(id) => Ok(id),
        None => bail!("no build {query:?} in the build history (kiln build history ls lists them)"),
    }
}

fn ls(store: &Store, quiet: bool, json: bool) -> Result<ExitCode> {
    let records = store.history_list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    if quiet {
        for r in &records {
            println!("{}", r.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  TAGS / DOCKERFILE",
        "BUILD ID", "STATUS", "STARTED", "DURATION", "STEPS", "CACHED"
    );
    for r in &records {
        let cached = r
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Cached)
            .count();
        let steps = r
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Metadata)
            .count();
        let what = if r.inputs.tags.is_empty() {
            r.inputs.dockerfile.display().to_string()
        } else {
            r.inputs.tags.join(", ")
        };
        println!(
            "{:<24}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  {what}",
            r.id,
            r.status.to_string(),
            r.started.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.duration()
                .map(crate::progress::format_duration)
                .unwrap_or_else(|| "-".into()),
            steps,
            cached,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `inspect` for people: the inputs, the result, then one line per step.
fn inspect_text(r: &BuildRecord) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    line("Build:", r.id.clone());
    line("Status:", r.status.to_string());
    line("Started:", r.started.to_rfc3339());
    if let Some(d) = r.duration() {
        line("Duration:", crate::progress::format_duration(d));
    }
    line("Context:", r.inputs.context.clone());
    line("Dockerfile:", r.inputs.dockerfile.display().to_string());
    if let Some(d) = &r.inputs.dockerfile_digest {
        line("Dockerfile digest:", d.to_string());
    }
    if let Some(t) = &r.inputs.target {
        line("Target:", t.clone());
    }
    line("Platform:", r.inputs.platform.clone());
    for (k, v) in &r.inputs.build_args {
        line("Build arg:", format!("{k}={v}"));
    }
    for t in &r.inputs.tags {
        line("Tag:", t.clone());
    }
    if let Some(image) = &r.image {
        line("Image:", image.clone());
    }
    if let Some(e) = &r.error {
        if let (Some(file), Some(l)) = (&e.file, e.line) {
            line("Error at:", format!("{}:{l}", file.display()));
        }
        line("Error:", e.message.clone());
    }
    out.push_str("\nSTEP  STATUS     DURATION  LINES  INSTRUCTION\n");
    for s in &r.steps {
        let duration = s
            .duration_ms
            .map(|ms| crate::progress::format_duration(Duration::from_millis(ms)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>4}  {:<9}  {:>8}  {:>5}  [{} {}/{}] {}\n",
            s.index,
            s.status.to_string(),
            duration,
            s.output_lines,
            s.stage,
            s.position,
            s.total,
            s.text
        ));
        if let Some(source) = &s.cache_source {
            out.push_str(&format!("      cached from {source}\n"));
        }
        if let (Some(cause), Some(reason)) = (&s.miss_cause, &s.miss_reason) {
            out.push_str(&format!("      cache miss ({cause}): {reason}\n"));
        }
    }
    out
}

fn logs(store: &Store, build: &str, step: Option<usize>) -> Result<ExitCode> {
    use std::io::Write;
    let id = find(store, build)?;
    if let Some(n) = step {
        let record = store.history_load(&id)?;
        if !record.steps.iter().any(|s| s.index == n) {
            bail!(
                "build {id} has no step {n} (it has {}; kiln build history inspect {id} lists them)",
                record.steps.len()
            );
        }
    }
    // Streamed straight to stdout: a log is never held in memory, whatever its size.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    store.history_logs(&id, step, &mut |l| {
        if step.is_some() {
            writeln!(out, "{}", l.line)
        } else {
            writeln!(out, "#{} {}", l.step, l.line)
        }
    })?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn rm(store: &Store, all: bool, builds: &[String]) -> Result<ExitCode> {
    let ids = if all {
        store
            .history_list()?
            .into_iter()
            .filter(|r| r.status != BuildStatus::Running)
            .map(|r| r.id)
            .collect()
    } else if builds.is_empty() {
        bail!("kiln build history rm needs build IDs, or --all");
    } else {
        builds.to_vec()
    };
    let mut failed = false;
    for query in &ids {
        let removed = find(store, query).and_then(|id| {
            store
                .history_remove(&id)
                .with_context(|| format!("removing build {id}"))?;
            Ok(id)
        });
        match removed {
            Ok(id) => println!("{id}"),
            Err(e) => {
                crate::render::print_error(&e);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What the record says the build was asked to do.
pub fn inputs(
    req: &kiln_solve::BuildRequest,
    dockerfile: &std::path::Path,
    context: &std::path::Path,
) -> BuildInputs {
    BuildInputs {
        dockerfile: dockerfile.to_owned(),
        // Read again (it is small): the digest of the bytes this build parsed.
        dockerfile_digest: std::fs::read(dockerfile)
            .ok()
            .map(|b| kiln_image::Digest::of(&b)),
        context: if context.as_os_str() == "-" {
            "-".to_owned()
        } else {
            req.context_dir.display().to_string()
        },
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        platform: req.platform.to_string(),
        tags: req.tags.iter().map(ToString::to_string).collect(),
    }
}

/// The history's row of `kiln system df`: builds, running ones (active), bytes, and what
/// `kiln prune --all` frees (every finished build).
pub fn usage_row(store: &Store) -> Result<kiln_store::UsageRow> {
    let mut row = kiln_store::UsageRow {
        total: 0,
        active: 0,
        bytes: 0,
        reclaimable: 0,
    };
    for record in store.history_list()? {
        let size = store.history_size(&record.id);
        row.total += 1;
        row.bytes += size;
        if record.status == BuildStatus::Running {
            row.active += 1;
        } else {
            row.reclaimable += size;
        }
    }
    Ok(row)
}

/// `kiln prune`'s part of the history: the retention rules, or with `all` every finished
/// build. Returns the builds removed and their bytes.
pub fn prune(store: &Store, all: bool) -> Result<(usize, u64)> {
    let mut r = retention()?;
    if all {
        r.max_builds = 0;
        r.max_age = Duration::ZERO;
    }
    let (removed, bytes) = store.history_prune(r, Utc::now())?;
    Ok((removed.len(), bytes))
}
