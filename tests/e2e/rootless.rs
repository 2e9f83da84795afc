//! Rootless kiln, run as real unprivileged users that the tests create (the suite runs as root):
//! `kiln-rootless` has `/etc/subuid` and `/etc/subgid` ranges, `kiln-rootless-1` has none (the
//! single-id map). Each test gives its user a store in a directory it owns and runs the kiln
//! binary through `runuser`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// A user with subordinate id ranges.
pub(super) const RANGED_USER: &str = "kiln-rootless";
/// A user without any: kiln falls back to a single-id map.
pub(super) const SINGLE_ID_USER: &str = "kiln-rootless-1";
/// The range given to [`RANGED_USER`] when `useradd` did not give one itself.
const FALLBACK_RANGE: &str = "420000-485535";

/// A Dockerfile exercising what rootless must get right: files owned by another id, a deleted
/// file (whiteout), a directory replaced (opaque), a `USER` switch.
pub(super) const DOCKERFILE: &str = r#"ARG BASE
FROM $BASE
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd \
 && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /data /sub && echo hi > /data/f && echo old > /sub/keep && echo gone > /doomed \
 && chown -R 1000:1000 /data
RUN rm /doomed && rm -rf /sub && mkdir /sub && echo new > /sub/new
RUN cat /proc/self/uid_map > /uid_map
USER app
RUN id -u > /tmp/id && touch /tmp/mine
WORKDIR /w
COPY --chown=1000:1000 Dockerfile /w/
"#;

/// One unprivileged user of these tests and the things it owns.
pub(super) struct RootlessUser {
    pub(super) name: &'static str,
    pub(super) uid: u32,
    home: PathBuf,
    /// A copy of the kiln binary the user can execute (the build tree may not be reachable).
    kiln: PathBuf,
    /// Held for the whole test: the tests share users, and each checks at its end that none
    /// of them runs a process any more.
    _exclusive: MutexGuard<'static, ()>,
}

/// Serialises the tests of this module (user creation, `/etc/sub[ug]id` edits, process checks).
static ROOTLESS_TESTS: Mutex<()> = Mutex::new(());

/// One fixed directory, replaced on each run rather than a fresh temporary directory per
/// run: a `static` is never dropped, so a `TempDir` held in one leaked ~90 MB per test run.
fn kiln_copy() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join("kiln-rootless-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Copy beside, then rename: a copy still running from an earlier run is not written to.
        let staging = dir.join(format!("kiln.{}", std::process::id()));
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &staging).unwrap();
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("kiln");
        std::fs::rename(&staging, &path).unwrap();
        path
    })
}

fn run_root(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `/etc/subuid`-format lines of `file` not belonging to `name`/`uid`.
fn without_entries(file: &str, name: &str, uid: u32) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            let owner = line.split(':').next().unwrap_or("");
            owner != name && owner != uid.to_string()
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn has_entry(file: &str, name: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(':').next() == Some(name))
}

/// Creates `name` if missing (idempotent), with or without subordinate ranges.
pub(super) fn user(name: &'static str, with_ranges: bool) -> RootlessUser {
    let exclusive = ROOTLESS_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run_root("useradd", &["-m", "-s", "/bin/sh", name]);
    }
    let uid: u32 = String::from_utf8(run_root("id", &["-u", name]).stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for file in ["/etc/subuid", "/etc/subgid"] {
        if with_ranges {
            if !has_entry(file, name) {
                let flag = if file.ends_with("subuid") {
                    "--add-subuids"
                } else {
                    "--add-subgids"
                };
                run_root("usermod", &[flag, FALLBACK_RANGE, name]);
            }
        } else {
            let kept = without_entries(file, name, uid);
            if std::fs::read_to_string(file).unwrap_or_default() != kept {
                std::fs::write(file, kept).unwrap();
            }
        }
    }
    let home = PathBuf::from(format!("/home/{name}"));
    RootlessUser {
        name,
        uid,
        home,
        kiln: kiln_copy().to_path_buf(),
        _exclusive: exclusive,
    }
}

impl RootlessUser {
    /// A fresh directory owned by the user (mode 0755 so the test can read what kiln wrote).
    pub(super) fn owned_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("kiln-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        rustix::fs::chown(dir.path(), Some(rustix::fs::Uid::from_raw(self.uid)), None).unwrap();
        dir
    }

    /// Runs kiln as this user with `env` (besides `HOME`) and `args`.
    fn kiln_env(&self, env: &[(&str, &Path)], args: &[&str]) -> Output {
        let mut command = Command::new("runuser");
        command.args(["-u", self.name, "--", "env", "-u", "KILN_ROOT"]);
        command.arg(format!("HOME={}", self.home.display()));
        command.arg("XDG_DATA_HOME=");
        for (key, value) in env {
            command.arg(format!("{key}={}", value.display()));
        }
        command.arg(&self.kiln).args(args);
        command.output().unwrap()
    }

    /// Runs kiln as this user inside the network namespace `/run/netns/NETNS` (entered by
    /// root, then the user is switched to, as a rootless kiln on a machine would be).
    /// `/dev/net/tun` is opened for the user in a mount namespace of this command's own (a
    /// device node of the same number bound over it there), so slirp4netns works on
    /// machines whose tun device is root's only, and the machine's stays as it is.
    pub(super) fn kiln_in_netns(&self, netns: &str, store: &Path, args: &[&str]) -> Output {
        let (mut command, _devices) = self.kiln_in_netns_command(netns, store, args);
        command.output().unwrap()
    }

    /// The command of [`Self::kiln_in_netns`], for a kiln that is to run on (`kiln serve`),
    /// and the directory its mount namespace mounts over (kept until it started).
    pub(super) fn kiln_in_netns_command(
        &self,
        netns: &str,
        store: &Path,
        args: &[&str],
    ) -> (Command, tempfile::TempDir) {
        let devices = tempfile::tempdir().unwrap();
        let script = "mount -t tmpfs tun \"$0\" && mknod -m 666 \"$0/tun\" c 10 200 \
            && mount --bind \"$0/tun\" /dev/net/tun && exec \"$@\"";
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["unshare", "--mount", "sh", "-c", script])
            .arg(devices.path())
            .args(["runuser", "-u", self.name, "--", "env", "-u", "KILN_ROOT"])
            .arg(format!("HOME={}", self.home.display()))
            .arg("XDG_DATA_HOME=")
            .arg(format!("KILN_ROOT={}", store.display()))
            .arg(&self.kiln)
            .args(args);
        (command, devices)
    }

    /// kiln as this user sending `args` to the daemon at `host` (no user namespace needed).
    pub(super) fn client(&self, host: &str, args: &[&str]) -> Output {
        let mut all = vec!["--host", host];
        all.extend_from_slice(args);
        self.kiln_env(&[], &all)
    }

    pub(super) fn kiln(&self, store: &Path, args: &[&str]) -> Output {
        self.kiln_env(&[("KILN_ROOT", store)], args)
    }

    /// Like [`Self::kiln`], with overlayfs replaced by the copying fallback.
    fn kiln_copying(&self, store: &Path, args: &[&str]) -> Output {
        self.kiln_env(
            &[("KILN_ROOT", store), ("KILN_OVERLAY", Path::new("copy"))],
            args,
        )
    }

    pub(super) fn ok(&self, store: &Path, args: &[&str]) -> String {
        let out = self.kiln(store, args);
        assert_success(&out, args);
        stdout(&out)
    }

    /// No process of this user may outlive a test. A detached container's supervisor is
    /// reparented to the machine's init when the kiln that started it exits, so it may need a
    /// moment to go after `rm`, and its zombie waits for that init to reap it: zombies run
    /// nothing and are not counted.
    pub(super) fn assert_no_processes(&self) {
        let running = || {
            let out = Command::new("ps")
                .args(["-u", &self.uid.to_string(), "-o", "pid=,stat=,args="])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .is_some_and(|s| !s.starts_with('Z'))
                })
                .map(|line| format!("{line}\n"))
                .collect::<String>()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !running().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let left = running();
        assert!(
            left.is_empty(),
            "{} still runs processes:\n{left}",
            self.name
        );
    }
}

/// The user's context directory holding `dockerfile`.
pub(super) fn context(user: &RootlessUser, dockerfile: &str) -> tempfile::TempDir {
    let dir = user.owned_dir();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// One layer's entries from a `kiln save` archive: path → (uid, gid, entry type).
type LayerEntries = BTreeMap<String, (u64, u64, tar::EntryType)>;

/// The layers of the first image in a docker-archive tar, in order.
fn saved_layers(archive: &[u8]) -> Vec<LayerEntries> {
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let blob = &files[layer.as_str().unwrap()];
            let mut entries = BTreeMap::new();
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
            for entry in tar.entries().unwrap() {
                let entry = entry.unwrap();
                let header = entry.header();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                entries.insert(
                    path.trim_end_matches('/').to_owned(),
                    (
                        header.uid().unwrap(),
                        header.gid().unwrap(),
                        header.entry_type(),
                    ),
                );
            }
            entries
        })
        .collect()
}

#[test]
fn rootless_build_keeps_owners_whiteouts_and_opaque_dirs() {
    build_and_check(false);
}

/// The same with the copying fallback that replaces overlayfs where it cannot be mounted. It
/// finds changes by comparing, so a replaced directory becomes whiteouts of its old entries
/// rather than an opaque marker.
#[test]
fn rootless_build_with_the_copying_fallback() {
    build_and_check(true);
}

fn build_and_check(copying: bool) {
    let k = Kiln::new();
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    let ctx = context(&user, DOCKERFILE);
    let base = format!("BASE={}", k.base);
    let kiln = |args: &[&str]| {
        if copying {
            user.kiln_copying(store.path(), args)
        } else {
            user.kiln(store.path(), args)
        }
    };
    let out = kiln(&[
        "build",
        "--progress=plain",
        "-t",
        "app",
        "--build-arg",
        &base,
        ctx.path().to_str().unwrap(),
    ]);
    assert_success(&out, &["build (rootless)"]);
    assert!(
        !stderr(&out).contains("single id"),
        "a user with ranges gets no single-id warning: {}",
        stderr(&out)
    );

    // The store is the user's: the host sees its files owned by the user.
    let blobs = store.path().join("blobs/sha256");
    assert!(std::fs::read_dir(&blobs).unwrap().count() > 0);
    for blob in std::fs::read_dir(&blobs).unwrap() {
        assert_eq!(blob.unwrap().metadata().unwrap().uid(), user.uid);
    }

    let out = user.kiln(store.path(), &["save", "app"]);
    assert_success(&out, &["save (rootless)"]);
    let layers = saved_layers(&out.stdout);
    let base_layers = layers.len() - 6;
    let (owned, deleted, uid_map, user_layer) = (
        &layers[base_layers],
        &layers[base_layers + 1],
        &layers[base_layers + 2],
        &layers[base_layers + 3],
    );
    assert_eq!(owned["data/f"].0, 1000, "chown to 1000 survives: {owned:?}");
    assert_eq!(owned["data/f"].1, 1000);
    assert_eq!(owned["data"].0, 1000);
    assert_eq!(owned["etc/passwd"].0, 0);
    assert!(deleted.contains_key(".wh.doomed"), "whiteout: {deleted:?}");
    if copying {
        assert!(deleted.contains_key("sub/.wh.keep"), "{deleted:?}");
        // Nothing else: unchanged files and directories stay out of the layer.
        assert_eq!(deleted.len(), 4, "{deleted:?}");
    } else {
        assert!(
            deleted.contains_key("sub/.wh..wh..opq"),
            "opaque dir: {deleted:?}"
        );
    }
    assert!(deleted.contains_key("sub/new"));
    assert!(!deleted.contains_key("sub/keep"));
    assert!(uid_map.contains_key("uid_map"));
    assert_eq!(user_layer["tmp/mine"].0, 1000, "{user_layer:?}");
    // WORKDIR and COPY write through kiln's own (host-side) overlay or copy.
    assert_eq!(
        layers[base_layers + 4]["w"].0,
        1000,
        "WORKDIR belongs to USER"
    );
    let copied = &layers[base_layers + 5];
    assert_eq!(copied["w/Dockerfile"].0, 1000, "{copied:?}");
    assert_eq!(copied.len(), 2, "only /w and the file: {copied:?}");

    // Inside, RUN saw a user namespace mapping the user to 0 and the range after it.
    let run = |script: &str| {
        let args = ["run", "--rm", "app", "sh", "-c", script];
        let out = kiln(&args);
        assert_success(&out, &args);
        stdout(&out)
    };
    let map = run("cat /uid_map");
    let first: Vec<&str> = map.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["0", &user.uid.to_string(), "1"], "{map}");
    assert!(map.lines().count() >= 2, "subordinate ids mapped: {map}");

    // `kiln run` of the image: USER app, the opaque dir and the whiteout hold.
    let out = run("id -u; cat /tmp/id; ls /sub; ls /doomed 2>&1; stat -c %u:%g /data/f; ls /w");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "1000",
            "1000",
            "new",
            "ls: /doomed: No such file or directory",
            "1000:1000",
            "Dockerfile"
        ],
        "{out}"
    );
    user.assert_no_processes();
}

/// Builds [`DOCKERFILE`] as root and pushes it to `repo_tag` in the test registry, so the
/// ordinary user's store gets its layers by pulling (extraction), not from a build; returns the
/// full remote reference.
fn build_and_push_as_root(k: &Kiln, repo_tag: &str) -> String {
    let out = k.build_dockerfile("app", DOCKERFILE, &[]);
    assert_success(&out, &["build (root)"]);
    let remote = format!("{}/{repo_tag}", k.registry.addr());
    k.ok(&["tag", "app", &remote]);
    k.ok(&["push", &remote]);
    remote
}

#[test]
fn rootless_pull_extracts_other_owners_and_overlay_markers() {
    // Built and pushed by root; pulled and run by the ordinary user, so extraction (not the
    // build's own upper dirs) makes the snapshots: uid 1000, a whiteout and an opaque dir.
    let k = Kiln::new();
    let remote = build_and_push_as_root(&k, "rootless/app:1");

    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    user.ok(store.path(), &["pull", &remote]);
    let out = user.ok(
        store.path(),
        &[
            "run",
            "--rm",
            "--user",
            "0",
            &remote,
            "sh",
            "-c",
            "stat -c %u:%g /data/f; ls /sub; ls /doomed 2>&1; true",
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1000:1000", "new", "ls: /doomed: No such file or directory"],
        "{out}"
    );

    // On the host, the file of uid 1000 belongs to the 1000th subordinate id.
    let subuid_start: u32 = std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(RANGED_USER)).then(|| f.next().unwrap().parse().unwrap())
        })
        .unwrap();
    let owners: Vec<u32> = files_named(&store.path().join("snapshots"), "f")
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("data")))
        .map(|p| std::fs::symlink_metadata(p).unwrap().uid())
        .collect();
    assert_eq!(owners, [subuid_start + 999], "data/f owner on the host");

    // A rootless rebuild on top of the pulled image commits layers that keep uid 1000.
    let ctx = context(
        &user,
        &format!("FROM {remote}\nUSER root\nRUN chown 1000:1000 /sub/new\n"),
    );
    user.ok(
        store.path(),
        &["build", "-t", "derived", ctx.path().to_str().unwrap()],
    );
    let out = user.kiln(store.path(), &["save", "derived"]);
    assert_success(&out, &["save derived"]);
    let layers = saved_layers(&out.stdout);
    assert_eq!(layers.last().unwrap()["sub/new"].0, 1000);

    // Store maintenance runs in the namespace too: snapshots full of subordinate ids, which
    // the user could not delete as themselves, go with `prune --all`.
    user.ok(store.path(), &["rmi", "derived", &remote]);
    user.ok(store.path(), &["prune", "--all", "-f"]);
    user.ok(store.path(), &["check"]);
    assert!(files_named(&store.path().join("snapshots"), "f").is_empty());
    user.assert_no_processes();
}

/// Every file named `name` under `dir` (not following links), found with `find` to keep the
/// test's own dependencies small.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let out = run_root(
        "find",
        &[dir.to_str().unwrap(), "-name", name, "-type", "f"],
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

#[test]
fn single_id_map_squashes_other_owners_with_a_warning() {
    let k = Kiln::new();
    let remote = build_and_push_as_root(&k, "rootless/single:1");

    let user = user(SINGLE_ID_USER, false);
    let store = user.owned_dir();
    let out = user.kiln(store.path(), &["pull", &remote]);
    assert_success(&out, &["pull (single id)"]);
    assert!(
        stderr(&out).contains("single id"),
        "the single-id map is announced: {}",
        stderr(&out)
    );
    let out = user.ok(
        store.path(),
        &[
            "run",
            "--rm",
            "--user",
            "0",
            &remote,
            "sh",
            "-c",
            "cat /proc/self/uid_map; stat -c %u:%g /data/f; ls /sub",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{out}");
    assert_eq!(lines[1..], ["0:0", "new"], "{out}");

    // The image's own USER (1000) has no id in the namespace: a clear failure, not a hang.
    let out = user.kiln(store.path(), &["run", "--rm", &remote, "id"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1000"), "{}", stderr(&out));
    user.assert_no_processes();
}

#[test]
fn rootless_store_defaults_to_the_users_data_home() {
    let user = user(RANGED_USER, true);
    let data_home = user.owned_dir();
    let out = user.kiln_env(&[("XDG_DATA_HOME", data_home.path())], &["images"]);
    assert_success(&out, &["images (rootless)"]);
    assert!(data_home.path().join("kiln/blobs").is_dir());

    // Without XDG_DATA_HOME: ~/.local/share/kiln, as podman and buildah do.
    let out = user.kiln_env(&[], &["system", "df"]);
    assert_success(&out, &["system df (rootless)"]);
    let store = user.home.join(".local/share/kiln");
    assert!(store.join("blobs").is_dir(), "{}", store.display());
    assert_eq!(std::fs::metadata(&store).unwrap().uid(), user.uid);
    user.assert_no_processes();
}
