//! Build progress as a stream of events. The engine only emits; the binary decides how they
//! look (plain lines, a live TTY view or a JSON stream), so the engine never prints.

use std::time::Duration;

use kiln_image::Digest;

use crate::context::HashStats;
use crate::explain::MissCause;

/// Identifies one step for display: `[stage 2/5] RUN make`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLabel {
    /// The stage's `AS` name, or its index as text.
    pub stage: String,
    /// 1-based position of the step within its stage (FROM is 1).
    pub position: usize,
    /// Steps in the stage, FROM included.
    pub total: usize,
    /// The instruction as written in the Dockerfile.
    pub text: String,
}

impl std::fmt::Display for StepLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} {}/{}] {}",
            self.stage, self.position, self.total, self.text
        )
    }
}

/// Which of a RUN step's output streams a line came from. RUN gets one pipe for each, so
/// front ends can show stderr apart (dockerd's legacy builder colours it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Something that happened during a build, pull or push.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A step started executing (it missed the cache).
    StepStarted(StepLabel),
    /// A line of output from a running step, from its stdout or its stderr.
    StepOutput {
        step: StepLabel,
        stream: OutputStream,
        line: String,
    },
    /// A metadata instruction (ENV, LABEL, CMD, ARG, ...) was applied: it changes only the
    /// image config, so it neither runs nor has a cache record of its own. Reported so that
    /// a front end numbering every instruction (the Engine API's legacy stream) can.
    StepMetadata(StepLabel),
    /// A step finished after running.
    StepDone { step: StepLabel, elapsed: Duration },
    /// A step's result came from the cache.
    StepCached(StepLabel),
    /// A step that missed the cache took the layer another target platform's run of the same
    /// step made over a base alike where the step writes (`from`), instead of making its own.
    LayerShared { step: StepLabel, from: StepLabel },
    /// A step's result came from an imported cache (`--cache-from`), named by `source`.
    StepCachedRemote { step: StepLabel, source: String },
    /// A `--cache-from` was read: it holds `records` usable step records.
    CacheImported { source: String, records: usize },
    /// A `--cache-to` was written: `records` steps with `layers` layer blobs, of which `sent`
    /// were uploaded or written (the others were there already).
    CacheExported {
        destination: String,
        records: usize,
        layers: usize,
        sent: usize,
    },
    /// Why a step did not come from the cache (or why a FROM's base changed), comparing its
    /// inputs with the last build of the same Dockerfile step. Sent right after `StepStarted`.
    StepExplained { step: StepLabel, cause: MissCause },
    /// A COPY/ADD step hashed its sources for its cache key: how many files it saw and how many
    /// it had to read (the others' digests were known from earlier builds).
    SourcesHashed {
        step: StepLabel,
        /// The sources are in the build context (else in a `--from` stage or image).
        from_context: bool,
        stats: HashStats,
    },
    /// A base image is being pulled.
    Pulling { reference: String },
    /// A blob of a pulled image was fetched (or was already present).
    BlobFetched { digest: Digest, cached: bool },
    /// A warning the user should see (unused build args, …).
    Warning(String),
    /// The final image was written.
    ImageWritten { manifest: Digest, config: Digest },
    /// A name now points at the image.
    Tagged(String),
}

/// Where events go. `Sync` because steps run on worker threads.
pub type Progress<'a> = &'a (dyn Fn(ProgressEvent) + Send + Sync);

/// A pull of the image service, as the engine reports it.
impl From<kiln_images::ImageEvent> for ProgressEvent {
    fn from(e: kiln_images::ImageEvent) -> Self {
        match e {
            kiln_images::ImageEvent::Pulling { reference } => ProgressEvent::Pulling { reference },
            kiln_images::ImageEvent::BlobFetched { digest, cached } => {
                ProgressEvent::BlobFetched { digest, cached }
            }
        }
    }
}
