//! Build outputs other than the store (`--output type=oci|docker|local|tar`) and `kiln save` /
//! `kiln load`, checked with skopeo, umoci, oci-image-tool (and dockerd when it can run).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// Builds a testdata context with extra arguments (outputs) and a tag.
fn build_with(k: &Kiln, context: &str, tag: &str, extra: &[&str]) -> std::process::Output {
    let out = k.build(context, tag, extra);
    assert_success(&out, &["build", context]);
    out
}

/// Unpacks an image tar into a directory, as a layout for umoci and oci-image-tool.
fn untar(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    tar::Archive::new(std::fs::File::open(archive).unwrap())
        .unpack(dest)
        .unwrap();
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `kiln load` with `input` on stdin, in the store at `root`.
fn load_stdin(root: &Path, input: &[u8]) -> std::process::Output {
    let mut child = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", root)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused archive may be abandoned mid-stream: a broken pipe here is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn oci_output_is_a_valid_layout_that_umoci_skopeo_and_oci_image_tool_read() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("img.tar");
    let spec = format!("type=oci,dest={}", archive.display());
    // Without buildx's default provenance: the layout's entry is the image manifest itself
    // (tests/e2e/attest.rs covers the index an attestation makes).
    build_with(
        &k,
        "app",
        "app:v1",
        &["--output", &spec, "--provenance=false"],
    );
    // The image is still stored and tagged.
    let local = k.inspect("app:v1");

    let layout = tmp.path().join("layout");
    untar(&archive, &layout);
    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = read_json(&layout.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        "docker.io/library/app:v1"
    );
    assert_eq!(entry["digest"], local["ManifestDigest"]);

    kiln_testkit::oci_image_tool_validate(&layout, "v1").unwrap();
    let bundle = tmp.path().join("bundle");
    kiln_testkit::umoci_unpack_oci_layout(&layout, "v1", &bundle).unwrap();
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/srv/app/info.txt")).unwrap(),
        "version 1.0 in /srv/app\n"
    );

    let info =
        kiln_testkit::skopeo_inspect(&format!("oci-archive:{}:v1", archive.display())).unwrap();
    assert_eq!(info["Digest"], local["ManifestDigest"]);
    assert!(
        info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_HOME=/srv/app"),
        "{info}"
    );
}

#[test]
fn docker_output_is_read_by_skopeo_and_loads_back_with_the_same_id() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("img.tar");
    let spec = format!("type=docker,dest={}", archive.display());
    build_with(&k, "app", "app", &["-o", &spec]);
    let id = k.image_id("app");

    let dir = tmp.path().join("unpacked");
    untar(&archive, &dir);
    let manifest = read_json(&dir.join("manifest.json"));
    assert_eq!(manifest[0]["RepoTags"][0], "app:latest");
    assert_eq!(
        manifest[0]["Config"],
        format!("blobs/sha256/{}", id.trim_start_matches("sha256:"))
    );
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        k.inspect("app")["Layers"].as_array().unwrap().len()
    );

    let info =
        kiln_testkit::skopeo_inspect(&format!("docker-archive:{}", archive.display())).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), layers.len());
    assert!(
        info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_HOME=/srv/app"),
        "{info}"
    );

    let other = k.fresh_store();
    let out = k.cmd_in(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_success(&out, &["load"]);
    assert_eq!(stdout(&out), "Loaded image: app:latest\n");
    let out = k.cmd_in(other.path(), &["inspect", "app"]);
    assert_success(&out, &["inspect"]);
    let loaded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(loaded[0]["Id"], id.as_str());

    docker_load_if_available(&archive, &id);
}

#[test]
fn save_and_load_carry_images_between_stores() {
    let k = Kiln::new();
    build_with(&k, "app", "app", &[]);
    build_with(&k, "whiteouts", "wh:1", &[]);
    let ids = [k.image_id("app"), k.image_id("wh:1")];
    let run_app = k.ok(&["run", "--rm", "app"]);
    let run_wh = k.ok(&["run", "--rm", "wh:1"]);

    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("both.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), "app", "wh:1"]);
    let skopeo =
        kiln_testkit::skopeo_inspect(&format!("docker-archive:{}:wh:1", archive.display()))
            .unwrap();
    assert_eq!(skopeo["Layers"].as_array().unwrap().len(), 3, "{skopeo}");

    let other = k.fresh_store();
    let out = k.cmd_in(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_success(&out, &["load"]);
    assert_eq!(
        stdout(&out),
        "Loaded image: app:latest\nLoaded image: wh:1\n"
    );
    for (name, id, want) in [("app", &ids[0], &run_app), ("wh:1", &ids[1], &run_wh)] {
        let out = k.cmd_in(other.path(), &["inspect", name]);
        assert_success(&out, &["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["Id"], id.as_str(), "{name}");
        let out = k.cmd_in(other.path(), &["run", "--rm", name]);
        assert_success(&out, &["run", name]);
        assert_eq!(&stdout(&out), want, "{name}");
    }

    // Through a pipe: save to stdout, load from stdin.
    let out = k.cmd(&["save", "app"]);
    assert_success(&out, &["save", "app"]);
    let third = k.fresh_store();
    let out = load_stdin(third.path(), &out.stdout);
    assert_success(&out, &["load (stdin)"]);
    assert_eq!(stdout(&out), "Loaded image: app:latest\n");
}

/// Archives another tool wrote: skopeo's docker-archive (uncompressed `<digest>.tar` layers, no
/// index) and oci-archive (`ref.name` a bare tag, so the image loads unnamed, by ID).
#[test]
fn archives_written_by_skopeo_load_and_run() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let docker_archive = tmp.path().join("docker.tar");
    let oci_archive = tmp.path().join("oci.tar");
    for dest in [
        format!(
            "docker-archive:{}:kiln-test/busybox:s1",
            docker_archive.display()
        ),
        format!("oci-archive:{}:s1", oci_archive.display()),
    ] {
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}", k.base))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success(), "skopeo copy to {dest}");
    }
    let remote = kiln_testkit::skopeo_inspect(&k.base).unwrap();

    let root = k.fresh_store();
    let out = k.cmd_in(
        root.path(),
        &["load", "-i", docker_archive.to_str().unwrap()],
    );
    assert_success(&out, &["load", "docker-archive"]);
    assert_eq!(stdout(&out), "Loaded image: kiln-test/busybox:s1\n");
    let out = k.cmd_in(
        root.path(),
        &["run", "--rm", "kiln-test/busybox:s1", "echo", "ran"],
    );
    assert_success(&out, &["run"]);
    assert_eq!(stdout(&out), "ran\n");

    let out = k.cmd_in(root.path(), &["load", "-i", oci_archive.to_str().unwrap()]);
    assert_success(&out, &["load", "oci-archive"]);
    let line = stdout(&out);
    let id = line.strip_prefix("Loaded image ID: ").expect(&line).trim();
    let out = k.cmd_in(root.path(), &["inspect", "kiln-test/busybox:s1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["Id"], id, "both archives hold the same config");
    assert_eq!(remote["Layers"].as_array().unwrap().len(), 1, "{remote}");
}

#[test]
fn oci_output_on_stdout_loads_under_its_name() {
    let k = Kiln::new();
    let out = build_with(&k, "app", "app:v2", &["-q", "--output", "type=oci,dest=-"]);
    assert!(out.stdout.len() > 10_000, "the tar is on stdout");
    assert!(
        out.stdout.ends_with(&[0u8; 1024]),
        "the tar's end blocks come last: no ID printed after it"
    );
    let other = k.fresh_store();
    let loaded = load_stdin(other.path(), &out.stdout);
    assert_success(&loaded, &["load"]);
    assert_eq!(stdout(&loaded), "Loaded image: app:v2\n");
    let out = k.cmd_in(other.path(), &["run", "--rm", "app:v2"]);
    assert_success(&out, &["run"]);
    assert!(stdout(&out).starts_with("version 1.0 in /srv/app\n"));
}

#[test]
fn local_output_is_the_final_filesystem() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    build_with(&k, "whiteouts", "wh", &["-o", dest.to_str().unwrap()]);
    // Deleted files and the replaced directory's old contents are gone, as in a container.
    assert_eq!(
        std::fs::read_to_string(dest.join("keep.txt")).unwrap(),
        "keep\n"
    );
    assert!(!dest.join("gone.txt").exists());
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.join("\n") + "\n"
    };
    for dir in ["/opaque", "/bin"] {
        let ran = k.ok(&[
            "run",
            "--rm",
            "wh",
            "sh",
            "-c",
            &format!("ls -A {dir} | sort"),
        ]);
        assert_eq!(listing(&dest.join(&dir[1..])), ran, "{dir}");
    }

    // `-o -` is the same filesystem as one tar on stdout.
    let out = build_with(&k, "whiteouts", "wh", &["-o", "-"]);
    let mut names: Vec<String> = tar::Archive::new(out.stdout.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == "opaque/c"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "opaque/a" || n == "gone.txt"),
        "{names:?}"
    );
}

#[test]
fn bad_output_specs_fail_before_building() {
    let k = Kiln::new();
    let out = k.build("app", "app", &["--output", "type=zip,dest=x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown type \"zip\""),
        "{}",
        stderr(&out)
    );
    assert!(k.cmd(&["inspect", "app"]).status.code() != Some(0));
}

/// A tar with one raw header, bypassing the `tar` crate's path checks.
fn hostile_tar(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512) + 1024, 0);
    out
}

#[test]
fn hostile_and_damaged_archives_are_refused_and_leave_the_store_empty() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.tar");
    build_with(
        &k,
        "app",
        "app",
        &["-o", &format!("type=docker,dest={}", good.display())],
    );
    let good_bytes = std::fs::read(&good).unwrap();

    // A layer blob with one byte changed: its name no longer matches its content.
    let mut corrupt = good_bytes.clone();
    let (offset, layer_name) = {
        let mut archive = tar::Archive::new(good_bytes.as_slice());
        let mut found = None;
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if entry.size() > 1000 && name.starts_with("blobs/") {
                found = Some((entry.raw_file_position() as usize + 600, name));
                break;
            }
        }
        found.unwrap()
    };
    corrupt[offset] ^= 0xff;

    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "dot-dot path",
            hostile_tar("../../etc/evil", b'0', "", b"x"),
            "\"../../etc/evil\" refused".into(),
        ),
        (
            "symlink",
            hostile_tar("manifest.json", b'2', "/etc/passwd", b""),
            "links must point inside the image archive".into(),
        ),
        ("digest mismatch", corrupt, layer_name.clone()),
        (
            "truncated",
            good_bytes[..good_bytes.len() / 2].to_vec(),
            "reading the archive".into(),
        ),
    ];
    for (what, bytes, expect) in cases {
        let root = k.fresh_store();
        let file = tmp.path().join("bad.tar");
        std::fs::write(&file, &bytes).unwrap();
        let out = k.cmd_in(root.path(), &["load", "-i", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{what}: loaded");
        assert!(stderr(&out).contains(&expect), "{what}: {}", stderr(&out));
        assert_eq!(blob_count(root.path()), 0, "{what}: blobs published");
        let images = k.cmd_in(root.path(), &["images"]);
        assert_eq!(stdout(&images).lines().count(), 1, "{what}: a name was set");
    }

    // A manifest naming a blob the archive lacks.
    let dir = tmp.path().join("missing");
    untar(&good, &dir);
    let manifest = read_json(&dir.join("manifest.json"));
    let layer = manifest[0]["Layers"][0].as_str().unwrap().to_owned();
    std::fs::remove_file(dir.join(&layer)).unwrap();
    let missing = tmp.path().join("missing.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&missing)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let root = k.fresh_store();
    let out = k.cmd_in(root.path(), &["load", "-i", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("file {layer:?} is not in the archive")),
        "{}",
        stderr(&out)
    );
    assert_eq!(blob_count(root.path()), 0);
}

/// `docker load` of kiln's docker output, with a private dockerd when one can be started here
/// (Debian `docker.io`); skipped, saying so, when docker is not installed or cannot run.
fn docker_load_if_available(archive: &Path, id: &str) {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("docker") || !have("dockerd") {
        eprintln!("docker load check skipped: docker is not installed");
        return;
    }
    let Some(daemon) = PrivateDockerd::start() else {
        eprintln!("docker load check skipped: dockerd could not start here");
        return;
    };
    let out = daemon
        .docker()
        .args(["load", "-i"])
        .arg(archive)
        .output()
        .unwrap();
    assert_success(&out, &["docker load"]);
    assert!(stdout(&out).contains("app:latest"), "{}", stdout(&out));
    let out = daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", "app:latest"])
        .output()
        .unwrap();
    assert_success(&out, &["docker image inspect"]);
    assert_eq!(stdout(&out).trim(), id);
    eprintln!("docker load check passed: dockerd loaded {id}");
}

/// A dockerd on a private socket and data root, without networking setup.
struct PrivateDockerd {
    _dir: tempfile::TempDir,
    socket: String,
    child: std::process::Child,
}

impl PrivateDockerd {
    fn start() -> Option<PrivateDockerd> {
        let dir = tempfile::tempdir().ok()?;
        let socket = format!("unix://{}", dir.path().join("docker.sock").display());
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&socket)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dockerd.log")).ok()?)
            .spawn()
            .ok()?;
        let daemon = PrivateDockerd {
            _dir: dir,
            socket,
            child,
        };
        for _ in 0..60 {
            let ok = daemon
                .docker()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(daemon);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        None
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("--host").arg(&self.socket);
        c
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount its data root; kill after a grace period.
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..40 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
