//! A throwaway CNCF distribution registry (`docker-registry` from Debian) on 127.0.0.1.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::net::{http_get_status, try_free_port};

const REGISTRY_BINARY: &str = "docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Another process may grab the picked port before the registry binds it; this many fresh
/// ports are tried before giving up.
const BIND_ATTEMPTS: u32 = 5;

/// A running `docker-registry serve`, storing into a temp dir, killed and reaped on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    port: u16,
    // Declared last: fields drop after `Drop::drop` has stopped the process writing into it.
    dir: TempDir,
}

/// Why one start attempt failed: a lost race for the port is retried, anything else is not.
enum StartFailure {
    PortTaken(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Extra configuration for a registry: TLS and authentication, as YAML for the distribution
/// config, and the status a plain-HTTP `GET /v2/` gets once it is up.
#[derive(Debug, Clone)]
pub struct RegistrySetup {
    /// Lines under `http:` (indented two spaces), e.g. a `tls:` block.
    pub http_yaml: String,
    /// A top-level `auth:` block.
    pub auth_yaml: String,
    /// 200 for an open registry, 401 with auth, 400 with TLS (an HTTP request to a TLS port).
    pub ready_status: u16,
}

impl Default for RegistrySetup {
    fn default() -> Self {
        RegistrySetup {
            http_yaml: String::new(),
            auth_yaml: String::new(),
            ready_status: 200,
        }
    }
}

impl TestRegistry {
    /// Starts a registry on a free loopback port and waits until `GET /v2/` answers 200.
    pub fn start() -> Result<TestRegistry> {
        TestRegistry::start_with(&RegistrySetup::default())
    }

    /// Starts a registry configured by `setup` (TLS, auth) on a free loopback port.
    pub fn start_with(setup: &RegistrySetup) -> Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?;
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = try_free_port().context("picking a port for the registry")?;
            match start_on(dir.path(), port, setup) {
                Ok(child) => return Ok(TestRegistry { child, port, dir }),
                Err(StartFailure::PortTaken(e)) => last_error = Some(e),
                Err(StartFailure::Fatal(e)) => return Err(e),
            }
        }
        let last_error = last_error.map(|e| format!("{e:#}")).unwrap_or_default();
        bail!(
            "docker-registry could not bind a port in {BIND_ATTEMPTS} attempts; last: {last_error}"
        )
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's process id (to check it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The filesystem storage root, for tests that look at what was stored.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's combined stdout and stderr (its access log and errors).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The log's contents, for failure messages.
    pub fn log(&self) -> String {
        read_log_tail(&self.log_path())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // Errors mean the process already exited; either way it must be reaped, not left a zombie.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The distribution 2.x config for a registry on `port` storing under `dir/storage`.
fn config_yaml(dir: &Path, port: u16, setup: &RegistrySetup) -> String {
    // The path is written as a double-quoted YAML string; temp dir names never contain quotes
    // or backslashes, and Debug formatting escapes them if they ever do.
    let storage = format!("{:?}", dir.join("storage").display().to_string());
    format!(
        "version: 0.1\n\
         log:\n  level: error\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n{}{}",
        setup.http_yaml, setup.auth_yaml
    )
}

fn start_on(dir: &Path, port: u16, setup: &RegistrySetup) -> Result<Child, StartFailure> {
    let fatal = StartFailure::Fatal;
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config_yaml(dir, port, setup))
        .with_context(|| format!("writing {}", config_path.display()))
        .map_err(fatal)?;
    let log_path = dir.join("registry.log");
    let log = File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))
        .map_err(fatal)?;
    let log_for_stderr = log
        .try_clone()
        .context("duplicating the log file handle")
        .map_err(fatal)?;
    let mut child = Command::new(REGISTRY_BINARY)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .spawn()
        .with_context(|| {
            format!("running {REGISTRY_BINARY} (install the Debian package docker-registry)")
        })
        .map_err(fatal)?;
    match wait_ready(&mut child, port, &log_path, setup.ready_status) {
        Ok(()) => Ok(child),
        Err(failure) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failure)
        }
    }
}

fn wait_ready(
    child: &mut Child,
    port: u16,
    log_path: &Path,
    ready_status: u16,
) -> Result<(), StartFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        // Checked before trusting a 200: if our registry died on a taken port, whoever holds
        // that port may be answering instead.
        if let Some(status) = child.try_wait().ok().flatten() {
            let log = read_log_tail(log_path);
            let error =
                anyhow::anyhow!("docker-registry on port {port} exited with {status}; log:\n{log}");
            return Err(if log.contains("address already in use") {
                StartFailure::PortTaken(error)
            } else {
                StartFailure::Fatal(error)
            });
        }
        let last_probe = match http_get_status(port, "/v2/") {
            Ok(status) if status == ready_status => return Ok(()),
            Ok(status) => format!("GET /v2/ answered {status}"),
            Err(e) => format!("GET /v2/ failed: {e}"),
        };
        if Instant::now() >= deadline {
            let log = read_log_tail(log_path);
            return Err(StartFailure::Fatal(anyhow::anyhow!(
                "docker-registry on port {port} not ready after {READY_TIMEOUT:?} ({last_probe}); log:\n{log}"
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last part of the log: enough to see the error, short enough for a panic message.
fn read_log_tail(path: &Path) -> String {
    const KEEP: usize = 8 * 1024;
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(KEEP);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_loopback_port_and_storage() {
        let yaml = config_yaml(Path::new("/tmp/reg-x"), 5123, &RegistrySetup::default());
        assert!(yaml.contains("  addr: 127.0.0.1:5123\n"), "{yaml}");
        assert!(
            yaml.contains("rootdirectory: \"/tmp/reg-x/storage\"\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  delete:\n    enabled: true\n"), "{yaml}");
        assert!(yaml.starts_with("version: 0.1\n"), "{yaml}");
    }

    #[test]
    fn registry_serves_v2_and_is_gone_after_drop() {
        let registry = TestRegistry::start().unwrap();
        assert_eq!(http_get_status(registry.port(), "/v2/").unwrap(), 200);
        assert_eq!(registry.addr(), format!("127.0.0.1:{}", registry.port()));
        let pid = registry.pid();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists());
        let port = registry.port();
        drop(registry);
        // Reaped, so not even a zombie entry remains.
        assert!(
            !proc_dir.exists(),
            "registry pid {pid} still exists after drop"
        );
        assert!(
            http_get_status(port, "/v2/").is_err(),
            "port {port} still answers after drop"
        );
    }

    #[test]
    fn a_taken_port_is_reported_as_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = squatter.local_addr().unwrap().port();
        match start_on(dir.path(), port, &RegistrySetup::default()) {
            Err(StartFailure::PortTaken(e)) => {
                assert!(format!("{e:#}").contains(&port.to_string()))
            }
            Err(StartFailure::Fatal(e)) => panic!("expected a retryable failure, got: {e:#}"),
            Ok(_) => panic!("registry started on a port that was taken"),
        }
    }
}
