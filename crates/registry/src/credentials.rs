//! Registry credentials stored the way the Docker CLI stores them, so `docker login` and
//! `kiln login` share one file: `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`)
//! with `auths` entries (base64 `auth`, or `username`/`password`, or `identitytoken`), and
//! credential helpers (`credsStore` for all registries, `credHelpers` per registry) that speak the
//! `docker-credential-<name> get|store|erase` protocol over stdin/stdout.
//!
//! Docker Hub is known by several names (`docker.io`, `index.docker.io`, `registry-1.docker.io`)
//! and its entry is keyed `https://index.docker.io/v1/`; every lookup goes through
//! [`server_key`] so the aliases are one registry.
//!
//! Secrets never appear in `Debug` output or error messages.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kiln_error::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key Docker files Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The user name a credential helper returns for an identity (refresh) token.
const IDENTITY_TOKEN_USERNAME: &str = "<token>";

/// What kiln authenticates to a registry with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token endpoint (`grant_type=refresh_token`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid Docker config file: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper} {action} failed: {message}")]
    Helper {
        helper: String,
        action: &'static str,
        message: String,
    },
}

impl CredentialError {
    /// A config file that cannot be parsed is [`ErrorKind::InvalidArgument`] (the user's
    /// file); a failing credential helper is [`ErrorKind::Unavailable`] (a program outside
    /// kiln, which may work again); reading or writing the file is what [`ErrorKind::of_io`]
    /// says.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CredentialError::Read { source, .. } | CredentialError::Write { source, .. } => {
                ErrorKind::of_io(source)
            }
            CredentialError::Invalid { .. } => ErrorKind::InvalidArgument,
            CredentialError::Helper { .. } => ErrorKind::Unavailable,
        }
    }
}

/// The config key of a registry: Docker Hub's aliases become [`DOCKER_HUB_KEY`]; any other
/// registry is its `host[:port]`, with a scheme or path some tools write stripped.
pub fn server_key(registry: &str) -> String {
    let host = hostname_of(registry);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_owned(),
        _ => host.to_owned(),
    }
}

/// `https://host:port/v1/` → `host:port` (Docker's `ConvertToHostname`).
fn hostname_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// One `auths` entry as the file has it.
#[derive(Debug, Default, Deserialize, Serialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
}

impl AuthEntry {
    fn credential(&self) -> Result<Option<Credential>, String> {
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token.to_owned())));
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|e| format!("an `auth` value is not base64: {e}"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| "an `auth` value is not UTF-8 once decoded".to_owned())?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("an `auth` value does not decode to user:password")?;
            return Ok(Some(Credential::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
        match (&self.username, &self.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn from_credential(credential: &Credential) -> AuthEntry {
        match credential {
            Credential::Basic { username, password } => AuthEntry {
                auth: Some(BASE64.encode(format!("{username}:{password}"))),
                ..AuthEntry::default()
            },
            Credential::IdentityToken(token) => AuthEntry {
                identitytoken: Some(token.clone()),
                ..AuthEntry::default()
            },
        }
    }
}

/// The Docker config directory and what is read from and written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStore {
    dir: PathBuf,
    /// `PATH` for finding helpers, when not the process's own (tests put their helper first).
    helper_search_path: Option<OsString>,
}

/// Where a registry's credentials live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialLocation {
    File(PathBuf),
    Helper(String),
}

impl fmt::Display for CredentialLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialLocation::File(path) => write!(f, "{}", path.display()),
            CredentialLocation::Helper(name) => write!(f, "docker-credential-{name}"),
        }
    }
}

impl CredentialStore {
    /// `$DOCKER_CONFIG`, else `$HOME/.docker`, as the Docker CLI resolves it.
    pub fn from_env() -> CredentialStore {
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".docker"),
        };
        CredentialStore::at(dir)
    }

    pub fn at(dir: impl Into<PathBuf>) -> CredentialStore {
        CredentialStore {
            dir: dir.into(),
            helper_search_path: None,
        }
    }

    /// Looks for `docker-credential-*` programs in `search_path` instead of `$PATH`.
    pub fn with_helper_search_path(mut self, search_path: impl Into<OsString>) -> Self {
        self.helper_search_path = Some(search_path.into());
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The whole file as JSON (an empty object when it does not exist), so writing it back keeps
    /// every field kiln does not know.
    fn read_document(&self) -> Result<Map<String, Value>, CredentialError> {
        let path = self.config_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => return Err(CredentialError::Read { path, source }),
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(CredentialError::Invalid {
                path,
                message: "the top level is not an object".into(),
            }),
            Err(e) => Err(CredentialError::Invalid {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// The helper configured for `key`: `credHelpers` (matched through the aliases), else
    /// `credsStore`.
    fn helper_for(doc: &Map<String, Value>, key: &str) -> Option<String> {
        let per_registry = doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| {
                helpers
                    .iter()
                    .find(|(k, _)| server_key(k) == key)
                    .and_then(|(_, v)| v.as_str())
            });
        per_registry
            .or_else(|| doc.get("credsStore").and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    }

    /// Where credentials for `registry` are read from and written to.
    pub fn location(&self, registry: &str) -> Result<CredentialLocation, CredentialError> {
        let doc = self.read_document()?;
        Ok(match Self::helper_for(&doc, &server_key(registry)) {
            Some(helper) => CredentialLocation::Helper(helper),
            None => CredentialLocation::File(self.config_path()),
        })
    }

    /// The credentials for `registry` (any of Docker Hub's names for Docker Hub), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        let key = server_key(registry);
        let doc = self.read_document()?;
        if let Some(helper) = Self::helper_for(&doc, &key) {
            return self.helper(&helper).get(&key);
        }
        let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // An exact key first, then any key naming the same host (`https://host/v1/`, `http://host`).
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| server_key(k) == key)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else { return Ok(None) };
        let entry: AuthEntry =
            serde_json::from_value(entry.clone()).map_err(|e| CredentialError::Invalid {
                path: self.config_path(),
                message: format!("auths entry for {key}: {e}"),
            })?;
        entry
            .credential()
            .map_err(|message| CredentialError::Invalid {
                path: self.config_path(),
                message: format!("auths entry for {key}: {message}"),
            })
    }

    /// Saves `credential` for `registry` in its helper, or in config.json. Returns where it went.
    pub fn store(
        &self,
        registry: &str,
        credential: &Credential,
    ) -> Result<CredentialLocation, CredentialError> {
        let key = server_key(registry);
        let mut doc = self.read_document()?;
        let helper = Self::helper_for(&doc, &key);
        let entry = match &helper {
            Some(helper) => {
                self.helper(helper).store(&key, credential)?;
                // Docker keeps an empty entry so the file still lists the registry.
                serde_json::json!({})
            }
            None => serde_json::to_value(AuthEntry::from_credential(credential))
                .expect("an auth entry serialises"),
        };
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auths = auths.as_object_mut().expect("just made an object");
        auths.retain(|k, _| server_key(k) != key);
        auths.insert(key, entry);
        self.write_document(&doc)?;
        Ok(match helper {
            Some(helper) => CredentialLocation::Helper(helper),
            None => CredentialLocation::File(self.config_path()),
        })
    }

    /// Removes the credentials for `registry` from its helper and from config.json. Returns
    /// whether there were any.
    pub fn erase(&self, registry: &str) -> Result<bool, CredentialError> {
        let key = server_key(registry);
        let mut doc = self.read_document()?;
        let mut found = false;
        if let Some(helper) = Self::helper_for(&doc, &key) {
            found |= self.helper(&helper).erase(&key)?;
        }
        if let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) {
            let before = auths.len();
            auths.retain(|k, _| server_key(k) != key);
            if auths.len() != before {
                found = true;
                self.write_document(&doc)?;
            }
        }
        Ok(found)
    }

    fn helper<'a>(&'a self, name: &'a str) -> Helper<'a> {
        Helper {
            name,
            search_path: self.helper_search_path.as_ref(),
        }
    }

    /// Writes the file atomically (temp file in the same directory, fsync, rename) with mode
    /// 0600, since it holds secrets.
    fn write_document(&self, doc: &Map<String, Value>) -> Result<(), CredentialError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = self.config_path();
        let write_err = |source| CredentialError::Write {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(write_err)?;
        let mut text = serde_json::to_vec_pretty(doc).expect("JSON values serialise");
        text.push(b'\n');
        let mut temp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&self.dir)
            .map_err(write_err)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        temp.write_all(&text).map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        temp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

/// The JSON a helper reads on `store` and prints on `get`.
#[derive(Serialize, Deserialize)]
struct HelperCredential {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// What helpers print when they hold nothing for a server (docker-credential-helpers'
/// `credentials.NewErrCredentialsNotFound`).
const NOT_FOUND_MESSAGE: &str = "credentials not found";

struct HelperOutput {
    success: bool,
    stdout: String,
    message: String,
}

/// One `docker-credential-<name>` program.
struct Helper<'a> {
    name: &'a str,
    search_path: Option<&'a OsString>,
}

impl Helper<'_> {
    fn error(&self, action: &'static str, message: String) -> CredentialError {
        CredentialError::Helper {
            helper: self.name.to_owned(),
            action,
            message,
        }
    }

    fn run(&self, action: &'static str, input: &[u8]) -> Result<HelperOutput, CredentialError> {
        let program = format!("docker-credential-{}", self.name);
        let mut command = Command::new(&program);
        if let Some(path) = self.search_path {
            command.env("PATH", path);
        }
        let mut child = command
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(action, format!("cannot run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading makes this fail; its exit status says more.
            let _ = stdin.write_all(input);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| self.error(action, format!("waiting for {program}: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Helpers report errors on stdout, stderr is a fallback; a failing helper prints no
        // secret, so its message is safe to show.
        let message = if stdout.trim().is_empty() {
            stderr.trim().to_owned()
        } else {
            stdout.trim().to_owned()
        };
        Ok(HelperOutput {
            success: output.status.success(),
            stdout,
            message: if message.is_empty() {
                format!("exited with {}", output.status)
            } else {
                message
            },
        })
    }

    fn get(&self, key: &str) -> Result<Option<Credential>, CredentialError> {
        let out = self.run("get", key.as_bytes())?;
        if !out.success {
            if out.message.contains(NOT_FOUND_MESSAGE) {
                return Ok(None);
            }
            return Err(self.error("get", out.message));
        }
        let parsed: HelperCredential = serde_json::from_str(out.stdout.trim())
            .map_err(|e| self.error("get", format!("its output is not the helper JSON: {e}")))?;
        if parsed.username == IDENTITY_TOKEN_USERNAME {
            return Ok(Some(Credential::IdentityToken(parsed.secret)));
        }
        if parsed.username.is_empty() && parsed.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential::Basic {
            username: parsed.username,
            password: parsed.secret,
        }))
    }

    fn store(&self, key: &str, credential: &Credential) -> Result<(), CredentialError> {
        let (username, secret) = match credential {
            Credential::Basic { username, password } => (username.clone(), password.clone()),
            Credential::IdentityToken(token) => (IDENTITY_TOKEN_USERNAME.to_owned(), token.clone()),
        };
        let input = serde_json::to_vec(&HelperCredential {
            server_url: key.to_owned(),
            username,
            secret,
        })
        .expect("helper JSON serialises");
        let out = self.run("store", &input)?;
        if out.success {
            Ok(())
        } else {
            Err(self.error("store", out.message))
        }
    }

    /// Whether the helper had something to erase.
    fn erase(&self, key: &str) -> Result<bool, CredentialError> {
        let out = self.run("erase", key.as_bytes())?;
        if out.success {
            Ok(true)
        } else if out.message.contains(NOT_FOUND_MESSAGE) {
            Ok(false)
        } else {
            Err(self.error("erase", out.message))
        }
    }
}

#[cfg(test)]
mod tests;
