//! The attack catalogue: hostile Dockerfiles, contexts, archives and `kiln run` invocations
//! modelled on real escapes from image builders and runtimes (see docs/security.md, which maps
//! each case to what stops it). Every case checks the host afterwards with [`HostWatch`]: a
//! canary outside the store untouched, the kiln binary unchanged, no process of the attempt
//! left, no mount left; and that kiln either failed with a clear error or contained the try.

mod files;
mod runtime;
mod syscalls;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::harness::{Kiln, assert_success, stderr, stdout};

/// What the host looked like before an attack, to compare with afterwards.
pub struct HostWatch {
    _dir: tempfile::TempDir,
    /// A file outside the store that attacks aim at.
    pub canary: PathBuf,
    canary_meta: (u64, i64, i64, u64),
    kiln_binary: (u64, i64, i64, u64),
    mounts: String,
    sysrq: Option<String>,
    core_pattern: Option<String>,
}

const CANARY: &str = "precious host data\n";

/// The marker of an attack that starts no background process.
pub const NO_MARKER: &str = "kiln-security-no-marker";

fn fingerprint(path: &Path) -> (u64, i64, i64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.len(), m.mtime(), m.ctime(), m.nlink())
}

impl HostWatch {
    pub fn new() -> HostWatch {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, CANARY).unwrap();
        HostWatch {
            canary_meta: fingerprint(&canary),
            kiln_binary: fingerprint(Path::new(env!("CARGO_BIN_EXE_kiln"))),
            canary,
            _dir: dir,
            mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            sysrq: std::fs::read_to_string("/proc/sys/kernel/sysrq").ok(),
            core_pattern: std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok(),
        }
    }

    /// Asserts the host is as it was, and that no process whose command line holds `marker`
    /// (a unique argument the attack's processes carry, [`NO_MARKER`] when there is none)
    /// survived.
    pub fn check(&self, k: &Kiln, marker: &str) {
        assert_eq!(
            std::fs::read_to_string(&self.canary).unwrap(),
            CANARY,
            "canary content"
        );
        assert_eq!(
            fingerprint(&self.canary),
            self.canary_meta,
            "canary metadata"
        );
        assert_eq!(
            fingerprint(Path::new(env!("CARGO_BIN_EXE_kiln"))),
            self.kiln_binary,
            "the kiln binary was modified"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/sysrq").ok(),
            self.sysrq
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok(),
            self.core_pattern
        );
        let store = k.root.path().to_string_lossy().into_owned();
        let now = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let new_mounts: Vec<&str> = now
            .lines()
            .filter(|l| !self.mounts.contains(*l))
            .filter(|l| l.contains(&store) || l.contains("kiln-sandbox"))
            .collect();
        assert!(new_mounts.is_empty(), "mounts left: {new_mounts:?}");
        let left = processes_with(marker);
        assert!(left.is_empty(), "processes left: {left:?}");
    }
}

/// Pids of processes whose command line contains `marker` as one argument.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Builds `dockerfile` (which starts `ARG BASE` / `FROM ${BASE}`) in a context holding
/// `files`, with `extra` flags.
pub fn build_in(
    k: &Kiln,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &[u8])],
    extra: &[&str],
) -> Output {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let path = ctx.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if name.ends_with(".bin") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    build_context(k, tag, ctx.path(), extra)
}

pub fn build_context(k: &Kiln, tag: &str, ctx: &Path, extra: &[&str]) -> Output {
    let base = format!("BASE={}", k.base);
    let mut args = vec!["build", "--progress=plain", "-t", tag, "--build-arg", &base];
    args.extend_from_slice(extra);
    let dir = ctx.to_str().unwrap().to_owned();
    args.push(&dir);
    k.cmd(&args)
}

/// The output of `cmd` run in image `tag`.
pub fn run_in(k: &Kiln, tag: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", tag];
    args.extend_from_slice(cmd);
    k.ok(&args)
}

pub fn assert_failed_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure\n--- stdout\n{}\n--- stderr\n{err}",
        stdout(out)
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
}

pub fn assert_built(out: &Output) {
    assert_success(out, &["build"]);
}
