//! `kiln create` (and the first half of `kiln run`): the flags become one
//! `ContainerCreateRequest` in the Engine API's vocabulary (`request.rs`), the image is found
//! (or pulled, with progress), and the runtime creates the container; nothing is started.

use anyhow::Result;
use kiln_image::Platform;
use kiln_images::resolve_image;
use kiln_runtime::Runtime;
use kiln_store::ContainerRecord;

use super::super::flags::{RUN_NETWORKS, choose_network};
use super::super::{Env, parse_reference};
use super::request::request;
use crate::cli::RunArgs;
use crate::render::ProgressPrinter;

/// Creates the container `args` describe and returns its record.
pub fn create(env: &Env, args: &RunArgs, attached_stdin: bool) -> Result<ContainerRecord> {
    // Flags are checked before anything is pulled or created.
    let mut request = request(args, attached_stdin)?;
    // A bridge network (`bridge` as root is the real default bridge; rootless, the default
    // network as before) is the runtime's to connect; the others are decided here, where the
    // default network falls back to none (with a warning) when slirp4netns is missing.
    let bridge = matches!(args.network.as_deref(), Some(name)
        if !RUN_NETWORKS.contains(&name) || (name == "bridge" && kiln_network::privileged()));
    if !bridge {
        let network = choose_network(args.network.as_deref(), RUN_NETWORKS)?;
        request.host_config.network_mode = Some(network.name().to_owned());
    }
    request.host_config.mount_requests()?;
    request.host_config.security_options()?;
    request.host_config.extra_hosts()?;
    request.host_config.resource_limits()?;
    let platform = match args.platform.as_deref() {
        Some(text) => match Platform::parse_list(text)
            .map_err(anyhow::Error::msg)?
            .as_slice()
        {
            [one] => Some(one.clone()),
            _ => anyhow::bail!("--platform {text:?}: a container runs one platform"),
        },
        None => None,
    };
    let img = match kiln_images::find_image(&env.store, &args.image) {
        Ok(img) => match &platform {
            Some(p) => for_platform(env, &args.image, img, p)?,
            None => img,
        },
        Err(_) => {
            let reference = parse_reference(&args.image)?;
            let printer = ProgressPrinter::new(false);
            resolve_image(
                &env.store,
                env.registry()?,
                env.rt.handle(),
                &reference,
                platform.as_ref().unwrap_or(&Platform::host()),
                false,
                &|e| printer.image_event(e),
            )?
        }
    };
    // An image for another CPU runs only under emulation: say so now, not as an exec error.
    if let Some(problem) =
        kiln_solve::cannot_run_as("the container", &kiln_images::config_platform(&img.config))
        && !img.config.architecture.is_empty()
        && !img.config.os.is_empty()
    {
        anyhow::bail!("{}: {problem}", args.image);
    }
    let rt = Runtime::new(env.store.clone());
    Ok(rt.create(args.name.as_deref(), &request, &img)?)
}

/// The image for `platform` that `name` found: its index's entry for it (a multi-platform
/// build, a pulled index), or the image itself when it is for that platform.
fn for_platform(
    env: &Env,
    name: &str,
    img: kiln_images::StoredImage,
    platform: &Platform,
) -> Result<kiln_images::StoredImage> {
    if let Some(index) = &img.index_digest {
        return kiln_images::StoredImage::load_for_platform(&env.store, index, platform)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"));
    }
    let own = kiln_images::config_platform(&img.config);
    if !platform.matches(&own) {
        anyhow::bail!("{name}: the image is for {own}, not {platform}");
    }
    Ok(img)
}
