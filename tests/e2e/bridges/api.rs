//! The Engine API's network operations through `kiln serve` inside the test's namespace:
//! create, inspect, list, connect, disconnect, remove and prune, in dockerd's shapes.

use super::{TestNet, daemon_in};
use crate::e2e::harness::{Kiln, stdout};

#[test]
fn the_engine_api_creates_connects_and_removes_networks_as_dockerd() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let d = daemon_in(&net);
    let post = |path: &str, body: serde_json::Value| {
        d.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let listed = d.get("/v1.41/networks").json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    for name in ["bridge", "host", "none"] {
        assert!(names.contains(&name), "{names:?}");
    }

    let created = post(
        "/v1.41/networks/create",
        serde_json::json!({
            "Name": "apinet", "Driver": "bridge", "CheckDuplicate": true,
            "IPAM": { "Driver": "default", "Config": [{ "Subnet": "10.95.0.0/24" }] },
            "Labels": { "com.docker.compose.project": "demo" },
        }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    let again = post(
        "/v1.41/networks/create",
        serde_json::json!({ "Name": "apinet" }),
    );
    assert_eq!(again.status, 409, "{}", again.text());
    let overlap = post(
        "/v1.41/networks/create",
        serde_json::json!({ "Name": "other", "IPAM": { "Config": [{ "Subnet": "10.95.0.0/16" }] } }),
    );
    assert_eq!(overlap.status, 400, "{}", overlap.text());
    assert!(overlap.text().contains("overlaps with network apinet"));
    let filtered = d
        .get("/v1.41/networks?filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Ddemo%22%5D%7D")
        .json();
    assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");

    // A container created with NetworkingConfig, as compose makes them.
    let create = post(
        "/v1.41/containers/create?name=apic",
        serde_json::json!({
            "Image": net.k.base, "Cmd": ["sleep", "300"],
            "HostConfig": { "NetworkMode": "apinet" },
            "NetworkingConfig": { "EndpointsConfig": { "apinet": {
                "Aliases": ["svc"], "IPAMConfig": { "IPv4Address": "10.95.0.20" } } } },
        }),
    );
    assert_eq!(create.status, 201, "{}", create.text());
    let cid = create.json()["Id"].as_str().unwrap().to_owned();
    let start = d.request("POST", "/v1.41/containers/apic/start", &[], b"");
    assert_eq!(start.status, 204, "{}", start.text());
    let inspect = d.get("/v1.41/containers/apic/json").json();
    assert_eq!(inspect["HostConfig"]["NetworkMode"], "apinet");
    let endpoint = &inspect["NetworkSettings"]["Networks"]["apinet"];
    assert_eq!(endpoint["IPAddress"], "10.95.0.20", "{endpoint}");
    assert_eq!(endpoint["Gateway"], "10.95.0.1");
    assert_eq!(endpoint["NetworkID"], id.as_str());
    assert_eq!(endpoint["Aliases"], serde_json::json!(["svc", &cid[..12]]));
    assert!(endpoint["EndpointID"].as_str().unwrap().len() == 64);
    let network = d.get(&format!("/v1.41/networks/{}", &id[..12])).json();
    assert_eq!(network["Containers"][&cid]["Name"], "apic");

    // In use, predefined, unknown: dockerd's statuses.
    assert_eq!(
        d.request("DELETE", "/v1.41/networks/apinet", &[], b"")
            .status,
        403
    );
    assert_eq!(
        d.request("DELETE", "/v1.41/networks/bridge", &[], b"")
            .status,
        403
    );
    let missing = d.get("/v1.41/networks/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "network nope not found");

    // connect / disconnect of the running container to the default bridge.
    let connect = post(
        "/v1.41/networks/bridge/connect",
        serde_json::json!({ "Container": "apic" }),
    );
    assert_eq!(connect.status, 200, "{}", connect.text());
    let inspect = d.get("/v1.41/containers/apic/json").json();
    let bridge_ip = inspect["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bridge_ip.starts_with("172.17."), "{inspect}");
    let exec_links = net.kiln(&["exec", "apic", "ip", "-o", "-4", "addr"]);
    assert!(
        stdout(&exec_links).contains(&bridge_ip),
        "{}",
        stdout(&exec_links)
    );
    let disconnect = post(
        "/v1.41/networks/bridge/disconnect",
        serde_json::json!({ "Container": "apic", "Force": false }),
    );
    assert_eq!(disconnect.status, 200, "{}", disconnect.text());
    let unknown = post(
        "/v1.41/networks/apinet/connect",
        serde_json::json!({ "Container": "nobody" }),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let removed = d.request("DELETE", "/v1.41/containers/apic?force=1", &[], b"");
    assert_eq!(removed.status, 204, "{}", removed.text());
    let pruned = post("/v1.41/networks/prune", serde_json::json!({}));
    assert_eq!(
        pruned.json()["NetworksDeleted"],
        serde_json::json!(["apinet"])
    );
    assert_eq!(d.get("/v1.41/networks").json().as_array().unwrap().len(), 3);
}
