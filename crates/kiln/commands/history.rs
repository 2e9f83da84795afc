//! Build history (`docs/build-history.md`): every `kiln build` is recorded in the store while
//! it runs (`super::recording`), and `kiln build history ls|inspect|logs|rm|prune` reads it
//! back.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use kiln_store::{BuildRecord, BuildStatus, StepStatus, Store};

use super::flags::parse_duration;
use super::recording::retention;
use crate::cli::HistoryCommand;
use crate::render::format_size;

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
                format_size(bytes),
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
