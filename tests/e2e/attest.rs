//! SBOM and provenance attestations (issue 14): an image on busybox with a hand-made dpkg
//! database, a Python distribution and an npm package is built with `--sbom` and
//! `--provenance`; the SBOM lists them with versions (and not a package a later step removed),
//! the provenance names the base's digest, both validate against the SPDX 2.3 and in-toto
//! schemas (`tests/schemas/`), the index is attached as BuildKit attaches it, and pushes, OCI
//! archives, `kiln images`, `kiln run` and skopeo/umoci all deal with it.

use std::path::Path;

use super::harness::{Kiln, assert_success, stderr};

const DPKG_STATUS: &str = "Package: hello\nStatus: install ok installed\nPriority: optional\n\
Architecture: amd64\nVersion: 2.10-3\nMaintainer: Santiago Vila <sanvila@debian.org>\n\
Description: example package\n GNU hello.\n\n\
Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.3-1+b1\n\n\
Package: removed\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.1\n";

const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\n\
COPY os-release /etc/os-release\n\
COPY status /var/lib/dpkg/status\n\
COPY site-packages/ /usr/lib/python3/dist-packages/\n\
COPY node_modules/ /app/node_modules/\n\
RUN rm -r /usr/lib/python3/dist-packages/gone-1.0.dist-info\n\
CMD [\"cat\", \"/etc/os-release\"]\n";

fn context(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("Dockerfile", DOCKERFILE);
    write("os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write("status", DPKG_STATUS);
    write(
        "site-packages/requests-2.31.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n\nRequests.\n",
    );
    write(
        "site-packages/gone-1.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: gone\nVersion: 1.0\n",
    );
    write(
        "node_modules/left-pad/package.json",
        r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#,
    );
}

/// Validates `instance` (JSON) against the schema file `schema` under tests/schemas.
fn validate(instance: &serde_json::Value, schema: &str) {
    if let Err(message) = check_schema(instance, schema) {
        panic!("{schema}: does not validate:\n{message}");
    }
}

/// Whether `instance` validates against `schema`.
fn validates(instance: &serde_json::Value, schema: &str) -> bool {
    check_schema(instance, schema).is_ok()
}

fn check_schema(instance: &serde_json::Value, schema: &str) -> Result<(), String> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(schema);
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(t.path(), serde_json::to_vec(instance).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys,jsonschema\n\
             s=json.load(open(sys.argv[1])); i=json.load(open(sys.argv[2]))\n\
             jsonschema.validators.validator_for(s)(s).validate(i)\nprint('valid')",
        ])
        .arg(&schema)
        .arg(t.path())
        .output()
        .expect("python3 with jsonschema (scripts/setup.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only a validation failure counts as "does not validate"; a broken schema or a missing
    // module is a failing test either way.
    assert!(
        out.status.success() || stderr.contains("ValidationError"),
        "{}: {stderr}",
        schema.display()
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr.into_owned())
    }
}

fn statements(k: &Kiln, image: &str, flag: &str) -> Vec<serde_json::Value> {
    let out = k.cmd(&["inspect", flag, image]);
    assert_success(&out, &["inspect", flag, image]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn purls(sbom: &serde_json::Value) -> Vec<String> {
    sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn sbom_and_provenance_are_attached_valid_and_carried_by_push_and_archives() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let out = k.cmd(&[
        "build",
        "-t",
        "attest:1",
        "--build-arg",
        &base,
        "--sbom=true",
        "--provenance=mode=max",
        dir,
    ]);
    assert_success(&out, &["build", "--sbom"]);
    assert!(
        stderr(&out).contains("attestations: SBOM ("),
        "{}",
        stderr(&out)
    );

    // The SBOM: dpkg, Python and npm packages with versions; not the removed ones.
    let sboms = statements(&k, "attest:1", "--sbom");
    assert_eq!(sboms.len(), 1);
    let sbom = &sboms[0];
    let found = purls(sbom);
    for want in [
        "pkg:deb/debian/hello@2.10-3?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libfoo1@1%3A1.2.3-1%2Bb1?arch=amd64&distro=debian-12",
        "pkg:pypi/requests@2.31.0",
        "pkg:npm/left-pad@1.3.0",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:#?}");
    }
    assert!(
        !found
            .iter()
            .any(|p| p.contains("gone") || p.contains("removed")),
        "a deleted (whited-out) or deinstalled package is listed: {found:#?}"
    );
    let versions: Vec<_> = sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["versionInfo"].as_str())
        .collect();
    assert!(versions.contains(&"2.31.0") && versions.contains(&"1.3.0"));
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    validate(sbom, "in-toto-statement.schema.json");
    validate(&sbom["predicate"], "spdx-2.3.schema.json");

    // The subject is the image manifest; the provenance names the base's digest.
    let inspect = k.inspect("attest:1");
    let manifest = inspect["ManifestDigest"].as_str().unwrap().to_owned();
    assert_eq!(
        sbom["subject"][0]["digest"]["sha256"],
        manifest.trim_start_matches("sha256:")
    );
    let base_manifest = k.inspect(&k.base)["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let provs = statements(&k, "attest:1", "--provenance");
    let prov = &provs[0];
    validate(prov, "in-toto-statement.schema.json");
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v0.2");
    let materials = prov["predicate"]["materials"].as_array().unwrap();
    assert!(
        materials.iter().any(|m| {
            m["digest"]["sha256"] == base_manifest.trim_start_matches("sha256:")
                && m["uri"].as_str().unwrap().contains("busybox")
        }),
        "base {base_manifest} not in {materials:#?}"
    );
    assert_eq!(
        prov["predicate"]["invocation"]["parameters"]["args"]["build-arg:BASE"],
        k.base
    );
    assert_eq!(prov["predicate"]["metadata"]["reproducible"], false);
    assert!(prov["predicate"]["metadata"]["buildStartedOn"].is_string());

    // kiln images: one row, no attestation manifest among the dangling ones; run picks the
    // image manifest.
    let images = k.ok(&["images"]);
    assert_eq!(images.matches("attest").count(), 1, "{images}");
    let dangling = k.ok(&["images", "--filter", "dangling=true"]);
    assert_eq!(
        dangling.trim().lines().count(),
        1,
        "only the header: {dangling}"
    );
    // system df counts two images (busybox and attest:1), not the attestation manifest.
    let df = k.ok(&["system", "df"]);
    let images_row = df.lines().find(|l| l.starts_with("Images")).unwrap();
    assert_eq!(images_row.split_whitespace().nth(1), Some("2"), "{df}");
    let ran = k.ok(&["run", "--rm", "attest:1"]);
    assert!(ran.contains("ID=debian"), "{ran}");

    // Push: the registry gets the index with both manifests, as BuildKit lays it out.
    let remote = format!("{}/attest:1", k.registry.addr());
    k.ok(&["tag", "attest:1", &remote]);
    k.ok(&["push", &remote]);
    let raw = kiln_testkit::skopeo_inspect_raw(&format!("docker://{remote}")).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    assert_eq!(entries[0]["digest"], manifest.as_str());
    let att = &entries[1];
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        manifest.as_str()
    );
    let att_raw = kiln_testkit::skopeo_inspect_raw(&format!(
        "docker://{}/attest@{}",
        k.registry.addr(),
        att["digest"].as_str().unwrap()
    ))
    .unwrap();
    let att_manifest: serde_json::Value = serde_json::from_slice(&att_raw).unwrap();
    let types: Vec<_> = att_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v0.2"
        ]
    );
    // skopeo picks the image for the platform out of the index, umoci unpacks it.
    let layout = tempfile::tempdir().unwrap();
    let layout_dir = layout.path().join("oci");
    kiln_testkit::skopeo_copy_to_oci_layout(&format!("docker://{remote}"), &layout_dir, "t")
        .unwrap();
    let bundle = layout.path().join("bundle");
    kiln_testkit::umoci_unpack_oci_layout(&layout_dir, "t", &bundle).unwrap();
    assert!(bundle.join("rootfs/var/lib/dpkg/status").is_file());
    // A pull into an empty store keeps the index and its attestations: inspect reads them,
    // run uses the image, and a push from there sends the same index.
    let index_digest = sha256_hex(&raw);
    let fresh = k.fresh_store();
    let in_fresh = |args: &[&str]| {
        let out = k.cmd_in(fresh.path(), args);
        assert_success(&out, args);
        out
    };
    in_fresh(&["pull", &remote]);
    let pulled_sboms: Vec<serde_json::Value> =
        serde_json::from_slice(&in_fresh(&["inspect", "--sbom", &remote]).stdout).unwrap();
    assert_eq!(pulled_sboms, sboms, "the pulled SBOM is the built one");
    let pulled_provs: Vec<serde_json::Value> =
        serde_json::from_slice(&in_fresh(&["inspect", "--provenance", &remote]).stdout).unwrap();
    assert_eq!(pulled_provs, provs);
    let ran = String::from_utf8_lossy(&in_fresh(&["run", "--rm", &remote]).stdout).into_owned();
    assert!(ran.contains("ID=debian"), "{ran}");
    // One image row, and the attestation manifest is no dangling image.
    let images = String::from_utf8_lossy(&in_fresh(&["images"]).stdout).into_owned();
    assert_eq!(images.matches("attest").count(), 1, "{images}");
    let dangling =
        String::from_utf8_lossy(&in_fresh(&["images", "--filter", "dangling=true"]).stdout)
            .into_owned();
    assert_eq!(dangling.trim().lines().count(), 1, "{dangling}");
    let repushed = format!("{}/repushed:1", k.registry.addr());
    in_fresh(&["tag", &remote, &repushed]);
    in_fresh(&["push", &repushed]);
    let raw2 = kiln_testkit::skopeo_inspect_raw(&format!("docker://{repushed}")).unwrap();
    assert_eq!(
        sha256_hex(&raw2),
        index_digest,
        "the re-pushed index is the pulled one"
    );
    let att_in_repushed = kiln_testkit::skopeo_inspect_raw(&format!(
        "docker://{}/repushed@{}",
        k.registry.addr(),
        att["digest"].as_str().unwrap()
    ))
    .unwrap();
    assert_eq!(att_in_repushed, att_raw);

    // kiln save / kiln load into a third store keep them too; the archive's manifest.json
    // still lists the image for docker load.
    let archive = layout.path().join("saved.tar");
    let archive_arg = archive.to_str().unwrap();
    in_fresh(&["save", "-o", archive_arg, &repushed]);
    let third = k.fresh_store();
    let loaded = k.cmd_in(third.path(), &["load", "-i", archive_arg]);
    assert_success(&loaded, &["load", "-i", archive_arg]);
    let loaded_sboms = k.cmd_in(third.path(), &["inspect", "--sbom", &repushed]);
    assert_success(&loaded_sboms, &["inspect", "--sbom", "(loaded)"]);
    let loaded_sboms: Vec<serde_json::Value> =
        serde_json::from_slice(&loaded_sboms.stdout).unwrap();
    assert_eq!(loaded_sboms, sboms);
    let ran = k.cmd_in(third.path(), &["run", "--rm", &repushed]);
    assert_success(&ran, &["run", "(loaded)"]);
    let mut docker_manifest = None;
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            docker_manifest = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        }
    }
    let docker_manifest = docker_manifest.expect("manifest.json in the saved archive");
    // skopeo reads the archive as docker save's (manifest.json): the image's own config.
    let seen = kiln_testkit::skopeo_inspect(&format!("docker-archive:{archive_arg}")).unwrap();
    assert_eq!(seen["Os"], "linux", "{seen:#}");
    assert_eq!(
        seen["Layers"].as_array().unwrap().len(),
        inspect["RootFS"]["Layers"].as_array().unwrap().len(),
        "{seen:#}"
    );
    assert_eq!(docker_manifest.as_array().unwrap().len(), 1);
    assert_eq!(
        docker_manifest[0]["RepoTags"][0],
        repushed.as_str(),
        "{docker_manifest:#}"
    );
}

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

fn sha256_hex(bytes: &[u8]) -> String {
    kiln_image::Digest::of(bytes).hex().to_owned()
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

/// fzf as Debian ships it (`scripts/setup.sh` installs it): a Go binary built in GOPATH mode,
/// whose build info names only its main package.
const FZF: &str = "/usr/bin/fzf";

#[test]
fn the_sbom_lists_a_debian_go_binarys_main_module_and_dependencies() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(FZF, ctx.path().join("fzf"))
        .unwrap_or_else(|e| panic!("{FZF} (apt-get install fzf, scripts/setup.sh): {e}"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY fzf /usr/bin/fzf\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let out = k.cmd(&[
        "build",
        "-t",
        "go-sbom:1",
        "--build-arg",
        &base,
        "--sbom=true",
        dir,
    ]);
    assert_success(&out, &["build", "--sbom", "(fzf)"]);
    let sboms = statements(&k, "go-sbom:1", "--sbom");
    let sbom = &sboms[0];
    validate(&sbom["predicate"], "spdx-2.3.schema.json");
    let found = purls(sbom);
    // The main module, what Debian's fzf 0.38 links in (its Built-Using: go-isatty,
    // go-runewidth, go-shellwords, uniseg, walker, x/sync, x/sys, x/term), and the toolchain.
    for want in [
        "pkg:golang/github.com/junegunn/fzf",
        "pkg:golang/github.com/mattn/go-isatty",
        "pkg:golang/github.com/mattn/go-runewidth",
        "pkg:golang/github.com/mattn/go-shellwords",
        "pkg:golang/github.com/rivo/uniseg",
        "pkg:golang/github.com/saracen/walker",
        "pkg:golang/golang.org/x/sync",
        "pkg:golang/golang.org/x/sys",
        "pkg:golang/golang.org/x/term",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:#?}");
    }
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("pkg:golang/stdlib@go1.")),
        "{found:#?}"
    );
    // Only Go modules: no package of the standard library or the fzf module's own packages.
    let go: Vec<_> = found
        .iter()
        .filter(|p| p.starts_with("pkg:golang/"))
        .collect();
    assert!(
        go.iter()
            .all(|p| !p.contains("/src") && !p.contains("internal")),
        "{go:#?}"
    );
    let fzf = sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "github.com/junegunn/fzf")
        .unwrap();
    assert_eq!(fzf["sourceInfo"], "found in /usr/bin/fzf");
    assert!(
        fzf.get("versionInfo").is_none(),
        "a GOPATH build records no module version: {fzf:#}"
    );
}
