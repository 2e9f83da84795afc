//! The attestation flags, as buildx spells them: `--sbom=true|false|generator=…`,
//! `--provenance=true|false|mode=min|max|min|max[,version=v0.2|v1]`, and
//! `--attest type=sbom|provenance,…`.
//!
//! The defaults follow `docker buildx build`: buildx asks for a `mode=min` provenance on
//! every build, and BuildKit attaches it where an image index goes out — a push and the
//! OCI exporter — while the docker exporter (the classic image store) and the local and tar
//! exporters leave it out. kiln's store plays the classic store's part, so a plain
//! `kiln build -t` stores a bare image manifest unless an attestation is asked for explicitly;
//! `--push` and `--output type=oci` get the default provenance. No SBOM unless asked for.

use crate::error::{AttestError, Result};
use crate::provenance::{Mode, Provenance, Version};

/// What the flags asked for; `None` where they said nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestFlags {
    pub sbom: Option<bool>,
    pub provenance: Option<Option<Provenance>>,
}

/// What a build attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attestations {
    pub sbom: bool,
    pub provenance: Option<Provenance>,
}

impl Attestations {
    pub fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

impl AttestFlags {
    /// `--sbom VALUE`.
    pub fn sbom_flag(&mut self, value: &str) -> Result<()> {
        let on = match value {
            "true" | "1" => true,
            "false" | "0" => false,
            // `generator=IMAGE` picks BuildKit's scanner image; kiln scans itself.
            v if v.split(',').all(|kv| kv.starts_with("generator=")) => true,
            v => {
                return Err(invalid(
                    "--sbom",
                    v,
                    "expected true, false or generator=IMAGE",
                ));
            }
        };
        self.sbom = Some(on);
        Ok(())
    }

    /// `--provenance VALUE`.
    pub fn provenance_flag(&mut self, value: &str) -> Result<()> {
        self.provenance = Some(match value {
            "true" | "1" => Some(Provenance::MIN),
            "false" | "0" => None,
            v => Some(provenance_of(v, "--provenance")?),
        });
        Ok(())
    }

    /// `--attest type=sbom|provenance[,KEY=VALUE…]`.
    pub fn attest_flag(&mut self, value: &str) -> Result<()> {
        let mut kind = None;
        let mut rest = Vec::new();
        for kv in value.split(',') {
            match kv.split_once('=') {
                Some(("type", t)) => kind = Some(t),
                _ => rest.push(kv),
            }
        }
        let rest = rest.join(",");
        let disabled = rest.split(',').any(|kv| kv == "disabled=true");
        match kind {
            Some("sbom") => {
                let on = !disabled
                    && rest
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .all(|kv| kv.starts_with("generator=") || kv == "disabled=false");
                if !on && !disabled {
                    return Err(invalid(
                        "--attest",
                        value,
                        "type=sbom takes generator=IMAGE",
                    ));
                }
                self.sbom = Some(on);
            }
            Some("provenance") if disabled => self.provenance = Some(None),
            Some("provenance") => {
                let rest: Vec<_> = rest
                    .split(',')
                    .filter(|kv| !kv.is_empty() && *kv != "disabled=false")
                    .collect();
                self.provenance = Some(Some(if rest.is_empty() {
                    Provenance::MIN
                } else {
                    provenance_of(&rest.join(","), "--attest")?
                }));
            }
            _ => {
                return Err(invalid(
                    "--attest",
                    value,
                    "expected type=sbom or type=provenance",
                ));
            }
        }
        Ok(())
    }

    /// What to attach. `exports_index`: the build pushes or writes an OCI archive (where
    /// BuildKit attaches its default provenance).
    pub fn resolve(&self, exports_index: bool) -> Attestations {
        Attestations {
            sbom: self.sbom.unwrap_or(false),
            provenance: match self.provenance {
                Some(explicit) => explicit,
                None if exports_index => Some(Provenance::MIN),
                None => None,
            },
        }
    }
}

fn provenance_of(value: &str, flag: &'static str) -> Result<Provenance> {
    let mut p = Provenance::MIN;
    for kv in value.split(',') {
        match kv {
            "min" | "mode=min" => p.mode = Mode::Min,
            "max" | "mode=max" => p.mode = Mode::Max,
            // BuildKit's spellings: v0.2 is its default, v1 (also v1.0) SLSA 1.0.
            "version=v0.2" => p.version = Version::V02,
            "version=v1" | "version=v1.0" => p.version = Version::V1,
            other => {
                return Err(invalid(
                    flag,
                    other,
                    "expected mode=min, mode=max, version=v0.2 or version=v1",
                ));
            }
        }
    }
    Ok(p)
}

fn invalid(flag: &'static str, value: &str, reason: &str) -> AttestError {
    AttestError::InvalidOption {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_spellings() {
        let mut f = AttestFlags::default();
        f.sbom_flag("true").unwrap();
        f.provenance_flag("mode=max").unwrap();
        assert_eq!(
            f.resolve(false),
            Attestations {
                sbom: true,
                provenance: Some(Provenance {
                    mode: Mode::Max,
                    version: Version::V02
                })
            }
        );
        let mut f = AttestFlags::default();
        f.attest_flag("type=sbom,generator=docker/buildkit-syft-scanner")
            .unwrap();
        f.attest_flag("type=provenance,mode=min").unwrap();
        assert_eq!(f.resolve(false).provenance, Some(Provenance::MIN));
        assert!(f.resolve(false).sbom);
        let mut f = AttestFlags::default();
        f.provenance_flag("mode=max,version=v1").unwrap();
        let v1 = Provenance {
            mode: Mode::Max,
            version: Version::V1,
        };
        assert_eq!(f.resolve(false).provenance, Some(v1));
        let mut f = AttestFlags::default();
        f.attest_flag("type=provenance,version=v1,mode=max")
            .unwrap();
        assert_eq!(f.resolve(false).provenance, Some(v1));
        assert!(
            AttestFlags::default()
                .provenance_flag("version=v2")
                .is_err()
        );
        let mut f = AttestFlags::default();
        f.provenance_flag("false").unwrap();
        assert_eq!(f.resolve(true).provenance, None);
        assert!(AttestFlags::default().sbom_flag("yes").is_err());
        assert!(AttestFlags::default().provenance_flag("mode=full").is_err());
        assert!(AttestFlags::default().attest_flag("type=vuln").is_err());
    }

    #[test]
    fn default_provenance_goes_only_where_buildkit_puts_it() {
        let f = AttestFlags::default();
        assert_eq!(f.resolve(false), Attestations::default());
        assert_eq!(f.resolve(true).provenance, Some(Provenance::MIN));
        assert!(!f.resolve(true).sbom);
    }
}
