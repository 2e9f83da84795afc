//! `kiln serve`: the daemon started as a process against a temp store and socket, driven by
//! raw HTTP over the socket (`raw.rs` for the wire details, `builds.rs`, `images.rs`,
//! `containers.rs`, `host_config.rs`, `lifecycle.rs` for concurrency, attach and exec details;
//! `archive.rs` for docker cp and export, `ops.rs` for changes, rename and container prune,
//! `resources.rs` for pause, top, stats and update, `prune.rs` for the other prunes and system
//! df, `fuzzed.rs` for what schemathesis found), by the real docker CLI (`docker_cli.rs`, the 20.10 client in `docker_2010.rs`,
//! `restart.rs` across a daemon restart, `load.rs`, and in those files), and by `kiln --host`
//! (`client/`).

mod archive;
mod builds;
mod client;
mod containers;
mod docker_2010;
mod docker_cli;
mod fuzzed;
mod host_config;
mod images;
mod lifecycle;
mod load;
mod ops;
mod prune;
mod raw;
mod resources;
mod restart;
mod upgrade;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::Kiln;

/// A running `kiln serve` on a socket in a temp dir, stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(k: &Kiln, extra_env: &[(&str, &Path)], extra_args: &[&str]) -> Daemon {
        Daemon::spawn(
            k,
            crate::e2e::harness::kiln_command(),
            extra_env,
            extra_args,
        )
    }

    /// `kiln serve` inside the network namespace `/run/netns/<netns>` (only that namespace
    /// entered: `nsenter` execs kiln, so the child is the daemon itself), for tests whose
    /// clients create bridge networks. The socket is a path, reachable from any namespace.
    pub fn start_in_netns(k: &Kiln, netns: &str) -> Daemon {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(env!("CARGO_BIN_EXE_kiln"));
        Daemon::spawn(k, command, &[], &[])
    }

    pub fn spawn(
        k: &Kiln,
        mut command: Command,
        extra_env: &[(&str, &Path)],
        extra_args: &[&str],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kiln.sock");
        command
            .env("KILN_ROOT", k.root.path())
            .args(["serve", "--host", &format!("unix://{}", socket.display())])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("serve.log")).unwrap(),
            ));
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start kiln serve");
        let daemon = Daemon { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if UnixStream::connect(&daemon.socket).is_ok() {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kiln serve did not come up:\n{}", daemon.log());
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// One request on a fresh connection (`Connection: close`), answered in full.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to kiln serve");
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        // The daemon may answer (413) and close before reading a body it refuses.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        if let Err(e) = stream.read_to_end(&mut raw) {
            assert!(!raw.is_empty(), "{method} {path}: no response: {e}");
        }
        Response::parse(&raw)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "kiln serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate();
        }
    }
}

/// A parsed HTTP/1.1 response (chunked bodies decoded).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The lines of a JSON message stream.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// A body as sent after `head`: dechunked if the head says it is chunked.
pub fn dechunk_if(head: &str, body: &[u8]) -> Vec<u8> {
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    }
}

pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
}

/// How long one docker CLI invocation may take before the test fails naming it (a hang in the
/// daemon must fail the test, not block CI).
pub const CLIENT_LIMIT: Duration = Duration::from_secs(180);

/// Runs `command` with `stdin`, killing it and failing the test if it takes longer than
/// `limit`.
pub fn output_within(mut command: Command, stdin: &[u8], limit: Duration) -> std::process::Output {
    let what = format!("{command:?}");
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written on a thread: a client that never reads its stdin must not block the timer.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("{what} did not finish within {} s", limit.as_secs());
        }
    }
}

/// A tar of `(name, content)` files, names written as given (`..` included).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}
