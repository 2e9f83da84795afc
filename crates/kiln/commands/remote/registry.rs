//! `kiln --host … pull` and `push`: the daemon talks to the registry, with the client's
//! credentials.

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{Remote, print_progress, pull_reference, registry_auth};
use crate::cli::PushArgs;
use crate::commands::parse_reference;

pub fn pull(remote: &Remote, name: &str, platform: Option<&str>) -> Result<ExitCode> {
    let reference = parse_reference(name)?;
    pull_reference(remote, &reference, platform)?;
    Ok(ExitCode::SUCCESS)
}

pub fn push(remote: &Remote, args: &PushArgs) -> Result<ExitCode> {
    let unsupported = [
        ("--compression", args.compression.compression.is_some()),
        (
            "--compression-level",
            args.compression.compression_level.is_some(),
        ),
        ("--format", args.output.format.is_some()),
        ("--metadata-file", args.output.metadata_file.is_some()),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, set)| *set) {
        bail!(
            "kiln push {flag} is not available through --host: the Engine API has no such option"
        );
    }
    if args.all_tags && args.images.len() != 1 {
        bail!("--all-tags takes one repository name, without a tag");
    }
    for name in &args.images {
        let reference = parse_reference(name)?;
        if reference.digest().is_some() {
            bail!("push needs a tag, not a digest: {name}");
        }
        // An empty tag pushes every tag of the repository (`--all-tags`).
        let tag = if args.all_tags {
            ""
        } else {
            reference.tag().unwrap_or("latest")
        };
        let auth = registry_auth(reference.registry())?;
        remote.call(remote.client.image_push(
            &reference.repository_with_registry(),
            tag,
            auth.as_ref(),
            &mut |m| {
                print_progress(m);
                Ok(())
            },
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
