//! ADD end to end: URLs (served by testkit's scripted HTTP server on 127.0.0.1, with
//! checksums, certs.d and proxy variables) and local archives in every supported compression.

use std::io::Write;

use std::path::Path;

use super::copy_add::{build, build_ok, context, lines, set, sh, write_dockerfile};
use super::harness::{Kiln, assert_success, stderr};

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar_of(files)).unwrap();
    encoder.finish().unwrap()
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_000_000);
        header.set_cksum();
        builder.append_data(&mut header, name, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    kiln_image::Digest::of(bytes).hex().to_owned()
}

#[test]
fn add_url_downloads_checks_checksums_and_never_unpacks() {
    let k = Kiln::new();
    let archive = tar_gz(&[("inside.txt", b"packed")]);
    let server = kiln_testkit::ScriptedHttp::routes(vec![
        ("/files/data.txt", b"remote data\n".to_vec()),
        ("/files/pkg.tar.gz", archive.clone()),
        ("/files/pinned.txt", b"pinned\n".to_vec()),
    ]);
    let pinned_sum = sha256_hex(b"pinned\n");
    let ctx = context(
        &[],
        &format!(
            "ADD {data} /dl/\n\
             ADD {pkg} /dl/\n\
             ADD --checksum=sha256:{pinned_sum} {pinned} /pinned-file\n\
             ADD --chmod=644 {data} /dl/readable.txt\n",
            data = server.url("/files/data.txt"),
            pkg = server.url("/files/pkg.tar.gz"),
            pinned = server.url("/files/pinned.txt"),
        ),
    );
    build_ok(&k, ctx.path(), "urls");
    assert_eq!(
        sh(
            &k,
            "urls",
            "cd / && stat -c '%n %a %Y %s' dl/data.txt dl/pkg.tar.gz pinned-file dl/readable.txt"
        ),
        format!(
            "dl/data.txt 600 784111777 12\n\
             dl/pkg.tar.gz 600 784111777 {}\n\
             pinned-file 600 784111777 7\n\
             dl/readable.txt 644 784111777 12\n",
            archive.len()
        ),
        "mode 0600, Last-Modified as mtime, archives stay archives"
    );
    assert_eq!(sh(&k, "urls", "cat /pinned-file"), "pinned\n");

    // A rebuild: URLs without a checksum are fetched again to decide (same content → hit);
    // the pinned one hits on URL + checksum without a request.
    let before = server.hits();
    let log = build_ok(&k, ctx.path(), "urls");
    assert_eq!(log.matches("CACHED").count(), 4, "{log}");
    assert_eq!(
        server.hits() - before,
        3,
        "data.txt twice and pkg, not pinned"
    );

    // A wrong checksum fails, names the URL and both digests, and tags nothing.
    let wrong = "0".repeat(64);
    write_dockerfile(
        ctx.path(),
        &format!(
            "ADD --checksum=sha256:{wrong} {} /x\n",
            server.url("/files/data.txt")
        ),
    );
    let out = build(&k, ctx.path(), "bad-sum");
    assert!(!out.status.success());
    let err = stderr(&out);
    for want in [
        server.url("/files/data.txt"),
        format!("sha256:{wrong}"),
        format!("sha256:{}", sha256_hex(b"remote data\n")),
        "Dockerfile:3".to_string(),
    ] {
        assert!(err.contains(&want), "wanted {want} in {err}");
    }
    assert!(!k.ok(&["images"]).contains("bad-sum"));

    // Unreachable and missing URLs are clear errors.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_dockerfile(ctx.path(), &format!("ADD http://127.0.0.1:{port}/f /f\n"));
    let err = stderr(&build(&k, ctx.path(), "unreachable"));
    assert!(
        err.contains(&format!("127.0.0.1:{port}/f")) && err.to_lowercase().contains("refused"),
        "{err}"
    );
    write_dockerfile(ctx.path(), &format!("ADD {} /f\n", server.url("/nope")));
    let err = stderr(&build(&k, ctx.path(), "missing"));
    assert!(err.contains("404") && err.contains("Dockerfile:3"), "{err}");
}

/// `ADD <url>` goes through the registry client's transport: an HTTPS URL trusts its host's
/// certs.d CA (`--registry-certs-dir`), and `http_proxy` sends a plain-HTTP download through
/// the proxy. Both servers are on 127.0.0.1; the proxied host name does not resolve, so only
/// the proxy can answer it.
#[test]
fn add_url_honours_certs_d_and_proxy_variables() {
    let k = Kiln::new();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("tls.txt"), "over tls\n").unwrap();
    let https = kiln_testkit::HttpsFileServer::start(files.path()).unwrap();
    // A client sends a proxy the absolute URL as the request target; the test server answers
    // that target like any path.
    let proxied = "http://kiln-add-proxy.invalid/proxied.txt";
    let proxy = kiln_testkit::ScriptedHttp::routes(vec![(proxied, b"via the proxy\n".to_vec())]);
    let ctx = context(
        &[],
        &format!(
            "ADD {} /tls.txt\nADD {proxied} /proxied.txt\n",
            https.url("/tls.txt")
        ),
    );
    let base = format!("BASE={}", k.base);
    let build = |certs_dir: &Path| {
        crate::e2e::harness::kiln_command()
            .env("KILN_ROOT", k.root.path())
            .env("http_proxy", proxy.base())
            // The base image comes from the loopback registry, not through the proxy.
            .env("no_proxy", "127.0.0.1")
            .arg("--registry-certs-dir")
            .arg(certs_dir)
            .args(["build", "-t", "fetched", "--build-arg", &base])
            .arg(ctx.path())
            .output()
            .unwrap()
    };

    let no_ca = tempfile::tempdir().unwrap();
    let out = build(no_ca.path());
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&https.url("/tls.txt")) && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let out = build(https.certs_dir.path());
    assert_success(&out, &["build", "fetched"]);
    assert_eq!(
        sh(&k, "fetched", "cat /tls.txt /proxied.txt"),
        "over tls\nvia the proxy\n"
    );
}

#[test]
fn add_extracts_local_archives_of_every_compression_by_content() {
    let k = Kiln::new();
    let tar = tar_of(&[("inner/file.txt", b"from the archive\n")]);
    let gz = tar_gz(&[("inner/file.txt", b"from the archive\n")]);
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let not_a_tar = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"just compressed text\n").unwrap();
        e.finish().unwrap()
    };
    let ctx = context(
        &[
            ("a.tar", &tar),
            ("b.tar.gz", &gz),
            ("c.tar.bz2", &bz2),
            ("d.tar.xz", &xz),
            ("e.tar.zst", &zst),
            // Named like nothing in particular: detection is by content.
            ("f.bin", &xz),
            ("notes.txt.gz", &not_a_tar),
        ],
        "ADD a.tar /x/tar/\n\
         ADD b.tar.gz /x/gz/\n\
         ADD c.tar.bz2 /x/bz2/\n\
         ADD d.tar.xz /x/xz/\n\
         ADD e.tar.zst /x/zst/\n\
         ADD f.bin /x/bin/\n\
         ADD notes.txt.gz /x/plain/\n\
         ADD --chown=1234:2345 --chmod=0640 b.tar.gz /owned/\n",
    );
    build_ok(&k, ctx.path(), "archives");
    // --chown/--chmod reach the unpacked entries, as in BuildKit.
    assert_eq!(
        sh(
            &k,
            "archives",
            "stat -c '%u:%g %a %n' /owned/inner/file.txt"
        ),
        "1234:2345 640 /owned/inner/file.txt\n"
    );
    let found = sh(&k, "archives", "cd /x && find . -type f");
    assert_eq!(
        lines(&found),
        set(&[
            "./tar/inner/file.txt",
            "./gz/inner/file.txt",
            "./bz2/inner/file.txt",
            "./xz/inner/file.txt",
            "./zst/inner/file.txt",
            "./bin/inner/file.txt",
            "./plain/notes.txt.gz",
        ]),
        "{found}"
    );
    assert_eq!(
        sh(
            &k,
            "archives",
            "cat /x/bz2/inner/file.txt /x/xz/inner/file.txt"
        ),
        "from the archive\nfrom the archive\n"
    );
    assert_eq!(
        sh(&k, "archives", "gunzip -c /x/plain/notes.txt.gz"),
        "just compressed text\n",
        "a compressed file that is not a tar is copied as it is"
    );
}
