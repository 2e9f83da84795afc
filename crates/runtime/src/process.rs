//! The process a container runs: the create request's entrypoint, command, environment,
//! working directory and user over the image's config, combined as Docker combines them.

use kiln_images::StoredImage;
use kiln_sandbox::ProcessSpec;

use crate::create::{ContainerConfig, DEFAULT_PATH, invalid};
use crate::error::{Result, RuntimeError};

/// The entrypoint: the request's (`[]` or `[""]`: none) or the image's.
pub(crate) fn entrypoint(
    request: &ContainerConfig,
    image: &kiln_image::ContainerConfig,
) -> Vec<String> {
    match &request.entrypoint {
        Some(e) if e.iter().all(String::is_empty) => Vec::new(),
        Some(e) => e.clone(),
        None => image.entrypoint.clone().unwrap_or_default(),
    }
}

/// Sets `entry` (`K=V`) in `env`, replacing an entry of the same key.
fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split('=').next().unwrap_or_default();
    env.retain(|x| x.split('=').next() != Some(key));
    env.push(entry.to_owned());
}

/// What the container's process is: the request over the image's config, as Docker combines
/// them.
pub fn process_spec(request: &ContainerConfig, img: &StoredImage) -> Result<ProcessSpec> {
    let cfg = &img.config.config;
    let entrypoint = entrypoint(request, cfg);
    // A new entrypoint drops the image's CMD, as in Docker.
    let cmd = match (&request.cmd, &request.entrypoint) {
        (Some(cmd), _) if !cmd.is_empty() => cmd.clone(),
        (_, Some(_)) => Vec::new(),
        _ => cfg.cmd.clone().unwrap_or_default(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let mut env = cfg.env.clone();
    for e in request.env.iter().filter(|e| e.contains('=')) {
        set_env(&mut env, e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let cwd = request
        .working_dir
        .clone()
        .or_else(|| cfg.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid("working directory", cwd, "not an absolute path"));
    }
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
        user: request
            .user
            .clone()
            .or_else(|| cfg.user.clone())
            .filter(|u| !u.is_empty()),
        terminal: request.tty,
    })
}
