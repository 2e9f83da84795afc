//! docker-compose 1.29 (Debian's `docker-compose` package, with its own docker-py 5) against
//! `kiln serve`: a three-service app brought up, inspected, taken down and up again, and
//! removed with its volume.
//!
//! The app: `api` (busybox httpd) serves a stamp it writes once into a named volume; `job`, a
//! one-shot container that `depends_on` it, appends a line to a file on the same volume on
//! each `up`; `web` is built by compose through `POST /build` (docker-py's builder, not the
//! docker CLI: `COMPOSE_DOCKER_CLI_BUILD=0`) and serves a CGI page made from `api`'s answers,
//! fetched by the service name through the network's embedded DNS. So the page proves the
//! build, the DNS alias compose asks for, the volume and the one-shot job at once, and after
//! `down` + `up` that the volume kept its data (the same stamp, a second line from the job).
//!
//! `kiln serve` runs inside a network namespace the test makes, since compose creates a
//! bridge network per project; compose itself talks to the socket from outside (a UNIX socket
//! is a path, not a network-namespace object). The page is fetched from that namespace by the
//! web container's address, and through `docker-compose exec`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::containers::eventually;
use super::harness::{Kiln, stderr, stdout};
use super::serve::Daemon;

/// A network namespace of the test's, removed on drop (after the daemon, declared later).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("kiln-compose-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        }
        Netns(name)
    }

    /// A command run in the namespace (not in a container).
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.0))
            .args(args)
            .output()
            .expect("run nsenter")
    }

    fn links(&self) -> Vec<String> {
        stdout(&self.run(&["ip", "-o", "link", "show"]))
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

struct Compose<'a> {
    daemon: &'a Daemon,
    dir: &'a Path,
}

impl Compose<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .env("DOCKER_HOST", self.daemon.host())
            .env("COMPOSE_DOCKER_CLI_BUILD", "0")
            .env("COMPOSE_PROJECT_NAME", "shop")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("COMPOSE_API_VERSION")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(["--no-ansi"])
            .args(args)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run docker-compose (scripts/setup.sh installs it)")
    }

    /// stdout and stderr together: compose reports progress on stderr.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed\n--- stdout\n{}\n--- stderr\n{}\n--- daemon\n{}",
            stdout(&out),
            stderr(&out),
            self.daemon.log()
        );
        format!("{}{}", stdout(&out), stderr(&out))
    }
}

/// A failed assertion leaves no running project behind: supervisors outlive the test's store.
impl Drop for Compose<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--timeout", "1"]);
    }
}

fn write_app(dir: &Path, base: &str) {
    // web's port 80 is published as 8080, fetched from the namespace's loopback.
    let ports = "    ports:\n      - \"8080:80\"\n";
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            r#"version: "2.4"
services:
  api:
    image: {base}
    command: ["sh", "-c", "mkdir -p /data/www && ([ -f /data/www/stamp ] || echo stamp-$$RANDOM$$RANDOM > /data/www/stamp) && echo api ready && exec httpd -f -p 8000 -h /data/www"]
    volumes:
      - data:/data
    networks:
      default:
        ipv4_address: 10.123.0.10
  job:
    image: {base}
    command: ["sh", "-c", "until wget -qO- http://api:8000/stamp; do sleep 0.2; done && echo run >> /data/www/runs && echo job done"]
    volumes:
      - data:/data
    depends_on:
      - api
  web:
    build: ./web
    depends_on:
      - api
{ports}volumes:
  data: {{}}
networks:
  default:
    ipam:
      config:
        - subnet: 10.123.0.0/24
"#
        ),
    )
    .unwrap();
    let web = dir.join("web");
    std::fs::create_dir_all(web.join("cgi-bin")).unwrap();
    std::fs::write(
        web.join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY cgi-bin /www/cgi-bin\nEXPOSE 80\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    let page = web.join("cgi-bin/page");
    std::fs::write(
        &page,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n\
         echo \"api says $(wget -qO- http://api:8000/stamp) runs $(wget -qO- http://api:8000/runs | wc -l)\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The page as `docker-compose exec web` fetches it from inside the web container.
fn page_via_exec(compose: &Compose<'_>) -> Option<String> {
    let out = compose.run(&[
        "exec",
        "-T",
        "web",
        "wget",
        "-qO-",
        "http://127.0.0.1/cgi-bin/page",
    ]);
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

/// A URL fetched from the test's namespace (with the machine's curl: the machine's static
/// busybox `wget` dies of SIGSEGV here).
fn fetch_in(net: &Netns, url: &str) -> Option<String> {
    let out = net.run(&["curl", "-fsS", "--max-time", "5", "--noproxy", "*", url]);
    if !out.status.success() {
        eprintln!("curl {url} in the namespace: {}", stderr(&out));
    }
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

fn web_address(d: &Daemon) -> String {
    let inspect = d.get("/containers/shop_web_1/json").json();
    let endpoint = &inspect["NetworkSettings"]["Networks"]["shop_default"];
    let aliases = endpoint["Aliases"].to_string();
    assert!(
        aliases.contains("\"web\"") && aliases.contains(&inspect["Id"].as_str().unwrap()[..12]),
        "compose's aliases (the service and the short ID): {inspect}"
    );
    endpoint["IPAddress"].as_str().unwrap().to_owned()
}

/// Waits until the page says `runs N` and returns it.
fn page_with_runs(compose: &Compose<'_>, net: &Netns, d: &Daemon, runs: usize) -> String {
    let want = format!("runs {runs}");
    let mut last = None;
    eventually(&format!("the page with {want}"), || {
        last = page_via_exec(compose);
        last.as_deref().is_some_and(|p| p.ends_with(&want))
    });
    let page = last.unwrap();
    assert!(page.starts_with("api says stamp-"), "{page}");
    let by_address = fetch_in(net, &format!("http://{}/cgi-bin/page", web_address(d)));
    assert_eq!(by_address.as_deref(), Some(page.as_str()));
    let published = fetch_in(net, "http://127.0.0.1:8080/cgi-bin/page");
    assert_eq!(published.as_deref(), Some(page.as_str()));
    page
}

fn project_containers(d: &Daemon) -> serde_json::Value {
    d.get("/containers/json?all=1&filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Dshop%22%5D%7D")
        .json()
}

#[test]
fn docker_compose_runs_a_three_service_app_through_kiln_serve() {
    let k = Kiln::new();
    // The base comes from the registry on the host's loopback, before the daemon is in the
    // namespace.
    k.ok(&["pull", &k.base]);
    let net = Netns::new();
    let d = Daemon::start_in_netns(&k, &net.0);
    let project = tempfile::tempdir().unwrap();
    write_app(project.path(), &k.base);
    let compose = Compose {
        daemon: &d,
        dir: project.path(),
    };

    let up = compose.ok(&["up", "-d"]);
    for line in [
        "Creating network \"shop_default\"",
        "Creating volume \"shop_data\"",
        "Building web",
        "Creating shop_api_1",
        "Creating shop_web_1",
        "Creating shop_job_1",
    ] {
        assert!(up.contains(line), "{line:?} missing:\n{up}");
    }
    let image = d.get("/images/shop_web/json");
    assert_eq!(image.status, 200, "{}", image.text());

    page_with_runs(&compose, &net, &d, 1);
    // The list has each container's networks as inspect shows them.
    let listed = project_containers(&d);
    let web = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Names"][0] == "/shop_web_1")
        .unwrap_or_else(|| panic!("no shop_web_1 in {listed}"));
    assert_eq!(web["HostConfig"]["NetworkMode"], "shop_default");
    assert_eq!(
        web["NetworkSettings"]["Networks"]["shop_default"]["IPAddress"],
        web_address(&d).as_str()
    );

    // The job has exited 0; the others run.
    eventually("the job's exit", || {
        compose
            .ok(&["ps"])
            .lines()
            .any(|l| l.starts_with("shop_job_1") && l.contains("Exit 0"))
    });
    let ps = compose.ok(&["ps"]);
    for service in ["shop_api_1", "shop_web_1"] {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(service) && l.contains(" Up")),
            "{service} not up:\n{ps}"
        );
    }
    let logs = compose.ok(&["logs", "--no-color", "api", "job"]);
    assert!(logs.contains("api ready"), "{logs}");
    assert!(logs.contains("job done"), "{logs}");

    // A second `up -d` with nothing changed converges: the network as it is (its inspect
    // matches the file: no options compose did not give), running services left alone (their
    // config hash and short-ID alias as compose wrote them), the exited job started again.
    let again = compose.ok(&["up", "-d"]);
    for line in [
        "shop_api_1 is up-to-date",
        "shop_web_1 is up-to-date",
        "Starting shop_job_1",
    ] {
        assert!(again.contains(line), "{line:?} missing:\n{again}");
    }
    let first = page_with_runs(&compose, &net, &d, 2);

    // A stopped service is no name (dockerd's endpoints live only while a container runs;
    // kiln's records keep the stopped one's address and aliases, the DNS skips them).
    compose.ok(&["stop", "api"]);
    let lookup = compose.run(&["exec", "-T", "web", "nslookup", "api"]);
    assert!(
        !lookup.status.success(),
        "a stopped api resolved: {}",
        stdout(&lookup)
    );
    compose.ok(&["start", "api"]);

    // A recreated service (what any change to its config leads to; api has a fixed
    // `ipv4_address`): compose stops the old container, renames it aside (`POST /containers/{id}/rename`), creates and starts the
    // new one under the name and alias, and removes the old. web finds the new api by name.
    let old_api = d.get("/containers/shop_api_1/json").json()["Id"].clone();
    let recreated = compose.ok(&["up", "-d", "--force-recreate", "--no-deps", "api"]);
    assert!(recreated.contains("Recreating shop_api_1"), "{recreated}");
    let new_api = d.get("/containers/shop_api_1/json").json();
    assert_ne!(old_api, new_api["Id"]);
    // Its fixed address handed over from the old, stopped container (dockerd frees
    // addresses at stop; kiln keeps them until removal, but hands a requested one over).
    assert_eq!(
        new_api["NetworkSettings"]["Networks"]["shop_default"]["IPAddress"],
        "10.123.0.10"
    );
    assert_eq!(project_containers(&d).as_array().unwrap().len(), 3);
    assert_eq!(page_with_runs(&compose, &net, &d, 2), first);

    // `down` keeps the named volume; the next `up` finds the stamp and the job's lines.
    let down = compose.ok(&["down"]);
    assert!(down.contains("Removing network shop_default"), "{down}");
    assert_eq!(project_containers(&d), serde_json::json!([]));
    assert_eq!(d.get("/networks/shop_default").status, 404);
    assert_eq!(d.get("/volumes/shop_data").status, 200);

    compose.ok(&["up", "-d"]);
    let second = page_with_runs(&compose, &net, &d, 3);
    assert_eq!(
        first.trim_end_matches("runs 2"),
        second.trim_end_matches("runs 3"),
        "the stamp on the volume changed across down/up"
    );

    // `down -v`: containers, the network and the volume gone, no bridge left in the namespace.
    compose.ok(&["down", "-v"]);
    assert_eq!(project_containers(&d), serde_json::json!([]));
    assert_eq!(d.get("/networks/shop_default").status, 404);
    assert_eq!(d.get("/volumes/shop_data").status, 404);
    let links = net.links();
    assert!(
        links
            .iter()
            .all(|l| !l.starts_with("veth") && !l.contains("shop")),
        "{links:?}"
    );
}
