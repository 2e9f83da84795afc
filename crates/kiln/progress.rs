//! Build progress for people and tools: `--progress=auto|tty|plain|rawjson|quiet`.
//!
//! The engine reports typed [`ProgressEvent`]s; a [`Renderer`] turns them into text on stderr:
//! plain lines for CI ([`crate::render::ProgressPrinter`]), a live view redrawn in place on a
//! terminal ([`tty`]), or one JSON object per line for tools ([`json`], schema in
//! `docs/progress.md`). `auto` picks the live view when stderr is a terminal.

pub mod json;
pub mod tty;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use kiln_solve::ProgressEvent;

use crate::render::ProgressPrinter;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    RawJson,
    /// Warnings only.
    Quiet,
}

impl Mode {
    /// The mode `--progress` names; `auto` is decided by whether stderr is a terminal.
    pub fn parse(flag: &str, stderr_is_terminal: bool) -> Result<Mode> {
        Ok(match flag {
            "auto" if stderr_is_terminal => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            "tty" => Mode::Tty,
            "rawjson" => Mode::RawJson,
            "quiet" => Mode::Quiet,
            other => bail!("unsupported --progress {other:?} (auto, tty, plain, rawjson or quiet)"),
        })
    }

    pub fn from_flag(flag: &str) -> Result<Mode> {
        Mode::parse(flag, std::io::stderr().is_terminal())
    }
}

/// How a build ended, for the renderer's last words.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The image ID.
    Built(&'a str),
    Failed(&'a anyhow::Error),
}

/// Shows build progress. `Sync` because the engine reports from worker threads.
pub trait Renderer: Send + Sync {
    fn event(&self, event: ProgressEvent);
    /// Called once when the build ends, before any error is printed.
    fn finish(&self, outcome: Outcome<'_>);
    /// While `held`, another program uses the terminal (`--on-error=shell`): draw nothing.
    /// Events are not sent meanwhile (the caller queues them), so only a renderer that draws
    /// on its own (the live view's timers) needs this.
    fn hold(&self, _held: bool) {}
}

/// The renderer for `mode`. `explain` shows why steps missed the cache (the JSON stream always
/// carries it).
pub fn renderer(mode: Mode, explain: bool) -> Box<dyn Renderer> {
    match mode {
        Mode::Plain => Box::new(ProgressPrinter::new(false).with_explain(explain)),
        Mode::Quiet => Box::new(ProgressPrinter::new(true)),
        Mode::RawJson => Box::new(json::JsonRenderer::new(std::io::stderr())),
        Mode::Tty => Box::new(tty::TtyRenderer::start(explain)),
    }
}

impl Renderer for ProgressPrinter {
    fn event(&self, event: ProgressEvent) {
        ProgressPrinter::event(self, event);
    }
    fn finish(&self, _outcome: Outcome<'_>) {}
}

/// `1.2s`, `2m03s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("auto", true).unwrap(), Mode::Tty);
        assert_eq!(Mode::parse("auto", false).unwrap(), Mode::Plain);
        assert_eq!(Mode::parse("tty", false).unwrap(), Mode::Tty);
        assert_eq!(Mode::parse("plain", true).unwrap(), Mode::Plain);
        assert_eq!(Mode::parse("rawjson", true).unwrap(), Mode::RawJson);
        assert!(Mode::parse("fancy", true).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(123)), "2m03s");
    }
}
