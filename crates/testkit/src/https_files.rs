//! A plain HTTPS file server on loopback (`openssl s_server -WWW`), for downloads that must
//! trust a test CA: `ADD https://…` and the registry transport's certs.d handling.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::TestCa;
use crate::net::free_port;

/// Serves the files of a directory over HTTPS on 127.0.0.1 with a certificate `ca` issued, and
/// a certs.d directory (`<127.0.0.1:port>/ca.crt`) that trusts it. Stopped when dropped.
#[derive(Debug)]
pub struct HttpsFileServer {
    child: Child,
    port: u16,
    pub ca: TestCa,
    pub certs_dir: tempfile::TempDir,
}

impl HttpsFileServer {
    /// Serves `dir`: `GET /<name>` answers with the file's bytes (HTTP/1.0, no length, then
    /// the connection closes), a missing file with an error page.
    pub fn start(dir: &Path) -> Result<HttpsFileServer> {
        let ca = TestCa::new()?;
        let (cert, key) = ca.issue("files", false)?;
        let port = free_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running openssl s_server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("openssl s_server exited with {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("openssl s_server did not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let certs_dir = tempfile::Builder::new().prefix("kiln-certs.d-").tempdir()?;
        let host_dir = certs_dir.path().join(format!("127.0.0.1:{port}"));
        std::fs::create_dir(&host_dir)?;
        std::fs::copy(ca.cert_path(), host_dir.join("ca.crt"))?;
        Ok(HttpsFileServer {
            child,
            port,
            ca,
            certs_dir,
        })
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpsFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
