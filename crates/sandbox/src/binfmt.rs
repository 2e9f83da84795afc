//! binfmt_misc handlers: how the kernel runs a binary of another CPU architecture (qemu-user).
//!
//! A RUN for a foreign architecture executes its binaries in the sandbox's new root, where the
//! interpreter a handler names (`/usr/libexec/qemu-binfmt/aarch64-binfmt-P`) does not exist.
//! The key decision: kiln relies on the handler's `F` ("fix binary") flag, with which the kernel
//! opens the interpreter once, when the handler is registered, and uses that open file in every
//! mount namespace; kiln never copies or bind-mounts an emulator into a build's root. So a
//! handler without `F` is as good as none, and this module says so. Handlers are global to the
//! kernel: kiln only reads them, and registers Debian's `qemu-user-static` ones (with `F`) only
//! when asked to (`kiln system binfmt --install`).

use std::path::{Path, PathBuf};

use kiln_error::ErrorKind;

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's `qemu-user-static` installs its handler definitions (systemd's binfmt.d).
pub const DEBIAN_BINFMT_D: &str = "/usr/lib/binfmt.d";
/// What to run to get the handlers `install` registers.
pub const INSTALL_HINT: &str =
    "apt-get install qemu-user-static, then kiln system binfmt --install";

/// One registered handler, as `/proc/sys/fs/binfmt_misc/<name>` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    /// The flag letters (`POCF`).
    pub flags: String,
}

impl Handler {
    /// Whether the kernel opened the interpreter at registration (`F`), so it works inside a
    /// sandbox's root too.
    pub fn fixed_binary(&self) -> bool {
        self.flags.contains('F')
    }

    fn parse(name: &str, text: &str) -> Handler {
        let mut handler = Handler {
            name: name.to_owned(),
            enabled: text.lines().next() == Some("enabled"),
            interpreter: String::new(),
            flags: String::new(),
        };
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("interpreter ") {
                handler.interpreter = path.trim().to_owned();
            } else if let Some(flags) = line.strip_prefix("flags:") {
                handler.flags = flags.trim().to_owned();
            }
        }
        handler
    }
}

/// What binfmt_misc offers for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emulation {
    /// An enabled handler with `F`.
    Ready(Handler),
    /// An enabled handler without `F`: its interpreter is not reachable inside a sandbox.
    NotFixed(Handler),
    /// No enabled handler (or binfmt_misc is not mounted).
    Missing,
}

/// The handler for the qemu architecture `qemu_arch` (`aarch64`, `arm`, `riscv64`) in `dir`:
/// qemu's usual entry name (`qemu-aarch64`) or the bare one some distributions register.
pub fn emulation_in(dir: &Path, qemu_arch: &str) -> Emulation {
    let found = [format!("qemu-{qemu_arch}"), qemu_arch.to_owned()]
        .iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).ok()?;
            Some(Handler::parse(name, &text))
        })
        .find(|h| h.enabled);
    match found {
        Some(h) if h.fixed_binary() => Emulation::Ready(h),
        Some(h) => Emulation::NotFixed(h),
        None => Emulation::Missing,
    }
}

/// The state of binfmt_misc: whether it is mounted, and every registered handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub mounted: bool,
    /// `/proc/sys/fs/binfmt_misc/status`: handlers are applied at all.
    pub enabled: bool,
    pub handlers: Vec<Handler>,
}

/// Reads the state of binfmt_misc at `dir` (normally [`BINFMT_MISC`]).
pub fn status(dir: &Path) -> Result<Status, BinfmtError> {
    if !dir.join("register").exists() {
        return Ok(Status {
            mounted: false,
            enabled: false,
            handlers: Vec::new(),
        });
    }
    let enabled = std::fs::read_to_string(dir.join("status"))
        .map_err(BinfmtError::io(dir.join("status")))?
        .trim()
        == "enabled";
    let mut handlers = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(BinfmtError::io(dir.to_owned()))?;
    for entry in entries {
        let entry = entry.map_err(BinfmtError::io(dir.to_owned()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        // A handler removed meanwhile is simply not listed.
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            handlers.push(Handler::parse(&name, &text));
        }
    }
    handlers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Status {
        mounted: true,
        enabled,
        handlers,
    })
}

/// What `install` did with one definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Registered {
        name: String,
        flags: String,
    },
    /// Replaced: it was registered without `F`.
    Reregistered {
        name: String,
        flags: String,
    },
    AlreadyReady {
        name: String,
    },
    /// The definition's interpreter is not installed.
    NoInterpreter {
        name: String,
        interpreter: String,
    },
}

/// Registers every `qemu-*.conf` definition in `conf_dir` (Debian's `qemu-user-static`) with
/// binfmt_misc at `dir`, adding the `F` flag; a handler already registered without `F` is
/// removed and registered again. Needs root (the kernel's, not a user namespace's).
pub fn install(dir: &Path, conf_dir: &Path) -> Result<Vec<Installed>, BinfmtError> {
    let register = dir.join("register");
    if !register.exists() {
        return Err(BinfmtError::NotMounted {
            dir: dir.to_owned(),
        });
    }
    let mut confs: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BinfmtError::NoDefinitions {
                dir: conf_dir.to_owned(),
            },
            _ => BinfmtError::Io {
                path: conf_dir.to_owned(),
                source,
            },
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("qemu-") && n.ends_with(".conf"))
        })
        .collect();
    confs.sort();
    if confs.is_empty() {
        return Err(BinfmtError::NoDefinitions {
            dir: conf_dir.to_owned(),
        });
    }
    let mut done = Vec::new();
    for conf in confs {
        let text = std::fs::read_to_string(&conf).map_err(BinfmtError::io(conf.clone()))?;
        let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
        else {
            continue;
        };
        let def = Definition::parse(line)
            .ok_or_else(|| BinfmtError::BadDefinition { path: conf.clone() })?;
        if !Path::new(&def.interpreter).exists() {
            done.push(Installed::NoInterpreter {
                name: def.name,
                interpreter: def.interpreter,
            });
            continue;
        }
        let entry = dir.join(&def.name);
        let mut replaced = false;
        if let Ok(existing) = std::fs::read_to_string(&entry) {
            let existing = Handler::parse(&def.name, &existing);
            if existing.enabled && existing.fixed_binary() {
                done.push(Installed::AlreadyReady { name: def.name });
                continue;
            }
            // Writing -1 to an entry removes it.
            std::fs::write(&entry, "-1").map_err(BinfmtError::io(entry.clone()))?;
            replaced = true;
        }
        let flags = def.flags_with_fix();
        std::fs::write(&register, def.line_with_flags(&flags))
            .map_err(BinfmtError::io(register.clone()))?;
        done.push(match replaced {
            true => Installed::Reregistered {
                name: def.name,
                flags,
            },
            false => Installed::Registered {
                name: def.name,
                flags,
            },
        });
    }
    Ok(done)
}

/// A binfmt.d line: `:name:type:offset:magic:mask:interpreter:flags`.
struct Definition {
    name: String,
    /// Every field but the flags, as written (the magic and mask keep their `\x` escapes,
    /// which the kernel decodes).
    fields: Vec<String>,
    interpreter: String,
    flags: String,
}

impl Definition {
    fn parse(line: &str) -> Option<Definition> {
        let delimiter = line.chars().next()?;
        let fields: Vec<&str> = line[delimiter.len_utf8()..].split(delimiter).collect();
        let [name, kind, offset, magic, mask, interpreter, flags] = fields.as_slice() else {
            return None;
        };
        Some(Definition {
            name: (*name).to_owned(),
            fields: [name, kind, offset, magic, mask, interpreter]
                .iter()
                .map(|f| (**f).to_owned())
                .collect(),
            interpreter: (*interpreter).to_owned(),
            flags: (*flags).to_owned(),
        })
    }

    fn flags_with_fix(&self) -> String {
        let mut flags = self.flags.clone();
        if !flags.contains('F') {
            flags.push('F');
        }
        flags
    }

    fn line_with_flags(&self, flags: &str) -> String {
        format!(":{}:{flags}", self.fields.join(":"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "binfmt_misc is not mounted at {}: mount -t binfmt_misc binfmt_misc {}",
        dir.display(),
        dir.display()
    )]
    NotMounted { dir: PathBuf },
    #[error(
        "no qemu handler definitions in {} (Debian/Ubuntu: apt-get install qemu-user-static)",
        dir.display()
    )]
    NoDefinitions { dir: PathBuf },
    #[error("{}: not a binfmt_misc definition (:name:type:offset:magic:mask:interpreter:flags)", path.display())]
    BadDefinition { path: PathBuf },
}

impl BinfmtError {
    fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> BinfmtError {
        move |source| BinfmtError::Io { path, source }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            BinfmtError::Io { source, .. } => ErrorKind::of_io(source),
            BinfmtError::NotMounted { .. } | BinfmtError::NoDefinitions { .. } => {
                ErrorKind::Unavailable
            }
            BinfmtError::BadDefinition { .. } => ErrorKind::InvalidArgument,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
                           flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n";

    #[test]
    fn a_handler_counts_only_with_the_fix_binary_flag() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(emulation_in(dir.path(), "aarch64"), Emulation::Missing);
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            AARCH64.replace("POCF", "POC"),
        )
        .unwrap();
        assert!(matches!(
            emulation_in(dir.path(), "aarch64"),
            Emulation::NotFixed(h) if h.flags == "POC"
        ));
        std::fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        match emulation_in(dir.path(), "aarch64") {
            Emulation::Ready(h) => {
                assert_eq!(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
                assert!(h.fixed_binary());
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            AARCH64.replace("enabled", "disabled"),
        )
        .unwrap();
        assert_eq!(emulation_in(dir.path(), "aarch64"), Emulation::Missing);
    }

    #[test]
    fn status_lists_handlers_and_says_when_unmounted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!status(dir.path()).unwrap().mounted);
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        let s = status(dir.path()).unwrap();
        assert!(s.mounted && s.enabled);
        assert_eq!(s.handlers.len(), 1);
        assert_eq!(s.handlers[0].name, "qemu-aarch64");
    }

    #[test]
    fn install_adds_the_fix_binary_flag_to_each_definition() {
        let binfmt = tempfile::tempdir().unwrap();
        let confs = tempfile::tempdir().unwrap();
        assert!(matches!(
            install(binfmt.path(), confs.path()),
            Err(BinfmtError::NotMounted { .. })
        ));
        // A stand-in for the kernel's files: `register` receives the line written last.
        std::fs::write(binfmt.path().join("register"), "").unwrap();
        assert!(matches!(
            install(binfmt.path(), confs.path()),
            Err(BinfmtError::NoDefinitions { .. })
        ));
        let interpreter = confs.path().join("qemu-aarch64-static");
        std::fs::write(&interpreter, "").unwrap();
        let line = format!(
            ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46:\\xff\\xff\\xff\\xff:{}:OP",
            interpreter.display()
        );
        std::fs::write(
            confs.path().join("qemu-aarch64.conf"),
            format!("# x\n{line}\n"),
        )
        .unwrap();
        std::fs::write(
            confs.path().join("qemu-riscv64.conf"),
            ":qemu-riscv64:M::\\x7f:\\xff:/nonexistent/qemu-riscv64:OCF\n",
        )
        .unwrap();
        std::fs::write(confs.path().join("python3.conf"), "not ours\n").unwrap();
        let done = install(binfmt.path(), confs.path()).unwrap();
        assert_eq!(
            done,
            vec![
                Installed::Registered {
                    name: "qemu-aarch64".into(),
                    flags: "OPF".into()
                },
                Installed::NoInterpreter {
                    name: "qemu-riscv64".into(),
                    interpreter: "/nonexistent/qemu-riscv64".into()
                },
            ]
        );
        assert_eq!(
            std::fs::read_to_string(binfmt.path().join("register")).unwrap(),
            format!("{line}F")
        );
        std::fs::write(binfmt.path().join("qemu-aarch64"), AARCH64).unwrap();
        let again = install(binfmt.path(), confs.path()).unwrap();
        assert_eq!(
            again[0],
            Installed::AlreadyReady {
                name: "qemu-aarch64".into()
            }
        );
    }
}
