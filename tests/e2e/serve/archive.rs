//! `docker cp` and `docker export` through `kiln serve` (raw HTTP, the docker CLI) and the
//! CLI's `kiln cp`/`kiln export`, on stopped and running containers, with the escapes of
//! docker CVE-2018-15664 (symlinks out of the container, resolved on the host) and
//! CVE-2019-14271 (the container's libraries loaded by the copy) tried and refused.

use std::time::Duration;

use base64::Engine as _;

use super::super::harness::{Kiln, stderr};
use super::docker_cli::Docker;
use super::ops::run_container;
use super::{Daemon, Response};

fn stat_of(r: &Response) -> serde_json::Value {
    let header = r
        .header("X-Docker-Container-Path-Stat")
        .unwrap_or_else(|| panic!("no stat header: {} {}", r.status, r.text()));
    let json = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// (name, entry type, content) of each entry.
fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            (name, kind, String::from_utf8_lossy(&content).into_owned())
        })
        .collect()
}

fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        // Names as a hostile client writes them (`..` included), not as the tar crate cleans.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if matches!(kind, tar::EntryType::Symlink) {
            h.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn put(d: &Daemon, container: &str, query: &str, tar: &[u8]) -> Response {
    d.request(
        "PUT",
        &format!("/containers/{container}/archive?{query}"),
        &[("Content-Type", "application/x-tar")],
        tar,
    )
}

/// A file on the host that no path in a container may reach.
struct HostMarker(std::path::PathBuf);

impl HostMarker {
    fn new(tag: &str) -> HostMarker {
        let path = std::path::PathBuf::from(format!("/tmp/kiln-cp-{tag}-{}", std::process::id()));
        std::fs::write(&path, "host secret").unwrap();
        HostMarker(path)
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for HostMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn archive_of_a_stopped_container_with_a_volume() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let marker = HostMarker::new("stopped");
    let root_body = serde_json::json!({
        "Image": k.base, "Volumes": {"/vol1": {}},
        "Cmd": ["sh", "-c", "echo -n hello > /vol1/data.txt && mkdir -p /d/sub && echo f > /d/sub/f && ln -s / /d/up && mkdir /tmp2"],
        "HostConfig": { "NetworkMode": "none" },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=cp1",
        &[("Content-Type", "application/json")],
        root_body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        d.request("POST", "/containers/cp1/start", &[], b"").status,
        204
    );
    let waited = d.request("POST", "/containers/cp1/wait", &[], b"");
    assert_eq!(waited.json()["StatusCode"], 0, "{}", waited.text());

    // HEAD: the stat alone, of a file in the volume.
    let head = d.request(
        "HEAD",
        "/containers/cp1/archive?path=/vol1/data.txt",
        &[],
        b"",
    );
    assert_eq!(head.status, 200);
    let stat = stat_of(&head);
    assert_eq!(stat["name"], "data.txt");
    assert_eq!(stat["size"], 5);
    assert_eq!(stat["mode"], 0o644);
    let link = stat_of(&d.request("HEAD", "/containers/cp1/archive?path=/d/up", &[], b""));
    assert_eq!(
        link["mode"].as_u64().unwrap() & (1 << 27),
        1 << 27,
        "{link}"
    );
    assert_eq!(link["linkTarget"], "/");
    // GET: the tar, under the base name.
    let got = d.get("/containers/cp1/archive?path=/vol1/data.txt");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("Content-Type"), Some("application/x-tar"));
    assert_eq!(stat_of(&got)["name"], "data.txt");
    assert_eq!(
        entries(&got.body),
        [("data.txt".into(), tar::EntryType::Regular, "hello".into())]
    );
    let dir = entries(&d.get("/containers/cp1/archive?path=/d").body);
    let names: Vec<&str> = dir.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["d/", "d/sub/", "d/sub/f", "d/up"]);
    assert_eq!(dir[3].1, tar::EntryType::Symlink, "a link stays a link");

    // CVE-2018-15664: symlinks and `..` resolve inside the container, never on the host.
    for path in [
        format!("/d/up/tmp/{}", marker.name()),
        format!("/../../../../tmp/{}", marker.name()),
        format!("/d/up/../../tmp/{}", marker.name()),
    ] {
        let q = format!("/containers/cp1/archive?path={path}");
        assert_eq!(d.request("HEAD", &q, &[], b"").status, 404, "{path}");
        let r = d.get(&q);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("Could not find the file")
        );
    }
    assert_eq!(d.get("/containers/cp1/archive").status, 400);
    assert_eq!(
        d.get("/containers/nope/archive?path=/").json()["message"],
        "No such container: nope"
    );

    // PUT into the volume, then read it back.
    let new = tar_with(&[("new.txt", tar::EntryType::Regular, "put")]);
    let r = put(&d, "cp1", "path=/vol1", &new);
    assert_eq!(r.status, 200, "{}", r.text());
    let back = entries(&d.get("/containers/cp1/archive?path=/vol1/new.txt").body);
    assert_eq!(back[0].2, "put");
    assert_eq!(put(&d, "cp1", "path=/nope", &new).status, 404);
    assert_eq!(put(&d, "cp1", "path=/vol1/data.txt", &new).status, 400);
    // A tar whose symlink then leads a write out: it lands under the destination.
    let escape = tar_with(&[
        ("esc", tar::EntryType::Symlink, "/"),
        (
            &format!("esc/tmp/{}", marker.name()),
            tar::EntryType::Regular,
            "overwritten",
        ),
    ]);
    let _ = put(&d, "cp1", "path=/tmp2", &escape);
    // Through the container's own symlink to /: still the container's /tmp2.
    let _ = put(&d, "cp1", "path=/d/up/tmp2", &escape);
    assert_eq!(std::fs::read_to_string(&marker.0).unwrap(), "host secret");
    let dotdot = tar_with(&[(
        &format!("../../../../tmp/{}", marker.name()),
        tar::EntryType::Regular,
        "x",
    )]);
    assert_eq!(put(&d, "cp1", "path=/tmp2", &dotdot).status, 400);
    assert_eq!(std::fs::read_to_string(&marker.0).unwrap(), "host secret");
    // noOverwriteDirNonDir: a file may not replace the directory /d/sub.
    let swap = tar_with(&[("sub", tar::EntryType::Regular, "file")]);
    assert_eq!(
        put(&d, "cp1", "path=/d&noOverwriteDirNonDir=1", &swap).status,
        400
    );
    assert_eq!(
        entries(&d.get("/containers/cp1/archive?path=/d/sub/f").body)[0].2,
        "f\n"
    );

    // copyUIDGID: owned by the container's user (numeric here; names are read from its
    // /etc/passwd as data, CVE-2019-14271, never through the host's NSS).
    let user_body = serde_json::json!({
        "Image": k.base, "User": "1234:5678", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"},
    });
    let created = d.request(
        "POST",
        "/containers/create?name=cp2",
        &[("Content-Type", "application/json")],
        user_body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(put(&d, "cp2", "path=/tmp&copyUIDGID=1", &new).status, 200);
    let owned = d.get("/containers/cp2/archive?path=/tmp/new.txt");
    let mut archive = tar::Archive::new(&owned.body[..]);
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        (entry.header().uid().unwrap(), entry.header().gid().unwrap()),
        (1234, 5678)
    );
    // The mount points made to copy into a stopped container leave no trace in its changes.
    let changes = d.get("/containers/cp2/changes").json();
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["Path"] != "/vol1"),
        "{changes}"
    );

    // export: the filesystem without the volume's contents.
    let exported = d.get("/containers/cp1/export");
    assert_eq!(exported.status, 200);
    let names: Vec<String> = entries(&exported.body).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"d/sub/f".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("vol1/")), "{names:?}");

    // The CLI's verbs over the same calls.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copied.txt");
    k.ok(&["cp", "cp1:/vol1/data.txt", dest.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello");
    k.ok(&["cp", "cp1:/d", out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("d/sub/f")).unwrap(),
        "f\n"
    );
    std::fs::write(out.path().join("up.txt"), "from host").unwrap();
    k.ok(&[
        "cp",
        out.path().join("up.txt").to_str().unwrap(),
        "cp1:/vol1/",
    ]);
    assert_eq!(
        entries(&d.get("/containers/cp1/archive?path=/vol1/up.txt").body)[0].2,
        "from host"
    );
    let tarball = out.path().join("fs.tar");
    k.ok(&["export", "-o", tarball.to_str().unwrap(), "cp1"]);
    let names: Vec<String> = entries(&std::fs::read(&tarball).unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(names.contains(&"d/sub/f".to_owned()), "{names:?}");
    let missing = k.cmd(&["cp", "cp1:/nope", out.path().to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("Could not find the file /nope"),
        "{}",
        stderr(&missing)
    );

    // The docker CLI: stat, then GET or PUT.
    let docker = Docker::new(&d);
    let via_docker = out.path().join("via-docker");
    docker.ok(&["cp", "cp1:/vol1/data.txt", via_docker.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&via_docker).unwrap(), "hello");
    docker.ok(&[
        "cp",
        out.path().join("up.txt").to_str().unwrap(),
        "cp1:/d/sub/",
    ]);
    let docker_export = out.path().join("docker-export.tar");
    docker.ok(&["export", "-o", docker_export.to_str().unwrap(), "cp1"]);
    let names: Vec<String> = entries(&std::fs::read(&docker_export).unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(names.contains(&"d/sub/up.txt".to_owned()), "{names:?}");
    assert_eq!(
        entries(&d.get("/containers/cp1/archive?path=/d/sub/up.txt").body)[0].2,
        "from host"
    );
}

#[test]
fn archive_of_a_running_container_is_its_live_root() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let marker = HostMarker::new("live");
    let id = run_container(
        &k,
        &d,
        "live1",
        "echo live > /live.txt && ln -s / /up && mkdir /drop && exec sleep 600",
        serde_json::json!({}),
        false,
    );
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), &[], b"")
            .status,
        204
    );
    let mut ready = false;
    for _ in 0..100 {
        if d.request("HEAD", "/containers/live1/archive?path=/drop", &[], b"")
            .status
            == 200
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "the container did not make /drop\n{}", d.log());
    assert_eq!(
        entries(&d.get("/containers/live1/archive?path=/live.txt").body)[0].2,
        "live\n"
    );
    // The container's /proc is its mount point only, not the kernel's files.
    let proc_names = entries(&d.get("/containers/live1/archive?path=/proc").body);
    assert_eq!(
        proc_names.len(),
        1,
        "{:?}",
        proc_names.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    // Its root, not the host's, through its own symlink to /.
    let q = format!("/containers/live1/archive?path=/up/tmp/{}", marker.name());
    assert_eq!(d.get(&q).status, 404);
    let new = tar_with(&[("in.txt", tar::EntryType::Regular, "into a live one")]);
    assert_eq!(put(&d, "live1", "path=/up/drop", &new).status, 200);
    assert_eq!(
        entries(&d.get("/containers/live1/archive?path=/drop/in.txt").body)[0].2,
        "into a live one"
    );
    assert_eq!(std::fs::read_to_string(&marker.0).unwrap(), "host secret");
    let exported = entries(&d.get("/containers/live1/export").body);
    assert!(
        exported.iter().any(|e| e.0 == "live.txt"),
        "export of a running container"
    );
    assert_eq!(
        d.request("POST", "/containers/live1/kill", &[], b"").status,
        204
    );
    // Stopped now: the same files through its mounted layers.
    assert_eq!(
        entries(&d.get("/containers/live1/archive?path=/drop/in.txt").body)[0].2,
        "into a live one"
    );
}
