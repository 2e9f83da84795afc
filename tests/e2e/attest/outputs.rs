//! Where attestations go: the default provenance into OCI archives but not the store, the
//! SBOM and provenance files of local and tar outputs as buildx writes them, and bad
//! attestation flags refused before anything is built.

use std::path::Path;

use super::super::harness::{Kiln, assert_success, stderr};
use super::{context, purls, sha256_hex, statements, validate};

#[test]
fn default_provenance_goes_to_oci_archives_not_to_the_store_and_bad_flags_fail_early() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY Dockerfile /d\n";
    // A plain build stores a bare manifest (like buildx --load into the classic store).
    let out = k.build_dockerfile("plain:1", dockerfile, &[]);
    assert_success(&out, &["build", "plain:1"]);
    let none = k.cmd(&["inspect", "--provenance", "plain:1"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("plain:1 has no provenance attestation"),
        "{}",
        stderr(&none)
    );
    // --output type=oci gets buildx's default mode=min provenance, in the archive too.
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("o.tar");
    let spec = format!("type=oci,dest={}", archive.display());
    let out = k.build_dockerfile("oci:1", dockerfile, &["--output", &spec]);
    assert_success(&out, &["build", "--output", &spec]);
    let provs = statements(&k, "oci:1", "--provenance");
    assert_eq!(
        provs[0]["predicate"]["invocation"]["parameters"]["args"],
        serde_json::json!({}),
        "mode=min records no build args"
    );
    let unpacked = out_dir.path().join("layout");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(tar.success());
    let index_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let top = &index_json["manifests"][0];
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let inner: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            unpacked.join("blobs/sha256").join(
                top["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        inner["manifests"][1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    // kiln load of the OCI archive into another store brings the provenance back.
    let other = k.fresh_store();
    let archive_arg = archive.to_str().unwrap();
    let loaded = k.cmd_in(other.path(), &["load", "-i", archive_arg]);
    assert_success(&loaded, &["load", "-i", archive_arg]);
    let back = k.cmd_in(other.path(), &["inspect", "--provenance", "oci:1"]);
    assert_success(&back, &["inspect", "--provenance", "oci:1 (loaded)"]);
    let back: Vec<serde_json::Value> = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(back, provs);
    // build --push gets it too: the registry holds the index, --metadata-file names it.
    let remote = format!("{}/defaults:1", k.registry.addr());
    let meta = out_dir.path().join("meta.json");
    let meta_arg = meta.to_str().unwrap().to_owned();
    let out = k.build_dockerfile(
        &remote,
        dockerfile,
        &["--push", "--metadata-file", &meta_arg],
    );
    assert_success(&out, &["build", "--push"]);
    let raw = kiln_testkit::skopeo_inspect_raw(&format!("docker://{remote}")).unwrap();
    let pushed: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        pushed["manifests"][1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let index_digest = format!("sha256:{}", sha256_hex(&raw));
    assert_eq!(meta["containerimage.digest"], index_digest.as_str());
    // BUILDKIT_SBOM_SCAN_CONTEXT: a second SBOM, of the context (its lockfile's packages).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nARG BASE\nFROM $BASE\nCOPY Dockerfile /d\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("package-lock.json"),
        r#"{"lockfileVersion":3,"packages":{"":{},"node_modules/ms":{"version":"2.1.3"}}}"#,
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    k.ok(&["build", "-t", "ctx:1", "--build-arg", &base, "--sbom", dir]);
    let sboms = statements(&k, "ctx:1", "--sbom");
    assert_eq!(sboms.len(), 2, "the image's and the context's");
    assert!(!purls(&sboms[0]).iter().any(|p| p.contains("ms@")));
    assert_eq!(purls(&sboms[1])[1..], ["pkg:npm/ms@2.1.3".to_owned()]);
    validate(&sboms[1]["predicate"], "spdx-2.3.schema.json");
    // BUILDKIT_SBOM_SCAN_STAGE: an ARG of a stage asks for that stage's SBOM too.
    let out = k.build_dockerfile(
        "stages:1",
        "ARG BASE\nFROM $BASE AS tools\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
         RUN mkdir -p /t/node_modules/tool && \
         echo '{\"name\":\"tool\",\"version\":\"0.9.0\"}' > /t/node_modules/tool/package.json\n\
         FROM $BASE\nCOPY --from=tools /t/node_modules/tool/package.json /copied.json\n",
        &["--sbom"],
    );
    assert_success(&out, &["build", "stages:1"]);
    let sboms = statements(&k, "stages:1", "--sbom");
    assert_eq!(sboms.len(), 2, "the image's and the tools stage's");
    assert!(
        purls(&sboms[0]).len() == 1,
        "the final image holds no package"
    );
    assert_eq!(purls(&sboms[1])[1..], ["pkg:npm/tool@0.9.0".to_owned()]);
    assert!(
        sboms[1]["predicate"]["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(":stage-tools")
    );
    // --provenance=false turns the default off.
    let out = k.build_dockerfile(
        "oci:2",
        dockerfile,
        &["--output", &spec, "--provenance=false"],
    );
    assert_success(&out, &["build", "--provenance=false"]);
    assert!(
        !k.cmd(&["inspect", "--provenance", "oci:2"])
            .status
            .success()
    );
    // Bad values fail before anything is built.
    for bad in [
        ["--sbom=maybe"],
        ["--provenance=mode=full"],
        ["--attest=type=vuln"],
    ] {
        let out = k.build_dockerfile("bad:1", dockerfile, &bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(!stderr(&out).contains("Step"), "{}", stderr(&out));
        let msg = stderr(&out);
        assert!(msg.contains(bad[0].split('=').nth(1).unwrap()), "{msg}");
        assert!(
            !k.cmd(&["inspect", "bad:1"]).status.success(),
            "nothing named"
        );
    }
}

#[test]
fn local_and_tar_outputs_carry_sbom_and_provenance_files_as_buildx_writes_them() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let outs = tempfile::tempdir().unwrap();
    let local = outs.path().join("local");
    let tar = outs.path().join("fs.tar");
    let local_spec = format!("type=local,dest={}", local.display());
    let tar_spec = format!("type=tar,dest={}", tar.display());
    let out = k.cmd(&[
        "build",
        "--build-arg",
        &base,
        "--sbom=true",
        "--provenance=mode=max",
        "-o",
        &local_spec,
        "-o",
        &tar_spec,
        dir,
    ]);
    assert_success(&out, &["build", "-o", &local_spec, "-o", &tar_spec]);

    let os_release_sha = sha256_hex(b"ID=debian\nVERSION_ID=\"12\"\n");
    let check = |sbom: &serde_json::Value, prov: &serde_json::Value, from: &str| {
        for s in [sbom, prov] {
            validate(s, "in-toto-statement.schema.json");
            let subjects = s["subject"].as_array().unwrap();
            assert!(
                subjects.iter().any(|x| x["name"] == "etc/os-release"
                    && x["digest"]["sha256"] == os_release_sha.as_str()),
                "{from}: etc/os-release not among the subjects {subjects:#?}"
            );
            assert!(
                !subjects
                    .iter()
                    .any(|x| x["name"].as_str().unwrap().ends_with(".json")
                        && !x["name"].as_str().unwrap().contains('/')),
                "{from}: an attestation file is its own subject"
            );
        }
        validate(&sbom["predicate"], "spdx-2.3.schema.json");
        assert!(
            purls(sbom).iter().any(|p| p == "pkg:pypi/requests@2.31.0"),
            "{from}: {:#?}",
            purls(sbom)
        );
        assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v0.2");
        assert_eq!(
            prov["predicate"]["invocation"]["parameters"]["args"]["build-arg:BASE"],
            k.base
        );
    };
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    check(
        &read(&local.join("sbom.spdx.json")),
        &read(&local.join("provenance.json")),
        "local",
    );
    assert!(local.join("etc/os-release").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(local.join("provenance.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_owned();
        if name == "sbom.spdx.json" || name == "provenance.json" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(
                name,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            );
        }
    }
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    check(&files["sbom.spdx.json"], &files["provenance.json"], "tar");

    // Without attestation flags a filesystem output has none (buildx's default provenance is
    // left out of the local and tar exporters).
    let plain = outs.path().join("plain");
    let plain_spec = format!("type=local,dest={}", plain.display());
    let out = k.cmd(&["build", "--build-arg", &base, "-o", &plain_spec, dir]);
    assert_success(&out, &["build", "-o", &plain_spec]);
    assert!(plain.join("etc/os-release").is_file());
    assert!(!plain.join("provenance.json").exists());
    assert!(!plain.join("sbom.spdx.json").exists());
}
