//! Resource limits of the sandboxed process (`--ulimit`, as Docker and BuildKit spell them).
//!
//! The init sets them on itself just before it resolves and executes the program, while it
//! still holds `CAP_SYS_RESOURCE`, so a hard limit may be raised above kiln's own; the
//! process and everything it starts inherit them. Names are Docker's (`nofile`, `nproc`, …),
//! checked when the value is parsed so a typo fails before any sandbox starts.

use rustix::process::{Resource, Rlimit};
use serde::{Deserialize, Serialize};

/// Docker's ulimit names and the resource each one sets.
const NAMES: [(&str, Resource); 15] = [
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

/// One `--ulimit NAME=SOFT[:HARD]`; `None` is unlimited (`-1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// A `--ulimit` value kiln cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --ulimit {value:?}: {why}")]
pub struct UlimitError {
    value: String,
    why: String,
}

impl UlimitError {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the value came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }
}

impl Ulimit {
    /// Parses Docker's `NAME=SOFT[:HARD]` (one number sets both; `-1` is unlimited). A soft
    /// limit above the hard one is refused, as the kernel would refuse it at run time.
    pub fn parse(value: &str) -> Result<Ulimit, UlimitError> {
        let bad = |why: String| UlimitError {
            value: value.to_owned(),
            why,
        };
        let (name, limits) = value
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".to_owned()))?;
        if !NAMES.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(bad(format!(
                "unknown limit {name:?} (one of {})",
                known.join(", ")
            )));
        }
        let number = |text: &str| -> Result<Option<u64>, UlimitError> {
            match text.trim() {
                "-1" => Ok(None),
                t => t
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| bad(format!("{t:?} is not a number (or -1 for unlimited)"))),
            }
        };
        let (soft, hard) = match limits.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => {
                let both = number(limits)?;
                (both, both)
            }
        };
        let above = match (soft, hard) {
            (None, Some(_)) => true,
            (Some(s), Some(h)) => s > h,
            _ => false,
        };
        if above {
            return Err(bad("the soft limit is above the hard limit".to_owned()));
        }
        Ok(Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        })
    }

    /// Sets this limit on the calling process (the init, before it executes the program).
    pub(crate) fn apply(&self) -> Result<(), crate::InitFailure> {
        let Some((_, resource)) = NAMES.iter().find(|(n, _)| *n == self.name) else {
            return Err(crate::InitFailure::setup(format!(
                "unknown ulimit {:?}",
                self.name
            ))(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        };
        rustix::process::setrlimit(
            *resource,
            Rlimit {
                current: self.soft,
                maximum: self.hard,
            },
        )
        .map_err(|e| crate::InitFailure::setup(format!("set ulimit {self}"))(e.into()))
    }
}

impl std::fmt::Display for Ulimit {
    /// Docker's `NAME=SOFT:HARD` form, which [`Ulimit::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        write!(f, "{}={}:{}", self.name, n(self.soft), n(self.hard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        assert_eq!(u.to_string(), "nofile=1024:2048");
        let u = Ulimit::parse("nproc=512").unwrap();
        assert_eq!((u.soft, u.hard), (Some(512), Some(512)));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        assert_eq!(Ulimit::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn refuses_bad_values_naming_them() {
        for bad in [
            "nofile",
            "files=10",
            "nofile=ten",
            "nofile=20:10",
            "nofile=-1:10",
        ] {
            let e = Ulimit::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
