//! HostConfig fields of `POST /containers/create` that used to be accepted and ignored: `Tmpfs`
//! is mounted; a bad `RestartPolicy`, an unknown `LogConfig` driver and a `PidMode`/`UTSMode`
//! kiln cannot give are 400s naming the field, and create nothing.

use super::super::harness::Kiln;
use super::Daemon;

fn create(d: &Daemon, body: serde_json::Value) -> super::Response {
    d.request(
        "POST",
        "/containers/create",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

#[test]
fn tmpfs_is_mounted_and_options_kiln_cannot_honour_are_refused() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);

    let created = create(
        &d,
        serde_json::json!({
            "Image": k.base,
            "Cmd": ["sh", "-c", "grep ' /tmp1 ' /proc/mounts && echo x > /tmp1/f && cat /tmp1/f"],
            "HostConfig": {
                "NetworkMode": "none",
                "Tmpfs": { "/tmp1": "size=3M" },
                "RestartPolicy": { "Name": "no", "MaximumRetryCount": 0 },
                "LogConfig": { "Type": "json-file", "Config": { "max-file": "100" } },
                "PidMode": "", "UTSMode": "",
            },
        }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), &[], b"")
            .status,
        204
    );
    let waited = d.request("POST", &format!("/containers/{id}/wait"), &[], b"");
    assert_eq!(waited.json()["StatusCode"], 0, "{}", waited.text());
    let logs = d
        .get(&format!("/containers/{id}/logs?stdout=1&stderr=1"))
        .text();
    assert!(logs.contains("tmpfs /tmp1 tmpfs"), "{logs}");
    assert!(logs.contains("size=3072k"), "{logs}");

    let before = d.get("/containers/json?all=1").json();
    let refused = [
        (
            serde_json::json!({ "LogConfig": { "Type": "asdf", "Config": {} } }),
            "logger: no log driver named 'asdf' is registered",
        ),
        (
            serde_json::json!({ "RestartPolicy": { "Name": "sometimes" } }),
            "invalid restart policy \"sometimes\"",
        ),
        (
            serde_json::json!({ "RestartPolicy": { "Name": "always", "MaximumRetryCount": 3 } }),
            "can only be used with on-failure",
        ),
        (
            serde_json::json!({ "PidMode": "host" }),
            "invalid PidMode \"host\"",
        ),
        (
            serde_json::json!({ "UTSMode": "host" }),
            "invalid UTSMode \"host\"",
        ),
        (
            serde_json::json!({ "Tmpfs": { "/x": "uid=5" } }),
            "invalid tmpfs option \"uid=5\"",
        ),
    ];
    for (host_config, message) in refused {
        let r = create(
            &d,
            serde_json::json!({ "Image": k.base, "Cmd": ["true"], "HostConfig": host_config }),
        );
        assert_eq!(r.status, 400, "{host_config}: {}", r.text());
        let got = r.json()["message"].as_str().unwrap().to_owned();
        assert!(got.contains(message), "{host_config}: {got}");
    }
    assert_eq!(d.get("/containers/json?all=1").json(), before);
    // A valid restart policy is accepted (and, as docs/api.md says, not carried out).
    let always = create(
        &d,
        serde_json::json!({ "Image": k.base, "Cmd": ["true"],
            "HostConfig": { "RestartPolicy": { "Name": "always" } } }),
    );
    assert_eq!(always.status, 201, "{}", always.text());
}
