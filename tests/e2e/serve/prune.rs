//! `volumes/prune`, `images/prune`, `build/prune` and `/system/df` through `kiln serve` (raw
//! HTTP and the docker CLI): what is in use stays, what goes is reported with its size.

use super::super::harness::{Kiln, assert_success};
use super::Daemon;
use super::docker_cli::Docker;
use super::ops::run_container;

fn deleted(v: &serde_json::Value, key: &str) -> Vec<String> {
    v["ImagesDeleted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[key].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prunes_and_disk_usage() {
    let k = Kiln::new();
    // Some build cache: a RUN step's record.
    let built = k.build_dockerfile(
        "built:1",
        "ARG BASE\nFROM $BASE\nRUN echo cached > /c\n",
        &[],
    );
    assert_success(&built, &["build"]);
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);

    // Volumes: one written to and left unused, one a (stopped) container still uses.
    let filler = serde_json::json!({
        "Image": k.base, "Cmd": ["sh", "-c", "head -c 20000 /dev/zero > /data/f"],
        "HostConfig": { "NetworkMode": "none", "Binds": ["spare:/data"] },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=filler",
        &[("Content-Type", "application/json")],
        filler.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        d.request("POST", "/containers/filler/start", &[], b"")
            .status,
        204
    );
    assert_eq!(
        d.request("POST", "/containers/filler/wait", &[], b"")
            .json()["StatusCode"],
        0
    );
    assert_eq!(
        d.request("DELETE", "/containers/filler", &[], b"").status,
        204
    );
    let keeper = serde_json::json!({
        "Image": k.base, "Cmd": ["true"],
        "HostConfig": { "NetworkMode": "none", "Binds": ["kept:/data"] },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=keeper",
        &[("Content-Type", "application/json")],
        keeper.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());

    // df before anything goes.
    let df = d.get("/system/df");
    assert_eq!(df.status, 200, "{}", df.text());
    let df = df.json();
    assert!(df["LayersSize"].as_u64().unwrap() > 0, "{df}");
    let base_id = d.get(&format!("/images/{}/json", k.base)).json()["Id"].clone();
    let base_row = df["Images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["Id"] == base_id)
        .unwrap_or_else(|| panic!("{df}"));
    assert_eq!(base_row["Containers"], 1);
    assert_eq!(df["Containers"][0]["Names"][0], "/keeper");
    assert!(df["Containers"][0].get("SizeRw").is_some());
    let spare = df["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "spare")
        .unwrap_or_else(|| panic!("{df}"));
    assert!(
        spare["UsageData"]["Size"].as_u64().unwrap() >= 20000,
        "{spare}"
    );
    assert_eq!(spare["UsageData"]["RefCount"], 0);
    assert!(!df["BuildCache"].as_array().unwrap().is_empty(), "{df}");

    let volumes = d.request("POST", "/volumes/prune", &[], b"").json();
    assert_eq!(
        volumes["VolumesDeleted"],
        serde_json::json!(["spare"]),
        "{volumes}"
    );
    assert!(volumes["SpaceReclaimed"].as_u64().unwrap() >= 20000);
    assert_eq!(d.get("/volumes/kept").status, 200);
    assert_eq!(
        d.request(
            "POST",
            "/volumes/prune?filters=%7B%22dangling%22%3A%5B%22x%22%5D%7D",
            &[],
            b""
        )
        .status,
        400
    );

    // Images: an unnamed commit goes by default; a named unused one only with dangling=false;
    // the base, which a container uses, stays.
    run_container(&k, &d, "src", "echo x > /x", serde_json::json!({}), true);
    let unnamed = d.request("POST", "/commit?container=src", &[], b"").json()["Id"].clone();
    let named = d
        .request(
            "POST",
            "/commit?container=src&repo=pruneme&tag=1&comment=named",
            &[],
            b"",
        )
        .json()["Id"]
        .clone();
    assert_eq!(d.request("DELETE", "/containers/src", &[], b"").status, 204);
    let dangling = d.request("POST", "/images/prune", &[], b"").json();
    assert_eq!(
        deleted(&dangling, "Deleted"),
        [unnamed.as_str().unwrap()],
        "{dangling}"
    );
    assert!(
        dangling["SpaceReclaimed"].as_u64().unwrap() > 0,
        "{dangling}"
    );
    assert_eq!(
        d.get(&format!("/images/{}/json", unnamed.as_str().unwrap()))
            .status,
        404
    );
    assert_eq!(d.get("/images/pruneme:1/json").status, 200);
    let all = d
        .request(
            "POST",
            "/images/prune?filters=%7B%22dangling%22%3A%5B%22false%22%5D%7D",
            &[],
            b"",
        )
        .json();
    assert!(
        deleted(&all, "Untagged").contains(&"pruneme:1".to_owned()),
        "{all}"
    );
    assert!(
        deleted(&all, "Deleted").contains(&named.as_str().unwrap().to_owned()),
        "{all}"
    );
    assert!(
        !deleted(&all, "Deleted").contains(&base_id.as_str().unwrap().to_owned()),
        "{all}"
    );
    assert_eq!(d.get(&format!("/images/{}/json", k.base)).status, 200);
    assert_eq!(
        d.request(
            "POST",
            "/images/prune?filters=%7B%22reference%22%3A%5B%22x%22%5D%7D",
            &[],
            b""
        )
        .status,
        400
    );

    // Build cache: never an image. `built:1` was untagged by the dangling=false prune above
    // (no container used it), so its record is the cache's alone now.
    let build = d.request("POST", "/build/prune?all=1", &[], b"");
    assert_eq!(build.status, 200, "{}", build.text());
    let build = build.json();
    assert!(
        build["CachesDeleted"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{build}"
    );
    assert!(build["SpaceReclaimed"].is_u64());
    assert_eq!(d.get(&format!("/images/{}/json", k.base)).status, 200);
    let again = d.request("POST", "/build/prune", &[], b"").json();
    assert_eq!(again["CachesDeleted"], serde_json::Value::Null);

    // The docker CLI over the same routes.
    let docker = Docker::new(&d);
    assert!(docker.ok(&["system", "df"]).contains("Local Volumes"));
    docker.ok(&["volume", "prune", "-f"]);
    docker.ok(&["image", "prune", "-f"]);
    docker.ok(&["container", "prune", "-f"]);
    assert_eq!(
        d.get("/containers/keeper/json").status,
        404,
        "container prune took the stopped one"
    );
}
