//! Volumes: named volumes outlive their containers and are shared; an image's `VOLUME` paths
//! get anonymous volumes filled from the image; `--mount` of volumes, binds and tmpfs; volumes
//! in use cannot be removed.

use super::containers::{Cleanup, image};
use super::harness::{Kiln, stderr};

#[test]
fn named_volume_survives_its_container_and_is_shared() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let base = k.base.as_str();
    assert_eq!(k.ok(&["volume", "create", "shared"]), "shared\n");
    k.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "shared:/data",
        base,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    let out = k.cmd(&["volume", "rm", "shared"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));

    k.ok(&["rm", "-v", "writer"]);
    assert!(
        k.ok(&["volume", "ls"]).contains("shared"),
        "rm -v keeps named volumes"
    );
    let out = k.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=shared,dst=/again,readonly",
        base,
        "sh",
        "-c",
        "cat /again/f; touch /again/x 2>/dev/null || echo read-only",
    ]);
    assert_eq!(out, "kept\nread-only\n");
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["volume", "inspect", "shared"])).unwrap();
    let mountpoint = v[0]["Mountpoint"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/f")).unwrap(),
        "kept\n"
    );
    assert_eq!(v[0]["Driver"], "local");

    assert_eq!(k.ok(&["volume", "rm", "shared"]), "shared\n");
    assert!(!std::path::Path::new(mountpoint).exists());
    let out = k.cmd(&["volume", "inspect", "shared"]);
    assert!(stderr(&out).contains("no such volume: shared"));
}

#[test]
fn image_volumes_are_anonymous_and_start_with_the_image_content() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    image(
        &k,
        "withvol:1",
        "RUN mkdir -p /data/sub && echo seeded > /data/sub/seed && chown -R 1000:1000 /data\nVOLUME /data\n",
    );
    k.ok(&[
        "run",
        "--name",
        "first",
        "withvol:1",
        "sh",
        "-c",
        "echo more > /data/more",
    ]);
    let mounts = k.inspect("first")["Mounts"].clone();
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/data");
    let name = mounts[0]["Name"].as_str().unwrap().to_owned();
    assert_eq!(name.len(), 64);
    let source = mounts[0]["Source"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read_to_string(format!("{source}/sub/seed")).unwrap(),
        "seeded\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{source}/more")).unwrap(),
        "more\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("{source}/sub/seed"))
            .unwrap()
            .uid(),
        1000,
        "owners kept"
    );
    assert!(
        !k.root
            .path()
            .join("containers")
            .join(k.inspect("first")["Id"].as_str().unwrap())
            .join("upper/data/more")
            .exists(),
        "the write went to the volume, not the container's layer"
    );
    k.ok(&["rm", "-v", "first"]);
    assert!(
        !k.ok(&["volume", "ls", "-q"]).contains(&name),
        "rm -v removes anonymous volumes"
    );

    // --rm removes them too; prune takes the anonymous ones of removed containers.
    k.ok(&["run", "--rm", "withvol:1", "true"]);
    assert_eq!(k.ok(&["volume", "ls", "-q"]), "");
    k.ok(&["run", "--name", "second", "withvol:1", "true"]);
    k.ok(&["volume", "create", "named"]);
    k.ok(&["rm", "second"]);
    let pruned = k.ok(&["volume", "prune", "-f"]);
    assert_eq!(pruned.lines().count(), 2, "one anonymous volume: {pruned}");
    assert_eq!(
        k.ok(&["volume", "ls", "-q"]),
        "named\n",
        "prune spares named volumes"
    );
}

#[test]
fn mount_flag_binds_tmpfs_and_errors() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let base = k.base.as_str();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "host file\n").unwrap();
    let bind = format!("type=bind,src={},dst=/h,readonly", host.path().display());
    let out = k.ok(&[
        "run", "--rm", "--mount", &bind, "--mount", "type=tmpfs,dst=/scratch", base,
        "sh", "-c", "cat /h/in; touch /h/x 2>/dev/null || echo ro; grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs",
    ]);
    assert_eq!(out, "host file\nro\ntmpfs\n");
    for (flag, message) in [
        ("type=bind,dst=/x", "needs source="),
        ("type=nfs,dst=/x", "unknown type"),
        ("type=volume,src=a", "target="),
    ] {
        let out = k.cmd(&["run", "--rm", "--mount", flag, base, "true"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(message), "{flag}: {}", stderr(&out));
    }
    let out = k.cmd(&[
        "run", "--rm", "-v", "v1:/same", "-v", "v2:/same", base, "true",
    ]);
    assert!(
        stderr(&out).contains("duplicate mount point: /same"),
        "{}",
        stderr(&out)
    );
    assert_eq!(k.ok(&["ps", "-aq"]), "", "failed runs leave no container");
}
