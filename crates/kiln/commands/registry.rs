//! `kiln pull`, `kiln push`, `kiln login` and `kiln logout`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::Platform;
use kiln_layer::CompressionRequest;
use kiln_registry::reference::DOCKER_HUB;
use kiln_registry::{Credential, CredentialStore, PushEvent};

use super::{Env, parse_reference, registry_client};
use crate::cli::{CompressionArgs, GlobalOpts, LoginArgs};
use crate::commands::images::find_image;
use crate::render::ProgressPrinter;

pub fn pull(env: &Env, name: &str, platform: Option<&str>) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let printer = ProgressPrinter::new(false);
    let img = kiln_solve::pull_image(
        &env.store,
        env.registry(),
        env.rt.handle(),
        &reference,
        &platform,
        &|e| printer.event(e),
    )?;
    println!("Digest: {}", img.manifest_digest);
    println!("Status: Downloaded image for {}", reference.familiar());
    Ok(ExitCode::SUCCESS)
}

pub fn push(env: &Env, name: &str, compression: &CompressionArgs) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    if reference.digest().is_some() {
        bail!("push needs a tag, not a digest: {name}");
    }
    let request = match (&compression.compression, compression.compression_level) {
        (None, None) => None,
        (None, Some(_)) => bail!("--compression-level needs --compression on push"),
        (Some(algorithm), level) => Some(CompressionRequest::from_flags(algorithm, level)?),
    };
    let mut img = find_image(env, name)?;
    if let Some(request) = &request {
        // Layers not yet in this setting are compressed once here; the store keeps the result
        // for every later push.
        let (converted, reencoded) = kiln_solve::image_in_compression(&env.store, &img, request)?;
        if reencoded > 0 {
            println!(
                "Compressed {reencoded} layer{} as {}",
                if reencoded == 1 { "" } else { "s" },
                request.compression.setting_name()
            );
        }
        img = converted;
    }
    println!(
        "The push refers to repository [{}]",
        reference.repository_with_registry()
    );
    let on_event = |e: PushEvent| match e {
        PushEvent::BlobExists { digest } => println!("{}: Layer already exists", digest.short()),
        PushEvent::BlobUploaded { digest } => println!("{}: Pushed", digest.short()),
        _ => {}
    };
    let digest = env.rt.block_on(env.registry().push(
        &env.store,
        &img.manifest_digest,
        &reference,
        &on_event,
    ))?;
    println!(
        "{}: digest: {} size: {}",
        reference.tag().unwrap_or("latest"),
        digest,
        env.store.blob_size(&digest)?
    );
    Ok(ExitCode::SUCCESS)
}

/// Verifies the credentials against the registry (as `docker login` does), then stores them in
/// `$DOCKER_CONFIG/config.json` or the configured credential helper.
pub fn login(global: &GlobalOpts, args: LoginArgs) -> Result<ExitCode> {
    let registry = args.registry.as_deref().unwrap_or(DOCKER_HUB);
    let Some(username) = args.username.filter(|u| !u.is_empty()) else {
        bail!("kiln login needs a username: -u USER");
    };
    let password = if args.password_stdin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the password from stdin")?;
        input.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(password) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        password
    } else {
        bail!("kiln login needs a password: --password-stdin (or -p PASSWORD)");
    };
    if password.is_empty() {
        bail!("kiln login: the password is empty");
    }
    let credential = Credential::Basic { username, password };
    let client = registry_client(global)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let identity_token = rt.block_on(client.login(registry, &credential))?;
    let store = CredentialStore::from_env();
    let location = store
        .store(registry, identity_token.as_ref().unwrap_or(&credential))
        .with_context(|| format!("saving the credentials for {registry}"))?;
    eprintln!("Credentials saved in {location}");
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// Removes the stored credentials for a registry.
pub fn logout(registry: Option<&str>) -> Result<ExitCode> {
    let registry = registry.unwrap_or(DOCKER_HUB);
    let store = CredentialStore::from_env();
    if store
        .erase(registry)
        .with_context(|| format!("removing the credentials for {registry}"))?
    {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}
