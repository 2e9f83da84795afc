//! Provenance itself: attestations of a reproducible build are the same bytes twice, and
//! SLSA v1 provenance validates against its schema and names the base image.

use std::path::Path;

use super::super::harness::{Kiln, assert_success, stderr};
use super::{context, statements, validate, validates};

#[test]
fn attestations_of_a_reproducible_build_are_reproducible() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap().to_owned();
    let digest = |root: &Path| {
        let meta = root.with_extension("meta.json");
        let meta_arg = meta.to_str().unwrap().to_owned();
        let args = [
            "build",
            "--metadata-file",
            &meta_arg,
            "-t",
            "repro:1",
            "--build-arg",
            &base,
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "--sbom=true",
            "--provenance=mode=min",
            &dir,
        ];
        let out = k.cmd_in(root, &args);
        assert_success(&out, &args);
        let prov = k.cmd_in(root, &["inspect", "--provenance", "repro:1"]);
        let prov: serde_json::Value = serde_json::from_slice(&prov.stdout).unwrap();
        assert_eq!(prov[0]["predicate"]["metadata"]["reproducible"], true);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        meta["containerimage.digest"].as_str().unwrap().to_owned()
    };
    let a = k.fresh_store();
    let b = k.fresh_store();
    let first = digest(a.path());
    // A second later, on another store: the same index (image, SBOM and provenance).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = digest(b.path());
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, second);
    let _ = std::fs::remove_file(a.path().with_extension("meta.json"));
    let _ = std::fs::remove_file(b.path().with_extension("meta.json"));
}

#[test]
fn slsa_v1_provenance_validates_and_names_the_base() {
    let k = Kiln::new();
    let out = k.build_dockerfile(
        "prov-v1:1",
        "ARG BASE\nFROM $BASE\nARG GREETING\nRUN echo $GREETING > /g\n",
        &[
            "--build-arg",
            "GREETING=hi",
            "--attest",
            "type=provenance,mode=max,version=v1",
        ],
    );
    assert_success(&out, &["build", "--attest", "type=provenance,version=v1"]);
    assert!(stderr(&out).contains("SLSA v1"), "{}", stderr(&out));
    let provs = statements(&k, "prov-v1:1", "--provenance");
    assert_eq!(provs.len(), 1, "{provs:#?}");
    let prov = &provs[0];
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    validate(prov, "in-toto-statement.schema.json");
    validate(&prov["predicate"], "slsa-provenance-v1.schema.json");
    let def = &prov["predicate"]["buildDefinition"];
    assert_eq!(
        def["externalParameters"]["request"]["args"]["build-arg:GREETING"],
        "hi"
    );
    assert_eq!(
        def["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let base_manifest = k.inspect(&k.base)["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let deps = def["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter()
            .any(|d| d["digest"]["sha256"] == base_manifest.trim_start_matches("sha256:")),
        "base {base_manifest} not in {deps:#?}"
    );
    let metadata = &prov["predicate"]["runDetails"]["metadata"];
    assert!(metadata["startedOn"].is_string(), "{metadata:#}");
    assert_eq!(metadata["buildkit_completeness"]["request"], true);
    // The schema is no rubber stamp: a predicate without its builder fails it.
    let mut broken = prov["predicate"].clone();
    broken["runDetails"]
        .as_object_mut()
        .unwrap()
        .remove("builder");
    assert!(!validates(&broken, "slsa-provenance-v1.schema.json"));

    // The plain --provenance spelling takes version= too; an unknown version is refused early.
    let out = k.build_dockerfile(
        "prov-v1:2",
        "ARG BASE\nFROM $BASE\n",
        &["--provenance=mode=min,version=v2"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("version=v1"), "{}", stderr(&out));
}
