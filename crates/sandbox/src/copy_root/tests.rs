use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn whiteout(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

/// Every entry under `dir`: relative path → "dir", "whiteout", "link:<target>" or the contents.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut |rel, meta| {
        let path = dir.join(rel);
        let what = if meta.is_dir() {
            "dir".to_string()
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            "whiteout".to_string()
        } else if meta.file_type().is_symlink() {
            format!("link:{}", std::fs::read_link(&path)?.display())
        } else {
            std::fs::read_to_string(&path)?
        };
        out.insert(rel.display().to_string(), what);
        Ok(())
    })
    .unwrap();
    out
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn layers_merge_like_overlay_and_changes_come_back_in_overlay_form() {
    let scratch = tempfile::tempdir().unwrap();
    let (bottom, top, merged, upper) = (
        scratch.path().join("bottom"),
        scratch.path().join("top"),
        scratch.path().join("merged"),
        scratch.path().join("upper"),
    );
    for d in [&merged, &upper] {
        std::fs::create_dir(d).unwrap();
    }
    write(&bottom.join("a/keep"), "keep");
    write(&bottom.join("a/edit"), "old");
    write(&bottom.join("a/gone"), "gone");
    write(&bottom.join("b/x"), "x");
    write(&bottom.join("d/hidden"), "hidden");
    std::os::unix::fs::symlink("a/keep", bottom.join("link")).unwrap();
    whiteout(&top.join("a/gone"));
    write(&top.join("d/new"), "new");
    rustix::fs::setxattr(
        top.join("d"),
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    std::fs::set_permissions(
        bottom.join("a/keep"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    rustix::fs::chown(
        bottom.join("a/keep"),
        Some(Uid::from_raw(1000)),
        Some(Gid::from_raw(1000)),
    )
    .unwrap();

    let baseline = materialize(&[&top, &bottom], &merged).unwrap();
    assert_eq!(
        tree(&merged),
        map(&[
            ("a", "dir"),
            ("a/edit", "old"),
            ("a/keep", "keep"),
            ("b", "dir"),
            ("b/x", "x"),
            ("d", "dir"),
            ("d/new", "new"),
            ("link", "link:a/keep"),
        ])
    );
    let keep = std::fs::metadata(merged.join("a/keep")).unwrap();
    assert_eq!(
        (keep.uid(), keep.gid(), keep.mode() & 0o7777),
        (1000, 1000, 0o640)
    );

    // What a RUN might do.
    std::fs::write(merged.join("a/edit"), "new contents").unwrap();
    std::fs::remove_dir_all(merged.join("b")).unwrap();
    std::fs::remove_dir_all(merged.join("d")).unwrap();
    write(&merged.join("d/z"), "z");
    write(&merged.join("n/new"), "n");
    std::fs::set_permissions(
        merged.join("link").parent().unwrap().join("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    write_diff(&merged, &baseline, &upper).unwrap();
    assert_eq!(
        tree(&upper),
        map(&[
            ("a", "dir"),
            ("a/edit", "new contents"),
            ("b", "whiteout"),
            ("d", "dir"),
            ("d/new", "whiteout"),
            ("d/z", "z"),
            ("n", "dir"),
            ("n/new", "n"),
        ])
    );
    assert_eq!(
        std::fs::metadata(upper.join("a")).unwrap().mode() & 0o7777,
        0o700,
        "a directory's new mode reaches the upper dir"
    );
    clear(&merged).unwrap();
    assert_eq!(std::fs::read_dir(&merged).unwrap().count(), 0);
}

#[test]
fn an_unchanged_root_gives_an_empty_diff() {
    let scratch = tempfile::tempdir().unwrap();
    let (lower, merged, upper) = (
        scratch.path().join("lower"),
        scratch.path().join("merged"),
        scratch.path().join("upper"),
    );
    write(&lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    for d in [&merged, &upper] {
        std::fs::create_dir(d).unwrap();
    }
    let baseline = materialize(&[&lower], &merged).unwrap();
    // Reading changes nothing, nor does a mount-point stub that is removed again.
    std::fs::read(merged.join("etc/passwd")).unwrap();
    std::fs::write(merged.join("etc/hosts"), "").unwrap();
    std::fs::remove_file(merged.join("etc/hosts")).unwrap();
    write_diff(&merged, &baseline, &upper).unwrap();
    assert!(tree(&upper).is_empty());
}

/// The probe answers from overlayfs's superblock alone: yes for an upper dir on the test's
/// filesystem (the tests run as root), no for one overlayfs cannot use, and it leaves no mount
/// behind in either case (an unmount would cost every container start an RCU grace period).
#[test]
fn the_overlay_probe_answers_without_mounting() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let path = scratch.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    };
    let (lower, upper, work, target) = (dir("lower"), dir("upper"), dir("work"), dir("target"));
    let mounted_on_target = || {
        let target = target.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
    };
    assert!(crate::overlay::overlay_accepted(
        &lower,
        (&upper, &work),
        &target,
        false
    ));
    assert!(!mounted_on_target());
    let missing = scratch.path().join("no-such-upper");
    assert!(!crate::overlay::overlay_accepted(
        &lower,
        (&missing, &work),
        &target,
        false
    ));
    assert!(!mounted_on_target());
}

/// A sandbox's own directories are probed in place when they all exist (no scratch directory
/// made and removed), and the probe leaves them as they were.
#[test]
fn the_probe_uses_the_sandboxs_own_dirs_when_they_exist() {
    let scratch = tempfile::tempdir().unwrap();
    let lower = scratch.path().join("lower");
    let (upper, work) = (scratch.path().join("upper"), scratch.path().join("work"));
    let lowers = [lower.clone()];
    // Not made yet: a scratch probe beside the upper dir.
    assert!(matches!(
        Probe::for_mount(&lowers, Some((&upper, &work)), &upper),
        Probe::Beside(p) if p == upper
    ));
    for d in [&lower, &upper, &work] {
        std::fs::create_dir(d).unwrap();
    }
    write(&upper.join("kept"), "changed by an earlier run");
    let probe = Probe::for_mount(&lowers, Some((&upper, &work)), &upper);
    assert!(matches!(probe, Probe::Dirs { .. }), "{probe:?}");
    assert!(accepted(probe, false));
    assert_eq!(tree(&upper), map(&[("kept", "changed by an earlier run")]));
    let entries = |d: &Path| std::fs::read_dir(d).unwrap().count();
    assert_eq!(entries(scratch.path()), 3, "no scratch directory is left");
    // No lower dir: the scratch probe.
    assert!(matches!(
        Probe::for_mount(&[], Some((&upper, &work)), &upper),
        Probe::Beside(_)
    ));
}
