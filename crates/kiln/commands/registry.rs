//! `kiln pull`, `kiln push`, `kiln login` and `kiln logout`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::Platform;
use kiln_image::Reference;
use kiln_images::StoredImage;
use kiln_layer::CompressionRequest;
use kiln_registry::reference::DOCKER_HUB;
use kiln_registry::{Credential, CredentialStore};

use super::pushing::{parse_format, push_image, write_metadata};
use super::{Env, parse_reference, registry_client};
use crate::cli::{GlobalOpts, LoginArgs, PushArgs};
use crate::render::ProgressPrinter;

pub fn pull(env: &Env, name: &str, platform: Option<&str>) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    let platform = match platform {
        Some(p) => p.parse::<Platform>().map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let printer = ProgressPrinter::new(false);
    let img = kiln_images::pull_image(
        &env.store,
        env.registry()?,
        env.rt.handle(),
        &reference,
        &platform,
        &|e| printer.image_event(e),
    )?;
    println!("Digest: {}", img.manifest_digest);
    println!("Status: Downloaded image for {}", reference.familiar());
    Ok(ExitCode::SUCCESS)
}

pub fn push(env: &Env, args: &PushArgs) -> Result<ExitCode> {
    let compression = &args.compression;
    let request = match (&compression.compression, compression.compression_level) {
        (None, None) => None,
        (None, Some(_)) => bail!("--compression-level needs --compression on push"),
        (Some(algorithm), level) => Some(CompressionRequest::from_flags(algorithm, level)?),
    };
    let format = parse_format(&args.output)?;
    let mut targets: Vec<(Reference, StoredImage)> = Vec::new();
    if args.all_tags {
        let [repository] = args.images.as_slice() else {
            bail!("--all-tags takes one repository name, without a tag");
        };
        let wanted = parse_reference(repository)?;
        if repository.contains('@')
            || repository
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
        {
            bail!("--all-tags takes a repository name without a tag or digest: {repository}");
        }
        for (name, manifest) in env.store.list_names()? {
            let Ok(reference) = name.parse::<Reference>() else {
                continue;
            };
            if reference.registry() == wanted.registry()
                && reference.repository() == wanted.repository()
                && reference.tag().is_some()
            {
                targets.push((reference, StoredImage::load(&env.store, &manifest)?));
            }
        }
        if targets.is_empty() {
            bail!("no tags of {repository} in the local store");
        }
    } else {
        for name in &args.images {
            let reference = parse_reference(name)?;
            if reference.digest().is_some() {
                bail!("push needs a tag, not a digest: {name}");
            }
            targets.push((reference, kiln_images::find_image(&env.store, name)?));
        }
    }
    let mut last = None;
    for (reference, mut img) in targets {
        if let Some(request) = &request {
            // Layers not yet in this setting are compressed once here; the store keeps the
            // result for every later push.
            let (converted, reencoded) =
                kiln_images::image_in_compression(&env.store, &img, request)?;
            if reencoded > 0 {
                println!(
                    "Compressed {reencoded} layer{} as {}",
                    if reencoded == 1 { "" } else { "s" },
                    request.compression.setting_name()
                );
            }
            img = converted;
        }
        let pushed = push_image(env, &img, std::slice::from_ref(&reference), format)?;
        last = Some((img, pushed));
    }
    if let (Some(path), Some((img, pushed))) = (&args.output.metadata_file, &last) {
        // An index of several platforms has no one config (BuildKit leaves the key out).
        let platforms = kiln_images::StoredImage::index_platforms(&env.store, img.root_digest())?;
        let config = (platforms.len() <= 1).then_some(&img.config_digest);
        write_metadata(path, config, pushed)?;
    }
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
