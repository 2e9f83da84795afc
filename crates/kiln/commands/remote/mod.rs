//! `kiln --host URL` (or `KILN_HOST`): the commands that go through a daemon's Engine API
//! instead of running in-process — `build`, `images`, `pull`, `push`, `ps`, `logs`, `run`,
//! `create`, `start`, `attach`, `exec`, `stop`, `restart`, `kill`, `wait`, `rm`, `commit`,
//! `rmi`, `tag`, `inspect`, `save`, `load`, `import`, `volume` — so one
//! kiln CLI drives a `kiln serve` on this machine or a remote one behind mutual TLS (or a
//! dockerd: the protocol is Docker's).
//!
//! This is the one seam between the two: `commands::dispatch` comes here first, and with a
//! host every command is either sent (each file turns flags into a request of `kiln_client`
//! and renders the answer as the in-process command does) or refused by name; nothing falls
//! back to the local store, which may not be the daemon's.

mod archive;
mod attach;
mod build;
mod containers;
mod images;
mod lifecycle;
mod registry;
mod session;
mod volumes;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_client::{Client, Host, TlsFiles};

use crate::cli::{Command, RemoteOpts};

/// The commands `--host` sends, for the refusal of the others.
const SENT: &str = "build, images, pull, push, ps, logs, run, create, start, attach, exec, \
                    stop, restart, kill, wait, rm, commit, rmi, tag, inspect, save, load, \
                    import and volume (but prune)";

/// A client of the daemon and the runtime its calls run on.
pub struct Remote {
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl Remote {
    /// Runs one client call to completion.
    pub fn call<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// The TLS files `--tlsverify` (or `KILN_TLS_VERIFY`, or any of the three file flags) asks
/// for: the flags, else `$KILN_CERT_PATH/{ca,cert,key}.pem`, else those in `~/.docker`, where
/// the docker CLI keeps its own.
fn tls_files(opts: &RemoteOpts) -> Option<TlsFiles> {
    let env_verify = std::env::var_os("KILN_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    let wanted = opts.tlsverify
        || env_verify
        || opts.tlscacert.is_some()
        || opts.tlscert.is_some()
        || opts.tlskey.is_some();
    if !wanted {
        return None;
    }
    let dir = std::env::var_os("KILN_CERT_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_default();
    let default = TlsFiles::in_dir(&dir);
    Some(TlsFiles {
        ca: opts.tlscacert.clone().unwrap_or(default.ca),
        cert: opts.tlscert.clone().unwrap_or(default.cert),
        key: opts.tlskey.clone().unwrap_or(default.key),
    })
}

/// The daemon `--host`/`KILN_HOST` names, if any (an empty `KILN_HOST` is none).
pub fn remote(opts: &RemoteOpts) -> Result<Option<Remote>> {
    let Some(host) = opts.host.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let host = Host::parse(host)?;
    let client = Client::new(host, tls_files(opts).as_ref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(Some(Remote { client, rt }))
}

/// Sends `command` to the daemon, or refuses it.
pub fn dispatch(remote: &Remote, command: Command) -> Result<ExitCode> {
    let refused = |name: &str| -> Result<ExitCode> {
        bail!(
            "kiln {name} does not go through the Engine API yet; with --host (or KILN_HOST) kiln \
             sends {SENT}; unset KILN_HOST to run it on the local store"
        )
    };
    match command {
        Command::Build(args) => build::build(remote, *args),
        Command::Images { filter } => images::list(remote, &filter),
        Command::Rmi { force, images } => images::remove(remote, &images, force),
        Command::Tag { source, target } => images::tag(remote, &source, &target),
        Command::Inspect {
            images,
            sbom: false,
            provenance: false,
        } => images::inspect(remote, &images),
        Command::Inspect { .. } => refused("inspect --sbom/--provenance"),
        Command::Pull { image, platform } => registry::pull(remote, &image, platform.as_deref()),
        Command::Push(args) => registry::push(remote, &args),
        Command::Ps { all, quiet } => containers::ps(remote, all, quiet),
        Command::Logs(args) => containers::logs(remote, &args),
        Command::Run(args) => containers::run(remote, &args),
        Command::Stop { time, containers } => containers::stop(remote, &containers, time),
        Command::Rm {
            force,
            volumes,
            containers,
        } => containers::rm(remote, &containers, force, volumes),
        Command::Create(args) => lifecycle::create(remote, &args),
        Command::Start {
            attach,
            interactive,
            containers,
        } => lifecycle::start(remote, &containers, attach, interactive),
        Command::Restart { time, containers } => lifecycle::restart(remote, &containers, time),
        Command::Kill { signal, containers } => lifecycle::kill(remote, &containers, &signal),
        Command::Wait {
            condition,
            containers,
        } => lifecycle::wait(remote, &containers, &condition),
        Command::Attach {
            no_stdin,
            detach_keys,
            container,
        } => attach::attach(remote, &container, no_stdin, &detach_keys),
        Command::Exec(args) => attach::exec(remote, &args),
        Command::Port { container, port } => {
            let value = remote.call(remote.client.container_inspect(&container))?;
            crate::commands::containers::ports::print(
                &container,
                &value["NetworkSettings"]["Ports"],
                port.as_deref(),
            )
        }
        Command::Commit {
            container,
            image,
            message,
            author,
        } => archive::commit(
            remote,
            &container,
            image.as_deref(),
            message.as_deref(),
            author.as_deref(),
        ),
        Command::Volume { command } => volumes::volume(remote, command),
        Command::Network { .. } => refused("network"),
        Command::Diff { .. } => refused("diff"),
        Command::Rename { .. } => refused("rename"),
        Command::Cp { .. } => refused("cp"),
        Command::Export { .. } => refused("export"),
        Command::Pause { .. } => refused("pause"),
        Command::Unpause { .. } => refused("unpause"),
        Command::Top { .. } => refused("top"),
        Command::Stats { .. } => refused("stats"),
        Command::Update { .. } => refused("update"),
        Command::Container { .. } => refused("container prune"),
        Command::Check { .. } => refused("check"),
        Command::System { .. } => refused("system"),
        Command::Prune(_) => refused("prune"),
        Command::BuildHistory { .. } => refused("build history"),
        Command::Save { output, images } => archive::save(remote, output.as_deref(), &images),
        Command::Load { input, quiet } => archive::load(remote, input.as_deref(), quiet),
        Command::Import { file, image } => archive::import(remote, &file, &image),
        // `commands::dispatch` runs these locally before it comes here: they never touch an
        // engine.
        Command::Serve(_) => refused("serve"),
        Command::Login(_) => refused("login"),
        Command::Logout { .. } => refused("logout"),
    }
}

/// The registry credentials the client has for `registry` (`kiln login`'s, or the docker
/// CLI's), sent as `X-Registry-Auth`: the daemon keeps none of its own for a client.
fn registry_auth(registry: &str) -> Result<Option<kiln_client::RegistryAuth>> {
    let credential = kiln_registry::CredentialStore::from_env()
        .get(registry)
        .with_context(|| format!("reading the credentials for {registry}"))?;
    Ok(credential.map(|c| {
        let mut auth = kiln_client::RegistryAuth {
            server_address: registry.to_owned(),
            ..Default::default()
        };
        match c {
            kiln_registry::Credential::Basic { username, password } => {
                auth.username = username;
                auth.password = password;
            }
            kiln_registry::Credential::IdentityToken(token) => auth.identity_token = token,
        }
        auth
    }))
}

/// A line of pull or push progress: the results (`Digest:`, `Status:`, `<tag>: digest: …`)
/// on stdout as the in-process commands print them, the per-layer progress on stderr.
fn print_progress(m: &kiln_client::JsonMessage) {
    let Some(status) = &m.status else {
        return;
    };
    let result = status.starts_with("Digest: ")
        || status.starts_with("Status: ")
        || status.contains(": digest: ");
    match (&m.id, result) {
        (_, true) => println!("{status}"),
        (Some(id), false) if !id.is_empty() => eprintln!("{id}: {status}"),
        _ => eprintln!("{status}"),
    }
}

/// Pulls `reference` into the daemon's store, progress as [`print_progress`].
fn pull_reference(
    remote: &Remote,
    reference: &kiln_image::Reference,
    platform: Option<&str>,
) -> Result<()> {
    let tag = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let auth = registry_auth(reference.registry())?;
    remote.call(remote.client.image_pull(
        &reference.repository_with_registry(),
        &tag,
        platform,
        auth.as_ref(),
        &mut |m| {
            print_progress(m);
            Ok(())
        },
    ))?;
    Ok(())
}

/// Creates the container `body` describes; a 404 (no such image in the daemon) is answered as
/// the docker CLI does: `Unable to find image`, a pull with progress, the create again.
/// `--platform` of `run`/`create`: the Engine API client sends no platform yet, and running
/// the daemon's default image silently would be wrong.
fn refuse_platform(args: &crate::cli::RunArgs) -> Result<()> {
    if let Some(platform) = &args.platform {
        bail!("--platform {platform:?} is not supported with --host yet; run kiln without --host");
    }
    Ok(())
}

fn create_pulling(
    remote: &Remote,
    name: Option<&str>,
    image: &str,
    body: &kiln_runtime::ContainerCreateRequest,
) -> Result<kiln_client::Created> {
    let created = match remote.call(remote.client.container_create(name, body)) {
        Err(kiln_client::ClientError::Api { status: 404, .. }) => {
            let reference = crate::commands::parse_reference(image)?;
            eprintln!("Unable to find image '{}' locally", reference.familiar());
            pull_reference(remote, &reference, None)?;
            remote.call(remote.client.container_create(name, body))?
        }
        other => other?,
    };
    for warning in created.warnings.iter().flatten() {
        eprintln!("WARNING: {warning}");
    }
    Ok(created)
}
