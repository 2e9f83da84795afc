//! One module per subcommand; `dispatch` opens what they share (store, registry client, runtime).

mod archive;
mod attest;
mod binfmt;
mod build;
mod check;
mod confinement;
mod containers;
mod flags;
mod history;
mod image_outputs;
mod images;
mod import;
mod leftovers;
mod on_error;
mod pushing;
mod recording;
mod registry;
mod remote;
mod rootless;
mod serve;
mod system;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::Reference;
use kiln_registry::{RegistryClient, RegistryConfig};
use kiln_store::Store;

use crate::cli::{Cli, Command, GlobalOpts, SystemCommand};

/// Container commands that act on a container's files or processes run as root or, rootless,
/// as root of kiln's user namespace (`dispatch` has re-executed kiln into one by now).
fn require_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this container command needs root or a user namespace, and kiln runs as neither");
    }
    Ok(())
}

/// What every command that touches images needs.
///
/// The registry client (and the build engine that owns it) is made on first use: building it
/// reads every system root certificate, a few milliseconds that `kiln run` of a local image,
/// `kiln images` or `kiln start` would otherwise pay on each call for nothing.
pub struct Env {
    pub store: Store,
    pub rt: tokio::runtime::Runtime,
    global: GlobalOpts,
    engine: std::sync::OnceLock<kiln_solve::Engine>,
}

impl Env {
    fn open(global: &GlobalOpts) -> Result<Env> {
        let root = global.root.clone().unwrap_or_else(Store::default_root);
        let store = Store::open(&root)
            .with_context(|| format!("opening the kiln store at {}", root.display()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Env {
            store,
            rt,
            global: global.clone(),
            engine: std::sync::OnceLock::new(),
        })
    }

    /// The build engine, with the registry client, made the first time it is asked for.
    pub fn engine(&self) -> Result<&kiln_solve::Engine> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let registry = registry_client(&self.global)?;
        let engine =
            kiln_solve::Engine::new(self.store.clone(), registry, self.rt.handle().clone());
        // Commands run on one thread, so nobody else can have set it in between.
        Ok(self.engine.get_or_init(|| engine))
    }

    pub fn registry(&self) -> Result<&RegistryClient> {
        Ok(&self.engine()?.registry)
    }

    /// The engine and the runtime it runs on, for a process that serves until it ends.
    fn into_engine(self) -> Result<(kiln_solve::Engine, tokio::runtime::Runtime)> {
        let Env {
            store,
            rt,
            global,
            engine,
        } = self;
        let engine = match engine.into_inner() {
            Some(engine) => engine,
            None => kiln_solve::Engine::new(store, registry_client(&global)?, rt.handle().clone()),
        };
        Ok((engine, rt))
    }
}

/// The registry client every command uses: Docker's credentials and certs.d, the user's
/// insecure registries.
fn registry_client(global: &GlobalOpts) -> Result<RegistryClient> {
    Ok(RegistryClient::new(RegistryConfig {
        insecure_registries: global.insecure_registries.clone(),
        user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        certs_dir: global.registry_certs_dir.clone(),
        ..RegistryConfig::default()
    })?)
}

/// Parses an image name given on the command line.
pub fn parse_reference(name: &str) -> Result<Reference> {
    name.parse::<Reference>()
        .with_context(|| format!("invalid image name {name:?}"))
}

/// Mount work (overlays for RUN, COPY and containers) happens in a private mount namespace,
/// so every mount kiln makes vanishes with the process even if it crashes. Rootless kiln is
/// root of its user namespace by now (see `dispatch`).
fn enter_mount_namespace() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this command needs root or a user namespace, and kiln runs as neither");
    }
    kiln_sandbox::enter_private_mount_namespace().context("creating a private mount namespace")?;
    Ok(())
}

/// Opens the store for a command that adds or reads objects, holding the store lock shared so
/// `kiln prune` and `kiln check` wait until it is done (they hold it exclusive).
fn open_shared(global: &GlobalOpts) -> Result<(Env, kiln_store::StoreLock)> {
    let env = Env::open(global)?;
    let lock = env.store.lock_shared().context("locking the store")?;
    Ok((env, lock))
}

fn open_store(global: &GlobalOpts) -> Result<Store> {
    let root = global.root.clone().unwrap_or_else(Store::default_root);
    Store::open(&root).with_context(|| format!("opening the kiln store at {}", root.display()))
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    // With --host/KILN_HOST the command goes to that daemon (before any rootless re-exec: the
    // client needs no namespace). `serve` is the daemon itself (its own --host is where it
    // listens), and credentials stay with the client, which sends them with pulls and pushes.
    let local_only = matches!(
        cli.command,
        Command::Serve(_) | Command::Login(_) | Command::Logout { .. }
    );
    if !local_only && let Some(remote) = remote::remote(&cli.remote)? {
        return remote::dispatch(&remote, cli.command);
    }
    if !rustix::process::geteuid().is_root() && rootless::needs_user_namespace(&cli.command) {
        return rootless::run_in_user_namespace(&cli.global, &cli.command);
    }
    match cli.command {
        Command::Build(args) => {
            enter_mount_namespace()?;
            let (env, _lock) = open_shared(&cli.global)?;
            build::build(&env, *args)
        }
        Command::Run(args) => {
            enter_mount_namespace()?;
            let (env, _lock) = open_shared(&cli.global)?;
            containers::run::run(&env, *args)
        }
        Command::Create(args) => {
            enter_mount_namespace()?;
            let (env, _lock) = open_shared(&cli.global)?;
            let record = containers::create::create(&env, &args, false)?;
            println!("{}", record.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            attach,
            interactive,
            containers,
        } => {
            require_root()?;
            containers::start(&Env::open(&cli.global)?, &containers, attach, interactive)
        }
        Command::Attach {
            no_stdin,
            detach_keys,
            container,
        } => {
            containers::attach_command(&Env::open(&cli.global)?, &container, no_stdin, &detach_keys)
        }
        Command::Restart { time, containers } => {
            require_root()?;
            containers::restart(&open_store(&cli.global)?, &containers, time)
        }
        Command::Check { repair } => system::check(&open_store(&cli.global)?, repair),
        Command::System {
            command: SystemCommand::Df { verbose },
        } => system::df(&open_store(&cli.global)?, verbose),
        Command::System {
            command: SystemCommand::Binfmt { install },
        } => binfmt::binfmt(install),
        Command::Prune(args) => system::prune(&open_store(&cli.global)?, &args),
        Command::BuildHistory { command } => history::run(&open_store(&cli.global)?, command),
        Command::Images { filter } => images::list(&Env::open(&cli.global)?, &filter),
        Command::Rmi { force, images } => images::remove(&Env::open(&cli.global)?, &images, force),
        Command::Tag { source, target } => {
            let (env, _lock) = open_shared(&cli.global)?;
            images::tag(&env, &source, &target)
        }
        Command::Inspect {
            images,
            sbom: false,
            provenance: false,
        } => images::inspect(&Env::open(&cli.global)?, &images),
        Command::Inspect {
            images, provenance, ..
        } => attest::inspect(&Env::open(&cli.global)?, &images, provenance),
        Command::Ps { all, quiet } => containers::ps(&open_store(&cli.global)?, all, quiet),
        Command::Logs(args) => containers::logs(&open_store(&cli.global)?, &args),
        Command::Stop { time, containers } => {
            require_root()?;
            containers::stop(&open_store(&cli.global)?, &containers, time)
        }
        Command::Kill { signal, containers } => {
            require_root()?;
            containers::kill(&open_store(&cli.global)?, &containers, &signal)
        }
        Command::Wait {
            condition,
            containers,
        } => containers::wait(&open_store(&cli.global)?, &containers, &condition),
        Command::Port { container, port } => {
            containers::ports::port(&open_store(&cli.global)?, &container, port.as_deref())
        }
        Command::Exec(args) => {
            // Rootless, the helper joins the container's user namespace as its owner.
            containers::exec(&Env::open(&cli.global)?, args)
        }
        Command::Rm {
            force,
            volumes,
            containers,
        } => {
            require_root()?;
            containers::rm(&open_store(&cli.global)?, &containers, force, volumes)
        }
        Command::Commit {
            container,
            image,
            message,
            author,
        } => {
            let (env, _lock) = open_shared(&cli.global)?;
            containers::commit(
                &env,
                &container,
                image.as_deref(),
                message.as_deref(),
                author.as_deref(),
            )
        }
        Command::Network { command } => {
            containers::networks::network_command(&open_store(&cli.global)?, command)
        }
        Command::Diff { container } => {
            containers::manage::diff(&open_store(&cli.global)?, &container)
        }
        Command::Rename {
            container,
            new_name,
        } => containers::manage::rename(&open_store(&cli.global)?, &container, &new_name),
        Command::Cp { src, dest, archive } => {
            enter_mount_namespace()?;
            containers::copy::cp(&open_store(&cli.global)?, &src, &dest, archive)
        }
        Command::Export { container, output } => {
            enter_mount_namespace()?;
            containers::copy::export(&open_store(&cli.global)?, &container, output.as_deref())
        }
        Command::Pause { containers } => {
            require_root()?;
            containers::resources::pause(&open_store(&cli.global)?, &containers, true)
        }
        Command::Unpause { containers } => {
            require_root()?;
            containers::resources::pause(&open_store(&cli.global)?, &containers, false)
        }
        Command::Top { container, ps_args } => {
            containers::resources::top(&open_store(&cli.global)?, &container, &ps_args.join(" "))
        }
        Command::Stats {
            no_stream,
            containers,
        } => containers::resources::stats(&open_store(&cli.global)?, &containers, no_stream),
        Command::Update {
            memory,
            cpus,
            pids_limit,
            restart,
            containers,
        } => {
            require_root()?;
            containers::resources::update(
                &open_store(&cli.global)?,
                &containers,
                memory.as_deref(),
                cpus,
                pids_limit,
                restart.as_deref(),
            )
        }
        Command::Container {
            command: crate::cli::ContainerCommand::Prune { filter, force: _ },
        } => {
            require_root()?;
            containers::manage::prune(&open_store(&cli.global)?, &filter)
        }
        Command::Volume { command } => {
            containers::volumes::volume_command(&open_store(&cli.global)?, command)
        }
        Command::Serve(args) => {
            enter_mount_namespace()?;
            serve::serve(&cli.global, &args)
        }
        Command::Pull { image, platform } => {
            let (env, _lock) = open_shared(&cli.global)?;
            registry::pull(&env, &image, platform.as_deref())
        }
        Command::Push(args) => {
            let (env, _lock) = open_shared(&cli.global)?;
            registry::push(&env, &args)
        }
        Command::Login(args) => registry::login(&cli.global, args),
        Command::Logout { registry } => registry::logout(registry.as_deref()),
        Command::Save { output, images } => {
            let (env, _lock) = open_shared(&cli.global)?;
            archive::save(&env, output.as_deref(), &images)
        }
        Command::Load { input, quiet } => {
            let (env, _lock) = open_shared(&cli.global)?;
            archive::load(&env, input.as_deref(), quiet)
        }
        Command::Import { file, image } => {
            let (env, _lock) = open_shared(&cli.global)?;
            import::import(&env, &file, &image)
        }
    }
}
