//! The container record (`containers/<id>/container.json`): what a container runs, its mounts
//! and its state, as every kiln process (and later the daemon) reads it.
//!
//! The key decision: the record is versioned (`SchemaVersion`) and every change must still read
//! the records earlier kilns wrote. Version 1 (before issue 11) wrote times as strings, with `""`
//! for "not yet", and mount kinds and health status as free strings; version 2 has real times
//! (`chrono::DateTime<Utc>`, serialised as RFC 3339 with nanoseconds, as Docker writes them) and
//! enums serialised as the same lowercase words, so a version-1 record parses into the new types
//! unchanged (tests/fixtures holds records written by the version-1 code).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kiln_error::ErrorKind;
use kiln_image::HealthConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema this code writes. Records without the field are version 1.
pub const CONTAINER_SCHEMA_VERSION: u32 = 2;

fn schema_v1() -> u32 {
    1
}

/// A point in time of a container's life, in UTC.
pub type Timestamp = DateTime<Utc>;

/// One container as recorded in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    /// [`CONTAINER_SCHEMA_VERSION`] when written by this code; 1 when absent.
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    /// 64 hex digits.
    pub id: String,
    /// Unique among the store's containers, without Docker's leading `/`.
    pub name: String,
    #[serde(with = "rfc3339")]
    pub created: Timestamp,
    /// The image as the user named it.
    pub image: String,
    /// `sha256:` digest of the image config (Docker's image ID).
    pub image_id: String,
    /// The image's manifest, whose layers are the container's lower dirs.
    pub manifest: String,
    pub config: RunConfig,
    pub mounts: Vec<MountRecord>,
    /// `--rm`: removed (with its anonymous volumes) when it exits.
    pub auto_remove: bool,
    pub state: ContainerState,
}

/// What the container runs, after the image's config and the run options were combined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    pub hostname: String,
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// Signal `kiln stop` sends first (the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Docker's `StdinOnce`: the container's stdin closes when the first attached client's
    /// input ends (what `kiln run -i` in the foreground asks for).
    #[serde(default)]
    pub stdin_once: bool,
}

impl RunConfig {
    /// The command line the container runs: entrypoint then cmd.
    pub fn command(&self) -> Vec<&str> {
        self.entrypoint
            .iter()
            .chain(&self.cmd)
            .map(String::as_str)
            .collect()
    }
}

/// What a mount of a container is, in Docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// A volume, bind mount or tmpfs of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountRecord {
    #[serde(rename = "Type")]
    pub kind: MountKind,
    /// The volume's name (empty for binds and tmpfs).
    pub name: String,
    /// Host path (a volume's `_data` directory; empty for tmpfs).
    pub source: PathBuf,
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    #[default]
    Created,
    Running,
    Exited,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: ContainerStatus,
    /// Host pid of the container's PID 1 (whose namespaces `kiln exec` joins); 0 when not
    /// running.
    pub pid: u32,
    /// Host pid of the sandbox's outer init, which forwards signals to the container.
    pub sandbox_pid: u32,
    /// The process holding `running.lock` (the container's supervisor).
    pub owner_pid: u32,
    pub exit_code: i32,
    /// `None` until started / finished (version 1 wrote `""`).
    #[serde(with = "rfc3339_opt", default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(with = "rfc3339_opt", default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why the container failed to start or ended abnormally.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Frozen by `pause` (meaningful only while running; a start clears it). Absent in
    /// records written before pause existed, which read as not paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Between two runs of a container its restart policy restarts (its supervisor holds
    /// it running meanwhile): Docker's `restarting` status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
    /// How many times the restart policy restarted the container (inspect's `RestartCount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// A user stopped or killed it: no restart until the next start by a user, and an
    /// `unless-stopped` container stays stopped when a daemon starts (dockerd's
    /// `HasBeenManuallyStopped`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manually_stopped: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A lifecycle operation the container's state does not allow. Each is a
/// [`ErrorKind::Conflict`] (Docker's 409): the container exists, it is in the wrong state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("is not running")]
    NotRunning,
    #[error("is already running")]
    AlreadyRunning,
    #[error("is running: stop the container before removing or force remove (-f)")]
    RemoveRunning,
    #[error("is paused, unpause the container before exec")]
    Paused,
    #[error("is already paused")]
    AlreadyPaused,
    #[error("is restarting, wait until the container is running")]
    Restarting,
    #[error("is not paused")]
    NotPaused,
}

impl StateError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Conflict
    }
}

/// The lifecycle rules, in one place, as Docker applies them. The state must be the one read
/// from the store (which already turned a running record whose owner died into `exited`).
impl ContainerState {
    pub fn is_running(&self) -> bool {
        self.status == ContainerStatus::Running
    }

    /// Waiting to run again by its restart policy (a stale flag on a stopped record means
    /// nothing).
    pub fn is_restarting(&self) -> bool {
        self.is_running() && self.restarting
    }

    /// A created or exited container may start; a running one may not start twice.
    pub fn can_start(&self) -> Result<(), StateError> {
        match self.status {
            ContainerStatus::Running => Err(StateError::AlreadyRunning),
            ContainerStatus::Created | ContainerStatus::Exited => Ok(()),
        }
    }

    /// Signals go only to a running container (the pid of an exited one may be reused).
    pub fn can_kill(&self) -> Result<(), StateError> {
        self.require_running()
    }

    /// Exec joins the namespaces of the running container's PID 1, which must not be frozen.
    pub fn can_exec(&self) -> Result<(), StateError> {
        self.require_running()?;
        if self.paused {
            return Err(StateError::Paused);
        }
        // Between two runs there is no process whose namespaces to join.
        if self.restarting {
            return Err(StateError::Restarting);
        }
        Ok(())
    }

    /// Whether the container runs frozen.
    pub fn is_paused(&self) -> bool {
        self.is_running() && self.paused
    }

    /// Only a running container that is not paused can be paused.
    pub fn can_pause(&self) -> Result<(), StateError> {
        self.require_running()?;
        if self.paused {
            return Err(StateError::AlreadyPaused);
        }
        if self.restarting {
            return Err(StateError::Restarting);
        }
        Ok(())
    }

    /// Only a paused container can be unpaused.
    pub fn can_unpause(&self) -> Result<(), StateError> {
        self.require_running()?;
        if !self.paused {
            return Err(StateError::NotPaused);
        }
        Ok(())
    }

    /// Docker's `State.Status`: `paused` for a paused running container, else the status.
    pub fn docker_status(&self) -> &'static str {
        if self.is_paused() {
            "paused"
        } else if self.is_restarting() {
            "restarting"
        } else {
            self.status.as_str()
        }
    }

    /// Attaching needs a supervisor serving the container's streams.
    pub fn can_attach(&self) -> Result<(), StateError> {
        self.require_running()
    }

    /// A running container is removed only with `force` (which kills it first).
    pub fn can_remove(&self, force: bool) -> Result<(), StateError> {
        if self.is_running() && !force {
            Err(StateError::RemoveRunning)
        } else {
            Ok(())
        }
    }

    fn require_running(&self) -> Result<(), StateError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(StateError::NotRunning)
        }
    }
}

/// A container's health, as Docker names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// HEALTHCHECK results, as Docker keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last few probes, oldest first.
    pub log: Vec<HealthProbe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthProbe {
    #[serde(with = "rfc3339")]
    pub start: Timestamp,
    #[serde(with = "rfc3339")]
    pub end: Timestamp,
    pub exit_code: i32,
    pub output: String,
}

/// RFC 3339 with nanoseconds and `Z`, the form Docker writes (`chrono`'s own serde form
/// drops trailing zero digits, which would make otherwise equal records differ as text).
mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}")))
    }
}

/// An optional time; version 1 wrote `""` for "none".
mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(&text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written by the version-1 code (kiln cda678c) load into the new types.
    #[test]
    fn version_1_records_still_load() {
        let exited: ContainerRecord =
            serde_json::from_str(include_str!("../tests/fixtures/container-v1-exited.json"))
                .unwrap();
        assert_eq!(exited.schema_version, 1);
        assert_eq!(exited.name, "web");
        assert_eq!(
            exited.created,
            "2026-12-07T12:00:00.123456789Z"
                .parse::<Timestamp>()
                .unwrap()
        );
        let kinds: Vec<MountKind> = exited.mounts.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [MountKind::Volume, MountKind::Bind, MountKind::Tmpfs]
        );
        assert_eq!(exited.state.status, ContainerStatus::Exited);
        assert_eq!(exited.state.exit_code, 137);
        assert!(exited.state.started_at.is_some() && exited.state.finished_at.is_some());
        let health = exited.state.health.as_ref().unwrap();
        assert_eq!(health.status, HealthStatus::Healthy);
        assert_eq!(health.log[0].output, "ok\n");
        assert!(exited.config.healthcheck.is_some());
        assert!(!exited.config.stdin_once);

        let created: ContainerRecord =
            serde_json::from_str(include_str!("../tests/fixtures/container-v1-created.json"))
                .unwrap();
        assert_eq!(created.state.status, ContainerStatus::Created);
        assert_eq!(created.state.started_at, None);
        assert_eq!(created.state.finished_at, None);
        assert!(created.auto_remove);
    }

    #[test]
    fn records_round_trip_with_their_version() {
        let mut r: ContainerRecord =
            serde_json::from_str(include_str!("../tests/fixtures/container-v1-exited.json"))
                .unwrap();
        r.schema_version = CONTAINER_SCHEMA_VERSION;
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"SchemaVersion\":2"), "{text}");
        assert!(text.contains("\"Type\":\"volume\""), "{text}");
        assert!(text.contains("\"Status\":\"healthy\""), "{text}");
        assert!(
            text.contains("\"StartedAt\":\"2026-12-07T12:00:01.500000000Z\""),
            "{text}"
        );
        let back: ContainerRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn state_rules_follow_docker() {
        let state = |status| ContainerState {
            status,
            ..ContainerState::default()
        };
        let (created, running, exited) = (
            state(ContainerStatus::Created),
            state(ContainerStatus::Running),
            state(ContainerStatus::Exited),
        );
        assert_eq!(created.can_start(), Ok(()));
        assert_eq!(exited.can_start(), Ok(()));
        assert_eq!(running.can_start(), Err(StateError::AlreadyRunning));
        for s in [&created, &exited] {
            assert_eq!(s.can_kill(), Err(StateError::NotRunning));
            assert_eq!(s.can_exec(), Err(StateError::NotRunning));
            assert_eq!(s.can_attach(), Err(StateError::NotRunning));
            assert_eq!(s.can_remove(false), Ok(()));
        }
        assert_eq!(running.can_kill(), Ok(()));
        assert_eq!(running.can_exec(), Ok(()));
        assert_eq!(running.can_remove(false), Err(StateError::RemoveRunning));
        assert_eq!(running.can_remove(true), Ok(()));
        assert_eq!(StateError::NotRunning.kind(), ErrorKind::Conflict);
        // Pausing: only a running container, once; exec waits for the unpause.
        assert_eq!(exited.can_pause(), Err(StateError::NotRunning));
        assert_eq!(running.can_pause(), Ok(()));
        assert_eq!(running.can_unpause(), Err(StateError::NotPaused));
        let paused = ContainerState {
            paused: true,
            ..running.clone()
        };
        assert_eq!(paused.can_pause(), Err(StateError::AlreadyPaused));
        assert_eq!(paused.can_unpause(), Ok(()));
        assert_eq!(paused.can_exec(), Err(StateError::Paused));
        assert_eq!(paused.docker_status(), "paused");
        assert_eq!(running.docker_status(), "running");
        // A stale flag on a stopped container means nothing.
        let stale = ContainerState {
            paused: true,
            ..exited.clone()
        };
        assert!(!stale.is_paused());
        assert_eq!(stale.docker_status(), "exited");
        // Between two runs of a restart policy: running to the rules, but no exec or pause.
        let restarting = ContainerState {
            restarting: true,
            ..running.clone()
        };
        assert_eq!(restarting.docker_status(), "restarting");
        assert_eq!(restarting.can_start(), Err(StateError::AlreadyRunning));
        assert_eq!(restarting.can_exec(), Err(StateError::Restarting));
        assert_eq!(restarting.can_pause(), Err(StateError::Restarting));
        assert_eq!(restarting.can_kill(), Ok(()));
        let stale = ContainerState {
            restarting: true,
            ..exited.clone()
        };
        assert_eq!(stale.docker_status(), "exited");
    }

    #[test]
    fn a_bad_time_is_an_error_naming_it() {
        let text = include_str!("../tests/fixtures/container-v1-created.json")
            .replace("2026-12-07T12:10:00.000000007Z", "yesterday");
        let err = serde_json::from_str::<ContainerRecord>(&text).unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
    }
}
