//! Host-side file handling: ADD archives with `..`, absolute names, symlinked parents, hard
//! links and device nodes (Docker CVE-2014-9356 / CVE-2014-6407 and the tar traversal family),
//! context symlinks aimed outside (COPY copies the link, never its target), a cache mount `id`
//! climbing out (buildah CVE-2024-9675), a bind mount from a stage whose source is a link to `/`
//! (buildah CVE-2024-1753). Unit-level corpora for layers and `kiln load` live beside the code
//! (see docs/security.md); these run the real binary.

use std::path::Path;

use super::super::harness::Kiln;
use super::{HostWatch, assert_built, assert_failed_with, build_context, run_in};

/// One raw tar entry: the name and link name are written as given, unchecked.
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    device: (u32, u32),
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        device: (0, 0),
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind,
        link: target,
        data: b"",
        device: (0, 0),
    }
}

fn device(name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Entry<'_> {
    Entry {
        name,
        kind,
        link: "",
        data: b"",
        device: (major, minor),
    }
}

fn raw_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            gnu.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_000_000);
        if e.kind == tar::EntryType::Char || e.kind == tar::EntryType::Block {
            header.set_device_major(e.device.0).unwrap();
            header.set_device_minor(e.device.1).unwrap();
        }
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Builds `ADD archive.tar /x/` (then `dockerfile_tail`) in a fresh context.
fn add_archive(k: &Kiln, tag: &str, archive: &[u8], tail: &str) -> std::process::Output {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("archive.tar"), archive).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("ARG BASE\nFROM ${{BASE}}\nADD archive.tar /x/\n{tail}"),
    )
    .unwrap();
    build_context(k, tag, ctx.path(), &[])
}

#[test]
fn add_archives_never_write_outside_the_root() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let canary = host.canary.to_str().unwrap().to_owned();
    let canary_dir = host.canary.parent().unwrap().to_str().unwrap().to_owned();
    let climb = format!("../../../../../../../../..{canary}");

    // `..` out of the destination: refused, naming the entry and the line.
    let out = add_archive(&k, "tar:1", &raw_tar(&[file(&climb, b"pwned")]), "");
    assert_failed_with(&out, &[&climb, "Dockerfile:3"]);

    // An absolute name lands under the destination, inside the image.
    let out = add_archive(&k, "tar:2", &raw_tar(&[file(&canary, b"pwned")]), "");
    assert_built(&out);
    assert_eq!(
        run_in(&k, "tar:2", &["cat", &format!("/x{canary}")]),
        "pwned"
    );

    // A symlink to the host directory, then a file through it: resolved inside the image,
    // where that directory does not exist.
    let out = add_archive(
        &k,
        "tar:3",
        &raw_tar(&[
            link("evil", tar::EntryType::Symlink, &canary_dir),
            file("evil/canary", b"pwned"),
        ]),
        "",
    );
    assert_failed_with(&out, &["evil/canary"]);

    // Hard links to the host file, by absolute name and by climbing.
    for target in [canary.as_str(), climb.as_str()] {
        let out = add_archive(
            &k,
            "tar:4",
            &raw_tar(&[link("pw", tar::EntryType::Link, target)]),
            "",
        );
        assert_failed_with(&out, &["pw"]);
    }
    host.check(&k, super::NO_MARKER);
}

#[test]
fn device_nodes_from_archives_are_inert() {
    let k = Kiln::new();
    let host = HostWatch::new();
    // Extracted as Docker does when root, but nothing in the sandbox can open them.
    let archive = raw_tar(&[
        device("mem", tar::EntryType::Char, 1, 1),
        device("disk", tar::EntryType::Block, 8, 0),
    ]);
    let out = add_archive(
        &k,
        "devtar:1",
        &archive,
        "RUN test -c /x/mem && test -b /x/disk && echo nodes > /result; \
         (head -c 1 /x/mem >/dev/null) 2>/dev/null && echo read-mem >> /result; \
         (head -c 1 /x/disk >/dev/null) 2>/dev/null && echo read-disk >> /result; true\n",
    );
    assert_built(&out);
    assert_eq!(run_in(&k, "devtar:1", &["cat", "/result"]), "nodes\n");
    host.check(&k, super::NO_MARKER);
}

#[test]
fn context_links_and_mount_sources_stay_inside() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let canary = host.canary.to_str().unwrap().to_owned();
    let canary_dir = host.canary.parent().unwrap().to_owned();
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&canary, ctx.path().join("link")).unwrap();
    std::os::unix::fs::symlink(&canary_dir, ctx.path().join("dirlink")).unwrap();

    // The link is copied as a link; its target is not in the image.
    let dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY link /link\nRUN readlink /link > /target; cat /link > /content 2>/dev/null; true\n";
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    assert_built(&build_context(&k, "ctx:1", ctx.path(), &[]));
    assert_eq!(
        run_in(&k, "ctx:1", &["cat", "/target"]),
        format!("{canary}\n")
    );
    assert_eq!(run_in(&k, "ctx:1", &["cat", "/content"]), "");

    // A path through a link leading out of the context is not found.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY dirlink/canary /stolen\n",
    )
    .unwrap();
    assert_failed_with(
        &build_context(&k, "ctx:2", ctx.path(), &[]),
        &["Dockerfile:3"],
    );

    // buildah CVE-2024-9675: a cache id that climbs out stays a name inside the store.
    let climb = format!("../../../../../../../..{}", canary_dir.display());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "ARG BASE\nFROM ${{BASE}}\nRUN --mount=type=cache,id={climb},target=/c touch /c/pwned\n"
        ),
    )
    .unwrap();
    let _ = build_context(&k, "ctx:3", ctx.path(), &[]);
    assert!(!canary_dir.join("pwned").exists());

    // buildah CVE-2024-1753: a writable bind of another stage's link to `/`.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE} AS a\nRUN ln -s / /rootdir\n\
         FROM ${BASE}\nRUN --mount=type=bind,from=a,source=/rootdir,target=/x,rw touch /x/KILN_BREAKOUT\n",
    )
    .unwrap();
    let _ = build_context(&k, "ctx:4", ctx.path(), &[]);
    assert!(!Path::new("/KILN_BREAKOUT").exists());
    host.check(&k, super::NO_MARKER);
}

/// A zstd tar of a few KB holding `size` bytes of zeros, made without holding them in memory.
fn zstd_bomb(size: u64) -> Vec<u8> {
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(
            &mut header,
            "zeros",
            std::io::Read::take(std::io::repeat(0), size),
        )
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// moby CVE-2017-14992 / containerd CVE-2023-25153 class: an ADD archive that expands far past
/// the disk. The store sits on a small tmpfs (in a private mount namespace of its own, so
/// nothing is left mounted); extraction stops while the disk still has its reserve, saying why.
#[test]
fn a_decompression_bomb_stops_before_the_disk_is_full() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let bomb = zstd_bomb(1 << 30);
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("bomb.tar.zst"), &bomb).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nADD bomb.tar.zst /x/\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let base = format!("BASE={}", k.base);
    // kiln in the machine's network namespace (only the mount namespace is its own).
    let mut unshare = std::process::Command::new("unshare");
    crate::e2e::harness::in_the_machines_netns(&mut unshare);
    let out = unshare
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=128m kiln-bomb "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(root.path())
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "build",
            "--progress=plain",
            "-t",
            "bomb:1",
            "--build-arg",
            &base,
        ])
        .arg(ctx.path())
        .env("KILN_ROOT", root.path())
        .output()
        .expect("run unshare (util-linux)");
    assert_failed_with(&out, &["decompression bomb", "Dockerfile:3"]);
    host.check(&k, super::NO_MARKER);
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "the tmpfs is gone"
    );
}

/// A volume shared with a running container is hostile ground: while one container keeps
/// swapping the volume's entries for symlinks to the host (and emptying it, so the next start
/// sees it empty and copies the image's content in), containers starting on the same volume
/// must write nothing outside it.
#[test]
fn a_volume_fill_never_follows_links_a_running_container_plants() {
    let k = Kiln::new();
    // Removes the attacker even when an assertion fails first.
    let _cleanup = super::super::containers::Cleanup(&k);
    let host = HostWatch::new();
    let canary = host.canary.to_str().unwrap().to_owned();
    let canary_dir = host.canary.parent().unwrap().to_owned();
    let marker = "kiln-volume-fill-attack-48151";
    // The image's /data: files to copy (their names are the ones the attacker plants) and a
    // directory, so a fill takes a while and has many names to race on.
    let out = super::build_in(
        &k,
        "volfill:1",
        "ARG BASE\nFROM ${BASE}\nRUN mkdir -p /data/sub && \
         for i in $(seq 100 399); do echo image > /data/f$i; done && echo image > /data/sub/f\n",
        &[],
        &[],
    );
    assert_built(&out);
    k.ok(&["volume", "create", "shared"]);
    // Empty the volume for a moment (a start then decides to fill it), then plant links named
    // like the image's entries while that copy runs; forever.
    let plant = format!(
        "while :; do rm -rf /data/*; usleep 20000; \
         for n in f100 f101 f199 f250 f398 f399; do ln -s {canary} /data/$n; done; \
         ln -s {dir} /data/sub; usleep 5000; done",
        dir = canary_dir.display()
    );
    k.ok(&[
        "run",
        "-d",
        "--name",
        "attacker",
        "-v",
        "shared:/data",
        &k.base,
        "sh",
        "-c",
        &plant,
        marker,
    ]);
    // Each start either finds the volume in use (links there: nothing copied) or fills it;
    // either way it succeeds, and the links stay links.
    let failures: Vec<String> = (0..25)
        .map(|_| k.cmd(&["run", "--rm", "-v", "shared:/data", "volfill:1", "true"]))
        .filter(|out| !out.status.success())
        .map(|out| super::super::harness::stderr(&out))
        .collect();
    k.ok(&["rm", "-f", "attacker"]);
    host.check(&k, marker);
    let beside: Vec<_> = std::fs::read_dir(&canary_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["canary"], "nothing new beside the canary");
    assert!(failures.is_empty(), "starts failed: {failures:#?}");
    k.ok(&["volume", "rm", "shared"]);
}
