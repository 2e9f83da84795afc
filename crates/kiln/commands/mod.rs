//! One module per subcommand; `dispatch` opens what they share (store, registry client, runtime).

mod build;
mod check;
mod images;
mod import;
mod registry;
mod run;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_registry::{Reference, RegistryClient, RegistryConfig};
use kiln_store::Store;

use crate::cli::{Cli, Command, GlobalOpts};

/// What every command that touches images needs.
pub struct Env {
    pub store: Store,
    pub engine: kiln_solve::Engine,
    pub rt: tokio::runtime::Runtime,
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
        let registry = registry_client(global)?;
        let engine = kiln_solve::Engine::new(store.clone(), registry, rt.handle().clone());
        Ok(Env { store, engine, rt })
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.engine.registry
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

/// Mount work (overlays for RUN, COPY and containers) needs root for now and a private mount
/// namespace, so every mount kiln makes vanishes with the process even if it crashes.
fn enter_mount_namespace() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "this command needs root for now (rootless builds and runs are planned); run it with sudo"
        );
    }
    kiln_sandbox::enter_private_mount_namespace().context("creating a private mount namespace")?;
    Ok(())
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build(args) => {
            enter_mount_namespace()?;
            build::build(&Env::open(&cli.global)?, args)
        }
        Command::Run(args) => {
            enter_mount_namespace()?;
            run::run(&Env::open(&cli.global)?, args)
        }
        Command::Images => images::list(&Env::open(&cli.global)?),
        Command::Rmi { images } => images::remove(&Env::open(&cli.global)?, &images),
        Command::Tag { source, target } => images::tag(&Env::open(&cli.global)?, &source, &target),
        Command::Inspect { images } => images::inspect(&Env::open(&cli.global)?, &images),
        Command::Pull { image, platform } => {
            registry::pull(&Env::open(&cli.global)?, &image, platform.as_deref())
        }
        Command::Push(args) => registry::push(&Env::open(&cli.global)?, &args),
        Command::Login(args) => registry::login(&cli.global, args),
        Command::Logout { registry } => registry::logout(registry.as_deref()),
        Command::Import { file, image } => import::import(&Env::open(&cli.global)?, &file, &image),
    }
}
