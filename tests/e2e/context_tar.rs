//! `kiln build -`: the build context as a tar on stdin (what docker build sends a daemon),
//! synced into one of the store's reused context directories for the build; entries that could reach outside
//! the context are refused with an error naming them, and links are resolved inside it.

use std::io::Write;
use std::process::Stdio;

use super::harness::{Kiln, assert_success, stderr, stdout};

/// One tar entry written byte for byte (names may hold `..`, which `tar`'s builder refuses).
#[derive(Clone, Copy)]
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (name, kind, link, data, mode) = match entry {
            Entry::File(name, data) => (*name, tar::EntryType::Regular, "", *data, 0o644),
            Entry::Dir(name) => (*name, tar::EntryType::Directory, "", &b""[..], 0o755),
            Entry::Symlink(name, target) => {
                (*name, tar::EntryType::Symlink, *target, &b""[..], 0o777)
            }
        };
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn build_from_stdin(k: &Kiln, tar: &[u8], extra: &[&str]) -> std::process::Output {
    let base = format!("BASE={}", k.base);
    let mut child = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--build-arg",
            &base,
        ])
        .args(extra)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_rebuild_from_a_tar_writes_and_hashes_only_what_changed() {
    let k = Kiln::new();
    let dockerfile: &[u8] =
        b"ARG BASE\nFROM ${BASE}\nCOPY . /ctx\nRUN cat /ctx/a /ctx/b && ls /ctx > /listing\n";
    let first = tar_of(&[
        Entry::File("Dockerfile", dockerfile),
        Entry::File("a", b"a1\n"),
        Entry::File("b", b"b1\n"),
        Entry::File("gone", b"removed next time\n"),
    ]);
    assert_success(&build_from_stdin(&k, &first, &[]), &["first build -"]);
    // Files changed within the clock's granularity (100 ms) of a hash are not recorded by the
    // digest index (the "racy git" rule): the first build's were just unpacked. Once they are
    // older, the next build records them (it keeps the files: same content).
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_success(&build_from_stdin(&k, &first, &[]), &["second build -"]);
    // The same tar again: every step cached, and no context file read to hash it.
    let out = build_from_stdin(&k, &first, &[]);
    assert_success(&out, &["no-op build -"]);
    let log = stderr(&out);
    let hashed: Vec<&str> = log.lines().filter(|l| l.contains("] context: ")).collect();
    assert!(!hashed.is_empty(), "{log}");
    assert!(
        hashed.iter().all(|l| l.contains(", 0 hashed")),
        "a no-op rebuild hashed context files again: {log}"
    );
    // One file changed, one removed, one added: the build sees exactly the new context.
    let second = tar_of(&[
        Entry::File("Dockerfile", dockerfile),
        Entry::File("a", b"a2\n"),
        Entry::File("b", b"b1\n"),
        Entry::File("new", b"added\n"),
    ]);
    assert_success(&build_from_stdin(&k, &second, &[]), &["changed build -"]);
    let run = k.cmd(&[
        "run",
        "--rm",
        "app",
        "sh",
        "-c",
        "cat /ctx/a /ctx/b; cat /listing",
    ]);
    assert_eq!(stdout(&run), "a2\nb1\nDockerfile\na\nb\nnew\n");
    assert_tmp_empty(&k);
    // The kept context is the user's files: private, and gone with a prune.
    let slots = k.root.path().join("build-contexts");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&slots).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let pruned = k.ok(&["prune", "-f"]);
    let left: Vec<_> = std::fs::read_dir(&slots)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "kept after prune: {left:?}\n{pruned}");
}

/// The store's tmp/ holds nothing once a build is over, whatever its outcome.
fn assert_tmp_empty(k: &Kiln) {
    let tmp: Vec<_> = std::fs::read_dir(k.root.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
}

const DOCKERFILE: &[u8] = b"ARG BASE\nFROM ${BASE}\nCOPY . /ctx\nRUN cat /ctx/hello && ls /ctx\n";

#[test]
fn a_context_tar_on_stdin_builds_like_a_directory() {
    let k = Kiln::new();
    let tar = tar_of(&[
        Entry::File("Dockerfile", DOCKERFILE),
        Entry::File(".dockerignore", b"secret\n"),
        Entry::File("hello", b"hello from the tar\n"),
        Entry::File("secret", b"never copied\n"),
        Entry::Dir("sub/"),
        Entry::File(
            "sub/Other.Dockerfile",
            b"ARG BASE\nFROM ${BASE}\nCOPY hello /other\n",
        ),
        Entry::Symlink("sub/hi", "../hello"),
    ]);
    let out = build_from_stdin(&k, &tar, &[]);
    assert_success(&out, &["build -"]);
    let run = k.cmd(&["run", "--rm", "app", "ls", "-a", "/ctx"]);
    assert_success(&run, &["run"]);
    let listing = stdout(&run);
    assert!(
        listing.contains("hello") && listing.contains("sub"),
        "{listing}"
    );
    assert!(
        !listing.contains("secret"),
        ".dockerignore applies: {listing}"
    );
    assert_tmp_empty(&k);

    // `-f` names a Dockerfile inside the tar.
    let out = build_from_stdin(&k, &tar, &["-f", "sub/Other.Dockerfile"]);
    assert_success(&out, &["build -f sub/Other.Dockerfile -"]);
    let run = k.cmd(&["run", "--rm", "app", "cat", "/other"]);
    assert_eq!(stdout(&run), "hello from the tar\n");
    assert_tmp_empty(&k);
}

#[test]
fn hostile_context_tars_are_refused_naming_the_entry() {
    let k = Kiln::new();
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("escaped");
    let marker_rel = marker.to_str().unwrap().trim_start_matches('/').to_owned();
    let deep = format!("../../../../../../../../{marker_rel}");
    let absolute = marker.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<Entry<'_>>, &str, &str)> = vec![
        (vec![Entry::File(&deep, b"x")], deep.as_str(), "`..`"),
        (
            vec![Entry::File(&absolute, b"x")],
            absolute.as_str(),
            "absolute",
        ),
        (vec![Entry::Symlink("out", "/")], "out", "absolute"),
        (
            vec![Entry::Symlink("up", "../..")],
            "up",
            "outside the context",
        ),
    ];
    for (mut entries, entry, reason) in cases {
        entries.insert(0, Entry::File("Dockerfile", DOCKERFILE));
        let out = build_from_stdin(&k, &tar_of(&entries), &[]);
        let log = stderr(&out);
        assert!(!out.status.success(), "{entry} accepted:\n{log}");
        assert!(
            log.contains(entry) && log.contains(reason),
            "{entry}:\n{log}"
        );
        assert!(!marker.exists(), "{entry} wrote outside the context");
        assert_tmp_empty(&k);
    }
    assert!(!k.cmd(&["inspect", "app"]).status.success());
}

#[test]
fn a_chain_of_links_cannot_read_host_files() {
    let k = Kiln::new();
    // Each link on its own stays inside the context as written; followed one after the other
    // they would climb to the host's `/`. The Dockerfile and COPY sources are resolved inside
    // the context, where the chain ends at the context's root.
    let mut entries = vec![Entry::Symlink("d", ".")];
    let names: Vec<String> = (0..12).map(|i| format!("l{i}")).collect();
    let targets: Vec<String> = (0..12)
        .map(|i| match i {
            0 => "d/..".to_owned(),
            i => format!("l{}/..", i - 1),
        })
        .collect();
    for (name, target) in names.iter().zip(&targets) {
        entries.push(Entry::Symlink(name, target));
    }
    let with = |last: Entry<'_>| {
        let mut all = entries.clone();
        all.push(last);
        tar_of(&all)
    };
    let linked = with(Entry::Symlink("Dockerfile", "l11/etc/passwd"));
    let out = build_from_stdin(&k, &linked, &[]);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("Dockerfile") && log.contains("no such file"),
        "{log}"
    );
    assert!(!log.contains("root:x:0:0"), "host /etc/passwd read:\n{log}");

    let copy = b"ARG BASE\nFROM ${BASE}\nCOPY l11/etc/passwd /passwd\n";
    let tar = with(Entry::File("Dockerfile", copy));
    let out = build_from_stdin(&k, &tar, &[]);
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "COPY through the chain succeeded:\n{log}"
    );
    assert!(log.contains("not found"), "{log}");
    assert_tmp_empty(&k);
}
