//! Test fixtures: a real CNCF distribution registry on 127.0.0.1, a scriptable fake registry for
//! misbehaviour the real one never shows, and small images built straight into a store.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::{
    Descriptor, Digest, ImageConfig, Manifest, Platform, RootFs, media_type, to_canonical_json,
};
use kiln_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `docker-registry serve` on a free loopback port; killed when dropped.
pub struct TestRegistry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed");
        let registry = TestRegistry {
            child,
            addr,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(&self.addr) {
                let _ = stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry at {} did not become ready", self.addr);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request as the fake registry saw it.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response of the fake registry: status line, extra headers, body.
pub struct FakeResponse {
    pub status: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked transfer encoding instead of a Content-Length.
    pub chunked: bool,
}

impl FakeResponse {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> FakeResponse {
        FakeResponse {
            status: "200 OK",
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            chunked: false,
        }
    }

    pub fn status(status: &'static str) -> FakeResponse {
        FakeResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 answering each request with `handler`, one request per
/// connection. Returns its `host:port`.
pub async fn fake_registry(
    handler: impl Fn(&FakeRequest) -> FakeResponse + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let mut lines = text.split("\r\n");
                let mut request_line = lines.next().unwrap_or_default().split(' ');
                let method = request_line.next().unwrap_or_default().to_owned();
                let path = request_line.next().unwrap_or_default().to_owned();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let mut request = FakeRequest {
                    method: method.clone(),
                    path,
                    headers,
                    body: Vec::new(),
                };
                // Read the whole body before answering so the client never writes into a closed socket.
                let length = request
                    .header("content-length")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                request.body = body;
                let response = handler(&request);
                let chunked = response.chunked;
                let mut out = format!("HTTP/1.1 {}\r\nConnection: close\r\n", response.status);
                if chunked {
                    out.push_str("Transfer-Encoding: chunked\r\n");
                } else {
                    out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
                }
                for (k, v) in &response.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                if method != "HEAD" {
                    if chunked {
                        // One chunk per 8 KiB, so the client sees a stream of unknown length.
                        for piece in response.body.chunks(8192) {
                            bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                            bytes.extend_from_slice(piece);
                            bytes.extend_from_slice(b"\r\n");
                        }
                        bytes.extend_from_slice(b"0\r\n\r\n");
                    } else {
                        bytes.extend_from_slice(&response.body);
                    }
                }
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A small image written into a store: one gzip tar layer, its config, an OCI manifest.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub config_digest: Digest,
    pub layer_digest: Digest,
}

impl BuiltImage {
    /// This image's manifest as an entry of an image index, for `platform`.
    pub fn index_entry(&self, platform: &Platform) -> Descriptor {
        Descriptor {
            platform: Some(platform.clone()),
            ..Descriptor::new(
                media_type::OCI_MANIFEST,
                self.manifest_digest.clone(),
                self.manifest_size,
            )
        }
    }
}

pub fn build_image(store: &Store, platform: &Platform, file_content: &[u8]) -> BuiltImage {
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(file_content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", file_content)
            .unwrap();
        builder.finish().unwrap();
    }
    let diff_id = kiln_image::DiffId::of_tar(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = store.write_blob(&layer).unwrap();

    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        ..ImageConfig::default()
    };
    let config_bytes = to_canonical_json(&config);
    let config_digest = store.write_blob(&config_bytes).unwrap();
    let manifest = Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer_digest.clone(),
            layer.len() as u64,
        )],
    );
    let manifest_bytes = to_canonical_json(&manifest);
    let manifest_digest = store.write_blob(&manifest_bytes).unwrap();
    BuiltImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        config_digest,
        layer_digest,
    }
}

/// Digests of every blob in the store.
pub fn blobs_in(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn tmp_is_empty(store: &Store) -> bool {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}
