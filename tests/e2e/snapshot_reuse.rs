//! A COPY that misses reuses the unchanged files of the previous build of the same step: the new
//! snapshot hard-links them from the old one (`solve/src/copy/reuse.rs`). These tests look at
//! the snapshots' inodes in the store, and check that the reuse never changes a result: the
//! layer is the one a cold build writes, other `--chmod`s do not reuse, and pruning the old
//! snapshot leaves the new one whole.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::harness::{Kiln, assert_success};

const FILES: usize = 12;

/// A context of `FILES` small files in two directories, and a Dockerfile copying all of it.
fn context(copy_flags: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        let path = dir.path().join(file(i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    write_dockerfile(dir.path(), copy_flags);
    dir
}

fn write_dockerfile(dir: &Path, copy_flags: &str) {
    std::fs::write(
        dir.join("Dockerfile"),
        format!("ARG BASE\nFROM ${{BASE}}\nCOPY {copy_flags} . /ctx/\n"),
    )
    .unwrap();
}

fn file(i: usize) -> String {
    format!("src/d{}/f{i:02}.txt", i % 2)
}

fn build(k: &Kiln, root: &Path, dir: &Path, tag: &str) {
    let base = format!("BASE={}", k.base);
    let args = [
        "build",
        "-t",
        tag,
        "--build-arg",
        &base,
        dir.to_str().unwrap(),
    ];
    let out = k.cmd_in(root, &args);
    assert_success(&out, &args);
}

/// The blob digest and the snapshot's files dir of the image's last layer (the COPY's).
fn copy_layer(k: &Kiln, root: &Path, tag: &str) -> (String, PathBuf) {
    let out = k.cmd_in(root, &["inspect", tag]);
    assert_success(&out, &["inspect", tag]);
    let image: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = image[0]["Layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let diff_id = image[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    (digest, root.join("snapshots").join(diff_id).join("fs"))
}

fn inode(snapshot: &Path, rel: &str) -> u64 {
    std::fs::symlink_metadata(snapshot.join("ctx").join(rel))
        .unwrap()
        .ino()
}

#[test]
fn one_changed_file_links_the_rest_and_gives_the_cold_build_layer() {
    let k = Kiln::new();
    let root = k.root.path();
    let ctx = context("");
    build(&k, root, ctx.path(), "reuse:v1");
    let (_, first) = copy_layer(&k, root, "reuse:v1");

    std::fs::write(ctx.path().join(file(3)), "edited\n").unwrap();
    build(&k, root, ctx.path(), "reuse:v2");
    let (digest, second) = copy_layer(&k, root, "reuse:v2");
    assert_ne!(first, second);
    for i in 0..FILES {
        let (old, new) = (inode(&first, &file(i)), inode(&second, &file(i)));
        if i == 3 {
            assert_ne!(old, new, "the changed file is a new one");
        } else {
            assert_eq!(old, new, "{} is linked from the previous snapshot", file(i));
        }
    }
    assert_eq!(
        std::fs::read_to_string(second.join("ctx").join(file(3))).unwrap(),
        "edited\n"
    );

    // A cold build of the same context in an empty store writes the very same layer.
    let cold_root = k.fresh_store();
    build(&k, cold_root.path(), ctx.path(), "reuse:cold");
    let (cold_digest, _) = copy_layer(&k, cold_root.path(), "reuse:cold");
    assert_eq!(digest, cold_digest);

    // Another --chmod changes what is written: nothing is linked, and the mode is applied.
    write_dockerfile(ctx.path(), "--chmod=600");
    build(&k, root, ctx.path(), "reuse:chmod");
    let (_, chmodded) = copy_layer(&k, root, "reuse:chmod");
    for i in 0..FILES {
        assert_ne!(inode(&second, &file(i)), inode(&chmodded, &file(i)));
        let mode = std::fs::metadata(chmodded.join("ctx").join(file(i)))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o600, "{}", file(i));
    }
    let cold_root = k.fresh_store();
    build(&k, cold_root.path(), ctx.path(), "reuse:chmod-cold");
    assert_eq!(
        copy_layer(&k, root, "reuse:chmod").0,
        copy_layer(&k, cold_root.path(), "reuse:chmod-cold").0
    );

    // Dropping the first image and pruning removes its snapshot; the second one keeps its files.
    for tag in ["reuse:v1", "reuse:chmod"] {
        let out = k.cmd(&["rmi", tag]);
        assert_success(&out, &["rmi", tag]);
    }
    let out = k.cmd(&["prune", "--all", "-f"]);
    assert_success(&out, &["prune"]);
    assert!(!first.exists(), "the first snapshot is pruned");
    for i in 0..FILES {
        let expected = if i == 3 {
            "edited\n".to_owned()
        } else {
            format!("file {i}\n").repeat(i + 1)
        };
        if second.exists() {
            let kept = std::fs::read_to_string(second.join("ctx").join(file(i))).unwrap();
            assert_eq!(kept, expected);
        }
        let path = format!("/ctx/{}", file(i));
        assert_eq!(k.ok(&["run", "--rm", "reuse:v2", "cat", &path]), expected);
    }
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
}
