//! Per-registry TLS material, read the way Docker reads it: `<certs dir>/<host:port>/` holds
//! `*.crt` files (CAs trusted for that registry, on top of the system roots) and `*.cert` /
//! `*.key` pairs (a client certificate and its key, for registries that require mutual TLS).
//! The certs dir is `/etc/docker/certs.d` unless configured otherwise.

use std::path::{Path, PathBuf};

use reqwest::{Certificate, Identity};

/// What one registry's certs.d directory provides.
#[derive(Debug, Default)]
pub(crate) struct HostTls {
    pub ca_certificates: Vec<Certificate>,
    pub identity: Option<Identity>,
}

/// The certs.d directory of `host` (`host:port` as in references), whether it exists or not.
pub(crate) fn host_dir(certs_dir: &Path, host: &str) -> PathBuf {
    certs_dir.join(host)
}

/// Reads `host`'s directory under `certs_dir`; `None` when there is none.
pub(crate) fn load_host_tls(certs_dir: &Path, host: &str) -> Result<Option<HostTls>, String> {
    let dir = host_dir(certs_dir, host);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list the directory: {e}")),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let mut tls = HostTls::default();
    for name in &names {
        if name.ends_with(".crt") {
            let pem = read(name)?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{name} is not a PEM certificate bundle: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{name} holds no certificate"));
            }
            tls.ca_certificates.extend(certs);
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key_name = format!("{stem}.key");
            if !names.contains(&key_name) {
                return Err(format!("client certificate {name} has no key {key_name}"));
            }
            if tls.identity.is_some() {
                return Err("more than one client certificate (*.cert)".to_owned());
            }
            let mut pem = read(name)?;
            pem.push(b'\n');
            pem.extend(read(&key_name)?);
            tls.identity = Some(
                Identity::from_pem(&pem)
                    .map_err(|e| format!("client certificate {name} with {key_name}: {e}"))?,
            );
        } else if let Some(stem) = name.strip_suffix(".key")
            && !names.contains(&format!("{stem}.cert"))
        {
            return Err(format!("key {name} has no client certificate {stem}.cert"));
        }
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, made with the openssl CLI.
    fn self_signed(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
        let key = dir.join(format!("{name}.keyfile"));
        let cert = dir.join(format!("{name}.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=kiln-test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success());
        (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    }

    #[test]
    fn reads_cas_and_a_client_pair_and_absent_dirs_are_none() {
        let scratch = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(scratch.path(), "a");
        let certs = tempfile::tempdir().unwrap();
        assert!(load_host_tls(certs.path(), "r.lan:5000").unwrap().is_none());

        let host = certs.path().join("r.lan:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), &cert).unwrap();
        std::fs::write(host.join("extra.crt"), &cert).unwrap();
        std::fs::write(host.join("client.cert"), &cert).unwrap();
        std::fs::write(host.join("client.key"), &key).unwrap();
        let tls = load_host_tls(certs.path(), "r.lan:5000").unwrap().unwrap();
        assert_eq!(tls.ca_certificates.len(), 2);
        assert!(tls.identity.is_some());
    }

    #[test]
    fn unusable_material_is_an_error_naming_the_file() {
        let certs = tempfile::tempdir().unwrap();
        let host = certs.path().join("r.lan");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("client.cert"), b"x").unwrap();
        let err = load_host_tls(certs.path(), "r.lan").unwrap_err();
        assert!(err.contains("client.cert has no key client.key"), "{err}");

        std::fs::remove_file(host.join("client.cert")).unwrap();
        std::fs::write(host.join("lonely.key"), b"x").unwrap();
        let err = load_host_tls(certs.path(), "r.lan").unwrap_err();
        assert!(
            err.contains("lonely.key has no client certificate"),
            "{err}"
        );

        std::fs::remove_file(host.join("lonely.key")).unwrap();
        std::fs::write(host.join("ca.crt"), b"not pem").unwrap();
        let err = load_host_tls(certs.path(), "r.lan").unwrap_err();
        assert!(err.contains("ca.crt"), "{err}");
    }
}
