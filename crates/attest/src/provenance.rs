//! SLSA provenance predicates, laid out as BuildKit lays out its own so tools that read
//! BuildKit's provenance read kiln's: v0.2 (<https://slsa.dev/provenance/v0.2>, BuildKit's
//! default: `invocation.configSource` naming the Dockerfile, `parameters.frontend`, `args`,
//! `locals`, `environment.platform`) and v1 (<https://slsa.dev/provenance/v1>, asked for with
//! `version=v1`: the same facts moved where BuildKit's v1 puts them — `externalParameters`
//! `configSource` and `request`, `internalParameters.builderPlatform`, `resolvedDependencies`,
//! `runDetails.builder` and `metadata`, with BuildKit's `buildkit_completeness` and
//! `buildkit_reproducible` beside the SLSA metadata).
//!
//! `min` records the Dockerfile's digest, the target, the platform, the base images and the
//! times; `max` adds every build argument (`build-arg:NAME`, BuildKit's key form) and marks the
//! parameters complete. Secrets are never recorded. With `SOURCE_DATE_EPOCH` the predicate
//! claims `reproducible` and leaves out what differs between two builds of one commit — the
//! wall-clock times and the invocation ID — so an attestation is as reproducible as the image
//! it describes (SLSA v0.2 makes those fields optional).

use std::collections::BTreeMap;

use kiln_image::{Digest, Platform};
use serde_json::{Value, json};

/// kiln's build type: what the parameters below mean. It is kiln's own (the build is not
/// BuildKit's), with BuildKit's field layout.
pub const BUILD_TYPE: &str = "urn:kiln:build-type:dockerfile:v1";

/// How much a provenance records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

/// Which SLSA provenance format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    /// SLSA v0.2, BuildKit's default.
    #[default]
    V02,
    /// SLSA v1.0.
    V1,
}

/// A provenance as the flags ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub mode: Mode,
    pub version: Version,
}

impl Provenance {
    pub const MIN: Provenance = Provenance {
        mode: Mode::Min,
        version: Version::V02,
    };

    /// The statement's predicate type.
    pub fn predicate_type(self) -> &'static str {
        match self.version {
            Version::V02 => crate::statement::SLSA_V02_PREDICATE,
            Version::V1 => crate::statement::SLSA_V1_PREDICATE,
        }
    }
}

/// A base image as a material.
#[derive(Debug, Clone)]
pub struct Material {
    /// `pkg:docker/busybox@latest?platform=linux%2Famd64`
    pub uri: String,
    pub digest: Digest,
}

/// Everything a provenance says.
#[derive(Debug, Clone)]
pub struct ProvenanceInput {
    pub mode: Mode,
    pub builder_id: String,
    /// The Dockerfile's name relative to the context (`Dockerfile`) and its digest.
    pub dockerfile_name: String,
    pub dockerfile_digest: Digest,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub platform: Platform,
    pub materials: Vec<Material>,
    /// RFC 3339 times; ignored when `reproducible`.
    pub started: String,
    pub finished: String,
    pub invocation_id: String,
    /// `SOURCE_DATE_EPOCH` was set.
    pub reproducible: bool,
}

/// The predicate of `version` for `input`.
pub fn predicate_of(version: Version, input: &ProvenanceInput) -> Value {
    match version {
        Version::V02 => predicate(input),
        Version::V1 => predicate_v1(input),
    }
}

/// The frontend's request: what BuildKit's v0.2 calls `invocation.parameters` and its v1
/// `externalParameters.request`.
fn request(input: &ProvenanceInput) -> Value {
    let mut args = serde_json::Map::new();
    if let Some(target) = &input.target {
        args.insert("target".into(), json!(target));
    }
    if input.mode == Mode::Max {
        for (k, v) in &input.build_args {
            args.insert(format!("build-arg:{k}"), json!(v));
        }
    }
    json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    })
}

/// The base images as resource descriptors (v0.2 materials, v1 resolved dependencies).
fn dependencies(input: &ProvenanceInput) -> Vec<Value> {
    input
        .materials
        .iter()
        .map(|m| json!({"uri": m.uri, "digest": {"sha256": m.digest.hex()}}))
        .collect()
}

/// A SLSA v1 predicate. Where SLSA v1 has no field for a fact BuildKit records, BuildKit's
/// own `buildkit_*` metadata keys carry it (completeness, reproducibility).
pub fn predicate_v1(input: &ProvenanceInput) -> Value {
    let mut metadata = json!({
        "buildkit_completeness": {
            "request": input.mode == Mode::Max,
            "resolvedDependencies": false,
        },
    });
    if input.reproducible {
        metadata["buildkit_reproducible"] = json!(true);
    } else {
        // SLSA v1 spells it `invocationId` (its protobuf definition's JSON name).
        metadata["invocationId"] = json!(input.invocation_id);
        metadata["startedOn"] = json!(input.started);
        metadata["finishedOn"] = json!(input.finished);
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {
                    "path": input.dockerfile_name,
                    "digest": {"sha256": input.dockerfile_digest.hex()},
                },
                "request": request(input),
            },
            "internalParameters": {"builderPlatform": input.platform.to_string()},
            "resolvedDependencies": dependencies(input),
        },
        "runDetails": {
            "builder": {"id": input.builder_id},
            "metadata": metadata,
        },
    })
}

/// A SLSA v0.2 predicate.
pub fn predicate(input: &ProvenanceInput) -> Value {
    let mut metadata = json!({
        "completeness": {
            "parameters": input.mode == Mode::Max,
            "environment": true,
            "materials": false,
        },
        "reproducible": input.reproducible,
    });
    if !input.reproducible {
        metadata["buildInvocationID"] = json!(input.invocation_id);
        metadata["buildStartedOn"] = json!(input.started);
        metadata["buildFinishedOn"] = json!(input.finished);
    }
    json!({
        "builder": {"id": input.builder_id},
        "buildType": BUILD_TYPE,
        "invocation": {
            "configSource": {
                "entryPoint": input.dockerfile_name,
                "digest": {"sha256": input.dockerfile_digest.hex()},
            },
            "parameters": request(input),
            "environment": {"platform": input.platform.to_string()},
        },
        "materials": dependencies(input),
        "metadata": metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(mode: Mode, reproducible: bool) -> ProvenanceInput {
        ProvenanceInput {
            mode,
            builder_id: "urn:kiln:builder".into(),
            dockerfile_name: "Dockerfile".into(),
            dockerfile_digest: Digest::of(b"FROM busybox\n"),
            target: None,
            build_args: [("SECRETLESS".to_owned(), "1".to_owned())].into(),
            platform: Platform::new("linux", "amd64"),
            materials: vec![Material {
                uri: "pkg:docker/busybox@latest?platform=linux%2Famd64".into(),
                digest: Digest::of(b"m"),
            }],
            started: "2024-01-01T00:00:00Z".into(),
            finished: "2024-01-01T00:00:05Z".into(),
            invocation_id: "abc".into(),
            reproducible,
        }
    }

    #[test]
    fn min_leaves_out_build_args_and_max_records_them() {
        let min = predicate(&input(Mode::Min, false));
        assert_eq!(min["invocation"]["parameters"]["args"], json!({}));
        assert_eq!(min["metadata"]["completeness"]["parameters"], false);
        assert_eq!(
            min["materials"][0]["digest"]["sha256"],
            Digest::of(b"m").hex()
        );
        assert_eq!(min["metadata"]["buildStartedOn"], "2024-01-01T00:00:00Z");
        let max = predicate(&input(Mode::Max, false));
        assert_eq!(
            max["invocation"]["parameters"]["args"]["build-arg:SECRETLESS"],
            "1"
        );
        assert_eq!(max["metadata"]["completeness"]["parameters"], true);
    }

    #[test]
    fn reproducible_builds_carry_no_wall_clock() {
        let a = predicate(&input(Mode::Min, true));
        let mut other = input(Mode::Min, true);
        other.started = "2030-01-01T00:00:00Z".into();
        other.invocation_id = "different".into();
        assert_eq!(a, predicate(&other));
        assert_eq!(a["metadata"]["reproducible"], true);
        assert!(a["metadata"].get("buildStartedOn").is_none());
    }

    #[test]
    fn v1_moves_the_same_facts_where_buildkit_v1_puts_them() {
        let v1 = predicate_of(Version::V1, &input(Mode::Max, false));
        let def = &v1["buildDefinition"];
        assert_eq!(def["buildType"], BUILD_TYPE);
        assert_eq!(
            def["externalParameters"]["configSource"]["path"],
            "Dockerfile"
        );
        assert_eq!(
            def["externalParameters"]["request"]["args"]["build-arg:SECRETLESS"],
            "1"
        );
        assert_eq!(def["internalParameters"]["builderPlatform"], "linux/amd64");
        assert_eq!(
            def["resolvedDependencies"][0]["digest"]["sha256"],
            Digest::of(b"m").hex()
        );
        let run = &v1["runDetails"];
        assert_eq!(run["builder"]["id"], "urn:kiln:builder");
        assert_eq!(run["metadata"]["startedOn"], "2024-01-01T00:00:00Z");
        assert_eq!(run["metadata"]["invocationId"], "abc");
        assert_eq!(run["metadata"]["buildkit_completeness"]["request"], true);
        assert!(v1.get("invocation").is_none() && v1.get("materials").is_none());

        let min = predicate_v1(&input(Mode::Min, true));
        assert_eq!(
            min["buildDefinition"]["externalParameters"]["request"]["args"],
            json!({})
        );
        assert_eq!(min["runDetails"]["metadata"]["buildkit_reproducible"], true);
        assert!(min["runDetails"]["metadata"].get("startedOn").is_none());
        assert_eq!(
            Provenance {
                mode: Mode::Min,
                version: Version::V1
            }
            .predicate_type(),
            "https://slsa.dev/provenance/v1"
        );
    }
}
