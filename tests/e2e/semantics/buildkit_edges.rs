//! Edge semantics where kiln must produce what current BuildKit produces (issue 16 items 4–6):
//! ADD of a local archive, a USER that is not in `/etc/passwd`, and the mount points a RUN's
//! mounts needed. Each test names the BuildKit source it pins; `docs/differences-from-buildkit.md`
//! lists what still differs.

use super::{build_in, build_ok, context};
use crate::e2e::harness::{Kiln, stderr};

/// A tar entry written byte for byte (the `tar` crate's builder refuses `..` link targets and
/// absolute names, which is what these archives need).
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_ustar();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(if kind == tar::EntryType::Symlink {
        0o777
    } else {
        0o644
    });
    header.set_size(data.len() as u64);
    header.set_mtime(1_000_000);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// Item 4. BuildKit's file backend unpacks an ADD archive with `chrootarchive.Untar` into the
/// destination (moby/buildkit solver/llbsolver/file/unpack.go), so the archive's symlinks
/// resolve with the destination as root: an entry under `link -> ..` lands in
/// `/testsubdir/etc/myfile`, not `/etc/myfile`. moby/go-archive's `Unpack` skips pax global
/// headers before creating parent directories, so GNU tar's `/tmp/GlobalHead.N.M` makes no path.
#[test]
fn add_archive_resolves_links_inside_the_destination_and_skips_global_headers() {
    let k = Kiln::new();
    let mut builder = tar::Builder::new(Vec::new());
    raw_entry(
        &mut builder,
        "/tmp/GlobalHead.1.1",
        tar::EntryType::XGlobalHeader,
        "",
        b"16 comment=kiln\n",
    );
    raw_entry(&mut builder, "link", tar::EntryType::Symlink, "..", b"");
    raw_entry(
        &mut builder,
        "link/etc/myfile",
        tar::EntryType::Regular,
        "",
        b"through the link\n",
    );
    raw_entry(
        &mut builder,
        "plain",
        tar::EntryType::Regular,
        "",
        b"plain\n",
    );
    let archive = builder.into_inner().unwrap();
    let ctx = context(
        &k,
        "FROM @BASE@\nADD a.tar /testsubdir\n\
         RUN cat /testsubdir/etc/myfile /testsubdir/plain; \
             test -e /etc/myfile && echo leaked-to-etc; \
             test -e /testsubdir/tmp && echo global-header-made-a-dir; \
             ls /tmp | grep GlobalHead; echo checked\n",
        &[],
    );
    std::fs::write(ctx.path().join("a.tar"), archive).unwrap();
    let log = build_ok(&k, ctx.path(), "archive-edges", &[]);
    assert!(log.contains("through the link"), "{log}");
    assert!(log.contains("checked"), "{log}");
    for wrong in ["leaked-to-etc", "global-header-made-a-dir", "GlobalHead"] {
        assert!(!log.contains(&format!("| {wrong}")), "{wrong}:\n{log}");
    }
}

/// Item 5. With `USER docker` (no such user), BuildKit builds WORKDIR, ADD and COPY without
/// `--chown`: its file backend resolves the WORKDIR owner leniently (moby/buildkit
/// solver/llbsolver/ops/user_linux.go `readUser`: a name not found leaves 0:0), and COPY/ADD
/// without `--chown` do not look at USER (frontend/dockerfile/dockerfile2llb convert_copy.go).
/// Only a RUN needs the user to exist.
#[test]
fn an_unknown_user_only_fails_a_run() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "FROM @BASE@\nUSER docker\nWORKDIR /made\nADD f /made/f\nCOPY f g\n\
         USER docker:root\nWORKDIR /made2\nCOPY f .\n\
         USER root\nRUN stat -c '%n %u:%g' /made /made/f /made/g /made2 /made2/f\n",
        &[("f", "file\n")],
    );
    let log = build_ok(&k, ctx.path(), "unknown-user", &[]);
    for owned in [
        "/made 0:0",
        "/made/f 0:0",
        "/made/g 0:0",
        "/made2 0:0",
        "/made2/f 0:0",
    ] {
        assert!(log.contains(owned), "{owned}:\n{log}");
    }

    let ctx = context(&k, "FROM @BASE@\nUSER docker\nWORKDIR /w\nRUN true\n", &[]);
    let out = build_in(&k, ctx.path(), "unknown-user-run", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("docker"), "the error names the user: {err}");
    assert!(err.contains("Dockerfile:4"), "{err}");
}

/// Item 6. Current BuildKit removes the mount points it had to create for a RUN's mounts —
/// empty directories and empty files — and the parent directories it created for them
/// (moby/buildkit#3307, #3314; executor/stubs.go `MountStubsCleaner` with the recursive
/// option the Dockerfile frontend sets). Anything the RUN itself put there stays.
#[test]
fn mount_points_a_run_needed_leave_nothing_in_the_image() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "FROM @BASE@\n\
         RUN --mount=type=tmpfs,target=/stub/a/b/tmp \
             --mount=type=cache,target=/cachestub/c \
             --mount=type=bind,source=f,target=/bindstub/d/f \
             --mount=type=bind,source=f,target=/filestub true\n\
         RUN --mount=type=tmpfs,target=/kept/mnt touch /kept/written\n",
        &[("f", "file\n")],
    );
    build_ok(&k, ctx.path(), "stubs", &[]);
    let listing = k.ok(&[
        "run",
        "--rm",
        "stubs",
        "sh",
        "-c",
        "for p in /stub /cachestub /bindstub /filestub /kept/mnt; do \
         test -e $p && echo present:$p; done; ls /kept",
    ]);
    assert_eq!(listing, "written\n", "{listing}");
}
