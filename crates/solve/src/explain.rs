//! Explaining cache misses (`kiln build --explain`).
//!
//! Every step's cache key inputs ([`KeyInput`]s, recorded by the cache module's `KeyBuilder`) are kept in the
//! store under a *step identity* that stays the same from build to build: the Dockerfile's path,
//! the stage (its name, else its index) and the step's position in the stage (for FROM and
//! ONBUILD triggers, which share position 1, their kind or text). Only the last build of each
//! step is kept. When a step misses, its inputs are diffed against that record and the result
//! is said in one line ([`MissCause::reason`]): the files, build args, ENV variables or other
//! inputs that changed, or that only an earlier step changed ("parent step changed", naming
//! the first step of the chain whose own inputs changed).
//!
//! Secrets never reach a key, so they are never recorded here either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_image::{DiffId, Digest};
use kiln_store::{CacheKey, Store};
use serde::{Deserialize, Serialize};

use crate::cache::{FileFingerprint, InputValue, KeyInput};
use crate::error::{Result, SolveError};
use crate::progress::{Progress, ProgressEvent, StepLabel};
use crate::stage::StageState;

#[cfg(test)]
mod tests;

/// Bumped when the record format changes; older records are ignored (as "no previous build").
const RECORD_VERSION: u32 = 1;

/// Names listed in a file diff before the rest is only counted.
const LISTED_FILES: usize = 5;

/// Values longer than this are shortened in reasons.
const SHOWN_VALUE: usize = 48;

/// The inputs of the last build of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub version: u32,
    /// The instruction as written, for reading the store by hand.
    pub text: String,
    /// The Dockerfile's canonical path: `kiln prune` drops the records of Dockerfiles that are
    /// gone (records written before it was kept lack it and are rewritten on the next build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    pub key: CacheKey,
    pub inputs: Vec<KeyInput>,
}

/// Bumped when the format of [`CopiedFiles`] changes; older ones are ignored.
const COPIED_VERSION: u32 = 1;

/// The regular files the last run of a COPY/ADD step wrote into its snapshot, kept beside the
/// step's record (`<record>.copied`) so the next run can link the unchanged ones instead of
/// copying them (`copy/reuse.rs`). Pruned with the step's record: it names the Dockerfile too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFiles {
    pub version: u32,
    pub dockerfile: String,
    /// The layer whose snapshot holds the files.
    pub diff_id: DiffId,
    /// Path relative to the snapshot → fingerprint of the source it was copied from.
    pub files: BTreeMap<String, String>,
}

/// Why a step did not come from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissCause {
    /// `--no-cache`.
    NoCache,
    /// The step's stage was named by `--no-cache-filter`.
    NoCacheFilter,
    /// No earlier build of this step is recorded.
    NoPrevious,
    /// The step's own inputs changed; one phrase per change.
    Changed(Vec<String>),
    /// Only the parent key changed: an earlier step changed. `first_cause` names the first step
    /// of the chain whose own inputs changed, with its reason, when it is known.
    ParentChanged { first_cause: Option<String> },
    /// The inputs are those of the last build, but its cache record or layer is gone.
    RecordMissing,
}

impl MissCause {
    /// A stable name for tools (the `cause` of a JSON `step.explain` event).
    pub fn kind(&self) -> &'static str {
        match self {
            MissCause::NoCache => "no-cache",
            MissCause::NoCacheFilter => "no-cache-filter",
            MissCause::NoPrevious => "no-previous-build",
            MissCause::Changed(_) => "inputs-changed",
            MissCause::ParentChanged { .. } => "parent-changed",
            MissCause::RecordMissing => "record-missing",
        }
    }

    /// The reason in words, one line.
    pub fn reason(&self) -> String {
        match self {
            MissCause::NoCache => "--no-cache".into(),
            MissCause::NoCacheFilter => "--no-cache-filter".into(),
            MissCause::NoPrevious => "no previous build of this step".into(),
            MissCause::Changed(changes) => changes.join("; "),
            MissCause::ParentChanged {
                first_cause: Some(cause),
            } => format!("parent step changed; first cause: {cause}"),
            MissCause::ParentChanged { first_cause: None } => "parent step changed".into(),
            MissCause::RecordMissing => {
                "inputs unchanged, but the cached result is gone (pruned or removed)".into()
            }
        }
    }
}

/// How a step's key was used.
#[derive(Debug, Clone)]
pub(crate) enum StepOutcome {
    /// Taken from the cache.
    Hit,
    /// Not taken from the cache; `forced` when the user asked for that.
    Miss { forced: Option<MissCause> },
    /// FROM: resolved, never cached; explained when its base changed.
    From,
}

/// One step's key, as the explainer sees it.
#[derive(Debug)]
pub(crate) struct KeyedStep<'a> {
    pub label: &'a StepLabel,
    /// What tells this step apart within its stage across builds (position, or FROM's kind).
    pub slot: String,
    pub key: &'a CacheKey,
    pub inputs: Vec<KeyInput>,
    pub outcome: StepOutcome,
}

/// A step record to write once the step has succeeded.
#[derive(Debug)]
#[must_use]
pub(crate) struct PendingRecord {
    path: PathBuf,
    record: StepRecord,
}

impl PendingRecord {
    pub fn save(self, store: &Store) -> Result<()> {
        let bytes = serde_json::to_vec(&self.record).expect("step records serialise");
        write_atomic(store, &self.path, &bytes)
    }
}

/// Records step inputs of one stage of one Dockerfile and explains that stage's misses.
pub(crate) struct Explainer<'a> {
    pub store: &'a Store,
    pub progress: Progress<'a>,
    pub dockerfile: &'a Path,
    pub stage: String,
}

impl Explainer<'_> {
    /// The Dockerfile's canonical path, so `-f Dockerfile` and `-f ./Dockerfile` are the same
    /// Dockerfile.
    fn dockerfile_path(&self) -> String {
        std::fs::canonicalize(self.dockerfile)
            .unwrap_or_else(|_| self.dockerfile.to_owned())
            .to_string_lossy()
            .into_owned()
    }

    /// Where the last build of a step of the Dockerfile at `dockerfile` is recorded.
    fn record_path(&self, dockerfile: &str, slot: &str) -> PathBuf {
        let id = step_identity(dockerfile, &self.stage, slot);
        self.store.root().join("explain").join(id.hex())
    }

    fn copied_path(&self, slot: &str) -> PathBuf {
        let mut path = self
            .record_path(&self.dockerfile_path(), slot)
            .into_os_string();
        path.push(".copied");
        path.into()
    }

    /// What the last run of the COPY/ADD step at `slot` wrote, if it is recorded.
    pub fn previous_copy(&self, slot: &str) -> Option<CopiedFiles> {
        let bytes = std::fs::read(self.copied_path(slot)).ok()?;
        serde_json::from_slice::<CopiedFiles>(&bytes)
            .ok()
            .filter(|copied| copied.version == COPIED_VERSION)
    }

    /// Records what the COPY/ADD step at `slot` wrote into the snapshot of `diff_id`.
    pub fn save_copied(
        &self,
        slot: &str,
        diff_id: &DiffId,
        files: BTreeMap<String, String>,
    ) -> Result<()> {
        let copied = CopiedFiles {
            version: COPIED_VERSION,
            dockerfile: self.dockerfile_path(),
            diff_id: diff_id.clone(),
            files,
        };
        let bytes = serde_json::to_vec(&copied).expect("copied files serialise");
        write_atomic(self.store, &self.copied_path(slot), &bytes)
    }

    /// Compares the step's inputs with its last build, reports why it missed (on a miss, and on
    /// a FROM whose base changed), keeps the stage's first cause up to date, and returns the
    /// record to write: now for hits and metadata, after the step succeeded for misses.
    pub fn step(&self, state: &mut StageState, step: KeyedStep<'_>) -> Option<PendingRecord> {
        let dockerfile = self.dockerfile_path();
        let path = self.record_path(&dockerfile, &step.slot);
        let previous = load_record(&path);
        let changes = previous
            .as_ref()
            .map(|p| input_changes(&p.inputs, &step.inputs));
        let own_cause = match &changes {
            None => Some(MissCause::NoPrevious),
            Some(c) if !c.is_empty() => Some(MissCause::Changed(c.clone())),
            Some(_) => None,
        };
        let cause = match &step.outcome {
            StepOutcome::Miss {
                forced: Some(forced),
            } => Some(forced.clone()),
            StepOutcome::Miss { forced: None } => Some(own_cause.clone().unwrap_or_else(|| {
                let parent_changed = previous
                    .as_ref()
                    .is_some_and(|p| parent_of(&p.inputs) != parent_of(&step.inputs));
                if parent_changed {
                    MissCause::ParentChanged {
                        first_cause: state.first_cause.clone(),
                    }
                } else {
                    MissCause::RecordMissing
                }
            })),
            StepOutcome::From => own_cause.clone(),
            StepOutcome::Hit => None,
        };
        if let Some(cause) = cause {
            (self.progress)(ProgressEvent::StepExplained {
                step: step.label.clone(),
                cause,
            });
        }
        if state.first_cause.is_none()
            && let Some(own) = own_cause
        {
            state.first_cause = Some(format!("{}: {}", step.label, own.reason()));
        }
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| &p.key == step.key && p.dockerfile.as_deref() == Some(&dockerfile));
        (!unchanged).then(|| PendingRecord {
            path,
            record: StepRecord {
                version: RECORD_VERSION,
                text: step.label.text.clone(),
                dockerfile: Some(dockerfile),
                key: step.key.clone(),
                inputs: step.inputs,
            },
        })
    }
}

/// The identity of a step across builds (see the module docs).
pub fn step_identity(dockerfile: &str, stage: &str, slot: &str) -> Digest {
    let mut text = String::new();
    for part in ["kiln-step-v1", dockerfile, stage, slot] {
        text.push_str(&part.len().to_string());
        text.push(':');
        text.push_str(part);
    }
    Digest::of(text.as_bytes())
}

/// A record that cannot be read counts as no record: explaining must never fail a build.
fn load_record(path: &Path) -> Option<StepRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<StepRecord>(&bytes)
        .ok()
        .filter(|r| r.version == RECORD_VERSION)
}

fn write_atomic(store: &Store, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SolveError::ReadFile { path, source }
    };
    let dir = path.parent().expect("records live in a directory");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = store.root().join("tmp");
    let mut file = tempfile::NamedTempFile::new_in(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(file.path()))?;
    file.persist(path).map_err(|e| SolveError::ReadFile {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

fn parent_of(inputs: &[KeyInput]) -> Option<&InputValue> {
    inputs.iter().find(|i| i.name == "parent").map(|i| &i.value)
}

/// The inputs of one name, in order (a name may repeat: one `mount` field per mount).
fn grouped(inputs: &[KeyInput]) -> BTreeMap<&str, Vec<&InputValue>> {
    let mut groups: BTreeMap<&str, Vec<&InputValue>> = BTreeMap::new();
    for input in inputs {
        groups.entry(&input.name).or_default().push(&input.value);
    }
    groups
}

/// What changed between two builds of a step, one phrase per change, leaving out the parent.
pub fn input_changes(old: &[KeyInput], new: &[KeyInput]) -> Vec<String> {
    let old_groups = grouped(old);
    let new_groups = grouped(new);
    // Names in the order the new key has them, then those only the old one had.
    let mut names: Vec<&str> = Vec::new();
    for input in new.iter().chain(old) {
        if !names.contains(&input.name.as_str()) {
            names.push(&input.name);
        }
    }
    let empty = Vec::new();
    let mut changes = Vec::new();
    let files_changed = old_groups.get("content-files") != new_groups.get("content-files");
    for name in names {
        let before = old_groups.get(name).unwrap_or(&empty);
        let after = new_groups.get(name).unwrap_or(&empty);
        if before == after || name == "parent" {
            continue;
        }
        // The content digest changes with the files; the file diff already says how.
        if name == "content" && files_changed && new_groups.contains_key("content-files") {
            continue;
        }
        changes.extend(describe(name, before, after, new));
    }
    changes
}

/// The single value of a group, if it is one text.
fn text<'a>(group: &[&'a InputValue]) -> Option<&'a str> {
    match group {
        [InputValue::Text(t)] => Some(t),
        _ => None,
    }
}

fn list<'a>(group: &[&'a InputValue]) -> &'a [String] {
    match group {
        [InputValue::List(l)] => l,
        _ => &[],
    }
}

fn describe(
    name: &str,
    before: &[&InputValue],
    after: &[&InputValue],
    new: &[KeyInput],
) -> Vec<String> {
    let (old, cur) = (text(before).unwrap_or(""), text(after).unwrap_or(""));
    match name {
        "content-files" => {
            let files = |g: &[&InputValue]| match g {
                [InputValue::Files(f)] => f.clone(),
                _ => Vec::new(),
            };
            describe_files(&files(before), &files(after))
                .into_iter()
                .collect()
        }
        "content" => vec!["source content changed".into()],
        "env" => describe_vars("ENV", list(before), list(after), false),
        "build-args" => describe_vars("build-arg", list(before), list(after), true),
        "value" if new.iter().any(|i| i.name == "arg") => {
            // An ARG step: its name and value.
            let arg = new
                .iter()
                .find(|i| i.name == "arg")
                .and_then(|i| text(&[&i.value]).map(str::to_owned))
                .unwrap_or_default();
            vec![format!("build-arg {arg} {} → {}", shown(old), shown(cur))]
        }
        "base" => vec![format!(
            "base image digest changed ({} → {})",
            short_digest(old),
            short_digest(cur)
        )],
        "argv" => vec!["command changed".into()],
        "instruction" => vec![format!(
            "instruction changed ({} → {})",
            shown(old),
            shown(cur)
        )],
        "kiln-cache-v1" => vec![format!("instruction kind changed ({old} → {cur})")],
        "platform" => vec![format!("platform changed ({old} → {cur})")],
        "workdir" => vec![format!("WORKDIR changed ({} → {})", shown(old), shown(cur))],
        "user" => vec![format!("USER changed ({} → {})", shown(old), shown(cur))],
        "mount" | "mounts" | "cache-dir" | "source-tree" | "source-path" | "target"
        | "readonly" | "sharing" | "mode" | "uid" | "gid" | "size" | "required" | "id" => {
            vec!["RUN --mount options changed".into()]
        }
        other => match (text(before), text(after)) {
            (Some(old), Some(cur)) => {
                vec![format!("{other} changed ({} → {})", shown(old), shown(cur))]
            }
            _ => vec![format!("{other} changed")],
        },
    }
}

/// `NAME=value` lists compared by name. Build args show their values (they are what the user
/// passed); ENV only the names, as its values can be long.
fn describe_vars(what: &str, before: &[String], after: &[String], values: bool) -> Vec<String> {
    let map = |l: &[String]| -> BTreeMap<String, String> {
        l.iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    };
    let (old, new) = (map(before), map(after));
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let phrase = match (old.get(name), new.get(name)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) if values => format!("{what} {name} {} → {}", shown(a), shown(b)),
            (Some(_), Some(_)) => format!("{what} {name} changed"),
            (None, Some(b)) if values => format!("{what} {name} set to {}", shown(b)),
            (None, Some(_)) => format!("{what} {name} added"),
            (Some(a), None) if values => format!("{what} {name} no longer set (was {})", shown(a)),
            (Some(_), None) => format!("{what} {name} removed"),
            (None, None) => continue,
        };
        out.push(phrase);
    }
    out
}

/// "1 file changed: src/main.rs; 2 files added: a, b", or `None` when the manifests agree.
pub fn describe_files(before: &[FileFingerprint], after: &[FileFingerprint]) -> Option<String> {
    let old: BTreeMap<&str, &str> = before
        .iter()
        .map(|f| (f.path.as_str(), f.fingerprint.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = after
        .iter()
        .map(|f| (f.path.as_str(), f.fingerprint.as_str()))
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|(p, fp)| old.get(*p).is_some_and(|o| o != *fp))
        .map(|(p, _)| *p)
        .collect();
    let added: Vec<&str> = new
        .keys()
        .filter(|p| !old.contains_key(*p))
        .copied()
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .copied()
        .collect();
    let parts: Vec<String> = [("changed", changed), ("added", added), ("removed", removed)]
        .into_iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(verb, paths)| {
            let noun = if paths.len() == 1 { "file" } else { "files" };
            let mut listed = paths
                .iter()
                .take(LISTED_FILES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if paths.len() > LISTED_FILES {
                listed.push_str(&format!(" and {} more", paths.len() - LISTED_FILES));
            }
            format!("{} {noun} {verb}: {listed}", paths.len())
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A value as a reason shows it: empty as `""`, long ones cut.
fn shown(value: &str) -> String {
    if value.is_empty() {
        "\"\"".into()
    } else if value.chars().count() > SHOWN_VALUE {
        let cut: String = value.chars().take(SHOWN_VALUE).collect();
        format!("{cut}…")
    } else {
        value.to_owned()
    }
}

/// `sha256:0123456789ab…`.
fn short_digest(value: &str) -> String {
    match value.parse::<Digest>() {
        Ok(d) => format!("sha256:{}…", d.short()),
        Err(_) => shown(value),
    }
}
