//! Volumes, commit, save, load and import through the daemon.

use super::super::super::harness::{Kiln, assert_success, stdout};
use super::super::Daemon;
use super::{ClientCli, wait_for};

#[test]
fn volumes_commit_save_load_and_import_go_through_the_api() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let c = ClientCli::new(d.host());
    c.ok(&["pull", &k.base]);

    assert_eq!(c.ok(&["volume", "create", "--label", "a=b", "v1"]), "v1\n");
    assert!(c.ok(&["volume", "ls"]).contains("local     v1\n"));
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "v1\n");
    let inspected: serde_json::Value =
        serde_json::from_str(&c.ok(&["volume", "inspect", "v1"])).unwrap();
    assert_eq!(inspected[0]["Labels"]["a"], "b");
    assert_eq!(c.ok(&["volume", "rm", "v1"]), "v1\n");
    c.fails(&["volume", "rm", "v1"], "v1");
    c.fails(
        &["volume", "prune"],
        "kiln volume prune does not go through",
    );

    // commit a container's change, run the new image.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "cm",
        &k.base,
        "sh",
        "-c",
        "echo hi > /made && echo done && sleep 60",
    ]);
    wait_for("the container's change", || {
        stdout(&c.cmd(&["logs", "cm"])).contains("done")
    });
    let id = c.ok(&["commit", "-m", "made it", "cm", "committed:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    c.ok(&["rm", "-f", "cm"]);
    assert_eq!(
        c.ok(&["run", "--rm", "committed:1", "cat", "/made"]),
        "hi\n"
    );

    // save to a file and to stdout, rmi, load back.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("committed.tar");
    c.ok(&["save", "-o", archive.to_str().unwrap(), "committed:1"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    let piped = c.command(&["save", "committed:1"]).output().unwrap();
    assert_success(&piped, &["save"]);
    assert_eq!(piped.stdout.len() as u64, archive.metadata().unwrap().len());
    let missing = dir.path().join("missing.tar");
    c.fails(
        &["save", "-o", missing.to_str().unwrap(), "nothere:1"],
        "nothere",
    );
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    c.ok(&["rmi", "committed:1"]);
    let loaded = c.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: committed:1"), "{loaded}");
    assert_eq!(
        c.ok(&["run", "--rm", "committed:1", "cat", "/made"]),
        "hi\n"
    );
    c.fails(&["load", "-i", "/nonexistent.tar"], "/nonexistent.tar");

    // import a root filesystem tar.
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, super::super::tar_of(&[("hello.txt", b"hello\n")])).unwrap();
    let imported = c.ok(&["import", rootfs.to_str().unwrap(), "imported:1"]);
    assert!(imported.starts_with("sha256:"), "{imported}");
    let inspected: serde_json::Value =
        serde_json::from_str(&c.ok(&["inspect", "imported:1"])).unwrap();
    assert_eq!(inspected[0]["Id"], imported.trim());
    c.assert_local_store_unused();
}
