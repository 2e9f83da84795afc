//! `kiln build`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::Platform;
use kiln_solve::{
    BuildRequest, CacheExport, CacheImport, CancelToken, EpochOrigin, SOURCE_DATE_EPOCH,
    SolveError, SourceDateEpoch,
};

use super::flags::{BUILD_NETWORKS, choose_network};
use super::{Env, parse_reference};
use crate::cli::BuildArgs;
use crate::progress;

mod call;
mod inputs;
mod settings;

pub fn build(env: &Env, args: BuildArgs) -> Result<ExitCode> {
    let call = call::Call::from_flags(&args.buildx.call, args.buildx.print.as_deref())?;
    let check_only = args.check || call == call::Call::Check;
    let mut settings = settings::settings(&args.buildx)?;
    // Before the context: a git context over ssh uses the forwarded agent too.
    let ssh = settings::ssh_agents(env, &args.buildx.ssh)?;
    settings.ssh = ssh.agents.sockets().clone();
    let inputs = inputs::resolve(env, &args, &settings.git_access())?;
    let context_dir = inputs.context_dir.clone();
    let tags = args
        .tags
        .iter()
        .map(|t| parse_reference(t))
        .collect::<Result<Vec<_>>>()?;
    if args.push && tags.is_empty() {
        bail!("--push needs at least one -t name to push to");
    }
    let push_format = super::pushing::parse_format(&args.push_output)?;
    if push_format.is_some() && !args.push {
        bail!("--format applies to what is pushed: use it with --push");
    }
    let on_error = super::on_error::OnError::from_flag(args.on_error.as_deref())?;
    let retention = super::recording::retention()?;
    // How the record names the context: as typed (`-` for a tar on stdin), made absolute.
    let context_label = if args.context.as_os_str() == "-" {
        "-".to_owned()
    } else {
        context_dir.display().to_string()
    };
    let mut build_args = super::flags::build_args(&args.build_args);
    let epoch = source_date_epoch(&mut build_args)?;
    let tar_options = SourceDateEpoch::tar_options(epoch);
    let dockerfile = inputs
        .dockerfile
        .clone()
        .unwrap_or_else(|| context_dir.join("Dockerfile"));
    let json = !check_only && progress::Mode::from_flag(&args.progress)? == progress::Mode::RawJson;
    let reproducible = epoch.is_some();
    if let Some(code) =
        super::check::run_checks(&dockerfile, &build_args, reproducible, check_only, json)?
    {
        return Ok(code);
    }
    // Bad --output values fail before the build, not after it.
    let outputs = args
        .outputs
        .iter()
        .map(|o| super::image_outputs::parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    if outputs.iter().filter(|o| o.writes_stdout()).count() > 1 {
        bail!("only one --output can write to stdout");
    }
    let attest_flags = super::attest::flags(&args)?;
    // buildx's default provenance goes where BuildKit attaches it: a push, an OCI archive.
    let exports_index = args.push
        || outputs.iter().any(|o| {
            matches!(
                o,
                super::image_outputs::Output::Image {
                    format: kiln_export::ArchiveFormat::Oci,
                    ..
                }
            )
        });
    let attestations = attest_flags.resolve(exports_index);
    // What goes beside a filesystem output: only what was asked for (BuildKit leaves its
    // default provenance out of the local and tar exporters).
    let file_attestations = attest_flags.resolve(false);
    let platforms = target_platforms(args.platform.as_deref())?;
    if platforms.len() > 1
        && outputs.iter().any(|o| {
            matches!(
                o,
                super::image_outputs::Output::Image {
                    format: kiln_export::ArchiveFormat::Docker,
                    ..
                }
            )
        })
    {
        bail!(
            "--output type=docker holds one image per name and --platform asks for {}; use \
             type=oci for the index, as with buildx",
            platforms.len()
        );
    }
    if matches!(call, call::Call::Outline | call::Call::Targets) {
        return call::print(
            call,
            &dockerfile,
            &build_args,
            args.target.as_deref(),
            &platforms[0],
        );
    }
    let mut req = BuildRequest {
        context_dir,
        dockerfile: inputs.dockerfile.clone(),
        tags: tags.clone(),
        build_args,
        target: args.target.clone(),
        network: choose_network(args.network.as_deref(), BUILD_NETWORKS)?,
        extra_hosts: args
            .add_host
            .iter()
            .map(|h| kiln_sandbox::ExtraHost::parse(h))
            .collect::<Result<_, _>>()?,
        allow_network_host: parse_allow(&args.allow)?,
        secrets: load_secrets(&args.secrets)?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        platforms,
        jobs: args.jobs.unwrap_or(0),
        compression: kiln_layer::CompressionRequest::from_flags(
            args.compression.compression.as_deref().unwrap_or("gzip"),
            args.compression.compression_level,
        )?,
        cache_from: args
            .cache_from
            .iter()
            .map(|c| CacheImport::parse(c).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
        cache_to: args
            .cache_to
            .iter()
            .map(|c| CacheExport::parse(c).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
        // The CLI authenticates from config.json; a daemon passes each request's credentials.
        credentials: BTreeMap::new(),
        cancel: CancelToken::new(),
        settings,
        on_run_failure: None,
    };
    let mode = match progress::Mode::from_flag(&args.progress)? {
        // -q prints only the ID on stdout; a JSON stream is still wanted by tools.
        progress::Mode::RawJson => progress::Mode::RawJson,
        _ if args.quiet => progress::Mode::Quiet,
        mode => mode,
    };
    let quiet = args.quiet || mode == progress::Mode::Quiet;
    let renderer = on_error.gate(progress::renderer(mode, args.explain).into());
    let (hook, handover) = on_error.hook(&renderer);
    req.on_run_failure = hook;
    let recorder = super::recording::Recorder::begin(
        &env.store,
        kiln_solve::history::inputs(&req, &context_label),
        retention,
        renderer,
    );
    let renderer: std::sync::Arc<dyn progress::Renderer> = recorder.clone();
    let engine = env.engine()?;
    let interrupts = Interrupts::watch(env, req.cancel.clone(), renderer.clone());
    let started = chrono::Utc::now();
    let result = engine.build(&req, &|e| renderer.event(e));
    interrupts.build_ended();
    let result = match result {
        Err(SolveError::Cancelled) => {
            let err = anyhow::Error::from(SolveError::Cancelled);
            recorder.finish(Err(&SolveError::Cancelled));
            renderer.finish(progress::Outcome::Failed(&err));
            crate::render::print_error(&err);
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Ok(result) => {
            recorder.finish(Ok(&result));
            renderer.finish(progress::Outcome::Built(
                &result.image.config_digest.to_string(),
            ));
            result
        }
        Err(err) => {
            recorder.finish(Err(&err));
            let err = anyhow::Error::from(err);
            handover.report(renderer.as_ref());
            renderer.finish(progress::Outcome::Failed(&err));
            return Err(err);
        }
    };
    let mut result = result;
    if attestations.any() {
        let facts = super::attest::BuildFacts {
            context_dir: &req.context_dir,
            dockerfile: &dockerfile,
            build_args: &req.build_args,
            target: req.target.as_deref(),
            epoch,
            started,
        };
        let attach_started = std::time::Instant::now();
        let (image, packages) = attach_per_platform(env, attestations, &result, &tags, &facts)
            .context("attaching attestations")?;
        let took = attach_started.elapsed().as_secs_f64();
        if !quiet {
            let mut parts = Vec::new();
            if attestations.sbom {
                parts.push(format!("SBOM ({packages} packages)"));
            }
            if let Some(p) = attestations.provenance {
                let mode = match p.mode {
                    kiln_attest::provenance::Mode::Max => "max",
                    kiln_attest::provenance::Mode::Min => "min",
                };
                let version = match p.version {
                    kiln_attest::provenance::Version::V1 => "v1",
                    kiln_attest::provenance::Version::V02 => "v0.2",
                };
                parts.push(format!("provenance (mode={mode}, SLSA {version})"));
            }
            eprintln!(
                "attestations: {} in index {} ({took:.2}s)",
                parts.join(", "),
                image.root_digest()
            );
        }
        result.image = image;
    }
    let id = result.image.config_digest.to_string();
    let names: Vec<String> = tags.iter().map(ToString::to_string).collect();
    for output in &outputs {
        super::image_outputs::write_output(
            env,
            output,
            &result.image,
            &result.platform_images,
            &names,
            tar_options,
            file_attestations,
        )?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    // With an output on stdout, the ID would corrupt it.
    if quiet
        && !outputs
            .iter()
            .any(super::image_outputs::Output::writes_stdout)
    {
        println!("{id}");
    }
    let local = || -> Result<super::pushing::Pushed> {
        Ok(super::pushing::Pushed {
            references: tags.clone(),
            digest: result.image.root_digest().clone(),
            size: env.store.blob_size(result.image.root_digest())?,
            media_type: if result.image.index_digest.is_some() {
                kiln_image::media_type::OCI_INDEX.to_owned()
            } else {
                result
                    .image
                    .manifest
                    .media_type
                    .clone()
                    .unwrap_or_else(|| kiln_image::media_type::OCI_MANIFEST.to_owned())
            },
        })
    };
    let outcome = if args.push {
        super::pushing::push_image(env, &result.image, &tags, push_format)?
    } else {
        local()?
    };
    if let Some(path) = &args.push_output.metadata_file {
        let config = (result.platform_images.len() == 1).then_some(&result.image.config_digest);
        super::pushing::write_metadata(path, config, &outcome)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The target platforms: `--platform`, else `DOCKER_DEFAULT_PLATFORM` (as the docker CLI
/// reads it), else the host's; either may list several (`linux/amd64,linux/arm64`).
fn target_platforms(flag: Option<&str>) -> Result<Vec<Platform>> {
    let from_env = std::env::var("DOCKER_DEFAULT_PLATFORM")
        .ok()
        .filter(|v| !v.trim().is_empty());
    match (flag, from_env) {
        (Some(p), _) => Platform::parse_list(p).map_err(|e| anyhow::anyhow!("--platform: {e}")),
        (None, Some(p)) => {
            Platform::parse_list(&p).map_err(|e| anyhow::anyhow!("DOCKER_DEFAULT_PLATFORM: {e}"))
        }
        (None, None) => Ok(vec![Platform::host()]),
    }
}

/// Attaches the attestations to each platform's image, as BuildKit does: one index holding
/// every platform's image and, per image, its attestation manifest; the names then point at
/// that index. Returns it as an image (this host's, else the first) and the packages found.
fn attach_per_platform(
    env: &Env,
    which: kiln_attest::options::Attestations,
    result: &kiln_solve::BuildResult,
    tags: &[kiln_image::Reference],
    facts: &super::attest::BuildFacts<'_>,
) -> Result<(kiln_images::StoredImage, usize)> {
    let mut packages = 0;
    let mut manifests = Vec::new();
    for image in &result.platform_images {
        let one = kiln_solve::BuildResult {
            image: image.clone(),
            ..result.clone()
        };
        let (attested, found) = super::attest::attach(env, which, &one, tags, facts)?;
        packages += found;
        let index = attested
            .index_digest
            .context("attaching attestations gave no index")?;
        let index: kiln_image::Index = serde_json::from_slice(&env.store.read_blob(&index)?)?;
        manifests.extend(index.manifests);
    }
    let index = kiln_image::Index {
        schema_version: 2,
        media_type: Some(kiln_image::media_type::OCI_INDEX.to_owned()),
        manifests,
        annotations: Default::default(),
    };
    let digest = env
        .store
        .write_blob(&kiln_image::to_canonical_json(&index))?;
    for tag in tags {
        env.store.set_name(&tag.to_string(), &digest)?;
    }
    let image = match kiln_images::StoredImage::load(&env.store, &digest) {
        Ok(image) => image,
        Err(_) => {
            let mut first = result.platform_images[0].clone();
            first.index_digest = Some(digest);
            first
        }
    };
    Ok((image, packages))
}

/// The exit code of a build stopped by Ctrl-C: 128 + SIGINT, as a shell reports it.
const INTERRUPTED: u8 = 130;

/// Ctrl-C during a build, as docker build does it: the first one cancels the build, which
/// stops cleanly (running steps killed, nothing half-written published); a second one, or one
/// after the build ended (a push, an export), exits at once.
struct Interrupts {
    build_running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Interrupts {
    /// The notice that the build is being cancelled goes through `renderer`, so it fits the
    /// progress display (a line, the live view, or a JSON warning).
    fn watch(
        env: &Env,
        cancel: CancelToken,
        renderer: std::sync::Arc<dyn progress::Renderer>,
    ) -> Interrupts {
        use std::sync::atomic::{AtomicBool, Ordering};
        let build_running = std::sync::Arc::new(AtomicBool::new(true));
        let running = std::sync::Arc::clone(&build_running);
        // Registered before the build starts, so an early Ctrl-C is not lost to the default
        // action; from here on SIGINT is this handler's for the rest of the process.
        let mut interrupts = match env.rt.block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        }) {
            Ok(stream) => stream,
            // Without a handler Ctrl-C keeps its default action: the build dies at once,
            // its sandboxes with it.
            Err(_) => return Interrupts { build_running },
        };
        env.rt.spawn(async move {
            interrupts.recv().await;
            if running.load(Ordering::SeqCst) {
                renderer.event(kiln_solve::ProgressEvent::Warning(
                    "cancelling the build (press Ctrl-C again to exit at once)".to_owned(),
                ));
                cancel.cancel();
                interrupts.recv().await;
            }
            std::process::exit(INTERRUPTED.into());
        });
        Interrupts { build_running }
    }

    fn build_ended(&self) {
        self.build_running
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `--allow` entitlements, as BuildKit names them.
fn parse_allow(allow: &[String]) -> Result<bool> {
    let mut network_host = false;
    for entitlement in allow.iter().flat_map(|a| a.split(',')) {
        match entitlement.trim() {
            "network.host" => network_host = true,
            "security.insecure" => bail!("--allow security.insecure is not supported by kiln"),
            other => bail!("unknown entitlement {other:?} for --allow (kiln knows network.host)"),
        }
    }
    Ok(network_host)
}

/// Reads every `--secret` now, so a missing file or variable fails the build before it starts.
fn load_secrets(flags: &[String]) -> Result<BTreeMap<String, kiln_solve::mounts::Secret>> {
    use kiln_solve::mounts::{load_secret, parse_secret_flag};
    let mut secrets = BTreeMap::new();
    for flag in flags {
        let (id, source) = parse_secret_flag(flag, &|name: &str| std::env::var_os(name).is_some())
            .map_err(anyhow::Error::msg)?;
        let env =
            |name: &str| std::env::var_os(name).map(std::os::unix::ffi::OsStringExt::into_vec);
        let secret = load_secret(&id, &source, &env).map_err(anyhow::Error::msg)?;
        secrets.insert(id, secret);
    }
    Ok(secrets)
}

/// The build's `SOURCE_DATE_EPOCH`, by BuildKit's (buildx's) rule: the build arg wins; else
/// kiln's environment variable becomes the build arg, so the engine and an
/// `ARG SOURCE_DATE_EPOCH` see it alike. Checked here, before the build checks run, so a
/// malformed value is an error naming where it came from.
fn source_date_epoch(build_args: &mut BTreeMap<String, String>) -> Result<Option<SourceDateEpoch>> {
    if let Some(value) = build_args.get(SOURCE_DATE_EPOCH) {
        return Ok(SourceDateEpoch::parse(value, EpochOrigin::BuildArg)?);
    }
    let Some(value) = std::env::var_os(SOURCE_DATE_EPOCH) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    let epoch = SourceDateEpoch::parse(&value, EpochOrigin::Environment)?;
    if epoch.is_some() {
        build_args.insert(SOURCE_DATE_EPOCH.to_owned(), value);
    }
    Ok(epoch)
}
