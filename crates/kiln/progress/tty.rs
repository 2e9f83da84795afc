//! `--progress=tty`: a live view on a terminal, redrawn in place with plain ANSI escapes.
//!
//! Finished steps scroll up as permanent lines (`CACHED`, `DONE 1.2s`); below them a live
//! region shows the build's elapsed time and every step still running with its timer and the
//! last lines of its output. A ticker thread redraws it so timers move while a step is silent.
//! The live region is computed by [`View::frame`], a pure function of the state and the time,
//! so it is tested without a terminal.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_solve::{ProgressEvent, StepLabel};

use super::{Outcome, Renderer, format_duration};

/// Output lines kept (and shown) per running step.
const TAIL_LINES: usize = 5;
/// How often timers are redrawn.
const TICK: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, PartialEq)]
enum StepState {
    Running(Instant),
    Done(Duration),
    /// From the cache; from an imported one (`--cache-from`) when it names the source.
    Cached(Option<String>),
}

#[derive(Debug, Clone)]
struct StepView {
    label: StepLabel,
    state: StepState,
    tail: VecDeque<String>,
}

/// Everything the view shows.
#[derive(Debug)]
pub struct View {
    explain: bool,
    started: Instant,
    steps: Vec<StepView>,
    /// Steps before this index are printed as permanent lines.
    committed: usize,
    /// Permanent lines not yet printed (finished steps, warnings, pulls).
    pending: Vec<String>,
    /// `[app 3/5] COPY . /app: why`, for the summary.
    explanations: Vec<String>,
}

impl View {
    pub fn new(explain: bool, started: Instant) -> View {
        View {
            explain,
            started,
            steps: Vec::new(),
            committed: 0,
            pending: Vec::new(),
            explanations: Vec::new(),
        }
    }

    fn step_mut(&mut self, label: &StepLabel) -> Option<&mut StepView> {
        self.steps.iter_mut().rev().find(|s| &s.label == label)
    }

    /// Takes one event in at time `now`.
    pub fn apply(&mut self, event: ProgressEvent, now: Instant) {
        match event {
            ProgressEvent::StepStarted(label) => self.steps.push(StepView {
                label,
                state: StepState::Running(now),
                tail: VecDeque::new(),
            }),
            ProgressEvent::StepCached(label) => self.steps.push(StepView {
                label,
                state: StepState::Cached(None),
                tail: VecDeque::new(),
            }),
            ProgressEvent::StepCachedRemote { step, source } => self.steps.push(StepView {
                label: step,
                state: StepState::Cached(Some(source)),
                tail: VecDeque::new(),
            }),
            ProgressEvent::CacheImported { source, records } => self
                .pending
                .push(format!("importing cache {source}: {records} records")),
            ProgressEvent::CacheExported {
                destination,
                records,
                layers,
                sent,
            } => self.pending.push(format!(
                "exporting cache {destination}: {records} records, {layers} layers ({sent} sent) done"
            )),
            // The live view keeps a tail of both streams alike.
            ProgressEvent::StepOutput { step, line, .. } => {
                if let Some(s) = self.step_mut(&step) {
                    if s.tail.len() == TAIL_LINES {
                        s.tail.pop_front();
                    }
                    s.tail.push_back(line);
                }
            }
            ProgressEvent::StepDone { step, elapsed } => {
                if let Some(s) = self.step_mut(&step) {
                    s.state = StepState::Done(elapsed);
                }
            }
            ProgressEvent::StepExplained { step, cause } => {
                self.explanations
                    .push(format!("{step}: {}", cause.reason()));
            }
            ProgressEvent::Warning(w) => self.pending.push(format!("WARNING: {w}")),
            ProgressEvent::Pulling { reference } => {
                self.pending.push(format!("pulling {reference}"))
            }
            // Hashing statistics and layers shared between platforms are for plain logs and
            // tools; metadata steps ran nothing.
            ProgressEvent::BlobFetched { .. }
            | ProgressEvent::SourcesHashed { .. }
            | ProgressEvent::LayerShared { .. }
            | ProgressEvent::StepMetadata(_) => {}
            ProgressEvent::ImageWritten { config, .. } => {
                self.pending.push(format!("writing image {config} done"))
            }
            ProgressEvent::Tagged(name) => self.pending.push(format!("naming to {name} done")),
        }
        self.commit_finished();
    }

    /// Moves finished steps at the top of the live region into the permanent lines, in order.
    fn commit_finished(&mut self) {
        while let Some(step) = self.steps.get(self.committed) {
            if matches!(step.state, StepState::Running(_)) {
                break;
            }
            let line = step_line(step, self.started);
            self.pending.push(line);
            self.committed += 1;
        }
    }

    /// The live region at `now`, each line cut to `width` columns.
    pub fn frame(&self, now: Instant, width: usize) -> Vec<String> {
        let cached = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Cached(_)))
            .count();
        let mut lines = vec![format!(
            "[+] Building {} ({} steps, {cached} cached)",
            format_duration(now.saturating_duration_since(self.started)),
            self.steps.len()
        )];
        for step in &self.steps[self.committed..] {
            lines.push(step_line(step, now));
            if matches!(step.state, StepState::Running(_)) {
                lines.extend(step.tail.iter().map(|l| format!("  │ {l}")));
            }
        }
        lines.into_iter().map(|l| cut(&l, width)).collect()
    }

    /// The last lines: totals, and with `--explain` why each missed step missed.
    pub fn summary(&self, now: Instant, failed: bool) -> Vec<String> {
        let cached = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Cached(_)))
            .count();
        let total = format_duration(now.saturating_duration_since(self.started));
        let mut lines = vec![format!(
            "{} {} steps, {cached} cached, total {total}",
            if failed { "build failed:" } else { "built:" },
            self.steps.len()
        )];
        if self.explain && !self.explanations.is_empty() {
            lines.push("cache misses:".into());
            lines.extend(self.explanations.iter().map(|e| format!("  {e}")));
        }
        lines
    }
}

/// `[app 3/5] RUN make  1.2s` while running; `DONE 1.2s` or `CACHED` when finished.
fn step_line(step: &StepView, now: Instant) -> String {
    match &step.state {
        StepState::Running(since) => format!(
            "{}  {}",
            step.label,
            format_duration(now.saturating_duration_since(*since))
        ),
        StepState::Done(d) => format!("{}  DONE {}", step.label, format_duration(*d)),
        StepState::Cached(None) => format!("{}  CACHED", step.label),
        StepState::Cached(Some(source)) => format!("{}  CACHED (from {source})", step.label),
    }
}

/// At most `width - 1` characters, so no line wraps and the region's height is its line count.
fn cut(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(10);
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let mut s: String = line.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

struct Shared {
    view: Mutex<Screen>,
    stop: AtomicBool,
    /// Another program has the terminal (`--on-error=shell`): nothing is drawn.
    held: AtomicBool,
}

/// The view and what is on the terminal now.
struct Screen {
    view: View,
    /// Lines of the live region currently drawn (the cursor is just below them).
    live_height: usize,
}

impl Screen {
    /// Erases the live region, prints the pending permanent lines, draws the region again.
    fn redraw(&mut self, now: Instant, live: bool) {
        let width = terminal_width();
        let mut out = String::new();
        if self.live_height > 0 {
            out.push_str(&format!("\x1b[{}F\x1b[J", self.live_height));
        }
        for line in self.view.pending.drain(..) {
            out.push_str(&cut(&line, width));
            out.push('\n');
        }
        let frame = if live {
            self.view.frame(now, width)
        } else {
            Vec::new()
        };
        for line in &frame {
            out.push_str(line);
            out.push('\n');
        }
        self.live_height = frame.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|w| usize::from(w.ws_col))
        .ok()
        .filter(|&w| w > 0)
        .unwrap_or(80)
}

/// The live renderer: events update the view; a ticker redraws it.
pub struct TtyRenderer {
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl TtyRenderer {
    pub fn start(explain: bool) -> TtyRenderer {
        let shared = Arc::new(Shared {
            view: Mutex::new(Screen {
                view: View::new(explain, Instant::now()),
                live_height: 0,
            }),
            stop: AtomicBool::new(false),
            held: AtomicBool::new(false),
        });
        let ticking = Arc::clone(&shared);
        let ticker = std::thread::spawn(move || {
            while !ticking.stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                if ticking.stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut screen = ticking.view.lock().unwrap_or_else(|e| e.into_inner());
                if !ticking.held.load(Ordering::Relaxed) {
                    screen.redraw(Instant::now(), true);
                }
            }
        });
        TtyRenderer {
            shared,
            ticker: Mutex::new(Some(ticker)),
        }
    }
}

impl Renderer for TtyRenderer {
    fn event(&self, event: ProgressEvent) {
        let mut screen = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Output alone waits for the next tick: a chatty step must not flood the terminal.
        let redraw = !matches!(event, ProgressEvent::StepOutput { .. });
        screen.view.apply(event, now);
        if redraw && !self.shared.held.load(Ordering::Relaxed) {
            screen.redraw(now, true);
        }
    }

    fn hold(&self, held: bool) {
        let mut screen = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.held.store(held, Ordering::Relaxed);
        // The live region goes, so the other program starts on a clean line; the next tick
        // after the release draws it again below whatever that program left.
        if held {
            screen.redraw(Instant::now(), false);
        }
    }

    fn finish(&self, outcome: Outcome<'_>) {
        self.shared.held.store(false, Ordering::Relaxed);
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = ticker.join();
        }
        let mut screen = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Steps still running when the build failed stay visible with their output.
        let unfinished: Vec<String> = screen.view.steps[screen.view.committed..]
            .iter()
            .flat_map(|s| {
                std::iter::once(step_line(s, now)).chain(s.tail.iter().map(|l| format!("  │ {l}")))
            })
            .collect();
        screen.view.committed = screen.view.steps.len();
        screen.view.pending.extend(unfinished);
        let summary = screen
            .view
            .summary(now, matches!(outcome, Outcome::Failed(_)));
        screen.view.pending.extend(summary);
        screen.redraw(now, false);
    }
}

impl Drop for TtyRenderer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use kiln_solve::MissCause;

    use super::*;

    fn label(position: usize, text: &str) -> StepLabel {
        StepLabel {
            stage: "app".into(),
            position,
            total: 3,
            text: text.into(),
        }
    }

    #[test]
    fn frame_shows_running_steps_with_timers_and_output_tail() {
        let t0 = Instant::now();
        let mut view = View::new(true, t0);
        view.apply(ProgressEvent::StepCached(label(1, "FROM busybox")), t0);
        view.apply(ProgressEvent::StepStarted(label(2, "RUN make")), t0);
        for i in 0..7 {
            view.apply(
                ProgressEvent::StepOutput {
                    step: label(2, "RUN make"),
                    stream: kiln_solve::OutputStream::Stdout,
                    line: format!("line {i}"),
                },
                t0,
            );
        }
        let frame = view.frame(t0 + Duration::from_millis(2500), 80);
        assert_eq!(
            frame,
            vec![
                "[+] Building 2.5s (2 steps, 1 cached)",
                "[app 2/3] RUN make  2.5s",
                "  │ line 2",
                "  │ line 3",
                "  │ line 4",
                "  │ line 5",
                "  │ line 6",
            ]
        );
        // The cached FROM went to the permanent lines.
        assert_eq!(view.pending, vec!["[app 1/3] FROM busybox  CACHED"]);
    }

    #[test]
    fn finished_steps_leave_the_live_region_in_order() {
        let t0 = Instant::now();
        let mut view = View::new(false, t0);
        view.apply(ProgressEvent::StepStarted(label(2, "RUN a")), t0);
        view.apply(ProgressEvent::StepStarted(label(3, "RUN b")), t0);
        view.apply(
            ProgressEvent::StepDone {
                step: label(3, "RUN b"),
                elapsed: Duration::from_secs(1),
            },
            t0,
        );
        // b finished but a, above it, still runs: both stay live.
        assert!(view.pending.is_empty());
        let frame = view.frame(t0 + Duration::from_secs(3), 80);
        assert_eq!(frame[1], "[app 2/3] RUN a  3.0s");
        assert_eq!(frame[2], "[app 3/3] RUN b  DONE 1.0s");
        view.apply(
            ProgressEvent::StepDone {
                step: label(2, "RUN a"),
                elapsed: Duration::from_secs(4),
            },
            t0,
        );
        assert_eq!(
            view.pending,
            vec!["[app 2/3] RUN a  DONE 4.0s", "[app 3/3] RUN b  DONE 1.0s"]
        );
        assert_eq!(view.frame(t0, 80).len(), 1);
    }

    #[test]
    fn lines_are_cut_to_the_terminal_width() {
        let t0 = Instant::now();
        let mut view = View::new(false, t0);
        view.apply(ProgressEvent::StepStarted(label(2, &"x".repeat(200))), t0);
        let frame = view.frame(t0, 40);
        assert!(frame.iter().all(|l| l.chars().count() <= 39));
        assert!(frame[1].ends_with('…'));
    }

    #[test]
    fn summary_counts_steps_and_explains_misses() {
        let t0 = Instant::now();
        let mut view = View::new(true, t0);
        view.apply(ProgressEvent::StepCached(label(2, "COPY . /")), t0);
        view.apply(
            ProgressEvent::StepCachedRemote {
                step: label(2, "COPY b /"),
                source: "r.example/app:cache".into(),
            },
            t0,
        );
        assert_eq!(
            view.pending.last().unwrap(),
            "[app 2/3] COPY b /  CACHED (from r.example/app:cache)"
        );
        view.apply(ProgressEvent::StepStarted(label(3, "RUN make")), t0);
        view.apply(
            ProgressEvent::StepExplained {
                step: label(3, "RUN make"),
                cause: MissCause::Changed(vec!["build-arg V 1 → 2".into()]),
            },
            t0,
        );
        assert_eq!(
            view.summary(t0 + Duration::from_secs(2), false),
            vec![
                "built: 3 steps, 2 cached, total 2.0s",
                "cache misses:",
                "  [app 3/3] RUN make: build-arg V 1 → 2",
            ]
        );
        view.explain = false;
        assert_eq!(view.summary(t0, true).len(), 1);
        assert!(view.summary(t0, true)[0].starts_with("build failed:"));
    }
}
