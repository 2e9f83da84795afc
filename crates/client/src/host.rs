//! Where the daemon is (`unix:///PATH`, `tcp://HOST:PORT`) and how a TCP connection is secured.
//!
//! The client refuses plain TCP for the same reason `kiln serve` refuses to listen on it: the
//! API is root's engine, and a client that would send it in the clear (or accept any server)
//! invites exactly what the server forbids. So `tcp://` needs TLS files, and with them the
//! server is verified against the CA and the client presents its own certificate (mutual TLS,
//! as `docker --tlsverify`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::ClientError;

/// Docker's port for the API over TLS, used when a `tcp://` host names none.
pub const DEFAULT_TLS_PORT: u16 = 2376;

/// A daemon address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    /// Host name or IP address (without brackets) and port.
    Tcp {
        host: String,
        port: u16,
    },
}

impl Host {
    /// Parses `unix:///PATH` or `tcp://HOST[:PORT]` (as `DOCKER_HOST`).
    pub fn parse(text: &str) -> Result<Host, ClientError> {
        let bad = |reason| ClientError::InvalidHost {
            host: text.to_owned(),
            reason,
        };
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("expected unix:///ABSOLUTE/PATH"));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        let Some(addr) = text.strip_prefix("tcp://") else {
            return Err(bad("expected unix:///PATH or tcp://HOST:PORT"));
        };
        let addr = addr.trim_end_matches('/');
        if addr.contains('/') || addr.is_empty() {
            return Err(bad("expected tcp://HOST:PORT"));
        }
        // [v6]:port, host:port, or a bare host.
        let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or(bad("unclosed [ in the address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("expected tcp://[ADDRESS]:PORT")),
            }
        } else {
            match addr.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (addr, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None => DEFAULT_TLS_PORT,
        };
        if host.is_empty() {
            return Err(bad("no host name"));
        }
        Ok(Host::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Host::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// The three PEM files of mutual TLS: the CA the server's certificate must chain to, and the
/// client's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir`, the layout of `DOCKER_CERT_PATH`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    if certs.is_empty() {
        return Err(bad(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The rustls client configuration for `files`: only servers whose certificate chains to the
/// CA in `files.ca` (and names the host), presenting the client's certificate.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        roots.add(ca).map_err(|e| bad(&files.ca, e))?;
    }
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.ca, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| bad(&files.key, e))?;
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: an IP address SAN for an address, else the
/// DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned()).map_err(|_| ClientError::InvalidHost {
        host: host.to_owned(),
        reason: "not a valid DNS name or IP address for TLS",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_as_docker_host_does() {
        assert_eq!(
            Host::parse("unix:///run/kiln/kiln.sock").unwrap(),
            Host::Unix("/run/kiln/kiln.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2376").unwrap(),
            Host::Tcp {
                host: "127.0.0.1".into(),
                port: 2376
            }
        );
        assert_eq!(
            Host::parse("tcp://builder.example/").unwrap(),
            Host::Tcp {
                host: "builder.example".into(),
                port: DEFAULT_TLS_PORT
            }
        );
        assert_eq!(
            Host::parse("tcp://[::1]:9").unwrap().to_string(),
            "tcp://[::1]:9"
        );
        for bad in [
            "unix://relative.sock",
            "ssh://me@host",
            "tcp://:2376",
            "tcp://h:port",
            "tcp://h:1/x",
            "/run/kiln.sock",
        ] {
            let err = Host::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn missing_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = client_config(&TlsFiles::in_dir(dir.path())).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        std::fs::write(dir.path().join("ca.pem"), "not pem").unwrap();
        let err = client_config(&TlsFiles::in_dir(dir.path())).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
