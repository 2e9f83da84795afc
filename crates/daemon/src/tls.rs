//! `tcp://` with mutual TLS (`--tlsverify --tlscacert --tlscert --tlskey`, as dockerd): the
//! only way kiln listens on TCP. Every client must present a certificate signed by the CA in
//! `--tlscacert`; a connection without one, or with one from another CA, fails in the
//! handshake and never reaches the API.
//!
//! rustls with the ring provider, as the registry client already uses, so no second TLS stack
//! enters the build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::DaemonError;

/// The three files of `--tlsverify`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> DaemonError {
    DaemonError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, DaemonError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    if certs.is_empty() {
        return Err(bad(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The server's TLS configuration: its certificate and key, client certificates required and
/// verified against the CA.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        roots.add(ca).map_err(|e| bad(&files.ca, e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| bad(&files.ca, e))?;
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad(&files.cert, e))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            ca: empty.clone(),
            cert: empty.clone(),
            key: empty.clone(),
        };
        let err = server_config(&files).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let files = TlsFiles {
            ca: dir.path().join("nope.pem"),
            ..files
        };
        assert!(
            server_config(&files)
                .unwrap_err()
                .to_string()
                .contains("nope.pem")
        );
    }
}
