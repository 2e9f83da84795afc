//! The build driver: parse, plan, then build the needed stages (independent ones side by side)
//! and write the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Scope;
use std::time::Instant;

use kiln_dockerfile::{Dockerfile, Instruction, Span};
use kiln_image::Reference;
use kiln_image::{Digest, ImageConfig, Platform};
use kiln_plan::{Base, BuildOptions, BuildPlan, PlatformPlans};
use kiln_registry::RegistryClient;
use kiln_sandbox::NetworkMode;
use kiln_store::Store;

use crate::cancel::CancelToken;
use crate::context::BuildContext;
use crate::error::{Location, Result, SolveError};
use crate::explain::{Explainer, KeyedStep, StepOutcome};
use crate::pins::ImagePins;
use crate::progress::{Progress, ProgressEvent, StepLabel};
use crate::remote_cache::RemoteCache;
use crate::schedule::{Slots, StageBoard};
use crate::stage::{StageBuilder, StageState};
use kiln_images::{StoredImage, write_image_annotated};

mod preflight;
mod stages;
use stages::BuildRun;

/// Everything `kiln build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// The Dockerfile (`-f`); defaults to `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub network: NetworkMode,
    /// `--add-host` entries for every RUN step's `/etc/hosts` (part of each RUN's cache key).
    pub extra_hosts: Vec<kiln_sandbox::ExtraHost>,
    /// `--allow network.host`: RUN steps may ask for `--network=host`.
    pub allow_network_host: bool,
    /// `--secret`s by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, crate::mounts::Secret>,
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps never come from the cache.
    pub no_cache_filter: Vec<String>,
    /// Re-resolve base image tags against their registries.
    pub pull: bool,
    /// The target platforms (`--platform a,b`), at least one. With several, each is built
    /// (stages that do not depend on the target once, `kiln_plan::plan_platforms`) and the
    /// result is an image index of one image per platform.
    pub platforms: Vec<Platform>,
    /// How many stages may do work at once (`--jobs`); 0 means one per CPU.
    pub jobs: usize,
    /// How the layers this build writes are compressed (`--compression`, `--compression-level`).
    pub compression: kiln_layer::CompressionRequest,
    /// `--cache-from`: exported caches whose records count as hits, in order of preference.
    pub cache_from: Vec<crate::remote_cache::CacheImport>,
    /// `--cache-to`: where to export this build's cache records once it succeeded.
    pub cache_to: Vec<crate::remote_cache::CacheExport>,
    /// Registry credentials for this build only, by registry (`docker.io`, `host:port`), as a
    /// daemon receives them with each request (`X-Registry-Config`). They take precedence over
    /// config.json and its helpers for those registries, and no other call sees them.
    pub credentials: BTreeMap<String, kiln_registry::Credential>,
    /// Stops the build when cancelled (Ctrl-C, a closed API connection); see [`CancelToken`].
    pub cancel: CancelToken,
    /// buildx's flags for the image's metadata and the RUN steps' limits, and the named
    /// contexts; all empty by default.
    pub settings: BuildSettings,
    /// `--on-error`: called with a failed `RUN` before its sandbox is cleaned up.
    pub on_run_failure: Option<crate::failed_step::OnRunFailure>,
}

/// What `docker buildx build` users add to a build beyond the Dockerfile and its context:
/// kept together so callers that need none of it write `settings: Default::default()`.
#[derive(Debug, Clone, Default)]
pub struct BuildSettings {
    /// `--label`s, set on the image's config over the Dockerfile's `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`s of the image manifest.
    pub manifest_annotations: BTreeMap<String, String>,
    /// `--shm-size`: the size of every RUN step's `/dev/shm` in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`s of every RUN step.
    pub ulimits: Vec<kiln_sandbox::Ulimit>,
    /// `--build-context`s by name: what `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` read instead of the image NAME.
    pub named_contexts: BTreeMap<String, crate::named_context::NamedContext>,
    /// `--ssh` agents by id: the socket each `RUN --mount=type=ssh,id=…` is relayed to (see
    /// [`crate::ssh::SshAgents`], which the caller keeps running for the build).
    pub ssh: BTreeMap<String, PathBuf>,
}

impl BuildSettings {
    /// How git reaches the repositories of named contexts (and `ADD <git URL>`).
    pub fn git_access(&self) -> crate::remote_context::GitAccess {
        crate::remote_context::GitAccess {
            ssh_auth_sock: self.ssh.get("default").cloned(),
        }
    }
}

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image the names point at: for several platforms, the index (`index_digest`) seen
    /// as its image for this host, else the first platform's.
    pub image: StoredImage,
    /// Each platform's image, in the order of the request's platforms (one for a
    /// single-platform build: `image` itself).
    pub platform_images: Vec<StoredImage>,
    pub tags: Vec<String>,
    /// The base images the build resolved (every `FROM`, `COPY --from` and mount naming an
    /// image), with the manifest each was pinned to: a provenance's materials.
    pub bases: Vec<crate::pins::ResolvedBase>,
    /// Stages other than the target that asked for an SBOM of their own
    /// (`BUILDKIT_SBOM_SCAN_STAGE`), with their filesystems' layers.
    pub scan_stages: Vec<crate::scan_stages::StageLayers>,
}

/// What `build_plan` produced.
struct Built {
    image: StoredImage,
    platform_images: Vec<StoredImage>,
    bases: Vec<crate::pins::ResolvedBase>,
    scan_stages: Vec<crate::scan_stages::StageLayers>,
}

/// The engine: a store, a registry client and a runtime to drive the client on.
///
/// One engine serves any number of builds at once, from any threads: everything a build
/// changes is its own (its request, temp dirs, stage threads) or the store's, which is safe
/// across processes and so across threads. Each build works on a copy of the engine made for
/// that call (`Engine::for_call`), carrying its cancel token and credentials.
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub registry: Arc<RegistryClient>,
    pub rt: tokio::runtime::Handle,
    /// The cancel token of the build this copy runs (never cancelled in the shared engine).
    pub(crate) cancel: CancelToken,
}

/// The parsed Dockerfile and where it came from, for error locations.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
    pub dockerfile: Dockerfile,
}

impl Source {
    /// The location of a span, highlighting the word that starts there (the keyword of the
    /// instruction a parse error is about).
    pub fn location(&self, span: &Span) -> Box<Location> {
        location_in(&self.path, &self.text, span.start_line, span.col, 0)
    }

    /// The location of an instruction, highlighting its keyword.
    pub fn at(&self, ins: &Instruction) -> Box<Location> {
        location_in(
            &self.path,
            &self.text,
            ins.span.start_line,
            ins.span.col,
            ins.keyword.len(),
        )
    }

    /// The first line, for errors about the Dockerfile as a whole (no FROM, unknown target).
    pub fn dockerfile_end(&self) -> Span {
        Span::line(1)
    }
}

/// A [`Location`] for line `line`, column `col` of `text`, `len` characters long (0: the word
/// starting at `col`).
pub fn location_in(path: &Path, text: &str, line: usize, col: usize, len: usize) -> Box<Location> {
    let line_text = text
        .trim_start_matches('\u{feff}')
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_owned();
    let len = match len {
        0 => line_text
            .chars()
            .skip(col.saturating_sub(1))
            .take_while(|c| !c.is_whitespace())
            .count(),
        n => n,
    };
    Box::new(Location {
        file: path.to_owned(),
        line,
        col: col.max(1),
        len: len.max(1),
        line_text,
    })
}

impl Engine {
    /// An engine on `store` that reaches registries with `registry` and drives its transfers on
    /// the runtime `rt`.
    pub fn new(store: Store, registry: RegistryClient, rt: tokio::runtime::Handle) -> Self {
        Engine {
            store,
            registry: Arc::new(registry),
            rt,
            cancel: CancelToken::new(),
        }
    }

    /// The engine one build runs on: the same store and runtime, this build's cancel token, and
    /// a registry client of its own when the request brings credentials (its own token cache
    /// too, so tokens got with them serve no other call).
    fn for_call(&self, req: &BuildRequest) -> Engine {
        let registry = if req.credentials.is_empty() {
            Arc::clone(&self.registry)
        } else {
            Arc::new(self.registry.with_credentials(req.credentials.clone()))
        };
        Engine {
            store: self.store.clone(),
            registry,
            rt: self.rt.clone(),
            cancel: req.cancel.clone(),
        }
    }

    /// Runs a build to completion.
    ///
    /// Blocking, and it drives registry transfers with `rt.block_on`: call it from a thread of
    /// your own or, from async code, inside `tokio::task::spawn_blocking` (or use
    /// [`Engine::build_async`]), never on a runtime worker thread, where `block_on` panics.
    /// Once `req.cancel` is cancelled the build stops and returns [`SolveError::Cancelled`].
    pub fn build(&self, req: &BuildRequest, progress: Progress<'_>) -> Result<BuildResult> {
        let engine = self.for_call(req);
        match engine.build_call(req, progress) {
            // Whatever the interruption made the failing step report, the outcome is this.
            Err(_) if req.cancel.is_cancelled() => Err(SolveError::Cancelled),
            result => result,
        }
    }

    /// [`Engine::build`] for async callers: runs it on the runtime's blocking pool. Dropping the
    /// returned future before it completes (a closed connection) cancels the build. `rt` must
    /// be a multi-thread runtime, or a current-thread one that some thread drives with
    /// `Runtime::block_on` meanwhile (a `Handle::block_on` cannot drive its I/O).
    pub async fn build_async(
        self: Arc<Self>,
        req: BuildRequest,
        progress: Arc<dyn Fn(ProgressEvent) + Send + Sync>,
    ) -> Result<BuildResult> {
        let guard = req.cancel.cancel_on_drop();
        let rt = self.rt.clone();
        let result = match rt
            .spawn_blocking(move || self.build(&req, &*progress))
            .await
        {
            Ok(result) => result,
            // A panic in the build is the caller's, as if it had called `build` itself.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: the build was not allowed to finish.
            Err(_) => Err(SolveError::Cancelled),
        };
        guard.disarm();
        result
    }

    /// Runs `future` (a registry transfer) to completion, or until this build is cancelled.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        crate::cancel::block_on(&self.rt, &self.cancel, future)
    }

    fn build_call(&self, req: &BuildRequest, progress: Progress<'_>) -> Result<BuildResult> {
        // A malformed epoch fails the build before anything is read, planned or run.
        crate::epoch::SourceDateEpoch::of_build_args(&req.build_args)?;
        let path = req
            .dockerfile
            .clone()
            .unwrap_or_else(|| req.context_dir.join("Dockerfile"));
        let text = std::fs::read_to_string(&path).map_err(|source| SolveError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let dockerfile = kiln_dockerfile::parse(&text).map_err(|e| SolveError::Dockerfile {
            location: location_in(&path, &text, e.span.start_line, e.span.col, 0),
            message: e.message.clone(),
        })?;
        let src = Source {
            path,
            text,
            dockerfile,
        };
        let Some(first_platform) = req.platforms.first() else {
            return Err(SolveError::NoPlatform);
        };
        let opts = BuildOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone(),
            platform: first_platform.clone(),
            build_platform: Platform::host(),
        };
        let plans =
            kiln_plan::plan_platforms(&src.dockerfile, &opts, &req.platforms).map_err(|e| {
                SolveError::Dockerfile {
                    location: src.location(&e.span().unwrap_or_else(|| src.dockerfile_end())),
                    message: e.to_string(),
                }
            })?;
        let plan = &plans.plans[0];
        for filter in &req.no_cache_filter {
            let known = plan.stages.iter().any(|s| {
                s.name.as_deref() == Some(filter.as_str()) || s.index.to_string() == *filter
            });
            if !known {
                return Err(SolveError::Dockerfile {
                    location: src.location(&src.dockerfile_end()),
                    message: format!("--no-cache-filter: no stage named {filter:?}"),
                });
            }
        }
        // A stage of the same name wins over an image in the Dockerfile, so the context
        // would silently go unused; BuildKit would replace the stage, which kiln does not.
        for name in req.settings.named_contexts.keys() {
            if plan.stages.iter().any(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            }) {
                return Err(SolveError::Dockerfile {
                    location: src.location(&src.dockerfile_end()),
                    message: format!(
                        "--build-context {name}: a stage is named {name:?}; kiln replaces \
                         images, not stages, with named contexts"
                    ),
                });
            }
        }
        for arg in &plan.unused_build_args {
            progress(ProgressEvent::Warning(format!(
                "build-arg {arg:?} was given but not consumed by any ARG"
            )));
        }
        let context = BuildContext::open(&req.context_dir)?
            .with_dockerfile_ignore(&src.path)?
            .with_cancel(self.cancel.clone());
        // A context unpacked from a tar into a temp dir (`Engine::unpack_context` with every
        // reused slot taken) lives in tmp/ for one build: its files are new inodes every time,
        // so remembering digests would only cost writes. A slot's are remembered.
        let context = if req.context_dir.starts_with(self.store.root().join("tmp")) {
            context
        } else {
            context.with_digest_cache(&self.store)
        };
        // --no-cache looks nothing up, so it has no use for an import either.
        let imports = if req.no_cache {
            &[][..]
        } else {
            &req.cache_from[..]
        };
        let remote = RemoteCache::import(self, imports, progress);
        let built = self.build_plan(&src, &plans, &context, req, &remote, progress);
        // Imported records whose layers are now here make the next build local, also when
        // a later step failed. Losing them only costs the next build an import.
        if let Err(error) = remote.record_hits_locally(&self.store) {
            progress(ProgressEvent::Warning(format!(
                "could not record the imported cache records locally: {error}"
            )));
        }
        // What was hashed stays useful when a later step failed. Losing it only costs time.
        if let Err(error) = context.save_digest_cache(&self.store) {
            progress(ProgressEvent::Warning(format!(
                "could not save the build context's file digests: {error}"
            )));
        }
        let Built {
            image,
            platform_images,
            bases,
            scan_stages,
        } = built?;
        // A build cancelled after its last step still names nothing.
        if self.cancel.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        progress(ProgressEvent::ImageWritten {
            manifest: image.root_digest().clone(),
            config: image.config_digest.clone(),
        });
        let mut tags = Vec::new();
        for tag in &req.tags {
            self.store.set_name(&tag.to_string(), image.root_digest())?;
            progress(ProgressEvent::Tagged(tag.familiar()));
            tags.push(tag.to_string());
        }
        remote.export(self, plan, &req.cache_to, progress)?;
        Ok(BuildResult {
            image,
            platform_images,
            tags,
            bases,
            scan_stages,
        })
    }

    fn build_plan(
        &self,
        src: &Source,
        plans: &PlatformPlans,
        context: &BuildContext,
        req: &BuildRequest,
        remote: &RemoteCache,
        progress: Progress<'_>,
    ) -> Result<Built> {
        let pins = ImagePins::with_named(&req.settings.named_contexts, req.settings.git_access());
        let jobs = match req.jobs {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let board = StageBoard::new();
        let slots = Slots::new(jobs);
        let first_error = Mutex::new(None);
        let multi = plans.platforms.len() > 1;
        // `KILN_NO_LAYER_SHARING` (any value) turns the sharing off, to measure what it saves.
        let shared = crate::shared_layers::SharedLayers::new(
            multi && std::env::var_os("KILN_NO_LAYER_SHARING").is_none(),
        );
        let runs: Vec<BuildRun<'_>> = plans
            .plans
            .iter()
            .enumerate()
            .map(|(p, plan)| BuildRun {
                src,
                plan,
                context,
                req,
                remote,
                shared: &shared,
                progress,
                board: &board,
                slots: &slots,
                pins: &pins,
                first_error: &first_error,
                platform: &plans.platforms[p],
                nodes: &plans.nodes[p],
                labels: plan
                    .stages
                    .iter()
                    .map(|stage| match multi && !plans.is_shared(p, stage.index) {
                        true => format!("{} {}", plans.platforms[p], stage_name(stage)),
                        false => stage_name(stage),
                    })
                    .collect(),
            })
            .collect();
        // What can fail for want of a base image or an emulator fails before any step runs.
        self.preflight(src, plans, req, &pins, progress)?;
        // Every needed stage of every target starts at once and waits for the stages it
        // reads; independent stages then run side by side, `jobs` at a time.
        std::thread::scope(|scope| {
            for run in &runs {
                for stage in run.plan.stages.iter().filter(|s| s.needed) {
                    self.start_stage(scope, run, stage.index);
                }
            }
        });
        if let Some(e) = first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        let first = &plans.plans[0];
        let scan_stages =
            crate::scan_stages::collect(first, &plans.nodes[0], &board, &req.build_args);
        let mut images = Vec::with_capacity(runs.len());
        for run in &runs {
            let target = board
                .get(run.nodes[run.plan.target])
                .ok_or(SolveError::TargetNotBuilt)?;
            // The final image's layers must all be here, also those of steps taken from an
            // imported cache that nothing unpacked.
            remote.fetch_blobs(self, &target.layers, progress)?;
            images.push(self.finish_image(target, &req.settings)?);
        }
        let image = if multi {
            let index = kiln_images::write_index(&self.store, &images)?;
            let host = Platform::host();
            let mut chosen = images
                .iter()
                .find(|i| host.matches(&kiln_images::config_platform(&i.config)))
                .unwrap_or(&images[0])
                .clone();
            chosen.index_digest = Some(index);
            chosen
        } else {
            images[0].clone()
        };
        Ok(Built {
            image,
            platform_images: images,
            bases: pins.resolved(),
            scan_stages,
        })
    }

    /// Writes the target stage as an image for the stage's platform.
    fn finish_image(&self, state: StageState, settings: &BuildSettings) -> Result<StoredImage> {
        let mut config: ImageConfig = state.config;
        // As buildx: `--label` wins over a `LABEL` of the same name.
        for (name, value) in &settings.labels {
            config.config.labels.insert(name.clone(), value.clone());
        }
        config.created = state.last_created.clone();
        config.os = state.platform.os.clone();
        config.architecture = state.platform.architecture.clone();
        config.variant = state.platform.variant.clone();
        Ok(write_image_annotated(
            &self.store,
            &config,
            state.layers,
            settings.manifest_annotations.clone(),
        )?)
    }

    /// The digest a cache lookup for a base image is pinned to.
    pub fn base_key(image: &StoredImage) -> Digest {
        image.manifest_digest.clone()
    }
}

/// The proxy build args (`HTTP_PROXY=…`, …) RUN sees without a declaration.
fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<String> {
    build_args
        .iter()
        .filter(|(name, _)| kiln_plan::PROXY_ARGS.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// How a stage is named in progress lines: its `AS` name, else `stage-N`.
pub(crate) fn stage_name(stage: &kiln_plan::StagePlan) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index))
}
