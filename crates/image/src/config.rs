//! The image configuration: what a container starts with, plus the layer history.
//!
//! Field names follow the OCI image spec and Docker's extensions to it. Everything kiln does not
//! model is kept in `extra` so a base image's unknown fields (`Healthcheck`, `OnBuild`, `Shell`,
//! …) survive into the derived image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::DiffId;

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What a container of this image runs with (`config` in the image config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "set_map"
    )]
    pub exposed_ports: BTreeMap<String, ()>,
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "set_map"
    )]
    pub volumes: BTreeMap<String, ()>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// Docker extension: the container health check (`HEALTHCHECK`).
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    /// Docker extension: `ONBUILD` triggers, as written, run by builds `FROM` this image.
    #[serde(
        rename = "OnBuild",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub on_build: Vec<String>,
    /// Docker extension: the shell for shell-form commands (`SHELL`); absent means `/bin/sh -c`.
    #[serde(
        rename = "Shell",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub shell: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Docker's `Healthcheck` object. Durations are nanoseconds; zero fields are omitted, which
/// means "inherit / use the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", arg…]` or `["CMD-SHELL", command]`.
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The layers' uncompressed digests, bottom first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<DiffId>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry; entries with `empty_layer` produced no layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ContainerConfig {
    /// The value of `key` in `Env`, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|kv| match kv.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                _ => None,
            })
    }

    /// Sets `key=value` in `Env`, replacing an earlier value in place (Docker keeps the order of
    /// first definition).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }
}

/// `ExposedPorts` and `Volumes` are JSON objects whose values are always `{}`.
mod set_map {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde::de::Deserializer;
    use serde::ser::{SerializeMap, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, ()>, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for k in map.keys() {
            m.serialize_entry(k, &serde_json::Map::new())?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ()>, D::Error> {
        let v: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
        Ok(v.unwrap_or_default().into_keys().map(|k| (k, ())).collect())
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_canonical_json;

    #[test]
    fn docker_config_round_trips_with_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
          "config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},
                    "Labels":null,"Healthcheck":{"Test":["CMD","true"]},"OnBuild":["RUN x"]},
          "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
          "history":[{"created_by":"x","empty_layer":true}],
          "container":"abc"}"#;
        let cfg: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.config.env_get("A"), Some("1"));
        assert!(cfg.config.exposed_ports.contains_key("80/tcp"));
        assert_eq!(
            cfg.config.healthcheck.as_ref().map(|h| h.test.clone()),
            Some(vec!["CMD".to_string(), "true".to_string()])
        );
        assert_eq!(cfg.config.on_build, ["RUN x"]);
        assert!(cfg.extra.contains_key("container"));
        let out = String::from_utf8(to_canonical_json(&cfg)).unwrap();
        assert!(
            out.contains(r#""Healthcheck":{"Test":["CMD","true"]}"#),
            "{out}"
        );
        assert!(out.contains(r#""ExposedPorts":{"80/tcp":{}}"#), "{out}");
        assert!(out.contains(r#""OnBuild":["RUN x"]"#), "{out}");
        assert!(out.contains(r#""empty_layer":true"#), "{out}");
        let again: ImageConfig = serde_json::from_str(&out).unwrap();
        assert_eq!(again, cfg);
        let oci: oci_spec::image::ImageConfiguration = serde_json::from_str(&out).unwrap();
        assert_eq!(oci.rootfs().diff_ids().len(), 1);
    }

    #[test]
    fn healthcheck_omits_zero_durations() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 30_000_000_000,
            retries: 3,
            ..HealthConfig::default()
        };
        let json = String::from_utf8(to_canonical_json(&h)).unwrap();
        assert_eq!(
            json,
            r#"{"Interval":30000000000,"Retries":3,"Test":["CMD-SHELL","true"]}"#
        );
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ContainerConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        };
        c.env_set("PATH", "/usr/bin:/bin");
        c.env_set("B", "x=y");
        assert_eq!(c.env, vec!["PATH=/usr/bin:/bin", "A=1", "B=x=y"]);
        assert_eq!(c.env_get("B"), Some("x=y"));
    }
}
