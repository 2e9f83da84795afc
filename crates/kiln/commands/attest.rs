//! `kiln build --sbom/--provenance/--attest` (attaching after the build) and
//! `kiln inspect --sbom/--provenance`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_attest::attach::ImageEntry;
use kiln_attest::options::{AttestFlags, Attestations};
use kiln_attest::provenance::{Material, Mode, ProvenanceInput};
use kiln_attest::statement::{SLSA_V1_PREDICATE, SLSA_V02_PREDICATE, SPDX_PREDICATE, image_purl};
use kiln_image::{Digest, Platform, Reference};
use kiln_images::StoredImage;
use kiln_solve::{BuildResult, SourceDateEpoch};

use super::Env;
use crate::cli::BuildArgs;

/// The attestation flags of a build, checked before it starts.
pub fn flags(args: &BuildArgs) -> Result<AttestFlags> {
    let mut flags = AttestFlags::default();
    if let Some(v) = &args.sbom {
        flags.sbom_flag(v)?;
    }
    if let Some(v) = &args.provenance {
        flags.provenance_flag(v)?;
    }
    for v in &args.attest {
        flags.attest_flag(v)?;
    }
    Ok(flags)
}

/// What the build was asked to do, as the provenance records it.
pub struct BuildFacts<'a> {
    pub context_dir: &'a Path,
    pub dockerfile: &'a Path,
    pub build_args: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub epoch: Option<SourceDateEpoch>,
    pub started: chrono::DateTime<chrono::Utc>,
}

/// Makes the attestations `which` asks for, attaches them in an index and points the build's
/// names at it. Returns the image as its names now load (reached through the index).
pub fn attach(
    env: &Env,
    which: Attestations,
    result: &BuildResult,
    tags: &[Reference],
    facts: &BuildFacts<'_>,
) -> Result<(StoredImage, usize)> {
    let image = &result.image;
    let platform = Platform {
        variant: image.config.variant.clone(),
        ..Platform::new(&image.config.os, &image.config.architecture)
    };
    let layers = if which.sbom {
        kiln_images::lower_dirs(&env.store, image.layers())?
    } else {
        Vec::new()
    };
    let dockerfile_bytes = std::fs::read(facts.dockerfile)
        .with_context(|| format!("reading {}", facts.dockerfile.display()))?;
    let dockerfile_name = facts
        .dockerfile
        .strip_prefix(facts.context_dir)
        .unwrap_or_else(|_| Path::new(facts.dockerfile.file_name().unwrap_or_default()))
        .to_string_lossy()
        .into_owned();
    let finished = chrono::Utc::now();
    let rfc3339 =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let materials = result
        .bases
        .iter()
        .filter_map(|b| {
            let reference = b.reference.parse::<Reference>().ok()?;
            Some(Material {
                uri: image_purl(Some(&reference), &b.platform),
                digest: b.manifest.clone(),
            })
        })
        .collect();
    let scan_context = scan_context(
        facts.build_args,
        &String::from_utf8_lossy(&dockerfile_bytes),
    );
    let mut extra_scans = Vec::new();
    if which.sbom && scan_context {
        extra_scans.push(("context".to_owned(), vec![facts.context_dir.to_path_buf()]));
    }
    if which.sbom {
        for stage in &result.scan_stages {
            let dirs = kiln_images::lower_dirs(&env.store, stage.layers.iter().cloned())?;
            extra_scans.push((format!("stage-{}", stage.name), dirs));
        }
    }
    let request = kiln_attest::make::Request {
        which,
        image: ImageEntry {
            manifest: image.manifest_digest.clone(),
            media_type: image.manifest.effective_media_type().to_owned(),
            platform: platform.clone(),
        },
        name: tags.first().cloned(),
        layers,
        extra_scans,
        provenance: ProvenanceInput {
            mode: Mode::Min,
            builder_id: BUILDER_ID.to_owned(),
            dockerfile_name,
            dockerfile_digest: Digest::of(&dockerfile_bytes),
            target: facts.target.map(str::to_owned),
            build_args: facts.build_args.clone(),
            platform,
            materials,
            started: rfc3339(facts.started),
            finished: rfc3339(finished),
            invocation_id: Digest::of(
                format!(
                    "{}{}",
                    image.manifest_digest,
                    facts.started.timestamp_nanos_opt().unwrap_or(0)
                )
                .as_bytes(),
            )
            .hex()[..26]
                .to_owned(),
            reproducible: facts.epoch.is_some(),
        },
        created: facts
            .epoch
            .map_or_else(|| rfc3339(finished), SourceDateEpoch::rfc3339),
        tool: format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION")),
    };
    // The caller names the index: a multi-platform build merges one index per platform.
    let attested = kiln_attest::make::attest(&env.store, &request)?;
    let image = StoredImage::load(&env.store, &attested.index)?;
    Ok((image, attested.packages))
}

/// `BUILDKIT_SBOM_SCAN_CONTEXT`, as BuildKit reads it: a build arg, else the default of a
/// global `ARG` (before the first `FROM`).
fn scan_context(build_args: &BTreeMap<String, String>, dockerfile: &str) -> bool {
    const NAME: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";
    let on = |v: &str| matches!(v.trim().trim_matches('"'), "true" | "1");
    if let Some(v) = build_args.get(NAME) {
        return on(v);
    }
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.eq_ignore_ascii_case("FROM") {
            break;
        }
        if first.eq_ignore_ascii_case("ARG")
            && let Some((name, value)) = words.next().and_then(|w| w.split_once('='))
            && name == NAME
        {
            return on(value);
        }
    }
    false
}

/// The provenance's `builder.id`: kiln run by this user (BuildKit's is empty unless the
/// builder is named; SLSA wants a URI).
const BUILDER_ID: &str = "urn:kiln:builder";

/// `kiln inspect --sbom` / `--provenance`: the statements, as a JSON array per image.
pub fn inspect(env: &Env, names: &[String], provenance: bool) -> Result<ExitCode> {
    let (predicates, what, flag): (&[&str], _, _) = if provenance {
        (
            &[SLSA_V02_PREDICATE, SLSA_V1_PREDICATE],
            "provenance",
            "--provenance=mode=min",
        )
    } else {
        (&[SPDX_PREDICATE], "SBOM", "--sbom=true")
    };
    let mut out = Vec::new();
    for name in names {
        let img = kiln_images::find_image(&env.store, name)?;
        let no_attestation = || kiln_attest::AttestError::NoAttestation {
            image: name.clone(),
            what,
            flag,
        };
        let Some(index) = &img.index_digest else {
            return Err(no_attestation().into());
        };
        let mut found = Vec::new();
        for predicate in predicates {
            found.extend(kiln_attest::attach::find(
                &env.store,
                index,
                &img.manifest_digest,
                predicate,
            )?);
        }
        if found.is_empty() {
            return Err(no_attestation().into());
        }
        out.extend(found);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_context_from_a_build_arg_or_a_global_arg_default() {
        let none = BTreeMap::new();
        assert!(scan_context(
            &none,
            "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nFROM x\n"
        ));
        assert!(!scan_context(
            &none,
            "FROM x\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n"
        ));
        assert!(!scan_context(
            &none,
            "ARG BUILDKIT_SBOM_SCAN_CONTEXT=false\nFROM x\n"
        ));
        let off = BTreeMap::from([("BUILDKIT_SBOM_SCAN_CONTEXT".to_owned(), "0".to_owned())]);
        assert!(!scan_context(
            &off,
            "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nFROM x\n"
        ));
    }
}
