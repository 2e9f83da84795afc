//! Wrappers around the third-party OCI tools tests use as independent checkers: skopeo,
//! umoci and oci-image-tool.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs `command`, failing with its command line, exit status and stderr unless it succeeds.
pub(crate) fn run_tool(command: &mut Command) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    let line = describe(command);
    let output = command.output().with_context(|| match program.as_str() {
        "skopeo" | "umoci" => format!("running {line} (install the Debian package {program})"),
        "oci-image-tool" => format!("running {line} (install the Debian package oci-image-tool)"),
        _ => format!("running {line}"),
    })?;
    if !output.status.success() {
        bail!(
            "{line} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    Ok(output)
}

fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// `docker://REFERENCE`, accepting a reference that already names a transport skopeo reads
/// (`docker://`, `oci:`, `oci-archive:`, `docker-archive:`).
fn docker_transport(reference: &str) -> String {
    const TRANSPORTS: [&str; 4] = ["docker://", "oci:", "oci-archive:", "docker-archive:"];
    if TRANSPORTS.iter().any(|t| reference.starts_with(t)) {
        reference.to_owned()
    } else {
        format!("docker://{reference}")
    }
}

/// `skopeo inspect` of an image in a registry (plain HTTP allowed) or in an archive named with
/// its transport (`oci-archive:FILE`, `docker-archive:FILE`): the parsed JSON summary,
/// with `Architecture`, `Os`, `Layers`, `Env`, `Digest`, ….
pub fn skopeo_inspect(reference: &str) -> Result<serde_json::Value> {
    let output = run_tool(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(docker_transport(reference)),
    )?;
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parsing skopeo inspect output for {reference}"))
}

/// The manifest (or index) bytes exactly as the registry serves them for `reference`.
pub fn skopeo_inspect_raw(reference: &str) -> Result<Vec<u8>> {
    let output = run_tool(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(docker_transport(reference)),
    )?;
    Ok(output.stdout)
}

/// Copies an image from a registry into an OCI layout at `layout_dir` under `tag`, so umoci and
/// oci-image-tool can check it. skopeo converts Docker media types to OCI on the way, so the
/// manifest digest in the layout may differ from the registry's.
pub fn skopeo_copy_to_oci_layout(reference: &str, layout_dir: &Path, tag: &str) -> Result<()> {
    run_tool(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(docker_transport(reference))
            .arg(format!("oci:{}:{tag}", layout_dir.display())),
    )?;
    Ok(())
}

/// Copies image `tag` of the OCI layout at `layout_dir` to `reference` in a registry (plain
/// HTTP allowed), keeping the manifest exactly as the layout has it; an index is copied with
/// every image it lists (`--all`), not only the host's.
pub fn skopeo_copy_oci_layout_to(layout_dir: &Path, tag: &str, reference: &str) -> Result<()> {
    run_tool(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout_dir.display()))
            .arg(docker_transport(reference)),
    )?;
    Ok(())
}

/// Adds a layer to image `tag` of the OCI layout at `layout_dir` (the tag then names the new
/// image) holding only a whiteout of `target`, with `umoci insert --whiteout`.
pub fn umoci_insert_whiteout(layout_dir: &Path, tag: &str, target: &str) -> Result<()> {
    let mut command = Command::new("umoci");
    command.arg("insert");
    if !rustix::process::geteuid().is_root() {
        command.arg("--rootless");
    }
    command
        .arg("--image")
        .arg(format!("{}:{tag}", layout_dir.display()))
        .args(["--whiteout", target]);
    run_tool(&mut command)?;
    Ok(())
}

/// Unpacks image `tag` of the OCI layout at `layout_dir` into a runtime bundle at `bundle_dir`
/// (which must not exist yet); the files land in `bundle_dir/rootfs`. Runs rootless when not
/// root, in which case ownership is not preserved.
pub fn umoci_unpack_oci_layout(layout_dir: &Path, tag: &str, bundle_dir: &Path) -> Result<()> {
    let mut command = Command::new("umoci");
    command.arg("unpack");
    if !rustix::process::geteuid().is_root() {
        command.arg("--rootless");
    }
    command
        .arg("--image")
        .arg(format!("{}:{tag}", layout_dir.display()))
        .arg(bundle_dir);
    run_tool(&mut command)?;
    Ok(())
}

/// Validates image `tag` of the OCI layout at `layout_dir` with `oci-image-tool validate`: the
/// layout, index, manifest and config against the spec's JSON schemas, and the blobs against
/// their digests. The Debian tool is 1.0.0-rc1: it takes `--type image` (not `imageLayout`),
/// and its schema rejects manifests with no layers (images `FROM scratch` with only metadata).
pub fn oci_image_tool_validate(layout_dir: &Path, tag: &str) -> Result<()> {
    let output = run_tool(
        Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref"])
            .arg(format!("name={tag}"))
            .arg(layout_dir),
    )?;
    // Belt and braces: a clean run ends with this line; problems are logged (and exit 1).
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.contains("Validation succeeded") {
        bail!(
            "oci-image-tool validate of {}:{tag} did not report success:\n{stdout}{}",
            layout_dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_tool_reports_command_and_stderr() {
        let err = run_tool(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("sh -c echo boom >&2; exit 3 failed"),
            "{text}"
        );
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn missing_tool_is_named() {
        let err = run_tool(&mut Command::new("kiln-no-such-tool")).unwrap_err();
        assert!(format!("{err:#}").contains("kiln-no-such-tool"), "{err:#}");
    }

    #[test]
    fn docker_transport_is_added_once() {
        assert_eq!(
            docker_transport("127.0.0.1:5000/a:b"),
            "docker://127.0.0.1:5000/a:b"
        );
        assert_eq!(docker_transport("docker://x/y"), "docker://x/y");
        assert_eq!(
            docker_transport("oci-archive:/tmp/img.tar"),
            "oci-archive:/tmp/img.tar"
        );
    }
}
