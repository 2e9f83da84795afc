//! Build secrets: `kiln build --secret id=NAME[,src=PATH|,env=VAR]`, read once when the build
//! starts and then handed to `RUN --mount=type=secret` steps. Their bytes never reach a
//! layer, the image config, the history or a cache key; `Debug` does not print them either.

use std::path::PathBuf;

/// The bytes of one secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// Where a `--secret` flag says to read a secret from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses a `--secret` value the way `docker buildx build` does: CSV fields `id=`, `src=` (or
/// `source=`), `env=` and `type=file|env`. With neither `src` nor `env`, the secret comes from
/// the environment variable named like the id if it is set, else from the file of that name.
/// `env_is_set` answers whether an environment variable exists.
pub fn parse_secret_flag(
    value: &str,
    env_is_set: &dyn Fn(&str) -> bool,
) -> Result<(String, SecretSource), String> {
    let fields = super::parse::split_csv(value).map_err(|e| format!("--secret {value}: {e}"))?;
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in fields {
        let Some((key, v)) = field.split_once('=') else {
            return Err(format!(
                "--secret {value}: invalid field '{field}' must be a key=value pair"
            ));
        };
        match key.to_ascii_lowercase().as_str() {
            "type" if v == "file" || v == "env" => kind = Some(v.to_owned()),
            "type" => return Err(format!("--secret {value}: unsupported secret type {v:?}")),
            "id" => id = Some(v.to_owned()),
            "source" | "src" => src = Some(v.to_owned()),
            "env" => env = Some(v.to_owned()),
            _ => {
                return Err(format!(
                    "--secret {value}: unexpected key '{key}' in '{field}'"
                ));
            }
        }
    }
    // `type=env,src=VAR` names the variable with src.
    if kind.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let id = match (id, &src, &env) {
        (Some(id), _, _) if !id.is_empty() => id,
        // buildx falls back to the file's base name, or the variable's name.
        (_, Some(path), _) => std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("--secret {value}: no id given"))?,
        (_, None, Some(var)) => var.clone(),
        _ => return Err(format!("--secret {value}: no id given")),
    };
    let source = match (src, env) {
        (Some(_), Some(_)) => {
            return Err(format!("--secret {value}: src and env cannot both be set"));
        }
        (Some(path), None) => SecretSource::File(path.into()),
        (None, Some(var)) => SecretSource::Env(var),
        (None, None) if kind.as_deref() == Some("env") || env_is_set(&id) => {
            SecretSource::Env(id.clone())
        }
        (None, None) => SecretSource::File(id.clone().into()),
    };
    Ok((id, source))
}

/// Reads a secret from its source. `env` looks an environment variable up.
pub fn load_secret(
    id: &str,
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Secret, String> {
    match source {
        SecretSource::File(path) => std::fs::read(path)
            .map(Secret::new)
            .map_err(|e| format!("secret {id}: cannot read {}: {e}", path.display())),
        SecretSource::Env(var) => env(var)
            .map(Secret::new)
            .ok_or_else(|| format!("secret {id}: environment variable {var} is not set")),
    }
}
