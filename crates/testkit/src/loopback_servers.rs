//! Loopback servers for remote build contexts: Debian's `git daemon` serving repositories
//! over `git://`, and Python's `http.server` serving plain files over HTTP.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::net::free_port;

/// Starts `cmd` and waits until it accepts connections on 127.0.0.1:`port`.
fn start_listening(mut cmd: Command, port: u16, what: &str) -> Result<Child> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// `git daemon` exporting every repository under a directory, read-only, on loopback.
/// Stopped when dropped.
#[derive(Debug)]
pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    /// Serves the repositories under `base` (`git://127.0.0.1:PORT/<name>` is `base/<name>`).
    pub fn start(base: &Path) -> Result<GitDaemon> {
        let port = free_port();
        let mut cmd = Command::new("git");
        cmd.args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base);
        let child = start_listening(cmd, port, "git daemon")?;
        Ok(GitDaemon { child, port })
    }

    /// `git://127.0.0.1:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Smart HTTP git: `git http-backend` as a CGI script of `python3 -m http.server --cgi`,
/// serving the repositories under a directory at `http://127.0.0.1:PORT/cgi-bin/git/<repo>`.
/// Python runs CGI scripts as `nobody` when started as root, so the directory is made
/// readable to all and git is told to trust it. Stopped when dropped.
#[derive(Debug)]
pub struct GitHttpServer {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl GitHttpServer {
    pub fn start(base: &Path) -> Result<GitHttpServer> {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::Builder::new()
            .prefix("kiln-git-http-")
            .tempdir()?;
        let cgi = root.path().join("cgi-bin");
        std::fs::create_dir(&cgi)?;
        let script = cgi.join("git");
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1 HOME={} \\\n  \
                 GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\n\
                 exec git http-backend\n",
                quote(base),
                quote(root.path()),
            ),
        )?;
        for (path, mode) in [
            (root.path(), 0o755),
            (cgi.as_path(), 0o755),
            (script.as_path(), 0o755),
            (base, 0o755),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--cgi", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(root.path());
        let child = start_listening(cmd, port, "python3 -m http.server --cgi")?;
        Ok(GitHttpServer {
            child,
            port,
            _root: root,
        })
    }

    /// `http://127.0.0.1:<port>/cgi-bin/git/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/git/{repo}", self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python3 -m http.server` serving a directory over plain HTTP on loopback. Stopped when
/// dropped.
#[derive(Debug)]
pub struct HttpFileServer {
    child: Child,
    port: u16,
}

impl HttpFileServer {
    pub fn start(dir: &Path) -> Result<HttpFileServer> {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir);
        let child = start_listening(cmd, port, "python3 -m http.server")?;
        Ok(HttpFileServer { child, port })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `git ARGS` in `dir` (commits by a fixed test identity) and fails with its stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kiln test",
            "-c",
            "user.email=test@kiln.invalid",
        ])
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
