//! Turning engine events and errors into text for people.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use kiln_dockerfile::checks::Warning;
use kiln_solve::{Location, OutputStream, ProgressEvent, SolveError};

/// Prints build progress as plain lines on stderr (CI-friendly).
#[derive(Debug)]
pub struct ProgressPrinter {
    quiet: bool,
    /// Print why each missed step missed (`--explain`).
    explain: bool,
    lock: Mutex<()>,
}

impl ProgressPrinter {
    pub fn new(quiet: bool) -> Self {
        ProgressPrinter {
            quiet,
            explain: false,
            lock: Mutex::new(()),
        }
    }

    pub fn with_explain(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    pub fn event(&self, e: ProgressEvent) {
        let Some(line) = self.line(e) else {
            return;
        };
        let _guard = self.lock.lock();
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// A pull of the image service, printed as the engine's pull events are.
    pub fn image_event(&self, e: kiln_images::ImageEvent) {
        self.event(e.into());
    }

    /// The text an event prints as, if any.
    fn line(&self, e: ProgressEvent) -> Option<String> {
        Some(match e {
            ProgressEvent::Warning(w) => format!("WARNING: {w}"),
            _ if self.quiet => return None,
            ProgressEvent::StepExplained { step, cause } if self.explain => format!(
                "[{} {}/{}] MISS {}: {}",
                step.stage,
                step.position,
                step.total,
                step.text,
                cause.reason()
            ),
            ProgressEvent::StepExplained { .. } => return None,
            ProgressEvent::StepStarted(s) => s.to_string(),
            ProgressEvent::StepOutput { step, stream, line } => {
                // stderr marked apart, so a CI log shows which stream said what.
                let mark = match stream {
                    OutputStream::Stdout => '|',
                    OutputStream::Stderr => '!',
                };
                format!(
                    "[{} {}/{}] {mark} {line}",
                    step.stage, step.position, step.total
                )
            }
            // Metadata changes only the config: nothing ran, so a plain log shows nothing.
            ProgressEvent::StepMetadata(_) => return None,
            ProgressEvent::StepDone { step, elapsed } => {
                format!(
                    "[{} {}/{}] DONE {:.1}s",
                    step.stage,
                    step.position,
                    step.total,
                    elapsed.as_secs_f64()
                )
            }
            ProgressEvent::StepCached(s) => {
                format!("{s}\n[{} {}/{}] CACHED", s.stage, s.position, s.total)
            }
            ProgressEvent::StepCachedRemote { step: s, source } => format!(
                "{s}\n[{} {}/{}] CACHED (from {source})",
                s.stage, s.position, s.total
            ),
            ProgressEvent::CacheImported { source, records } => {
                format!("importing cache {source}: {records} records")
            }
            ProgressEvent::CacheExported {
                destination,
                records,
                layers,
                sent,
            } => format!(
                "exporting cache {destination}: {records} records, {layers} layers ({sent} sent) done"
            ),
            ProgressEvent::LayerShared { step, from } => format!(
                "[{} {}/{}] same layer as [{} {}/{}]",
                step.stage, step.position, step.total, from.stage, from.position, from.total
            ),
            ProgressEvent::SourcesHashed {
                step,
                from_context,
                stats,
            } => format!(
                "[{} {}/{}] {}: {} files, {} hashed ({} bytes read)",
                step.stage,
                step.position,
                step.total,
                if from_context { "context" } else { "sources" },
                stats.files,
                stats.files_read,
                stats.bytes_read
            ),
            ProgressEvent::Pulling { reference } => format!("pulling {reference}"),
            ProgressEvent::BlobFetched { digest, cached } => {
                format!(
                    "  {} {}",
                    digest.short(),
                    if cached {
                        "already present"
                    } else {
                        "downloaded"
                    }
                )
            }
            ProgressEvent::ImageWritten { manifest, config } => {
                format!("writing image {config} (manifest {manifest}) done")
            }
            ProgressEvent::Tagged(name) => format!("naming to {name} done"),
        })
    }
}

/// Prints an error; Dockerfile errors get a compiler-style snippet pointing at the line.
pub fn print_error(err: &anyhow::Error) {
    let mut out = String::new();
    let solve = err.chain().find_map(|e| e.downcast_ref::<SolveError>());
    out.push_str(&format!("error: {err}\n"));
    for cause in err.chain().skip(1) {
        out.push_str(&format!("  caused by: {cause}\n"));
    }
    if let Some(e) = solve {
        if let Some(loc) = e.location() {
            out.push_str(&snippet(loc));
        }
        if let SolveError::RunFailed { output_tail, .. } = e
            && !output_tail.is_empty()
        {
            out.push_str("last output:\n");
            for l in output_tail {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// The `--> file:line:col` header, the line and a caret under the highlighted part.
fn snippet(loc: &Location) -> String {
    let num = loc.line.to_string();
    let pad = " ".repeat(num.len());
    format!(
        "{pad}--> {}:{}:{}\n{pad} |\n{num} | {}\n{pad} | {}{}\n",
        loc.file.display(),
        loc.line,
        loc.col,
        loc.line_text,
        " ".repeat(loc.col.saturating_sub(1)),
        "^".repeat(loc.len.max(1))
    )
}

/// Renders a build-check warning like an error: rule, message, the line with a caret under
/// the instruction keyword, and the rule's documentation link.
pub fn warning_text(file: &Path, source: &str, warning: &Warning) -> String {
    let line_text = source
        .trim_start_matches('\u{feff}')
        .lines()
        .nth(warning.span.start_line.saturating_sub(1))
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_owned();
    let keyword_len = line_text
        .chars()
        .skip(warning.span.col.saturating_sub(1))
        .take_while(|c| !c.is_whitespace())
        .count();
    let loc = Location {
        file: file.to_owned(),
        line: warning.span.start_line,
        col: warning.span.col.max(1),
        len: keyword_len.max(1),
        line_text,
    };
    let pad = " ".repeat(loc.line.to_string().len());
    format!(
        "WARNING: {}: {}\n{}{pad} = see {}\n",
        warning.rule,
        warning.message,
        snippet(&loc),
        warning.url()
    )
}

/// Runs `each` for every item as docker's commands over several objects do (`rm`, `rmi`,
/// `volume rm`): a failure is printed and the rest still go. True when every one succeeded.
pub fn each_reporting<T>(items: &[T], mut each: impl FnMut(&T) -> anyhow::Result<()>) -> bool {
    let mut ok = true;
    for item in items {
        if let Err(e) = each(item) {
            eprintln!("Error: {e:#}");
            ok = false;
        }
    }
    ok
}

/// The header row of `kiln ps` (docker's columns), the same in-process and with `--host`.
pub fn ps_header() -> [String; 7] {
    [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    .map(str::to_owned)
}

/// A table as `docker images` and `docker ps` print them: columns padded to their widest
/// cell, three spaces apart, no trailing blanks.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}   "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `s` cut to `max` characters, the last one an ellipsis when anything was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// Sizes as Docker prints them (`docker images`, `system df`, `prune`): decimal units, at
/// most three decimals.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + UNITS[unit]
    }
}

/// "5 minutes ago", as Docker says it.
pub fn time_ago(now: chrono::DateTime<chrono::Utc>, then: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 730 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_explain_lines_only_with_explain() {
        let step = kiln_solve::StepLabel {
            stage: "app".into(),
            position: 3,
            total: 4,
            text: "COPY src/ /app".into(),
        };
        let event = || ProgressEvent::StepExplained {
            step: step.clone(),
            cause: kiln_solve::MissCause::Changed(vec!["1 file changed: src/main.rs".into()]),
        };
        assert_eq!(ProgressPrinter::new(false).line(event()), None);
        assert_eq!(
            ProgressPrinter::new(false).with_explain(true).line(event()),
            Some("[app 3/4] MISS COPY src/ /app: 1 file changed: src/main.rs".into())
        );
        assert_eq!(
            ProgressPrinter::new(true).with_explain(true).line(event()),
            None
        );
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            ["aaaa".to_owned(), "b".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "A      BB   C\naaaa   b\n");
        assert_eq!(
            truncate("abcdefghijklmnopqrstuvwxyz", 20).chars().count(),
            20
        );
        assert_eq!(truncate("short", 20), "short");
    }

    #[test]
    fn sizes() {
        assert_eq!(format_size(999), "999B");
        assert_eq!(format_size(1_234_567), "1.235MB");
        assert_eq!(format_size(2_000_000), "2MB");
    }

    #[test]
    fn ages() {
        let now = chrono::Utc::now();
        assert_eq!(time_ago(now, now), "Less than a minute ago");
        assert_eq!(
            time_ago(now, now - chrono::Duration::minutes(5)),
            "5 minutes ago"
        );
        assert_eq!(
            time_ago(now, now - chrono::Duration::hours(1)),
            "An hour ago"
        );
        assert_eq!(time_ago(now, now - chrono::Duration::days(3)), "3 days ago");
    }

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(999), "999B");
        assert_eq!(format_size(1_500), "1.5kB");
        assert_eq!(format_size(12_345_678), "12.346MB");
        assert_eq!(format_size(2_000_000_000), "2GB");
    }

    #[test]
    fn sizes_are_in_decimal_units() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1_200_000), "1.2MB");
        assert_eq!(format_size(999), "999B");
    }
}
