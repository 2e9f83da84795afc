//! `RUN --mount` (cache, bind, tmpfs, secret) and `RUN --network`: real builds, then the
//! image's layers, config and history read back from the store.

use std::path::Path;
use std::process::{Command, Output};

use super::harness::{Kiln, assert_success, stderr};

/// Writes `files` (path, contents) into a fresh context directory.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

/// `kiln build -t tag --build-arg BASE=<busybox> [extra] dir` with extra environment.
fn build(k: &Kiln, dir: &Path, tag: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let base = format!("BASE={}", k.base);
    let mut cmd = crate::e2e::harness::kiln_command();
    cmd.env("KILN_ROOT", k.root.path())
        .args(["build", "-t", tag, "--build-arg", &base])
        .args(extra)
        .arg(dir);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().expect("run kiln")
}

fn build_ok(k: &Kiln, dir: &Path, tag: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let out = build(k, dir, tag, extra, env);
    assert_success(&out, &["build", tag]);
    stderr(&out)
}

/// One layer of an image as stored: its entry names and the concatenated bytes of its files.
struct LayerContent {
    names: Vec<String>,
    bytes: Vec<u8>,
}

/// Every layer of `tag`, read back from the store's blobs with tar(1).
fn layers(k: &Kiln, tag: &str) -> Vec<LayerContent> {
    let image = k.inspect(tag);
    image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let digest = layer["digest"].as_str().unwrap();
            let blob = k
                .root
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            let tar = |flags: &str| {
                let out = Command::new("tar").arg(flags).arg(&blob).output().unwrap();
                assert!(out.status.success(), "tar {flags} {}", blob.display());
                out.stdout
            };
            LayerContent {
                names: String::from_utf8(tar("-tzf"))
                    .unwrap()
                    .lines()
                    .map(|l| l.trim_start_matches("./").to_owned())
                    .collect(),
                bytes: tar("-xzOf"),
            }
        })
        .collect()
}

/// The layers added on top of the busybox base (which has one layer).
fn own_layers(k: &Kiln, tag: &str) -> Vec<LayerContent> {
    layers(k, tag).into_iter().skip(1).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn all_names(layers: &[LayerContent]) -> Vec<String> {
    layers.iter().flat_map(|l| l.names.clone()).collect()
}

#[test]
fn cache_mount_persists_across_builds_and_never_reaches_a_layer() {
    let k = Kiln::new();
    let dir = context(&[(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE} AS seed\nRUN mkdir /seed && echo seeded-content > /seed/file\n\
         FROM ${BASE}\n\
         RUN --mount=type=cache,target=/opt/seeded,from=seed,source=/seed \
         sh -c 'cat /opt/seeded/file'\n\
         RUN --mount=type=cache,target=/var/cache/tool,uid=1000,mode=0750 \
         sh -c 'stat -c \"perm=%a owner=%u\" /var/cache/tool; \
         if [ -f /var/cache/tool/data ]; then echo \"found $(cat /var/cache/tool/data)\"; fi; \
         echo cached-bytes > /var/cache/tool/data; echo layer-bytes > /in-layer'\n",
    )]);
    let first = build_ok(&k, dir.path(), "cache:1", &[], &[]);
    assert!(first.contains("perm=750 owner=1000"), "{first}");
    assert!(!first.contains("found cached-bytes"), "{first}");
    assert!(
        first.contains("| seeded-content"),
        "a cache with from= starts as a copy of that stage's directory:\n{first}"
    );

    let second = build_ok(&k, dir.path(), "cache:2", &["--no-cache"], &[]);
    assert!(
        second.contains("found cached-bytes"),
        "the second build sees what the first wrote:\n{second}"
    );

    let layers = own_layers(&k, "cache:2");
    let names = all_names(&layers);
    assert!(names.iter().any(|n| n == "in-layer"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("var/cache") || n.starts_with("opt")),
        "nothing of the cache mount (not even its mount point) is in the layer: {names:?}"
    );
    assert!(!layers.iter().any(|l| contains(&l.bytes, b"cached-bytes")));

    // The directory lives in the store, outside every layer.
    let caches: Vec<_> = std::fs::read_dir(k.root.path().join("cache-mounts"))
        .unwrap()
        .map(|e| e.unwrap().path().join("0/data"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert_eq!(
        std::fs::read_to_string(&caches[0]).unwrap(),
        "cached-bytes\n"
    );
}

#[test]
fn bind_and_tmpfs_mounts_never_change_their_sources_or_the_layer() {
    let k = Kiln::new();
    let dir = context(&[
        ("data/hello.txt", "hello from the context\n"),
        ("data/ignored.txt", "must stay invisible\n"),
        (".dockerignore", "data/ignored.txt\n"),
        (
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE} AS builder\n\
             RUN mkdir /out && echo built-in-stage > /out/artifact\n\
             FROM ${BASE}\n\
             RUN --mount=source=data,target=/mnt/data sh -c 'cat /mnt/data/hello.txt; \
             test -e /mnt/data/ignored.txt || echo ignored-is-hidden; \
             touch /mnt/data/new 2>/dev/null && echo ctx-writable || echo ctx-read-only'\n\
             RUN --mount=type=bind,from=builder,source=/out,target=/mnt/out \
             sh -c 'cat /mnt/out/artifact; rm /mnt/out/artifact 2>/dev/null || echo stage-read-only'\n\
             RUN --mount=type=bind,source=data,target=/mnt/rw,rw \
             sh -c 'echo changed > /mnt/rw/hello.txt && echo ctx-rw-$(cat /mnt/rw/hello.txt)'\n\
             RUN --mount=type=bind,from=builder,source=out,target=/mnt/rwout,readwrite=true \
             sh -c 'rm /mnt/rwout/artifact && echo stage-rw-removed'\n\
             RUN --mount=type=bind,from=builder,source=/out/artifact,target=/again \
             sh -c 'echo again-$(cat /again)'\n\
             RUN --mount=type=tmpfs,target=/scratch,size=1m \
             sh -c 'echo t > /scratch/f && grep -q \" /scratch tmpfs \" /proc/mounts && echo tmpfs-ok'\n",
        ),
    ]);
    let log = build_ok(&k, dir.path(), "binds:1", &[], &[]);
    for expected in [
        "hello from the context",
        "ignored-is-hidden",
        "ctx-read-only",
        "built-in-stage",
        "stage-read-only",
        "ctx-rw-changed",
        "stage-rw-removed",
        "again-built-in-stage",
        "tmpfs-ok",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/hello.txt")).unwrap(),
        "hello from the context\n",
        "an rw bind writes to a copy, never the context"
    );
    assert!(!dir.path().join("data/new").exists());
    let names = all_names(&own_layers(&k, "binds:1"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("mnt") || n.starts_with("scratch") || n.starts_with("again")),
        "mount points are not in the layers: {names:?}"
    );

    // Changing a bound context file changes the step's cache key.
    std::fs::write(dir.path().join("data/hello.txt"), "edited\n").unwrap();
    let log = build_ok(&k, dir.path(), "binds:2", &[], &[]);
    assert!(log.contains("edited"), "{log}");
}

#[test]
fn secrets_reach_the_step_but_never_the_image_or_the_cache_key() {
    let k = Kiln::new();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "file-secret-value").unwrap();
    let dir = context(&[(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\n\
         RUN --mount=type=secret,id=token sh -c 'echo len=$(wc -c < /run/secrets/token); \
         ls -ln /run/secrets/token | cut -c1-10; echo x > /run/secrets/token 2>/dev/null || echo secret-read-only'\n\
         RUN --mount=type=secret,id=apikey,env=API_KEY,required=true \
         sh -c 'echo \"env=$API_KEY\"; test -e /run/secrets/apikey || echo no-file'\n\
         RUN --mount=type=secret,id=token,target=/etc/app/token,mode=0444,uid=1000 \
         sh -c 'echo \"target=$(cat /etc/app/token)\"; stat -c \"%a %u\" /etc/app/token; \
         echo layer > /kept'\n",
    )]);
    let src = format!("id=token,src={}", secret_file.path().display());
    let secret_flags = [
        "--secret",
        src.as_str(),
        "--secret",
        "id=apikey,env=KILN_E2E_API_KEY",
    ];
    let env = [("KILN_E2E_API_KEY", "env-secret-value")];
    let log = build_ok(&k, dir.path(), "secrets:1", &secret_flags, &env);
    for expected in [
        "len=17",
        "-r--------",
        "secret-read-only",
        "env=env-secret-value",
        "no-file",
        "target=file-secret-value",
        "444 1000",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }

    let layers = own_layers(&k, "secrets:1");
    let names = all_names(&layers);
    assert!(names.iter().any(|n| n == "kept"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("run") || n.starts_with("etc")),
        "no secret file, stub or /run/secrets dir is left in a layer: {names:?}"
    );
    for secret in [&b"file-secret-value"[..], b"env-secret-value"] {
        assert!(!layers.iter().any(|l| contains(&l.bytes, secret)));
    }
    // Config, history (and everything else inspect shows) hold neither value; nor does any
    // cache record. (The build log does: the steps above print them on purpose.)
    let inspect = k.ok(&["inspect", "secrets:1"]);
    assert!(!inspect.contains("secret-value"), "{inspect}");
    for record in std::fs::read_dir(k.root.path().join("cache")).unwrap() {
        let bytes = std::fs::read(record.unwrap().path()).unwrap();
        assert!(!contains(&bytes, b"secret-value"));
    }

    // Other secret bytes, same ids: every step is a cache hit, so the content is not keyed.
    std::fs::write(secret_file.path(), "another-value").unwrap();
    let env = [("KILN_E2E_API_KEY", "changed-too")];
    let log = build_ok(&k, dir.path(), "secrets:2", &secret_flags, &env);
    assert_eq!(log.matches("CACHED").count(), 3, "{log}");

    // A required secret that is not given fails before anything runs, naming the line.
    let out = build(&k, dir.path(), "secrets:3", &["--secret", &src], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("secret apikey is required"), "{err}");
    assert!(err.contains("Dockerfile:4"), "{err}");
}

#[test]
fn run_network_host_needs_allow_and_bad_mounts_point_at_the_line() {
    let k = Kiln::new();
    let dir = context(&[(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN --network=none true\nRUN --network=host echo host-ok\n",
    )]);
    let out = build(&k, dir.path(), "net:1", &[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--allow network.host"), "{err}");
    assert!(err.contains("Dockerfile:4"), "{err}");

    let log = build_ok(&k, dir.path(), "net:1", &["--allow", "network.host"], &[]);
    assert!(log.contains("host-ok"), "{log}");

    let out = build(
        &k,
        dir.path(),
        "net:2",
        &["--allow", "network.everything"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown entitlement"),
        "{}",
        stderr(&out)
    );

    for (mount, message) in [
        ("type=volume,target=/x", "unsupported mount type \"volume\""),
        ("type=cache,taget=/x", "did you mean target?"),
        ("type=ssh,required", "ssh agent default is required"),
        (
            "type=bind,source=missing,target=/x",
            "not found in the build context",
        ),
    ] {
        let dir = context(&[(
            "Dockerfile",
            &format!("ARG BASE\nFROM ${{BASE}}\nRUN --mount={mount} true\n"),
        )]);
        let out = build(&k, dir.path(), "bad:1", &[], &[]);
        assert!(!out.status.success(), "{mount}");
        let err = stderr(&out);
        assert!(err.contains(message), "{mount}: {err}");
        assert!(err.contains("Dockerfile:3"), "{mount}: {err}");
    }
}
