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
    fn arm64_without_variant_matches_v8() {
        let host: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(host.matches(&Platform::new("linux", "arm64")));
        assert!(!host.matches(&Platform::new("linux", "amd64")));
    }
}
