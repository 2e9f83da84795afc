//! `kiln --host … build`: the context is tarred here (honouring `.dockerignore`, with the
//! builder's own matcher) and streamed to `POST /build` while it is read; the daemon's message
//! stream is printed as it comes (its `Step N/M` lines and step output, the plain progress of
//! the legacy builder), and a failed build exits with the daemon's `errorDetail` and code.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_client::{BuildOptions, ClientError, ContextFilter};
use kiln_solve::dockerignore::IgnoreMatcher;

use super::Remote;
use crate::cli::BuildArgs;
use crate::commands::flags::build_args;
use crate::commands::parse_reference;
use crate::progress::Mode;
use crate::render::print_error;

/// The builder's `.dockerignore` rules deciding what the client sends.
struct Ignore(IgnoreMatcher);

impl ContextFilter for Ignore {
    fn excluded(&self, rel_path: &str) -> bool {
        self.0.is_excluded(rel_path)
    }
    fn may_include_below(&self, rel_dir: &str) -> bool {
        self.0.may_include_below(rel_dir)
    }
}

/// Flags whose work happens in the in-process builder only (exports, attestations, secrets,
/// the remote cache): the legacy build protocol has no place for them.
fn refuse_local_only(args: &BuildArgs) -> Result<()> {
    let set = [
        ("--secret", !args.secrets.is_empty()),
        ("--allow", !args.allow.is_empty()),
        ("--no-cache-filter", !args.no_cache_filter.is_empty()),
        ("--cache-from", !args.cache_from.is_empty()),
        ("--cache-to", !args.cache_to.is_empty()),
        ("--explain", args.explain),
        (
            "--on-error",
            args.on_error.as_deref().is_some_and(|m| m != "fail"),
        ),
        ("--jobs", args.jobs.is_some()),
        ("--output", !args.outputs.is_empty()),
        ("--push", args.push),
        ("--format", args.push_output.format.is_some()),
        ("--metadata-file", args.push_output.metadata_file.is_some()),
        ("--check", args.check),
        ("--sbom", args.sbom.is_some()),
        ("--provenance", args.provenance.is_some()),
        ("--attest", !args.attest.is_empty()),
        ("--compression", args.compression.compression.is_some()),
        (
            "--compression-level",
            args.compression.compression_level.is_some(),
        ),
        ("--label", !args.buildx.labels.is_empty()),
        ("--annotation", !args.buildx.annotations.is_empty()),
        ("--build-context", !args.buildx.build_contexts.is_empty()),
        ("--ssh", !args.buildx.ssh.is_empty()),
        (
            "--call",
            args.buildx.call != "build" || args.buildx.print.is_some(),
        ),
        (
            "-f -",
            args.file.as_deref().is_some_and(|f| f.as_os_str() == "-"),
        ),
        (
            "a git or URL context",
            kiln_solve::remote_context::RemoteContext::parse(&args.context.to_string_lossy())
                .is_some(),
        ),
    ];
    let flags: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect();
    if !flags.is_empty() {
        bail!(
            "kiln build {} cannot go through --host: the Engine API's build has no such option \
             (run the build in-process, without KILN_HOST)",
            flags.join(", ")
        );
    }
    Ok(())
}

pub fn build(remote: &Remote, args: BuildArgs) -> Result<ExitCode> {
    refuse_local_only(&args)?;
    let quiet = args.quiet
        || match Mode::from_flag(&args.progress)? {
            Mode::Plain | Mode::Tty => false,
            Mode::Quiet => true,
            Mode::RawJson => bail!(
                "--progress rawjson is kiln's in-process event stream; through --host the \
                 daemon sends Docker's build messages (use plain)"
            ),
        };
    for t in &args.tags {
        parse_reference(t)?;
    }
    let context = if args.context.as_os_str() == "-" {
        let name = args.file.as_deref().map_or("Dockerfile".to_owned(), |f| {
            f.to_string_lossy().into_owned()
        });
        kiln_client::context::from_tar(std::io::stdin(), &name)
    } else {
        let ignore = IgnoreMatcher::from_context(&args.context)
            .with_context(|| format!("build context {}", args.context.display()))?;
        kiln_client::context::from_dir(&args.context, args.file.as_deref(), Ignore(ignore))?
    };
    let options = BuildOptions {
        tags: args.tags.clone(),
        build_args: build_args(&args.build_args),
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        platform: args.platform.clone(),
        network_mode: args.network.clone(),
        extra_hosts: args.add_host.clone(),
        shm_size: args
            .buildx
            .shm_size
            .as_deref()
            .map(crate::commands::flags::parse_size)
            .transpose()?,
        ulimits: args
            .buildx
            .ulimits
            .iter()
            .map(|u| {
                let u = kiln_sandbox::Ulimit::parse(u)?;
                let n = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
                Ok((u.name.clone(), n(u.soft), n(u.hard)))
            })
            .collect::<Result<_>>()?,
        quiet,
    };
    let result = remote.call(remote.client.build(context, &options, &mut |m| {
        if quiet {
            return Ok(());
        }
        let mut stderr = std::io::stderr().lock();
        let written = match (&m.stream, &m.status) {
            (Some(text), _) => std::io::Write::write_all(&mut stderr, text.as_bytes()),
            // A base image pulled for the build.
            (None, Some(status)) => match &m.id {
                Some(id) => writeln!(stderr, "{id}: {status}"),
                None => writeln!(stderr, "{status}"),
            },
            (None, None) => Ok(()),
        };
        written.map_err(|source| ClientError::Output {
            what: "the build output",
            source,
        })
    }));
    let id = match result {
        Ok(id) => id,
        Err(e @ ClientError::Stream { .. }) => {
            let code = e.exit_code();
            print_error(&anyhow::Error::from(e));
            return Ok(ExitCode::from(code));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}
