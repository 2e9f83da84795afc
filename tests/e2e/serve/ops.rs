//! The container operations on objects through `kiln serve` and the CLI: `changes` (diff),
//! `rename`, `containers/prune`, and `commit` without a name.

use super::super::harness::Kiln;
use super::Daemon;

/// Creates (and with `start`, runs to its end) a container of the base image.
pub fn run_container(
    k: &Kiln,
    d: &Daemon,
    name: &str,
    cmd: &str,
    labels: serde_json::Value,
    start: bool,
) -> String {
    let body = serde_json::json!({
        "Image": k.base, "Cmd": ["sh", "-c", cmd], "Labels": labels,
        "HostConfig": { "NetworkMode": "none" },
    });
    let created = d.request(
        "POST",
        &format!("/containers/create?name={name}"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    if start {
        let started = d.request("POST", &format!("/containers/{id}/start"), &[], b"");
        assert_eq!(started.status, 204, "{}", started.text());
        let waited = d.request("POST", &format!("/containers/{id}/wait"), &[], b"");
        assert_eq!(waited.json()["StatusCode"], 0, "{}", waited.text());
    }
    id
}

#[test]
fn changes_rename_prune_and_an_unnamed_commit() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let id = run_container(
        &k,
        &d,
        "ops1",
        "mkdir /new && echo x > /new/f && rm /bin/true",
        serde_json::json!({}),
        true,
    );

    let changes = d.get("/containers/ops1/changes");
    assert_eq!(changes.status, 200, "{}", changes.text());
    let changes = changes.json();
    for (path, kind) in [("/bin", 0), ("/bin/true", 2), ("/new", 1), ("/new/f", 1)] {
        assert!(
            changes
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["Path"] == path && c["Kind"] == kind),
            "{path} {kind} missing from {changes}"
        );
    }
    let diff = k.ok(&["diff", "ops1"]);
    assert!(
        diff.contains("D /bin/true\n") && diff.contains("A /new/f\n"),
        "{diff}"
    );
    assert_eq!(d.get("/containers/nope/changes").status, 404);
    let docker = super::docker_cli::Docker::new(&d);
    let docker_diff = docker.ok(&["diff", "ops1"]);
    assert!(docker_diff.contains("D /bin/true"), "{docker_diff}");

    // rename: 204, 409 for a name in use, 400 for an invalid one, 404 for no container.
    let other = run_container(
        &k,
        &d,
        "keepme",
        "true",
        serde_json::json!({"keep": "1"}),
        false,
    );
    assert_eq!(
        d.request("POST", "/containers/ops1/rename?name=ops2", &[], b"")
            .status,
        204
    );
    assert_eq!(d.get("/containers/ops2/json").json()["Name"], "/ops2");
    assert_eq!(d.get("/containers/ops1/json").status, 404);
    let taken = d.request("POST", "/containers/ops2/rename?name=keepme", &[], b"");
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert_eq!(
        d.request("POST", "/containers/ops2/rename?name=a%2Fb", &[], b"")
            .status,
        400
    );
    assert_eq!(
        d.request("POST", "/containers/ops2/rename", &[], b"")
            .status,
        400
    );
    assert_eq!(
        d.request("POST", "/containers/nope/rename?name=x1", &[], b"")
            .status,
        404
    );
    docker.ok(&["rename", "ops2", "ops2b"]);
    k.ok(&["rename", "ops2b", "ops3"]);
    assert_eq!(
        d.get(&format!("/containers/{id}/json")).json()["Name"],
        "/ops3"
    );

    // commit without repo: an unnamed image, found by its ID.
    let commit = d.request("POST", "/commit?container=ops3", &[], b"");
    assert_eq!(commit.status, 201, "{}", commit.text());
    let image = commit.json()["Id"].as_str().unwrap().to_owned();
    let inspect = d.get(&format!("/images/{image}/json"));
    assert_eq!(inspect.status, 200, "{}", inspect.text());
    assert_eq!(inspect.json()["RepoTags"], serde_json::json!([]));
    // `changes` (Dockerfile lines) apply to the new config; what cannot is a 400.
    let changed = d.request(
        "POST",
        "/commit?container=ops3&changes=EXPOSE%208000&changes=CMD%20%5B%22echo%22%2C%22hi%22%5D",
        &[],
        b"",
    );
    assert_eq!(changed.status, 201, "{}", changed.text());
    let changed_id = changed.json()["Id"].as_str().unwrap().to_owned();
    let config = d.get(&format!("/images/{changed_id}/json")).json()["Config"].clone();
    assert_eq!(config["Cmd"], serde_json::json!(["echo", "hi"]));
    assert!(config["ExposedPorts"].get("8000/tcp").is_some(), "{config}");
    let run = d.request(
        "POST",
        "/commit?container=ops3&changes=RUN%20true",
        &[],
        b"",
    );
    assert_eq!(run.status, 400, "{}", run.text());
    // Deleting an unnamed image by ID removes it, as dockerd does.
    let removed = d.request("DELETE", &format!("/images/{changed_id}?force=1"), &[], b"");
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(
        removed.json(),
        serde_json::json!([{ "Deleted": changed_id }])
    );
    assert_eq!(d.get(&format!("/images/{changed_id}/json")).status, 404);
    let all = d.get("/images/json?all=1").text();
    assert!(!all.contains(&changed_id), "{all}");

    // prune: stopped containers the filter does not keep; `null` when none.
    let bad = d.request(
        "POST",
        "/containers/prune?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        &[],
        b"",
    );
    assert_eq!(bad.status, 400);
    let pruned = d.request(
        "POST",
        "/containers/prune?filters=%7B%22label!%22%3A%5B%22keep%22%5D%7D",
        &[],
        b"",
    );
    assert_eq!(pruned.status, 200, "{}", pruned.text());
    let pruned = pruned.json();
    assert_eq!(pruned["ContainersDeleted"], serde_json::json!([id]));
    assert!(pruned["SpaceReclaimed"].as_u64().unwrap() > 0, "{pruned}");
    assert_eq!(d.get(&format!("/containers/{other}/json")).status, 200);
    let cli = k.ok(&["container", "prune", "-f"]);
    assert!(cli.contains(&other), "{cli}");
    let none = d.request("POST", "/containers/prune", &[], b"").json();
    assert_eq!(none["ContainersDeleted"], serde_json::Value::Null);
    assert_eq!(none["SpaceReclaimed"], 0);
}
