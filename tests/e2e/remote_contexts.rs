//! Remote build contexts (issue 15): a git repository served by `git daemon` on loopback
//! (`URL#REF:SUBDIR`), a tarball and a lone Dockerfile served by `python3 -m http.server`,
//! and a git repository as a named context. A ref that does not exist fails naming it and
//! leaves nothing in the store's tmp/.

use kiln_testkit::{GitDaemon, GitHttpServer, HttpFileServer, git};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// A repository `repo.git` under a new directory: `main` with `sub/`, tag `v1`, then a
/// second commit on `main`.
fn repository() -> tempfile::TempDir {
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo.git");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]).unwrap();
    std::fs::create_dir(repo.join("sub")).unwrap();
    std::fs::write(
        repo.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY . /ctx\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("sub/Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY . /sub\n",
    )
    .unwrap();
    std::fs::write(repo.join("sub/version"), "one\n").unwrap();
    git(&repo, &["add", "."]).unwrap();
    git(&repo, &["commit", "-q", "-m", "one"]).unwrap();
    git(&repo, &["tag", "v1"]).unwrap();
    std::fs::write(repo.join("sub/version"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]).unwrap();
    base
}

fn tmp_is_empty(k: &Kiln) -> bool {
    let tmp = k.root.path().join("tmp");
    std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn git_contexts_by_ref_and_subdirectory() {
    let k = Kiln::new();
    let repos = repository();
    let daemon = GitDaemon::start(repos.path()).unwrap();
    let build = |tag: &str, context: &str| k.build_offline(tag, &[], context);
    let head = daemon.url("repo.git");
    assert_success(&build("git:head", &head), &["build", &head]);
    assert_eq!(k.cat("git:head", "/ctx/sub/version"), "two\n");
    // No .git in the context unless asked for.
    let out = k.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "git:head",
        "ls",
        "-a",
        "/ctx",
    ]);
    assert!(!stdout(&out).contains(".git"), "{}", stdout(&out));

    let tagged = format!("{head}#v1:sub");
    assert_success(&build("git:v1", &tagged), &["build", &tagged]);
    assert_eq!(k.cat("git:v1", "/sub/version"), "one\n");
    let commit = git(&repos.path().join("repo.git"), &["rev-parse", "v1"]).unwrap();
    let by_commit = format!("{head}#{commit}:sub");
    assert_success(&build("git:sha", &by_commit), &["build", &by_commit]);
    assert_eq!(k.cat("git:sha", "/sub/version"), "one\n");
    assert!(tmp_is_empty(&k), "the checkout was left in tmp/");

    // Bad input: a missing ref, a missing subdirectory, a repository that is not there.
    for (context, expect) in [
        (format!("{head}#no-such-branch"), "no-such-branch"),
        (format!("{head}#main:nowhere"), "nowhere"),
        (daemon.url("missing.git"), "missing.git"),
    ] {
        let out = build("git:bad", &context);
        assert!(!out.status.success(), "{context} built");
        let err = stderr(&out);
        assert!(err.contains(expect), "{context}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(tmp_is_empty(&k), "{context} left a checkout in tmp/");
    }

    // The same repository over smart HTTP (`git http-backend`), an `http…/repo.git` URL.
    let http = GitHttpServer::start(repos.path()).unwrap();
    let over_http = format!("{}#v1:sub", http.url("repo.git"));
    assert_success(&build("git:http", &over_http), &["build", &over_http]);
    assert_eq!(k.cat("git:http", "/sub/version"), "one\n");

    // A repository as a named context.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY --from=src /sub/version /version\n",
    )
    .unwrap();
    let named = format!("src={head}#v1");
    let dir = ctx.path().to_str().unwrap();
    let out = k.build_offline("git:named", &["--build-context", &named], dir);
    assert_success(&out, &["build", "--build-context", &named]);
    assert_eq!(k.cat("git:named", "/version"), "one\n");
}

/// `ADD <git URL> DEST` checks the repository out into DEST, `.git` only with
/// `--keep-git-dir`; a missing ref fails naming it.
#[test]
fn add_checks_out_git_repositories() {
    let k = Kiln::new();
    let repos = repository();
    let daemon = GitDaemon::start(repos.path()).unwrap();
    let url = daemon.url("repo.git");
    let dockerfile =
        format!("ARG BASE\nFROM $BASE\nADD {url}#v1:sub /src\nADD --keep-git-dir {url} /full\n");
    let out = k.build_dockerfile("addgit:1", &dockerfile, &["--network", "none"]);
    assert_success(&out, &["build", "ADD git"]);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none", "addgit:1"];
        all.extend_from_slice(args);
        let out = k.cmd(&all);
        assert_success(&out, &all);
        stdout(&out)
    };
    assert_eq!(run(&["cat", "/src/version"]), "one\n");
    assert!(!run(&["ls", "-a", "/src"]).contains(".git"));
    assert!(run(&["ls", "-a", "/full"]).contains(".git"));
    assert_eq!(run(&["cat", "/full/sub/version"]), "two\n");

    let bad = format!("ARG BASE\nFROM $BASE\nADD {url}#gone /src\n");
    let out = k.build_dockerfile("addgit:2", &bad, &["--network", "none"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"gone\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(tmp_is_empty(&k));
}

#[test]
fn tarball_and_dockerfile_urls() {
    let k = Kiln::new();
    let served = tempfile::tempdir().unwrap();
    // A gzipped context tar made by GNU tar, and a lone Dockerfile.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY hello /hello\n",
    )
    .unwrap();
    std::fs::write(src.path().join("hello"), "from a tarball\n").unwrap();
    let tarball = served.path().join("ctx.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(src.path())
        .args(["Dockerfile", "hello"])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        served.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo lone > /lone\n",
    )
    .unwrap();
    let server = HttpFileServer::start(served.path()).unwrap();
    let build = |tag: &str, url: &str| k.build_offline(tag, &[], url);
    let url = server.url("/ctx.tar.gz");
    assert_success(&build("url:tar", &url), &["build", &url]);
    assert_eq!(k.cat("url:tar", "/hello"), "from a tarball\n");
    let url = server.url("/Dockerfile");
    assert_success(&build("url:df", &url), &["build", &url]);
    assert_eq!(k.cat("url:df", "/lone"), "lone\n");
    let url = server.url("/missing.tar");
    let out = build("url:missing", &url);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing.tar") && stderr(&out).contains("404"),
        "{}",
        stderr(&out)
    );
    assert!(tmp_is_empty(&k));
}
