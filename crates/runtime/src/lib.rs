//! The container lifecycle as a library, in the roles of Docker's daemon/container code and
//! containerd's shim: create (record, root filesystem, mounts), start, attach, wait, stop,
//! kill, restart, remove, logs and health, for the CLI and the coming Engine API alike.
//!
//! The key decision: every container, foreground or detached, runs under a supervisor process
//! of its own ([`supervisor`]), started through a library entry point; callers talk to it only
//! through the store (records, locks) and its attach socket ([`attach`]). So a container
//! outlives whoever started it, any process may attach to it, and there is one state machine.
//! The lifecycle rules sit on the state type (`kiln_store::ContainerState::can_*`) and are
//! applied by [`Runtime`] over a [`Host`] seam that unit tests replace with a fake.

// A library reports through its return values; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod attach;
mod commit;
pub mod create;
mod create_options;
mod detach;
mod error;
pub mod exec;
mod files;
mod freeze;
pub mod health;
mod host;
mod inspect;
mod launch;
mod lifecycle;
pub mod links;
pub mod logfile;
mod manage;
pub mod mounts;
mod network_request;
mod networks;
pub mod ports;
mod process;
pub mod pty;
mod resources;
mod restart;
mod signals;
mod spec;
mod status;
pub mod supervisor;
mod wait;

pub use attach::{AttachRequest, AttachStream, StreamType};
pub use commit::{CommitOptions, ConfigEdit};
pub use create::{
    ContainerConfig, ContainerCreateRequest, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkChoice, NetworkingConfig,
};
pub use detach::{DetachKeys, DetachWatch};
pub use error::{Result, RuntimeError};
pub use exec::{Exec, ExecConfig, ExecRecord, exec_failure_code};
pub use files::CopyInRequest;
pub use host::{BeforeStart, Host, SystemHost};
pub use kiln_layer::{Change, ChangeKind, PathStat};
pub use lifecycle::Runtime;
pub use logfile::{LogEntry, LogFilter, LogOptions};
pub use manage::{LabelFilter, PruneFilter, Pruned, layer_bytes, parse_until};
pub use resources::{ProcessInfo, StatsSample, Top, UpdateRequest};
pub use signals::parse_signal;
pub use spec::{ContainerSpec, RestartPolicy};
pub use status::{human_since, status_text};
pub use supervisor::{maybe_run_supervisor, start_error_code};
pub use wait::WaitCondition;
