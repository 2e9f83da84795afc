//! SBOM and provenance attestations (issue 14): an image on busybox with a hand-made dpkg
//! database, a Python distribution and an npm package is built with `--sbom` and
//! `--provenance`; the SBOM lists them with versions (and not a package a later step removed),
//! the provenance names the base's digest, both validate against the SPDX 2.3 and in-toto
//! schemas (`tests/schemas/`), the index is attached as BuildKit attaches it, and pushes, OCI
//! archives, `kiln images`, `kiln run` and skopeo/umoci all deal with it.

mod outputs;
mod provenance;
mod sbom;

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

fn sha256_hex(bytes: &[u8]) -> String {
    kiln_image::Digest::of(bytes).hex().to_owned()
}
