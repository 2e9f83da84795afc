//! The image service through the CLI: `kiln rmi` refuses to take the image of a container
//! without `-f` (and of a running one even with it), and `kiln images --filter` selects by
//! reference, dangling and label as `docker images --filter` does.

use super::containers::Cleanup;
use super::harness::{Kiln, assert_success, stderr, stdout};

/// Builds a one-instruction image on busybox, named `tag`.
fn build(k: &Kiln, tag: &str, body: &str) {
    let out = k.build_dockerfile(tag, &format!("ARG BASE\nFROM ${{BASE}}\n{body}\n"), &[]);
    assert_success(&out, &["build", tag]);
}

/// The rows of `kiln images` with `args`, header left out.
fn rows(k: &Kiln, args: &[&str]) -> Vec<String> {
    let mut all = vec!["images"];
    all.extend_from_slice(args);
    k.ok(&all).lines().skip(1).map(str::to_owned).collect()
}

#[test]
fn rmi_of_an_image_a_container_uses_needs_force() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    build(&k, "inuse", "LABEL purpose=rmi-test");
    let id = k.image_id("inuse");
    let short = &id[7..19];
    k.ok(&["run", "--name", "holder", "inuse", "true"]);

    // The last name of an image a (stopped) container uses stays without -f.
    let out = k.cmd(&["rmi", "inuse"]);
    assert!(!out.status.success(), "rmi succeeded: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unable to remove repository reference \"inuse:latest\" (must force)")
            && err.contains("is using its referenced image"),
        "{err}"
    );
    assert!(rows(&k, &[]).iter().any(|r| r.starts_with("inuse ")));
    // By ID likewise.
    let out = k.cmd(&["rmi", short]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("image is being used by stopped container"),
        "{}",
        stderr(&out)
    );

    // A second name can go: the image keeps one.
    k.ok(&["tag", "inuse", "inuse:second"]);
    assert_eq!(k.ok(&["rmi", "inuse:second"]), "Untagged: inuse:second\n");

    // With -f the name goes; the container keeps the image, which is now dangling.
    assert_eq!(k.ok(&["rmi", "-f", "inuse"]), "Untagged: inuse:latest\n");
    assert!(!rows(&k, &[]).iter().any(|r| r.starts_with("inuse ")));
    let dangling = rows(&k, &["--filter", "dangling=true"]);
    assert!(
        dangling
            .iter()
            .any(|r| r.starts_with("<none>") && r.contains(&id[7..19])),
        "{dangling:?}"
    );
    // The container's image is still there for it: it can be committed.
    k.ok(&["commit", "holder", "inuse:again"]);

    // A running container's image cannot be removed by ID, even with -f.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "inuse:again",
        "sleep",
        "300",
    ]);
    let again = k.image_id("inuse:again");
    let out = k.cmd(&["rmi", "-f", &again]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(cannot be forced) - image is being used by running container"),
        "{}",
        stderr(&out)
    );
    assert!(rows(&k, &[]).iter().any(|r| r.starts_with("inuse ")));
}

#[test]
fn images_filter_by_reference_dangling_and_label() {
    let k = Kiln::new();
    build(&k, "web:1", "LABEL tier=web");
    build(&k, "acme/tool:2", "LABEL tier=tools");
    build(&k, "tool:old", "LABEL version=1");
    let old = k.image_id("tool:old");
    // The name moves to a new build: the old image is dangling.
    build(&k, "tool:old", "LABEL version=2");
    let repos = |args: &[&str]| -> Vec<String> {
        rows(&k, args)
            .iter()
            .map(|r| {
                let mut cols = r.split_whitespace();
                format!("{}:{}", cols.next().unwrap(), cols.next().unwrap())
            })
            .collect()
    };
    assert_eq!(repos(&["--filter", "reference=web"]), ["web:1"]);
    assert_eq!(repos(&["--filter", "reference=web:*"]), ["web:1"]);
    assert_eq!(repos(&["--filter", "reference=*/tool"]), ["acme/tool:2"]);
    // `*` does not cross `/`: only the official-style name matches. (Rows come in the order of
    // the full names: docker.io/acme/… before docker.io/library/….)
    assert_eq!(repos(&["--filter", "reference=tool*"]), ["tool:old"]);
    assert_eq!(
        repos(&["-f", "reference=web", "-f", "reference=acme/*"]),
        ["acme/tool:2", "web:1"]
    );
    assert_eq!(repos(&["--filter", "label=tier=web"]), ["web:1"]);
    assert_eq!(repos(&["--filter", "label=tier"]), ["acme/tool:2", "web:1"]);
    assert!(repos(&["--filter", "label=tier", "--filter", "reference=tool*"]).is_empty());
    let dangling = rows(&k, &["--filter", "dangling=true"]);
    assert_eq!(dangling.len(), 1, "{dangling:?}");
    assert!(
        dangling[0].starts_with("<none>") && dangling[0].contains(&old[7..19]),
        "{dangling:?}"
    );
    assert!(
        repos(&["--filter", "dangling=false"])
            .iter()
            .all(|r| r != "<none>:<none>")
    );
    assert_eq!(
        repos(&["--filter", "dangling=false"]).len(),
        rows(&k, &[]).len()
    );
    // The unnamed image is found by its ID, as dockerd finds it.
    let out = k.ok(&["inspect", &old[7..19]]);
    assert!(out.contains(&old[7..]), "{out}");

    let out = k.cmd(&["images", "--filter", "size=3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid filter \"size=3\""),
        "{}",
        stderr(&out)
    );
}
