//! The legacy builder's `stream` lines (what `POST /build` writes) from kiln's build events.
//!
//! Two things kiln's events do not carry as dockerd writes them are derived here: the outcome
//! of metadata steps (see [`LegacyStream`]) and dockerd's numbering, which counts every
//! instruction of the Dockerfile (its global ARGs, then each stage's FROM and instructions)
//! where kiln's labels count within a stage (see [`GlobalSteps`]).

use std::collections::BTreeMap;

use kiln_dockerfile::Command;
use kiln_solve::{OutputStream, ProgressEvent, StepLabel};

/// Where each stage's steps fall in dockerd's numbering of the whole Dockerfile.
#[derive(Debug, Default)]
pub(super) struct GlobalSteps {
    /// Instructions in the Dockerfile.
    total: usize,
    /// The global ARGs (before the first FROM), as written.
    meta_args: Vec<String>,
    /// By kiln's stage label (the `AS` name as written, else `stage-<index>`): the index of
    /// the stage's FROM among all instructions and the stage's instruction count.
    stages: BTreeMap<String, (usize, usize)>,
}

impl GlobalSteps {
    /// The numbering of a Dockerfile; `None` for one that does not parse (the build then fails
    /// with the parser's error, and steps keep kiln's own numbers meanwhile).
    pub(super) fn of(dockerfile: &str) -> Option<GlobalSteps> {
        let df = kiln_dockerfile::parse(dockerfile).ok()?;
        let mut numbering = GlobalSteps {
            total: df.instructions.len(),
            ..GlobalSteps::default()
        };
        let mut current: Option<(String, usize)> = None;
        let mut index = 0;
        for (i, ins) in df.instructions.iter().enumerate() {
            match &ins.command {
                Command::From { name, .. } => {
                    if let Some((key, start)) = current.take() {
                        numbering.stages.insert(key, (start, i - start));
                    }
                    let key = name.clone().unwrap_or_else(|| format!("stage-{index}"));
                    index += 1;
                    current = Some((key, i));
                }
                _ if current.is_none() => numbering.meta_args.push(ins.original.clone()),
                _ => {}
            }
        }
        if let Some((key, start)) = current {
            numbering
                .stages
                .insert(key, (start, numbering.total - start));
        }
        Some(numbering)
    }

    /// `N/M` for a step: dockerd's when its stage is known and of the size kiln counted.
    fn number(&self, step: &StepLabel) -> (usize, usize) {
        match self.stages.get(&step.stage) {
            Some(&(start, len)) if len == step.total => (start + step.position, self.total),
            _ => (step.position, step.total),
        }
    }
}

/// The engine's events as the legacy builder's `stream` lines (moby's
/// `daemon/builder/dockerfile`: `Step N/M : ...` before each instruction, ` ---> Using cache`
/// after one whose cache probe hit, RUN's stderr written through a formatter that wraps each
/// chunk in `ESC[91m` ... `ESC[0m`).
///
/// dockerd probes its cache for metadata instructions too (each commits an image), and since
/// a probe matches on the parent image, it hits exactly when every step before it in the stage
/// hit and the same instruction was built on that parent before. kiln's metadata steps have
/// no record of their own, so their outcome is read off the filesystem steps around them: a
/// metadata step's lines wait for the next filesystem step of its stage and say `Using cache`
/// when that one hit and nothing in the stage ran before it; metadata steps that end a stage
/// are written when the build ends, cached when the stage ran nothing and hit something.
/// (They are instant, so holding their lines back delays nothing.)
#[derive(Default)]
pub(super) struct LegacyStream {
    numbering: GlobalSteps,
    /// Per stage, in the order stages were first seen.
    stages: Vec<StageChain>,
}

struct StageChain {
    stage: String,
    /// A filesystem step after FROM ran (missed the cache).
    ran: bool,
    /// A filesystem step after FROM came from the cache.
    hit: bool,
    /// The `Step` lines of metadata steps not written yet.
    pending: Vec<String>,
}

impl LegacyStream {
    /// A stream numbering steps as `numbering` says (`GlobalSteps::default()`: kiln's own
    /// per-stage numbers).
    pub(super) fn new(numbering: GlobalSteps) -> LegacyStream {
        LegacyStream {
            numbering,
            stages: Vec::new(),
        }
    }

    /// The lines before any event: dockerd's steps for the global ARGs, which it only records.
    pub(super) fn start(&self) -> Vec<String> {
        let total = self.numbering.total;
        self.numbering
            .meta_args
            .iter()
            .enumerate()
            .map(|(i, arg)| format!("Step {}/{total} : {arg}\n", i + 1))
            .collect()
    }

    fn step_line(&self, step: &StepLabel) -> String {
        let (n, total) = self.numbering.number(step);
        format!("Step {n}/{total} : {}\n", step.text)
    }

    fn chain(&mut self, stage: &str) -> &mut StageChain {
        let i = match self.stages.iter().position(|c| c.stage == stage) {
            Some(i) => i,
            None => {
                self.stages.push(StageChain {
                    stage: stage.to_owned(),
                    ran: false,
                    hit: false,
                    pending: Vec::new(),
                });
                self.stages.len() - 1
            }
        };
        &mut self.stages[i]
    }

    /// The lines of one event, with the held-back metadata steps it decides.
    pub(super) fn lines(&mut self, e: ProgressEvent) -> Vec<String> {
        match e {
            ProgressEvent::StepStarted(step) if step.position == 1 => {
                // FROM always "starts" (it resolves its base); it opens the stage's chain.
                let line = self.step_line(&step);
                let chain = self.chain(&step.stage);
                chain.ran = false;
                chain.hit = false;
                chain.pending.clear();
                vec![line]
            }
            ProgressEvent::StepStarted(step) => {
                let line = self.step_line(&step);
                let chain = self.chain(&step.stage);
                let mut lines = chain.flush(false);
                chain.ran = true;
                lines.push(line);
                lines
            }
            ProgressEvent::StepCached(step) | ProgressEvent::StepCachedRemote { step, .. } => {
                let line = self.step_line(&step);
                let chain = self.chain(&step.stage);
                let cached = !chain.ran;
                let mut lines = chain.flush(cached);
                chain.hit = true;
                lines.push(line);
                lines.push(" ---> Using cache\n".to_owned());
                lines
            }
            ProgressEvent::StepMetadata(step) => {
                let line = self.step_line(&step);
                self.chain(&step.stage).pending.push(line);
                Vec::new()
            }
            ProgressEvent::StepOutput {
                stream: OutputStream::Stdout,
                line,
                ..
            } => vec![format!("{line}\n")],
            ProgressEvent::StepOutput {
                stream: OutputStream::Stderr,
                line,
                ..
            } => vec![format!("\x1b[91m{line}\n\x1b[0m")],
            ProgressEvent::Warning(w) => vec![format!("[WARNING]: {w}\n")],
            _ => Vec::new(),
        }
    }

    /// The metadata steps that end their stages, once the build is over.
    pub(super) fn finish(&mut self) -> Vec<String> {
        self.stages
            .iter_mut()
            .flat_map(|c| {
                let cached = c.hit && !c.ran;
                c.flush(cached)
            })
            .collect()
    }
}

impl StageChain {
    fn flush(&mut self, cached: bool) -> Vec<String> {
        self.pending
            .drain(..)
            .flat_map(|line| {
                let mut lines = vec![line];
                if cached {
                    lines.push(" ---> Using cache\n".to_owned());
                }
                lines
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(stage: &str, position: usize, text: &str) -> StepLabel {
        StepLabel {
            stage: stage.into(),
            position,
            total: 4,
            text: text.into(),
        }
    }

    #[test]
    fn metadata_steps_use_cache_as_the_steps_around_them_do() {
        let mut legacy = LegacyStream::default();
        let lines = |l: &mut LegacyStream, e| l.lines(e).concat();
        // A first build: the ENV right after FROM is followed by a RUN that ran.
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(label("0", 1, "FROM busybox"))
            ),
            "Step 1/4 : FROM busybox\n"
        );
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepMetadata(label("0", 2, "ENV A=1"))
            ),
            ""
        );
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(label("0", 3, "RUN true"))
            ),
            "Step 2/4 : ENV A=1\nStep 3/4 : RUN true\n"
        );
        legacy.lines(ProgressEvent::StepMetadata(label("0", 4, "CMD sh")));
        assert_eq!(legacy.finish().concat(), "Step 4/4 : CMD sh\n");

        // A rebuild: every step hit, so the metadata ones say so too, trailing ones included.
        let mut legacy = LegacyStream::default();
        legacy.lines(ProgressEvent::StepStarted(label("0", 1, "FROM busybox")));
        legacy.lines(ProgressEvent::StepMetadata(label("0", 2, "ENV A=1")));
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepCached(label("0", 3, "RUN true"))
            ),
            "Step 2/4 : ENV A=1\n ---> Using cache\nStep 3/4 : RUN true\n ---> Using cache\n"
        );
        legacy.lines(ProgressEvent::StepMetadata(label("0", 4, "CMD sh")));
        assert_eq!(
            legacy.finish().concat(),
            "Step 4/4 : CMD sh\n ---> Using cache\n"
        );

        // A stage of metadata only has no hit to go by: no cache line.
        let mut legacy = LegacyStream::default();
        legacy.lines(ProgressEvent::StepStarted(label("1", 1, "FROM busybox")));
        legacy.lines(ProgressEvent::StepMetadata(label("1", 2, "LABEL a=b")));
        assert_eq!(legacy.finish().concat(), "Step 2/4 : LABEL a=b\n");
    }

    #[test]
    fn run_stderr_is_wrapped_in_dockerds_colour_codes() {
        let mut legacy = LegacyStream::default();
        let out = |stream, line: &str| ProgressEvent::StepOutput {
            step: label("0", 2, "RUN x"),
            stream,
            line: line.into(),
        };
        assert_eq!(
            legacy.lines(out(OutputStream::Stderr, "oops")),
            vec!["\x1b[91moops\n\x1b[0m".to_owned()]
        );
        assert_eq!(
            legacy.lines(out(OutputStream::Stdout, "fine")),
            vec!["fine\n".to_owned()]
        );
    }

    #[test]
    fn steps_are_numbered_across_the_dockerfile_as_dockerd_does() {
        let numbering = GlobalSteps::of(
            "ARG BASE=busybox\nFROM $BASE AS build\nRUN make\nFROM $BASE\nENV A=1\nCOPY --from=build /out /out\n",
        )
        .unwrap();
        let mut legacy = LegacyStream::new(numbering);
        assert_eq!(legacy.start().concat(), "Step 1/6 : ARG BASE=busybox\n");
        let at = |stage: &str, position, total, text: &str| StepLabel {
            stage: stage.into(),
            position,
            total,
            text: text.into(),
        };
        let lines = |l: &mut LegacyStream, e| l.lines(e).concat();
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(at("build", 2, 2, "RUN make"))
            ),
            "Step 3/6 : RUN make\n"
        );
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(at("stage-1", 1, 3, "FROM busybox"))
            ),
            "Step 4/6 : FROM busybox\n"
        );
        legacy.lines(ProgressEvent::StepMetadata(at("stage-1", 2, 3, "ENV A=1")));
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(at("stage-1", 3, 3, "COPY --from=build /out /out"))
            ),
            "Step 5/6 : ENV A=1\nStep 6/6 : COPY --from=build /out /out\n"
        );
        // A stage whose size is not what kiln counted keeps kiln's numbers.
        assert_eq!(
            lines(
                &mut legacy,
                ProgressEvent::StepStarted(at("build", 2, 5, "RUN x"))
            ),
            "Step 2/5 : RUN x\n"
        );
        assert!(GlobalSteps::of("FROM\n").is_none());
    }
}
