//! `kiln build --output` (and the archive writing `kiln save` shares): `--output` follows
//! BuildKit/buildx: `type=oci|docker,dest=FILE` writes the image as an OCI layout tar or a
//! `docker load`-able tar, `type=local,dest=DIR` the final filesystem, `type=tar,dest=FILE`
//! that filesystem as one tar; `dest=-` is stdout; a bare `-o DIR` is `type=local,dest=DIR`
//! and a bare `-o -` is `type=tar,dest=-`. A helper, not a command.
//!
//! Attestations travel as BuildKit's exporters carry them: in the OCI layout's index, and as
//! `sbom.spdx.json` / `provenance.json` files at the root of a `local` or `tar` output.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_export::ArchiveFormat;
use kiln_image::Descriptor;
use kiln_image::layout::NamedManifest;
use kiln_images::StoredImage;

use super::{Env, parse_reference};

/// One `--output` of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An image archive, with extra names (`name=`) besides the build's tags.
    Image {
        format: ArchiveFormat,
        dest: Dest,
        names: Vec<String>,
    },
    /// The final filesystem into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as one tar.
    Tar { dest: Dest },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    File(PathBuf),
}

impl Output {
    pub fn writes_stdout(&self) -> bool {
        matches!(
            self,
            Output::Image {
                dest: Dest::Stdout,
                ..
            } | Output::Tar { dest: Dest::Stdout }
        )
    }
}

/// Parses one `--output` value as buildx does.
pub fn parse_output(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(match spec {
            "-" => Output::Tar { dest: Dest::Stdout },
            "" => bail!("--output needs a value: type=TYPE,dest=PATH or a directory"),
            dir => Output::Local {
                dest: PathBuf::from(dir),
            },
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut names = Vec::new();
    for field in spec.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            bail!("--output {spec:?}: {field:?} is not KEY=VALUE");
        };
        match key.trim() {
            "type" => kind = Some(value.trim().to_owned()),
            "dest" => dest = Some(value.to_owned()),
            // Several names are separated by `,` in BuildKit, which the field split has taken
            // apart: `name=a,name=b` is the form kiln accepts.
            "name" => names.push(value.to_owned()),
            other => bail!(
                "--output {spec:?}: unknown option {other:?} (kiln knows type, dest and name)"
            ),
        }
    }
    let Some(kind) = kind else {
        bail!("--output {spec:?}: no type= (oci, docker, local or tar)");
    };
    let Some(dest) = dest.filter(|d| !d.is_empty()) else {
        bail!("--output {spec:?}: type={kind} needs dest= (a path, or - for stdout)");
    };
    let to_dest = |d: String| {
        if d == "-" {
            Dest::Stdout
        } else {
            Dest::File(PathBuf::from(d))
        }
    };
    if !names.is_empty() && !matches!(kind.as_str(), "oci" | "docker") {
        bail!("--output {spec:?}: name= applies to type=oci and type=docker only");
    }
    Ok(match kind.as_str() {
        "oci" => Output::Image {
            format: ArchiveFormat::Oci,
            dest: to_dest(dest),
            names,
        },
        "docker" => Output::Image {
            format: ArchiveFormat::Docker,
            dest: to_dest(dest),
            names,
        },
        "tar" => Output::Tar {
            dest: to_dest(dest),
        },
        "local" if dest == "-" => {
            bail!("--output {spec:?}: type=local writes a directory; use type=tar for stdout")
        }
        "local" => Output::Local {
            dest: PathBuf::from(dest),
        },
        "registry" | "image" => {
            bail!("--output type={kind} is not supported; use -t NAME and kiln push (or --push)")
        }
        other => bail!("--output {spec:?}: unknown type {other:?} (oci, docker, local or tar)"),
    })
}

/// Writes one build output for the built image `image`, named `tags` (full references);
/// `file_attestations` are the attestations to write beside a filesystem output (those the
/// build was asked for; the image's index holds them).
pub fn write_output(
    env: &Env,
    output: &Output,
    image: &StoredImage,
    platform_images: &[StoredImage],
    tags: &[String],
    tar_options: kiln_layer::TarOptions,
    file_attestations: kiln_attest::options::Attestations,
) -> Result<()> {
    // A multi-platform build: the OCI archive holds its index; the filesystem outputs get a
    // directory per platform, named as buildx names them (`linux_arm64`).
    let multi = platform_images.len() > 1;
    match output {
        Output::Image {
            format,
            dest,
            names,
        } => {
            let mut all_names = tags.to_vec();
            for name in names {
                all_names.push(parse_reference(name)?.to_string());
            }
            // An OCI layout carries the index with the attestations; so does a docker archive
            // (its index.json), though `docker load` into the classic store reads only
            // manifest.json. A docker archive holds one image per name, so not an index of
            // several platforms.
            let images = [match format {
                ArchiveFormat::Docker if multi => bail!(
                    "--output type=docker holds one image per name, and this build made {} \
                     (one per platform); use type=oci for the index, as with buildx",
                    platform_images.len()
                ),
                _ => named_root(env, image, all_names)?,
            }];
            write_to(dest, |out| {
                kiln_export::write_archive(&env.store, &images, *format, out)
                    .map(drop)
                    .map_err(Into::into)
            })
        }
        Output::Local { dest } if multi => {
            for platform_image in platform_images {
                let dir = dest.join(platform_dir(platform_image));
                kiln_export::export_filesystem(&env.store, &platform_image.manifest_digest, &dir)
                    .with_context(|| format!("exporting the filesystem to {}", dir.display()))?;
                write_attestation_files(env, platform_image, file_attestations, &dir)?;
            }
            Ok(())
        }
        Output::Local { dest } => {
            kiln_export::export_filesystem(&env.store, &image.manifest_digest, dest)
                .with_context(|| format!("exporting the filesystem to {}", dest.display()))?;
            write_attestation_files(env, image, file_attestations, dest)
        }
        Output::Tar { dest } => {
            let staging = env.store.temp_dir("export-")?;
            if multi {
                for platform_image in platform_images {
                    let dir = staging.path().join(platform_dir(platform_image));
                    kiln_export::export_filesystem(
                        &env.store,
                        &platform_image.manifest_digest,
                        &dir,
                    )?;
                    write_attestation_files(env, platform_image, file_attestations, &dir)?;
                }
            } else {
                kiln_export::export_filesystem(&env.store, &image.manifest_digest, staging.path())?;
                write_attestation_files(env, image, file_attestations, staging.path())?;
            }
            write_to(dest, |out| {
                kiln_layer::write_tar_with(
                    staging.path(),
                    kiln_layer::SourceKind::Plain,
                    tar_options,
                    out,
                )
                .map(drop)
                .map_err(Into::into)
            })
        }
    }
}

/// The attestations `which` selects, as files at the root of `dir` (mode 0600, as BuildKit
/// writes them), their subjects the image's files.
fn write_attestation_files(
    env: &Env,
    image: &StoredImage,
    which: kiln_attest::options::Attestations,
    dir: &Path,
) -> Result<()> {
    let Some(index) = image.index_digest.as_ref().filter(|_| which.any()) else {
        return Ok(());
    };
    let layers = kiln_images::lower_dirs(&env.store, image.layers())?;
    let subjects = kiln_attest::files::subjects(&kiln_attest::rootfs::RootFs::new(layers))
        .context("hashing the image's files for the attestations' subjects")?;
    let files =
        kiln_attest::files::files(&env.store, index, &image.manifest_digest, which, &subjects)?;
    for file in files {
        let path = dir.join(&file.name);
        let mut options = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        out.write_all(&file.bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `image` as its names point at it: its index when it has one (attestations), else its
/// manifest.
/// The directory of one platform's filesystem in a multi-platform local or tar output:
/// `os_arch[_variant]`, as buildx writes them.
fn platform_dir(image: &StoredImage) -> String {
    kiln_images::config_platform(&image.config)
        .to_string()
        .replace('/', "_")
}

pub fn named_root(env: &Env, image: &StoredImage, names: Vec<String>) -> Result<NamedManifest> {
    let Some(index) = &image.index_digest else {
        return named(env, image, names);
    };
    Ok(NamedManifest {
        manifest: Descriptor::new(
            kiln_image::media_type::OCI_INDEX,
            index.clone(),
            env.store.blob_size(index)?,
        ),
        names,
    })
}

fn named(env: &Env, image: &StoredImage, names: Vec<String>) -> Result<NamedManifest> {
    let size = env.store.blob_size(&image.manifest_digest)?;
    Ok(NamedManifest {
        manifest: Descriptor::new(
            image.manifest.effective_media_type(),
            image.manifest_digest.clone(),
            size,
        ),
        names,
    })
}

/// Runs `write` into stdout, or into a temp file beside `path` renamed over it on success, so a
/// failed export leaves no partial file under the name.
pub fn write_to(dest: &Dest, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")?;
            Ok(())
        }
        Dest::File(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let mut out = BufWriter::with_capacity(256 * 1024, tmp);
            write(&mut out).with_context(|| format!("writing {}", path.display()))?;
            let tmp = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path)
                .map_err(|e| e.error)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse_as_buildx_reads_them() {
        assert_eq!(
            parse_output("type=oci,dest=img.tar").unwrap(),
            Output::Image {
                format: ArchiveFormat::Oci,
                dest: Dest::File("img.tar".into()),
                names: vec![]
            }
        );
        assert_eq!(
            parse_output("type=docker,dest=-,name=a:1,name=b").unwrap(),
            Output::Image {
                format: ArchiveFormat::Docker,
                dest: Dest::Stdout,
                names: vec!["a:1".into(), "b".into()]
            }
        );
        assert_eq!(
            parse_output("out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        assert_eq!(
            parse_output("type=local,dest=out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        assert_eq!(
            parse_output("-").unwrap(),
            Output::Tar { dest: Dest::Stdout }
        );
        assert!(parse_output("-").unwrap().writes_stdout());
        assert!(!parse_output("type=oci,dest=x").unwrap().writes_stdout());
    }

    #[test]
    fn bad_output_specs_say_what_is_wrong() {
        for (spec, expect) in [
            ("type=oci", "needs dest="),
            ("dest=x", "no type="),
            ("type=zip,dest=x", "unknown type \"zip\""),
            ("type=oci,dest=x,compress=1", "unknown option \"compress\""),
            ("type=local,dest=-", "type=tar"),
            ("type=local,dest=x,name=a", "name= applies"),
            ("type=oci,dest", "not KEY=VALUE"),
        ] {
            let err = parse_output(spec).unwrap_err().to_string();
            assert!(err.contains(expect), "{spec}: {err}");
        }
    }
}
