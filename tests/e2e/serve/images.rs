//! Image operations over raw HTTP: events, import with changes, load errors in-band, a pull
//! cancelled by its client leaving, the 409 for an image a container uses.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::super::harness::Kiln;
use super::{Daemon, tar_of};

#[test]
fn image_operations_report_events() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let since = chrono::Utc::now().timestamp() - 1;
    let r = d.request(
        "POST",
        &format!("/images/create?fromImage={}", k.base),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    assert!(
        lines.iter().any(|l| l["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Digest: sha256:"))),
        "{lines:?}"
    );
    let id = d.get(&format!("/images/{}/json", k.base)).json()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d.request(
            "POST",
            &format!("/images/{}/tag?repo=ev&tag=1", k.base),
            &[],
            b""
        )
        .status,
        201
    );
    let removed = d.request("DELETE", "/images/ev:1", &[], b"").json();
    assert_eq!(removed, serde_json::json!([{ "Untagged": "ev:1" }]));
    // A missing image in a reachable registry is an HTTP 404 before any stream.
    let missing = d.request(
        "POST",
        &format!(
            "/images/create?fromImage={}/nothere&tag=1",
            k.registry.addr()
        ),
        &[],
        b"",
    );
    assert_eq!(missing.status, 404, "{}", missing.text());
    let until = chrono::Utc::now().timestamp() + 1;
    let r = d.get(&format!("/events?since={since}&until={until}"));
    assert_eq!(r.status, 200);
    let events = r.lines();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(actions, ["pull", "tag", "untag"], "{events:?}");
    assert_eq!(events[1]["Actor"]["ID"], id.as_str());
    assert_eq!(events[1]["Actor"]["Attributes"]["name"], "ev:1");
    assert_eq!(events[1]["Type"], "image");
    let filtered = d
        .get(&format!(
            "/events?since={since}&until={until}&filters=%7B%22event%22%3A%5B%22untag%22%5D%7D"
        ))
        .lines();
    assert_eq!(filtered.len(), 1);
    // A live stream sees what happens after it opened.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        d.request("POST", &format!("/images/{id}/tag?repo=live"), &[], b"")
            .status,
        201
    );
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = String::new();
    while !got.contains("\"live:latest\"") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{got}");
        got.push_str(&line);
    }
}

#[test]
fn import_with_changes_and_load_errors_in_band() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let rootfs = tar_of(&[("hello.txt", b"imported\n")]);
    let r = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=imp&tag=1&changes=USER%20foobar&changes=CMD%20%5B%22echo%22%5D",
        &[("Content-Type", "application/x-tar")],
        &rootfs,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.lines().pop().unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    let inspect = d.get(&format!("/images/{}/json", &id[7..19])).json();
    assert_eq!(inspect["Config"]["User"], "foobar");
    assert_eq!(inspect["Config"]["Cmd"], serde_json::json!(["echo"]));
    assert_eq!(inspect["RepoTags"], serde_json::json!(["imp:1"]));
    // A change that cannot apply is refused before anything is imported.
    let bad = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=imp2&changes=RUN%20true",
        &[],
        &rootfs,
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(d.get("/images/imp2/json").status, 404);
    // A fromSrc URL is not fetched.
    assert_eq!(
        d.request(
            "POST",
            "/images/create?fromSrc=http%3A%2F%2Fx%2Fa.tar",
            &[],
            b""
        )
        .status,
        501
    );
    // images/load reports a bad archive in-band (docker-py raises ImageLoadError from it).
    let r = d.request(
        "POST",
        "/images/load",
        &[("Content-Type", "application/x-tar")],
        b"abc",
    );
    assert_eq!(r.status, 200);
    let last = r.lines().pop().unwrap();
    assert!(last["errorDetail"]["message"].is_string(), "{last}");
    // An unnamed image (no -t) is found by its ID, as dockerd finds it.
    let tar = tar_of(&[(
        "Dockerfile",
        format!("FROM {}\nRUN echo unnamed > /u\n", k.base).as_bytes(),
    )]);
    let r = d.request("POST", "/build", &[], &tar);
    let built = r
        .lines()
        .iter()
        .find_map(|l| l["aux"]["ID"].as_str().map(str::to_owned))
        .expect("aux ID");
    assert_eq!(
        d.get(&format!("/images/{}/json", &built[7..19])).json()["Id"],
        built.as_str()
    );
}

#[test]
fn a_client_that_leaves_mid_pull_cancels_it() {
    use kiln_testkit::{Fault, FaultProxy};
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let stall = Fault::Stall {
        duration: Duration::from_secs(3),
        times: 1,
    };
    // Control: a pull whose first connection stalls completes once the registry client retries.
    let proxy = FaultProxy::start(k.registry.port(), stall).unwrap();
    let name = format!("{}/busybox", proxy.addr());
    let r = d.request(
        "POST",
        &format!("/images/create?fromImage={name}&tag=latest"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get(&format!("/images/{name}:latest/json")).status, 200);
    assert_eq!(
        d.request("DELETE", &format!("/images/{name}:latest"), &[], b"")
            .status,
        200
    );

    // The same pull, its client gone during the stall: it never completes.
    let proxy = FaultProxy::start(k.registry.port(), stall).unwrap();
    let name = format!("{}/busybox", proxy.addr());
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /images/create?fromImage={name}&tag=latest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    std::thread::sleep(Duration::from_secs(8));
    let r = d.get(&format!("/images/{name}:latest/json"));
    assert_eq!(r.status, 404, "the abandoned pull completed: {}", r.text());
    assert_eq!(d.get("/_ping").status, 200);
}

#[test]
fn removing_an_image_a_container_uses_is_a_409() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    k.ok(&["tag", &k.base, "used:1"]);
    // A stopped container of the CLI, in the store the daemon shares.
    k.ok(&[
        "run",
        "--name",
        "user-of-used",
        "--network",
        "none",
        "used:1",
        "true",
    ]);
    // Another name of the image goes freely, as with dockerd; the last one is refused.
    let other = d.request("DELETE", &format!("/images/{}", k.base), &[], b"");
    assert_eq!(other.status, 200, "{}", other.text());
    let r = d.request("DELETE", "/v1.41/images/used:1", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("unable to remove repository reference") && message.contains("must force"),
        "{message}"
    );
    let forced = d.request("DELETE", "/images/used:1?force=1", &[], b"");
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(forced.json(), serde_json::json!([{ "Untagged": "used:1" }]));
}

#[test]
fn images_get_and_load_keep_an_images_attestations() {
    let k = Kiln::new();
    let built = k.build_dockerfile(
        "attested:1",
        "ARG BASE\nFROM $BASE\nRUN echo hi > /hi\n",
        &["--provenance=mode=max"],
    );
    super::super::harness::assert_success(&built, &["build", "--provenance=mode=max"]);
    let want = k.ok(&["inspect", "--provenance", "attested:1"]);
    let d = Daemon::start(&k, &[], &[]);
    let r = d.get("/images/attested:1/get");
    assert_eq!(r.status, 200, "{}", r.text());
    let archive = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(archive.path(), &r.body).unwrap();
    let archive_arg = archive.path().to_str().unwrap();
    // The docker save tar from the daemon loads into another store with the provenance.
    let other = k.fresh_store();
    let loaded = k.cmd_in(other.path(), &["load", "-i", archive_arg]);
    super::super::harness::assert_success(&loaded, &["load", "-i", archive_arg]);
    let got = k.cmd_in(other.path(), &["inspect", "--provenance", "attested:1"]);
    super::super::harness::assert_success(&got, &["inspect", "--provenance", "(loaded)"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), want);
    // And through the daemon's own images/load, under a second name.
    let renamed = {
        let mut a = tar::Archive::new(&r.body[..]);
        let mut out = tar::Builder::new(Vec::new());
        for entry in a.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if path.to_str() == Some("manifest.json") {
                let text = String::from_utf8(bytes).unwrap();
                bytes = text.replace("attested:1", "reloaded:1").into_bytes();
            }
            let mut header = entry.header().clone();
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            out.append_data(&mut header, &path, &bytes[..]).unwrap();
        }
        out.into_inner().unwrap()
    };
    let r = d.request("POST", "/images/load", &[], &renamed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(k.ok(&["inspect", "--provenance", "reloaded:1"]), want);
}
