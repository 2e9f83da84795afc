//! `RUN --mount`: what each mount means for a step, how it enters the step's cache key, and
//! how it is set up around the sandbox.
//!
//! A step's mounts go through three stages:
//! 1. [`parse_mount`] reads the flag (CSV, variables expanded like BuildKit does);
//! 2. `StageBuilder::plan_mounts` resolves it against the stage — relative targets against
//!    WORKDIR, the default cache id, `from=` to a stage or an image, secrets to their bytes —
//!    giving `PlannedMount`s, whose `PlannedMount::add_to_key` feeds the cache key (never
//!    a secret's bytes);
//! 3. on a cache miss, `materialize` (in `setup`) turns them into sandbox mounts, holding
//!    overlays, staging copies and cache-directory leases until the step is over.
//!
//! Nothing a mount shows ends up in the layer: every mount is put over the step's overlay root,
//! and the mount points the sandbox has to create are removed again when untouched.

mod parse;
mod secrets;
mod setup;
#[cfg(test)]
mod tests;

use std::path::Path;

use kiln_dockerfile::Instruction;
use kiln_image::{Digest, LayerRef};
use kiln_store::{CacheDirSettings, CacheSharing};

use crate::cache::KeyBuilder;
use crate::context::Source;
use crate::error::Result;
use crate::stage::{StageBuilder, StageState, join_workdir};

pub use parse::{MountError, MountType, RunMount, parse_mount};
pub use secrets::{Secret, SecretSource, load_secret, parse_secret_flag};
pub(crate) use setup::ActiveMounts;

/// Where a secret file is mounted when the mount names no target.
const SECRETS_DIR: &str = "/run/secrets";
/// Default permission bits of a secret file (BuildKit's).
const SECRET_MODE: u32 = 0o400;
/// Where SSH agent sockets go when the mount names no target (BuildKit's).
const SSH_DIR: &str = "/run/buildkit";
/// Default permission bits of an SSH agent socket (BuildKit's).
const SSH_MODE: u32 = 0o600;

/// A mount resolved against its stage.
#[derive(Debug)]
pub(crate) enum PlannedMount {
    Cache {
        target: String,
        /// The mount's `id` (its target when it named none).
        id: String,
        /// Names the persistent directory: a hash of the id and what the directory starts as.
        dir_key: Digest,
        sharing: CacheSharing,
        settings: CacheDirSettings,
        readonly: bool,
        /// `from=`: the new directory starts as a copy of this.
        seed: Option<TreeSource>,
    },
    Bind {
        target: String,
        source: TreeSource,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    SecretFile {
        target: String,
        id: String,
        /// `None`: an optional secret that was not given; nothing is mounted.
        secret: Option<Secret>,
        mode: u32,
        uid: u32,
        gid: u32,
        required: bool,
    },
    SecretEnv {
        name: String,
        id: String,
        secret: Option<Secret>,
        required: bool,
    },
    /// An SSH agent socket (`type=ssh`); `SSH_AUTH_SOCK` names the step's first one.
    Ssh {
        /// `None` until `plan_mounts` gives it BuildKit's `/run/buildkit/ssh_agent.N`.
        target: Option<String>,
        id: String,
        /// The agent to relay to; `None`: an optional agent that was not given.
        agent: Option<std::path::PathBuf>,
        mode: u32,
        uid: u32,
        gid: u32,
        required: bool,
    },
}

/// Where a bind mount (or a cache seed) takes its files from.
#[derive(Debug, Clone)]
pub(crate) enum TreeSource {
    /// A file or directory of the build context, already resolved (and `.dockerignore`
    /// filtered), with the hash of its content.
    Context {
        path: String,
        source: Box<Source>,
        content: Digest,
    },
    /// A path inside another stage's or an image's filesystem.
    Layers {
        /// What names the filesystem in the cache key: the stage's cache key or the image's
        /// manifest digest (both change whenever its content does).
        key: String,
        layers: Vec<LayerRef>,
        path: String,
    },
}

impl TreeSource {
    fn add_to_key(&self, key: &mut KeyBuilder) {
        match self {
            TreeSource::Context { path, content, .. } => {
                key.field("source-tree", "context")
                    .field("source-path", path)
                    .field("source-content", &content.to_string());
            }
            TreeSource::Layers {
                key: tree, path, ..
            } => {
                key.field("source-tree", tree).field("source-path", path);
            }
        }
    }
}

impl PlannedMount {
    /// Feeds everything that can change the step's result into its key. A secret contributes
    /// its id and where it appears, never its bytes.
    pub(crate) fn add_to_key(&self, key: &mut KeyBuilder) {
        match self {
            PlannedMount::Cache {
                target,
                dir_key,
                sharing,
                readonly,
                ..
            } => {
                key.field("mount", "cache")
                    .field("target", target)
                    .field("cache-dir", &dir_key.to_string())
                    .field("sharing", &format!("{sharing:?}"))
                    .field("readonly", bool_str(*readonly));
            }
            PlannedMount::Bind {
                target,
                source,
                readonly,
            } => {
                key.field("mount", "bind").field("target", target);
                source.add_to_key(key);
                key.field("readonly", bool_str(*readonly));
            }
            PlannedMount::Tmpfs { target, size } => {
                key.field("mount", "tmpfs")
                    .field("target", target)
                    .field("size", &size.map(|s| s.to_string()).unwrap_or_default());
            }
            PlannedMount::SecretFile {
                target,
                id,
                mode,
                uid,
                gid,
                required,
                ..
            } => {
                key.field("mount", "secret")
                    .field("id", id)
                    .field("target", target)
                    .field("mode", &format!("{mode:o}"))
                    .field("uid", &uid.to_string())
                    .field("gid", &gid.to_string())
                    .field("required", bool_str(*required));
            }
            PlannedMount::SecretEnv {
                name, id, required, ..
            } => {
                key.field("mount", "secret-env")
                    .field("id", id)
                    .field("env", name)
                    .field("required", bool_str(*required));
            }
            // As a secret: where the socket appears, never which agent answers.
            PlannedMount::Ssh {
                target,
                id,
                mode,
                uid,
                gid,
                required,
                ..
            } => {
                key.field("mount", "ssh")
                    .field("id", id)
                    .field("target", target.as_deref().unwrap_or_default())
                    .field("mode", &format!("{mode:o}"))
                    .field("uid", &uid.to_string())
                    .field("gid", &gid.to_string())
                    .field("required", bool_str(*required));
            }
        }
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

impl StageBuilder<'_> {
    /// Parses and resolves a RUN step's `--mount` flags.
    pub(crate) fn plan_mounts(
        &self,
        state: &StageState,
        ins: &Instruction,
        raw_mounts: &[String],
    ) -> Result<Vec<PlannedMount>> {
        let expand = |word: &str| {
            kiln_dockerfile::expand_word(word, &|n: &str| state.lookup(n), self.plan.escape)
                .map_err(|e| e.to_string())
        };
        let mut planned = Vec::new();
        for raw in raw_mounts {
            let mount = parse_mount(raw, &expand).map_err(|e| self.fail(ins, e.to_string()))?;
            planned.extend(self.plan_mount(state, ins, raw, mount)?);
        }
        let mut ssh = 0;
        for mount in &mut planned {
            if let PlannedMount::Ssh { target, .. } = mount {
                target.get_or_insert_with(|| format!("{SSH_DIR}/ssh_agent.{ssh}"));
                ssh += 1;
            }
        }
        Ok(planned)
    }

    fn plan_mount(
        &self,
        state: &StageState,
        ins: &Instruction,
        raw: &str,
        m: RunMount,
    ) -> Result<Vec<PlannedMount>> {
        let fail = |reason: String| self.fail(ins, format!("--mount={raw}: {reason}"));
        let workdir = state.config.config.working_dir.as_deref();
        let absolute = |target: &str| join_workdir(workdir, target);
        let target = m.target.as_deref().map(absolute);
        if target.as_deref() == Some("/") {
            return Err(fail("invalid mount target \"/\"".into()));
        }
        let source_path = m.source.clone().unwrap_or_default();
        Ok(match m.kind {
            MountType::Bind => vec![PlannedMount::Bind {
                target: target.expect("validated: bind mounts have a target"),
                source: self.tree_source(m.from.as_deref(), &source_path, &fail)?,
                readonly: m.readonly,
            }],
            MountType::Cache => {
                let target = target.expect("validated: cache mounts have a target");
                let id =
                    m.id.clone()
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| target.clone());
                let settings = CacheDirSettings {
                    mode: m.mode.unwrap_or(0o755),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                };
                let seed = m
                    .from
                    .as_deref()
                    .map(|from| self.tree_source(Some(from), &source_path, &fail))
                    .transpose()?;
                let mut dir_key = KeyBuilder::new("cache-mount", None);
                dir_key
                    .field("id", &id)
                    .field("mode", &format!("{:o}", settings.mode))
                    .field("uid", &settings.uid.to_string())
                    .field("gid", &settings.gid.to_string());
                if let Some(seed) = &seed {
                    seed.add_to_key(&mut dir_key);
                }
                vec![PlannedMount::Cache {
                    target,
                    id,
                    dir_key: dir_key.finish_hash(),
                    sharing: m.sharing.unwrap_or_default(),
                    settings,
                    readonly: m.readonly,
                    seed,
                }]
            }
            MountType::Tmpfs => vec![PlannedMount::Tmpfs {
                target: target.expect("validated: tmpfs mounts have a target"),
                size: m.size,
            }],
            MountType::Secret => self.plan_secret(&m, target, &fail)?,
            MountType::Ssh => {
                let id =
                    m.id.clone()
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| "default".to_owned());
                let agent = self.req.settings.ssh.get(&id).cloned();
                if agent.is_none() && m.required {
                    return Err(fail(format!(
                        "ssh agent {id} is required but was not given (kiln build --ssh {id})"
                    )));
                }
                vec![PlannedMount::Ssh {
                    target,
                    id,
                    agent,
                    mode: m.mode.unwrap_or(SSH_MODE),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    required: m.required,
                }]
            }
        })
    }

    /// BuildKit's rules: the id is `id=` (or `source=`), else the target's base name; the file
    /// goes to `target=`, else `/run/secrets/<id>`; with `env=` and no target only the variable
    /// is set.
    fn plan_secret(
        &self,
        m: &RunMount,
        target: Option<String>,
        fail: &dyn Fn(String) -> crate::SolveError,
    ) -> Result<Vec<PlannedMount>> {
        let id = match (m.id.as_deref().or(m.source.as_deref()), &target) {
            (Some(id), _) if !id.is_empty() => id.to_owned(),
            (_, Some(target)) => Path::new(target)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| fail("a secret mount needs an id".into()))?,
            _ => return Err(fail("a secret mount needs an id or a target".into())),
        };
        let secret = self.req.secrets.get(&id).cloned();
        if secret.is_none() && m.required {
            return Err(fail(format!(
                "secret {id} is required but was not given (kiln build --secret id={id},src=FILE)"
            )));
        }
        let mut planned = Vec::new();
        if let Some(name) = m.env.as_deref() {
            let name = if name.is_empty() { id.as_str() } else { name };
            planned.push(PlannedMount::SecretEnv {
                name: name.to_owned(),
                id: id.clone(),
                secret: secret.clone(),
                required: m.required,
            });
        }
        if m.env.is_none() || target.is_some() {
            let base = Path::new(&id)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| id.clone());
            planned.push(PlannedMount::SecretFile {
                target: target.unwrap_or_else(|| format!("{SECRETS_DIR}/{base}")),
                id,
                secret,
                mode: m.mode.unwrap_or(SECRET_MODE),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                required: m.required,
            });
        }
        Ok(planned)
    }

    /// Resolves `from=` (a stage, else an image; none means the build context) and the path in
    /// it. Context paths are resolved now, so that their content can be hashed for the key.
    fn tree_source(
        &self,
        from: Option<&str>,
        path: &str,
        fail: &dyn Fn(String) -> crate::SolveError,
    ) -> Result<TreeSource> {
        let path = crate::dockerignore::go_clean(&format!("/{path}"));
        let Some(from) = from.filter(|f| !f.is_empty()) else {
            let source = setup::resolve_context_source(self.context, &path)
                .map_err(|e| fail(format!("source {path}: {e}")))?;
            let content = self
                .context
                .hash_sources(std::slice::from_ref(&source))
                .map_err(|e| fail(e.to_string()))?;
            return Ok(TreeSource::Context {
                path,
                source: Box::new(source),
                content,
            });
        };
        if let Some(stage) = self.earlier_stage(from) {
            let built = self
                .built
                .get(&stage)
                .ok_or_else(|| fail(format!("stage {from} is not built before this step")))?;
            return Ok(TreeSource::Layers {
                key: built.key.to_string(),
                layers: built.layer_refs().collect(),
                path,
            });
        }
        let image = self
            .resolve_from_image(from)
            .map_err(|e| fail(format!("from={from}: {e}")))?;
        Ok(TreeSource::Layers {
            key: image.manifest_digest.to_string(),
            layers: image.layers().collect(),
            path,
        })
    }

    /// The stage `from=` names: an index or a name (case-insensitive) of an earlier stage.
    fn earlier_stage(&self, from: &str) -> Option<usize> {
        let current = self.stage.index;
        if let Ok(index) = from.parse::<usize>() {
            return (index < current).then_some(index);
        }
        self.plan
            .stages
            .iter()
            .take(current)
            .rev()
            .find(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(from))
            })
            .map(|s| s.index)
    }
}
