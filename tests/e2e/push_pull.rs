//! Push to and pull from a real registry; check kiln's output with skopeo and umoci.

use super::harness::{Kiln, assert_success, stdout};

#[test]
fn push_then_pull_into_an_empty_store_and_validate_with_skopeo_and_umoci() {
    let k = Kiln::new();
    k.build_ok("app", "app", &[]);
    let remote = format!("{}/team/app:v1", k.registry.addr());
    k.ok(&["tag", "app", &remote]);
    let out = k.ok(&["push", &remote]);
    assert!(out.contains("digest: sha256:"), "{out}");
    assert!(out.contains("Pushed"), "{out}");

    // The registry has what kiln built, and an independent client reads it.
    let info = kiln_testkit::skopeo_inspect(&remote).unwrap();
    let local = k.inspect("app");
    assert_eq!(
        info["Layers"].as_array().unwrap().len(),
        local["Layers"].as_array().unwrap().len()
    );
    assert!(
        info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_HOME=/srv/app"),
        "{info}"
    );
    let digest_line = out.lines().find(|l| l.contains("digest:")).unwrap();
    assert!(
        digest_line.contains(local["ManifestDigest"].as_str().unwrap()),
        "the pushed digest is the local manifest's: {out}"
    );

    // Pushing again skips every blob.
    let again = k.ok(&["push", &remote]);
    assert!(!again.contains("Pushed"), "{again}");
    assert!(again.contains("already exists"), "{again}");

    // umoci unpacks the pushed image into a runnable bundle.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    kiln_testkit::skopeo_copy_to_oci_layout(&remote, &layout, "v1").unwrap();
    let bundle = tmp.path().join("bundle");
    kiln_testkit::umoci_unpack_oci_layout(&layout, "v1", &bundle).unwrap();
    let info = std::fs::read_to_string(bundle.join("rootfs/srv/app/info.txt")).unwrap();
    assert_eq!(info, "version 1.0 in /srv/app\n");

    // A second machine with an empty store pulls and runs it.
    let other = k.fresh_store();
    let out = k.cmd_in(other.path(), &["pull", &remote]);
    assert_success(&out, &["pull"]);
    let out = k.cmd_in(other.path(), &["run", "--rm", &remote]);
    assert_success(&out, &["run"]);
    assert!(
        stdout(&out).starts_with("version 1.0 in /srv/app\n"),
        "{}",
        stdout(&out)
    );
    // And FROM a pushed image works in a fresh store.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {remote}\nRUN cat /srv/app/hello.txt\n"),
    )
    .unwrap();
    let out = k.cmd_in(
        other.path(),
        &["build", "-t", "derived", ctx.path().to_str().unwrap()],
    );
    assert_success(&out, &["build derived"]);
}
