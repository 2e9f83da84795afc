//! Mounts requested in the spec: binds, tmpfs, single files, overlays mounted on the host, and
//! the stub files and directories their targets needed, cleaned from the upper afterwards.

use super::*;

pub(super) fn mount_stubs_are_cleaned(l: &Layers) -> Result<(), String> {
    for (name, layers) in [
        ("scratch+busybox", vec![&*l.base]),
        ("with /etc", vec![&*l.etc, &*l.base]),
    ] {
        let s = scratch();
        let out = run(&spec(&layers, &s, NetworkMode::None), &process("true"))
            .map_err(|e| e.to_string())?;
        expect_eq("exit", out.code, ExitCode(0))?;
        let left: Vec<_> = std::fs::read_dir(&s.upper)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        expect_eq(&format!("{name}: upper after `true`"), left, vec![])?;
    }
    // A stub the process wrote into stays (and so does what it wrote).
    let s = scratch();
    let out = run(
        &spec(&[&l.base], &s, NetworkMode::None),
        &process("echo x > /etc/kept"),
    )
    .map_err(|e| e.to_string())?;
    expect_eq("exit", out.code, ExitCode(0))?;
    expect("written file kept", s.upper.join("etc/kept").is_file())?;
    expect("hosts stub removed", !s.upper.join("etc/hosts").exists())
}

pub(super) fn bind_mounts(l: &Layers) -> Result<(), String> {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("file"), "hello").unwrap();
    let s = scratch();
    let mut sp = spec(&[&l.base], &s, NetworkMode::None);
    sp.mounts = vec![
        BindMount {
            source: data.path().into(),
            target: "/mnt/ro".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: data.path().join("file"),
            target: "/rw-file".into(),
            readonly: false,
        }
        .into(),
    ];
    let script = "cat /mnt/ro/file; echo; touch /mnt/ro/x 2>/dev/null && echo writable; echo -n bye > /rw-file";
    let out = run(&sp, &process(script)).map_err(|e| e.to_string())?;
    expect_eq("output", out.stdout.as_str(), "hello\n")?;
    expect_eq(
        "rw bind wrote through",
        std::fs::read_to_string(data.path().join("file")).ok(),
        Some("bye".into()),
    )?;
    let left: Vec<_> = std::fs::read_dir(&s.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    expect_eq("bind stubs cleaned", left, vec![])
}

pub(super) fn tmpfs_and_file_mounts(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut sp = spec(&[&l.base], &s, NetworkMode::None);
    sp.mounts = vec![
        Mount::Tmpfs(TmpfsMount {
            target: "/scratch/tmp".into(),
            size: Some(1 << 20),
        }),
        Mount::File(FileMount {
            target: "/run/secrets/token".into(),
            contents: b"s3cret".to_vec(),
            mode: 0o440,
            uid: 0,
            gid: 0,
        }),
    ];
    let script = "echo data > /scratch/tmp/f && cat /scratch/tmp/f; \
        cat /run/secrets/token; echo; ls -ln /run/secrets/token | cut -c1-10; \
        echo x > /run/secrets/token 2>/dev/null && echo writable; \
        grep -c ' /scratch/tmp tmpfs ' /proc/mounts";
    let out = run(&sp, &process(script)).map_err(|e| e.to_string())?;
    expect_eq(
        "output",
        out.stdout.as_str(),
        "data\ns3cret\n-r--r-----\n1\n",
    )?;
    let left: Vec<_> = std::fs::read_dir(&s.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    expect_eq("tmpfs and secret stubs cleaned", left, vec![])
}

pub(super) fn overlay_mounts_on_host(l: &Layers) -> Result<(), String> {
    let target = tempfile::tempdir().unwrap();
    let m = OverlayMount::mount(&[l.etc.clone(), l.base.clone()], None, target.path())
        .map_err(|e| e.to_string())?;
    expect(
        "two lowers merged",
        m.path().join("etc/passwd").is_file() && m.path().join("bin/busybox").is_file(),
    )?;
    expect("read-only", std::fs::write(m.path().join("x"), "").is_err())?;
    m.unmount().map_err(|e| e.to_string())?;

    let m = OverlayMount::mount(std::slice::from_ref(&l.base), None, target.path())
        .map_err(|e| e.to_string())?;
    expect(
        "single lower visible",
        m.path().join("bin/busybox").is_file(),
    )?;
    expect(
        "single lower read-only",
        std::fs::write(m.path().join("x"), "").is_err(),
    )?;
    drop(m);
    expect("unmounted on drop", !target.path().join("bin").exists())?;

    let s = scratch();
    let m = OverlayMount::mount(&[], Some((&s.upper, &s.work)), target.path())
        .map_err(|e| e.to_string())?;
    std::fs::write(m.path().join("copied"), "c").map_err(|e| e.to_string())?;
    m.unmount().map_err(|e| e.to_string())?;
    expect("upper-only write landed", s.upper.join("copied").is_file())
}
