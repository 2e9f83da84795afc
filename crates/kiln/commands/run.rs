//! `kiln run`: start an image's process in the sandbox, passing its output through and
//! returning its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_image::{Digest, Platform};
use kiln_sandbox::{BindMount, ProcessSpec, SandboxSpec};
use kiln_solve::{DEFAULT_PATH, StoredImage, lower_dirs, resolve_image};

use super::build::parse_network;
use super::{Env, parse_reference};
use crate::cli::RunArgs;
use crate::render::ProgressPrinter;

pub fn run(env: &Env, args: RunArgs) -> Result<ExitCode> {
    let img = match super::images::find_image(env, &args.image) {
        Ok(img) => img,
        Err(_) => {
            let reference = parse_reference(&args.image)?;
            let printer = ProgressPrinter::new(false);
            resolve_image(
                &env.store,
                env.registry(),
                env.rt.handle(),
                &reference,
                &Platform::host(),
                false,
                &|e| printer.event(e),
            )?
        }
    };
    let process = process_spec(&img, &args)?;
    let lowers = lower_dirs(&env.store, img.layers())?;

    // A container's writable layer lives under containers/<id>; without --rm it is kept, as
    // Docker keeps a stopped container.
    let id =
        Digest::of(format!("{}{:?}", img.manifest_digest, std::time::SystemTime::now()).as_bytes());
    let dir = env.store.root().join("containers").join(id.hex());
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut mounts = Vec::new();
    for v in &args.volumes {
        mounts.push(parse_volume(v)?.into());
    }
    let spec = SandboxSpec {
        lower_dirs: lowers,
        upper_dir: upper,
        work_dir: work,
        network: parse_network(&args.network)?,
        hostname: args
            .hostname
            .clone()
            .unwrap_or_else(|| id.short().to_owned()),
        mounts,
        security: super::confinement::security_options(&args.confinement)?,
        resources: super::confinement::resource_limits(&args.confinement)?,
    };
    let stdio = kiln_sandbox::Stdio {
        stdin: if args.interactive {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        },
        stdout: std::process::Stdio::inherit(),
        stderr: std::process::Stdio::inherit(),
    };
    let child = kiln_sandbox::spawn(&spec, &process, stdio)?;
    let code = child.wait()?.code();
    if args.rm {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn process_spec(img: &StoredImage, args: &RunArgs) -> Result<ProcessSpec> {
    let cfg = &img.config.config;
    let entrypoint = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    // A new entrypoint drops the image's CMD, as in Docker.
    let cmd = if !args.command.is_empty() {
        args.command.clone()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!(
            "no command specified: the image has no ENTRYPOINT or CMD; give one after the image name"
        );
    }
    let mut env = cfg.env.clone();
    for e in &args.env {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let cwd = args
        .workdir
        .clone()
        .or_else(|| cfg.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not an absolute path");
    }
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
        user: args
            .user
            .clone()
            .or_else(|| cfg.user.clone())
            .filter(|u| !u.is_empty()),
    })
}

/// `HOST:CONTAINER[:ro|rw]`.
fn parse_volume(v: &str) -> Result<BindMount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => bail!("invalid volume {v:?}: expected HOST:CONTAINER[:ro]"),
    };
    if !target.starts_with('/') {
        bail!("invalid volume {v:?}: the container path must be absolute");
    }
    let source = PathBuf::from(host).canonicalize().with_context(|| {
        format!("volume source {host} does not exist (named volumes are not supported yet)")
    })?;
    Ok(BindMount {
        source,
        target: target.to_owned(),
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_syntax() {
        let m = parse_volume("/tmp:/data:ro").unwrap();
        assert!(m.readonly);
        assert_eq!(m.target, "/data");
        assert!(parse_volume("/tmp:data").is_err());
        assert!(parse_volume("/nonexistent-kiln-dir:/x").is_err());
        assert!(parse_volume("a").is_err());
    }
}
