//! Registries that want credentials, as tests need them: a test CA (made with the `openssl` CLI)
//! for TLS and client certificates, htpasswd Basic auth (bcrypt, as distribution requires), and
//! the token flow Docker Hub uses — a small token issuer on loopback that checks Basic
//! credentials or refresh tokens and signs RS256 JWTs with a key whose certificate is the
//! registry's `rootcertbundle`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tempfile::TempDir;

use crate::registry::{RegistrySetup, TestRegistry};

fn openssl(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (install the Debian package openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A certificate authority for one test, and the certificates it issues.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    pub fn new() -> Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("kiln-test-ca-").tempdir()?;
        let ca = TestCa { dir };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path_str(&ca.key_path()),
            "-out",
            path_str(&ca.cert_path()),
        ])?;
        Ok(ca)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("ca.key")
    }

    /// Issues a certificate named `name`: a server certificate for 127.0.0.1, or a client one.
    /// Returns (certificate, key) PEM paths.
    pub fn issue(&self, name: &str, client: bool) -> Result<(PathBuf, PathBuf)> {
        let dir = self.dir.path();
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.cert"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            if client {
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
            } else {
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"
            },
        )?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&self.cert_path()),
            "-CAkey",
            path_str(&self.key_path()),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path_str(&ext),
            "-out",
            path_str(&cert),
        ])?;
        Ok((cert, key))
    }
}

/// An htpasswd file line for `user` (bcrypt, the only scheme distribution accepts).
pub fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let hash = bcrypt::hash(password, 5).context("bcrypt")?;
    Ok(format!("{user}:{hash}\n"))
}

/// A registry serving TLS with a certificate from its own [`TestCa`], with htpasswd Basic auth,
/// optionally requiring a client certificate. `certs_dir` is laid out like
/// `/etc/docker/certs.d`: `<host:port>/ca.crt` (and `client.cert`/`client.key`).
#[derive(Debug)]
pub struct TlsRegistry {
    pub registry: TestRegistry,
    pub ca: TestCa,
    pub certs_dir: TempDir,
    /// Where the client certificate and key are, when the registry requires one.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl TlsRegistry {
    /// `users` are (name, password) pairs.
    pub fn start(users: &[(&str, &str)], require_client_cert: bool) -> Result<TlsRegistry> {
        let ca = TestCa::new()?;
        let (cert, key) = ca.issue("registry", false)?;
        let htpasswd = ca.dir.path().join("htpasswd");
        let mut lines = String::new();
        for (user, password) in users {
            lines.push_str(&htpasswd_line(user, password)?);
        }
        std::fs::write(&htpasswd, lines)?;
        let mut http_yaml = format!(
            "  tls:\n    certificate: {:?}\n    key: {:?}\n",
            path_str(&cert),
            path_str(&key)
        );
        if require_client_cert {
            http_yaml.push_str(&format!(
                "    clientcas:\n      - {:?}\n",
                path_str(&ca.cert_path())
            ));
        }
        let setup = RegistrySetup {
            http_yaml,
            auth_yaml: format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {:?}\n",
                path_str(&htpasswd)
            ),
            ready_status: 400,
        };
        let registry = TestRegistry::start_with(&setup)?;
        let certs_dir = tempfile::Builder::new().prefix("kiln-certs.d-").tempdir()?;
        let host_dir = certs_dir.path().join(registry.addr());
        std::fs::create_dir(&host_dir)?;
        std::fs::copy(ca.cert_path(), host_dir.join("ca.crt"))?;
        let client_identity = if require_client_cert {
            Some(ca.issue("client", true)?)
        } else {
            None
        };
        Ok(TlsRegistry {
            registry,
            ca,
            certs_dir,
            client_identity,
        })
    }

    /// Puts the client certificate into certs.d, as a user of a mutual-TLS registry would.
    pub fn install_client_cert(&self) -> Result<()> {
        let (cert, key) = self
            .client_identity
            .as_ref()
            .context("this registry was started without client certificates")?;
        let host_dir = self.certs_dir.path().join(self.registry.addr());
        std::fs::copy(cert, host_dir.join("client.cert"))?;
        std::fs::copy(key, host_dir.join("client.key"))?;
        Ok(())
    }
}

/// One request the token issuer answered.
#[derive(Debug, Clone)]
pub struct TokenRequestRecord {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The Basic user name, when credentials came with the request.
    pub basic_user: Option<String>,
    pub status: u16,
}

#[derive(Debug, Default)]
struct IssuerState {
    users: HashMap<String, String>,
    /// Refresh token → user.
    refresh_tokens: HashMap<String, String>,
    requests: Vec<TokenRequestRecord>,
    counter: u64,
}

/// A registry with `auth: token`, and the token issuer it trusts, both on loopback.
#[derive(Debug)]
pub struct TokenRegistry {
    pub registry: TestRegistry,
    state: Arc<Mutex<IssuerState>>,
    port: u16,
    _dir: TempDir,
}

const SERVICE: &str = "kiln-test-registry";
const ISSUER: &str = "kiln-test-issuer";

impl TokenRegistry {
    /// `users` may get tokens for pull and push on any repository; anonymous requests get
    /// tokens without access (like a private repository on Docker Hub).
    pub fn start(users: &[(&str, &str)]) -> Result<TokenRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-token-issuer-")
            .tempdir()?;
        let key = dir.path().join("signing.key");
        let cert = dir.path().join("signing.crt");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test token signer",
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
        ])?;
        let cert_der = openssl(&["x509", "-in", path_str(&cert), "-outform", "DER"])?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(IssuerState {
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
            ..IssuerState::default()
        }));
        let signer = Signer {
            key,
            x5c: STANDARD.encode(cert_der),
        };
        let serving = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = handle_token_request(conn, &serving, &signer);
            }
        });
        let setup = RegistrySetup {
            auth_yaml: format!(
                "auth:\n  token:\n    realm: \"http://127.0.0.1:{port}/token\"\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {:?}\n",
                path_str(&cert)
            ),
            ready_status: 401,
            ..RegistrySetup::default()
        };
        let registry = TestRegistry::start_with(&setup)?;
        Ok(TokenRegistry {
            registry,
            state,
            port,
            _dir: dir,
        })
    }

    /// The requests the issuer has answered so far.
    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

#[derive(Debug)]
struct Signer {
    key: PathBuf,
    x5c: String,
}

impl Signer {
    /// An RS256 JWT the registry accepts: its issuer, its service as audience, and `access`.
    fn token(&self, subject: &str, access: &serde_json::Value, jti: u64) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("kiln-test-{jti}"), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let input_file = tempfile::NamedTempFile::new()?;
        std::fs::write(input_file.path(), &signing_input)?;
        // PKCS#1 v1.5 over SHA-256 is RS256 (RFC 7518 §3.3).
        let signature = openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            path_str(&self.key),
            path_str(input_file.path()),
        ])?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// `repository:name:pull,push` → a JWT access entry granting those actions.
fn access_for(scopes: &[String]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    serde_json::Value::Array(entries)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn handle_token_request(
    mut conn: TcpStream,
    state: &Mutex<IssuerState>,
    signer: &Signer,
) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_owned()),
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let basic = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| b.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
    let params = if method == "POST" {
        form_pairs(&String::from_utf8_lossy(&body))
    } else {
        form_pairs(&query)
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();

    let mut state = state.lock().unwrap();
    state.counter += 1;
    let jti = state.counter;
    // Who is asking: a user with the right password, a holder of a refresh token, anonymous, or
    // nobody we accept (401).
    let subject: Option<Option<String>> = if method == "POST" {
        match (get("grant_type").as_deref(), get("refresh_token")) {
            (Some("refresh_token"), Some(token)) => {
                state.refresh_tokens.get(&token).cloned().map(Some)
            }
            _ => None,
        }
    } else {
        match &basic {
            Some((user, password)) => {
                (state.users.get(user) == Some(password)).then(|| Some(user.clone()))
            }
            None => Some(None),
        }
    };
    let (status, response) = match subject {
        None => (401, r#"{"details":"invalid credentials"}"#.to_owned()),
        Some(user) => {
            let access = match &user {
                Some(_) => access_for(&scopes),
                None => serde_json::json!([]),
            };
            let token = signer.token(user.as_deref().unwrap_or(""), &access, jti)?;
            let mut doc =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
            if let Some(user) = &user
                && (get("offline_token").as_deref() == Some("true")
                    || get("access_type").as_deref() == Some("offline"))
            {
                let refresh = format!("refresh-{jti}");
                state.refresh_tokens.insert(refresh.clone(), user.clone());
                doc["refresh_token"] = serde_json::Value::String(refresh);
            }
            (200, doc.to_string())
        }
    };
    state.requests.push(TokenRequestRecord {
        method,
        target,
        basic_user: basic.map(|(u, _)| u),
        status,
    });
    drop(state);
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{response}",
        response.len()
    )?;
    conn.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_and_access_entries() {
        assert_eq!(
            form_pairs("scope=repository%3Aa%2Fb%3Apull%2Cpush&x=a+b&empty="),
            vec![
                ("scope".into(), "repository:a/b:pull,push".into()),
                ("x".into(), "a b".into()),
                ("empty".into(), String::new()),
            ]
        );
        let access = access_for(&["repository:a/b:pull,push repository:c:pull".into()]);
        assert_eq!(access[0]["name"], "a/b");
        assert_eq!(access[0]["actions"], serde_json::json!(["pull", "push"]));
        assert_eq!(access[1]["name"], "c");
    }

    #[test]
    fn htpasswd_lines_are_bcrypt() {
        let line = htpasswd_line("alice", "pw").unwrap();
        let (user, hash) = line.trim_end().split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2"), "{hash}");
        assert!(bcrypt::verify("pw", hash).unwrap());
    }
}
