//! Platforms (`os/arch[/variant]`) and the host's own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OCI platform as it appears in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
            os_version: None,
        }
    }

    /// The platform this binary was compiled for, in Go's (and so OCI's) names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let mut p = Platform::new("linux", arch);
        if arch == "arm64" {
            p.variant = Some("v8".into());
        }
        p
    }

    /// True when an image built for `other` runs as `self`. `arm64` images usually omit the `v8`
    /// variant, so an absent variant on either side is a wildcard.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl Platform {
    /// A `--platform` value: one platform or a comma-separated list (`linux/amd64,linux/arm64`),
    /// each normalised as containerd does (`x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8`
    /// → `arm64`), each OS and architecture one Go knows, duplicates dropped. The error names
    /// the entry at fault and what is known.
    pub fn parse_list(text: &str) -> Result<Vec<Platform>, String> {
        let mut out: Vec<Platform> = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("invalid platform list {text:?}: an empty entry"));
            }
            let mut p: Platform = entry.to_ascii_lowercase().parse()?;
            p.architecture = match p.architecture.as_str() {
                "x86_64" | "x86-64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                "i386" | "i686" => "386".into(),
                _ => p.architecture,
            };
            if p.architecture == "arm64" && p.variant.as_deref() == Some("v8") {
                p.variant = None;
            }
            if !KNOWN_OS.contains(&p.os.as_str()) {
                return Err(format!(
                    "unknown platform {entry:?}: operating system {:?} is not one of {}",
                    p.os,
                    KNOWN_OS.join(", ")
                ));
            }
            if !KNOWN_ARCH.contains(&p.architecture.as_str()) {
                return Err(format!(
                    "unknown platform {entry:?}: architecture {:?} is not one of {}",
                    p.architecture,
                    KNOWN_ARCH.join(", ")
                ));
            }
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Operating systems and architectures by Go's names (`GOOS`, `GOARCH`), which OCI uses.
const KNOWN_OS: &[&str] = &[
    "linux",
    "windows",
    "darwin",
    "freebsd",
    "netbsd",
    "openbsd",
    "solaris",
    "illumos",
    "aix",
    "android",
    "dragonfly",
    "plan9",
    "js",
    "wasip1",
];
const KNOWN_ARCH: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64", "wasm",
];

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Names are lower-case words (`linux`, `arm64`, `v7`); anything else, such as a
        // comma-separated list of platforms, is not one platform.
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-');
        if let Some(bad) = s.chars().find(|c| !valid_char(*c)) {
            return Err(format!(
                "invalid platform {s:?}: unexpected {bad:?}; expected os/arch[/variant]"
            ));
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch)),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    variant: Some((*variant).into()),
                    ..Platform::new(os, arch)
                })
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("linux/amd64,linux/arm64".parse::<Platform>().is_err());
        assert!("linux/amd 64".parse::<Platform>().is_err());
    }

    #[test]
    fn platform_lists_are_normalised_and_checked() {
        let list =
            Platform::parse_list("linux/amd64, linux/aarch64,linux/arm64/v8,linux/arm/v7").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        let err = Platform::parse_list("linux/amd64,linux/sparc9").unwrap_err();
        assert!(
            err.starts_with("unknown platform \"linux/sparc9\": architecture"),
            "{err}"
        );
        let err = Platform::parse_list("beos/amd64").unwrap_err();
        assert!(err.contains("operating system \"beos\""), "{err}");
        assert!(Platform::parse_list("linux/amd64,").is_err());
        assert!(Platform::parse_list("linux").is_err());
    }

    #[test]
    fn arm64_without_variant_matches_v8() {
        let host: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(host.matches(&Platform::new("linux", "arm64")));
        assert!(!host.matches(&Platform::new("linux", "amd64")));
    }
}
