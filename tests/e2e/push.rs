//! Pushing like Docker: blobs the registry has are skipped, blobs it has in another repository
//! are mounted, large blobs go up in chunks that resume after a dropped connection, several tags
//! and `build --push`, `--format docker`, `--metadata-file`.

use std::path::Path;

use kiln_testkit::{Fault, FaultProxy};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// Writes a context whose Dockerfile is `FROM <base>` plus `steps`, with `files` beside it.
fn context(base: &str, steps: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\n{steps}"),
    )
    .unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn build(k: &Kiln, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    k.ok(&args)
}

/// The repositories of the test registry whose storage links `digest` (the registry's own record
/// of which repositories hold a blob).
fn repositories_linking(k: &Kiln, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let repos = k
        .registry
        .storage_dir()
        .join("docker/registry/v2/repositories");
    let mut found = Vec::new();
    for entry in walk(&repos) {
        if entry.ends_with(format!("_layers/sha256/{hex}/link")) {
            let rel = entry
                .strip_prefix(&repos)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            found.push(rel.split("/_layers/").next().unwrap().to_owned());
        }
    }
    found.sort();
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn build_push_with_two_tags_writes_the_digest_iidfile_and_metadata_file() {
    let k = Kiln::new();
    let dir = context(&k.base, "RUN echo pushed > /pushed.txt\n", &[]);
    let one = format!("{}/team/app:1", k.registry.addr());
    let two = format!("{}/team/app:2", k.registry.addr());
    let out_dir = tempfile::tempdir().unwrap();
    let metadata = out_dir.path().join("metadata.json");
    let iidfile = out_dir.path().join("iid");
    let out = build(
        &k,
        dir.path(),
        &[
            "--push",
            // The pushed digest is the image manifest's, not that of an attestation index.
            "--provenance=false",
            "-t",
            &one,
            "-t",
            &two,
            "--metadata-file",
            metadata.to_str().unwrap(),
            "--iidfile",
            iidfile.to_str().unwrap(),
        ],
    );
    let local = k.inspect(&one);
    let manifest_digest = local["ManifestDigest"].as_str().unwrap();
    for tag in ["1", "2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{tag}: digest: ")))
            .unwrap_or_else(|| panic!("no digest line for {tag}: {out}"));
        assert!(line.contains(manifest_digest), "{line}");
        assert!(line.contains(" size: "), "{line}");
    }
    // The second tag finds every blob already there.
    assert!(out.contains("Layer already exists"), "{out}");

    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], manifest_digest);
    let image_id = std::fs::read_to_string(&iidfile).unwrap();
    assert_eq!(meta["containerimage.config.digest"], image_id.as_str());
    assert_eq!(meta["containerimage.descriptor"]["digest"], manifest_digest);
    let names = meta["image.name"].as_str().unwrap();
    assert!(names.contains(&one) && names.contains(&two), "{names}");

    for reference in [&one, &two] {
        let info = kiln_testkit::skopeo_inspect(reference).unwrap();
        assert_eq!(info["Digest"], manifest_digest, "{reference}");
    }

    // Without --push the metadata names the local manifest, as BuildKit's does.
    let local_meta = out_dir.path().join("local.json");
    build(
        &k,
        dir.path(),
        &[
            "-t",
            "local-only",
            "--metadata-file",
            local_meta.to_str().unwrap(),
        ],
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&local_meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], manifest_digest);
    assert_eq!(meta["image.name"], "docker.io/library/local-only:latest");

    // --push without a name to push to is refused before building.
    let out = k.cmd(&["build", "--push", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--push needs"), "{}", stderr(&out));
    let out = k.cmd(&["build", "--format", "docker", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("with --push"), "{}", stderr(&out));
}

#[test]
fn shared_base_layers_are_skipped_and_other_repositories_mount() {
    let k = Kiln::new();
    let reg = k.registry.addr();
    let first = context(&k.base, "RUN echo first > /first.txt\n", &[]);
    let second = context(&k.base, "RUN echo second > /second.txt\n", &[]);
    build(&k, first.path(), &["-t", "first"]);
    build(&k, second.path(), &["-t", "second"]);
    let base_layer = k.inspect("first")["Layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let a1 = format!("{reg}/team/a:1");
    let a2 = format!("{reg}/team/a:2");
    k.ok(&["tag", "first", &a1]);
    k.ok(&["tag", "second", &a2]);

    // The base layer came from the registry's busybox repository: it is mounted from there,
    // not uploaded.
    let out = k.ok(&["push", &a1]);
    assert!(out.contains("Mounted from busybox"), "{out}");
    assert_eq!(
        count(&out, ": Pushed"),
        2,
        "config and the RUN layer: {out}"
    );

    // The second image shares the base: only its own config and layer go up.
    let out = k.ok(&["push", &a2]);
    assert_eq!(count(&out, "Layer already exists"), 1, "{out}");
    assert_eq!(count(&out, ": Pushed"), 2, "{out}");

    // Another repository of the same registry: everything is mounted from team/a.
    let b = format!("{reg}/other/b:1");
    k.ok(&["tag", "first", &b]);
    let out = k.ok(&["push", &b]);
    assert!(!out.contains(": Pushed"), "{out}");
    assert_eq!(count(&out, "Mounted from "), 3, "{out}");
    assert_eq!(
        repositories_linking(&k, &base_layer),
        ["busybox", "other/b", "team/a"]
    );
    let run_layer = k.inspect("first")["Layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(repositories_linking(&k, &run_layer), ["other/b", "team/a"]);
    assert_eq!(
        kiln_testkit::skopeo_inspect(&b).unwrap()["Digest"],
        k.inspect("first")["ManifestDigest"]
    );
}

#[test]
fn several_tags_all_tags_and_concurrent_pushes() {
    let k = Kiln::new();
    let reg = k.registry.addr();
    let dir = context(&k.base, "RUN echo tags > /tags.txt\n", &[]);
    build(&k, dir.path(), &["-t", "tags"]);
    let names: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|t| format!("{reg}/many/app:{t}"))
        .collect();
    for name in &names {
        k.ok(&["tag", "tags", name]);
    }
    let out = k.ok(&["push", &names[0], &names[1]]);
    assert_eq!(count(&out, ": digest: sha256:"), 2, "{out}");
    let out = k.ok(&["push", "--all-tags", &format!("{reg}/many/app")]);
    for tag in ["x", "y", "z"] {
        assert!(out.contains(&format!("{tag}: digest: sha256:")), "{out}");
    }
    let out = k.cmd(&["push", "--all-tags", &names[0]]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("without a tag"), "{}", stderr(&out));

    // Two kiln processes pushing the same image to different repositories at once both
    // complete with the same digest.
    let targets: Vec<String> = (0..2).map(|i| format!("{reg}/par{i}/app:1")).collect();
    for t in &targets {
        k.ok(&["tag", "tags", t]);
    }
    let children: Vec<_> = targets
        .iter()
        .map(|t| {
            crate::e2e::harness::kiln_command()
                .env("KILN_ROOT", k.root.path())
                .args(["push", t])
                .output()
                .unwrap()
        })
        .collect();
    let digest = k.inspect("tags")["ManifestDigest"].clone();
    for (out, t) in children.iter().zip(&targets) {
        assert_success(out, &["push", t]);
        assert_eq!(kiln_testkit::skopeo_inspect(t).unwrap()["Digest"], digest);
    }
}

#[test]
fn format_docker_pushes_docker_media_types_and_refuses_zstd() {
    let k = Kiln::new();
    let reg = k.registry.addr();
    let dir = context(&k.base, "RUN echo docker > /docker.txt\n", &[]);
    build(&k, dir.path(), &["-t", "fmt"]);
    let dest = format!("{reg}/fmt/docker:1");
    k.ok(&["tag", "fmt", &dest]);
    let out_dir = tempfile::tempdir().unwrap();
    let metadata = out_dir.path().join("m.json");
    let out = k.ok(&[
        "push",
        "--format",
        "docker",
        "--metadata-file",
        metadata.to_str().unwrap(),
        &dest,
    ]);
    let raw: serde_json::Value =
        serde_json::from_slice(&kiln_testkit::skopeo_inspect_raw(&dest).unwrap()).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    // The printed and recorded digest is the Docker manifest's, not the local OCI one.
    let info = kiln_testkit::skopeo_inspect(&dest).unwrap();
    let pushed = info["Digest"].as_str().unwrap();
    assert_ne!(pushed, k.inspect("fmt")["ManifestDigest"].as_str().unwrap());
    assert!(out.contains(&format!("1: digest: {pushed}")), "{out}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], pushed);
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // zstd layers have no Docker media type.
    let zstd = format!("{reg}/fmt/zstd:1");
    build(&k, dir.path(), &["-t", &zstd, "--compression", "zstd"]);
    let out = k.cmd(&["push", "--format", "docker", &zstd]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("zstd") && err.contains("docker"), "{err}");
}

#[test]
fn a_large_blob_upload_cut_midway_resumes_and_the_registry_holds_the_right_bytes() {
    let k = Kiln::new();
    // Incompressible, so the gzip layer stays above the chunking threshold.
    let mut big = vec![0u8; 12 * 1024 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut big {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let dir = context(&k.base, "COPY big.bin /big.bin\n", &[("big.bin", &big)]);
    build(&k, dir.path(), &["-t", "big"]);
    let local = k.inspect("big");
    let big_layer = local["Layers"][1]["digest"].as_str().unwrap().to_owned();

    let proxy = FaultProxy::start(
        k.registry.port(),
        Fault::DropAfter {
            // Below one 8 MiB chunk, so whichever pooled connection carries the first PATCH of
            // the big layer is cut in it (the other blobs add up to about 1 MB).
            bytes: 5_000_000,
            times: 1,
        },
    )
    .unwrap();
    let through_proxy = format!("{}/big/app:1", proxy.addr());
    k.ok(&["tag", "big", &through_proxy]);
    let out = k.ok(&["push", &through_proxy]);
    assert_eq!(proxy.faults_injected(), 1, "{out}");
    // distribution 2.8 keeps the bytes of a cut PATCH but not the session state that would
    // match them ("upload resumed at wrong offset"), so it refuses the resume and kiln starts
    // that blob over; registries that keep sessions consistent resume at their `Range` (see the
    // registry crate's upload tests).
    assert!(
        out.contains("Resuming upload at byte") || out.contains("Restarting upload"),
        "{out}"
    );

    // The registry holds the exact bytes: skopeo copies (verifying every digest) and the layer
    // blob is byte-identical to the local one.
    let direct = format!("{}/big/app:1", k.registry.addr());
    let info = kiln_testkit::skopeo_inspect(&direct).unwrap();
    assert_eq!(info["Digest"], local["ManifestDigest"]);
    let layout = tempfile::tempdir().unwrap();
    kiln_testkit::skopeo_copy_to_oci_layout(&direct, layout.path(), "v1").unwrap();
    let hex = big_layer.strip_prefix("sha256:").unwrap();
    let copied = std::fs::read(layout.path().join("blobs/sha256").join(hex)).unwrap();
    let stored = std::fs::read(k.root.path().join("blobs/sha256").join(hex)).unwrap();
    assert!(copied.len() > 10_000_000);
    assert!(
        copied == stored,
        "the registry's layer differs from the local one"
    );
}

#[test]
fn mounts_under_token_auth_ask_for_pull_access_to_the_source_repository() {
    let reg = kiln_testkit::TokenRegistry::start(&[("bob", "hunter2")]).unwrap();
    let k = Kiln::new();
    let docker_config = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = crate::e2e::harness::kiln_command()
            .env("KILN_ROOT", k.root.path())
            .env("DOCKER_CONFIG", docker_config.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_success(&out, args);
        stdout(&out)
    };
    let addr = reg.registry.addr();
    run(
        &["login", "-u", "bob", "--password-stdin", &addr],
        "hunter2\n",
    );
    let dir = context(&k.base, "RUN echo token > /token.txt\n", &[]);
    build(&k, dir.path(), &["-t", "tok"]);
    let source = format!("{addr}/bob/app:1");
    let dest = format!("{addr}/bob/copy:1");
    k.ok(&["tag", "tok", &source]);
    k.ok(&["tag", "tok", &dest]);
    let out = run(&["push", &source], "");
    assert_eq!(count(&out, ": Pushed"), 3, "{out}");
    // The registry only mounts when the token grants pull on bob/app as well as push on
    // bob/copy; without it the POST would be refused or turned into a plain upload.
    let out = run(&["push", &dest], "");
    assert_eq!(count(&out, "Mounted from bob/app"), 3, "{out}");
    assert!(!out.contains(": Pushed"), "{out}");
}
