//! `--cache-from` and `--cache-to` values, in BuildKit's CSV form: `type=registry,ref=R` and
//! `type=local,src=DIR` / `type=local,dest=DIR`, with `mode=min|max` for exports. A bare value
//! is a registry reference, as buildx reads it. kiln adds `cache-mounts=true` to an export
//! (also carry the `RUN --mount=type=cache` directories) and `cache-mounts=false` /
//! `cache-mounts-max-size=SIZE` to an import (docs/cache-mounts.md).

use std::fmt;
use std::path::PathBuf;

use kiln_image::Reference;

/// Where a build cache export lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An image manifest in a registry repository.
    Registry(Reference),
    /// An OCI image layout directory; `tag` names the manifest in its `index.json`.
    Local { dir: PathBuf, tag: String },
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry(reference) => write!(f, "{}", reference.familiar()),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// Which steps an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the final image's stage and the stages it is built `FROM` (BuildKit's
    /// default).
    #[default]
    Min,
    /// Every step of every stage the build ran or took from the cache.
    Max,
}

/// The largest cache mount blob an import takes unless `cache-mounts-max-size=` says
/// otherwise: 1 GiB, more than a typical pip/npm/apt download cache, small enough that a
/// runaway cache does not fill a CI machine's disk unasked.
pub const DEFAULT_CACHE_MOUNT_LIMIT: u64 = 1 << 30;

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    pub location: CacheLocation,
    /// The largest cache mount blob (compressed, as stored) to import; `None` with
    /// `cache-mounts=false`: cache mounts are not imported from this source.
    pub cache_mount_limit: Option<u64>,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
    /// `cache-mounts=true`: also export the build's `RUN --mount=type=cache` directories.
    pub cache_mounts: bool,
}

/// The attributes of one flag value, in order.
struct Attributes<'a> {
    flag: &'static str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Attributes<'a> {
    fn parse(flag: &'static str, value: &'a str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{flag}: empty value"));
        }
        if !value.contains('=') {
            return Ok(Attributes {
                flag,
                pairs: vec![("type", "registry"), ("ref", value)],
            });
        }
        let pairs = value
            .split(',')
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| format!("{flag}: {pair:?} is not KEY=VALUE"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Attributes { flag, pairs })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|p| p.1)
    }

    fn require(&self, key: &str, kind: &str) -> Result<&'a str, String> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{}: type={kind} needs {key}=", self.flag))
    }

    /// Fails on a key outside `known`. BuildKit options that change nothing for kiln's format
    /// (it always writes OCI media types in an image manifest) are accepted too.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        const NO_EFFECT: &[&str] = &["oci-mediatypes", "image-manifest"];
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(k) && !NO_EFFECT.contains(k))
        {
            Some((k, _)) => Err(format!(
                "{}: unknown option {k:?} (kiln knows {})",
                self.flag,
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") | Some("") => Ok(true),
            Some(other) => Err(format!("{}: {key}={other} is not true or false", self.flag)),
        }
    }

    fn location(&self, local_key: &str) -> Result<CacheLocation, String> {
        match self.get("type").unwrap_or("") {
            "registry" => {
                let text = self.require("ref", "registry")?;
                let reference = text
                    .parse::<Reference>()
                    .map_err(|e| format!("{}: ref={text}: {e}", self.flag))?;
                Ok(CacheLocation::Registry(reference))
            }
            "local" => Ok(CacheLocation::Local {
                dir: PathBuf::from(self.require(local_key, "local")?),
                tag: self.get("tag").unwrap_or("latest").to_owned(),
            }),
            "" => Err(format!("{}: missing type= (registry or local)", self.flag)),
            other => Err(format!(
                "{}: cache type {other:?} is not supported (kiln has registry and local)",
                self.flag
            )),
        }
    }
}

/// A `--cache-from` or `--cache-to` value that cannot be used; the message names the flag and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCacheSpec(pub String);

impl InvalidCacheSpec {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the value came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }
}

impl CacheImport {
    pub fn parse(value: &str) -> Result<Self, InvalidCacheSpec> {
        Self::parse_attributes(value).map_err(InvalidCacheSpec)
    }

    fn parse_attributes(value: &str) -> Result<Self, String> {
        let attrs = Attributes::parse("--cache-from", value)?;
        let location = attrs.location("src")?;
        const MOUNTS: [&str; 2] = ["cache-mounts", "cache-mounts-max-size"];
        match &location {
            CacheLocation::Registry(_) => attrs.only(&["type", "ref", MOUNTS[0], MOUNTS[1]])?,
            CacheLocation::Local { .. } => {
                attrs.only(&["type", "src", "tag", MOUNTS[0], MOUNTS[1]])?
            }
        }
        let imports_mounts = attrs.get("cache-mounts").is_none() || attrs.bool("cache-mounts")?;
        let limit = match attrs.get("cache-mounts-max-size") {
            None => DEFAULT_CACHE_MOUNT_LIMIT,
            Some(text) => parse_size(text).ok_or_else(|| {
                format!(
                    "--cache-from: cache-mounts-max-size={text} is not a size (bytes, or with \
                     k, m, g: 512m)"
                )
            })?,
        };
        Ok(CacheImport {
            location,
            cache_mount_limit: imports_mounts.then_some(limit),
        })
    }
}

impl CacheExport {
    pub fn parse(value: &str) -> Result<Self, InvalidCacheSpec> {
        Self::parse_attributes(value).map_err(InvalidCacheSpec)
    }

    fn parse_attributes(value: &str) -> Result<Self, String> {
        let attrs = Attributes::parse("--cache-to", value)?;
        let location = attrs.location("dest")?;
        match &location {
            CacheLocation::Registry(_) => {
                attrs.only(&["type", "ref", "mode", "ignore-error", "cache-mounts"])?
            }
            CacheLocation::Local { .. } => attrs.only(&[
                "type",
                "dest",
                "tag",
                "mode",
                "ignore-error",
                "cache-mounts",
            ])?,
        }
        let mode = match attrs.get("mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => return Err(format!("--cache-to: mode={other} is not min or max")),
        };
        Ok(CacheExport {
            location,
            mode,
            ignore_error: attrs.bool("ignore-error")?,
            cache_mounts: attrs.bool("cache-mounts")?,
        })
    }
}

/// `SIZE` as docker's flags spell it: bytes, or a number with `b`, `k`, `m`, `g` (binary
/// units, either case, an optional trailing `b`/`ib`).
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_start);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> CacheLocation {
        CacheLocation::Registry(text.parse().unwrap())
    }

    #[test]
    fn parses_registry_and_local_imports() {
        assert_eq!(
            CacheImport::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap(),
            CacheImport {
                location: registry("127.0.0.1:5000/app:cache"),
                cache_mount_limit: Some(DEFAULT_CACHE_MOUNT_LIMIT),
            }
        );
        assert_eq!(
            CacheImport::parse("127.0.0.1:5000/app:cache").unwrap(),
            CacheImport::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap()
        );
        assert_eq!(
            CacheImport::parse("type=local,src=/tmp/c")
                .unwrap()
                .location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            CacheImport::parse("type=local,src=/tmp/c,tag=main")
                .unwrap()
                .location
                .to_string(),
            "/tmp/c:main"
        );
    }

    #[test]
    fn parses_exports_with_modes() {
        let e = CacheExport::parse("type=registry,ref=r.example/app:c,mode=max").unwrap();
        assert_eq!(e.mode, CacheMode::Max);
        assert!(!e.ignore_error);
        let e = CacheExport::parse("type=local,dest=out,ignore-error=true").unwrap();
        assert_eq!(e.mode, CacheMode::Min);
        assert!(e.ignore_error);
        assert_eq!(
            e.location,
            CacheLocation::Local {
                dir: "out".into(),
                tag: "latest".into()
            }
        );
        let e = CacheExport::parse("type=registry,ref=r.example/a,oci-mediatypes=true").unwrap();
        assert_eq!(e.location, registry("r.example/a"));
    }

    #[test]
    fn cache_mount_options() {
        assert!(
            CacheExport::parse("type=local,dest=d,cache-mounts=true")
                .unwrap()
                .cache_mounts
        );
        assert!(
            !CacheExport::parse("type=local,dest=d")
                .unwrap()
                .cache_mounts
        );
        let limit = |v| CacheImport::parse(v).map(|i| i.cache_mount_limit);
        assert_eq!(
            limit("type=local,src=d,cache-mounts-max-size=512m"),
            Ok(Some(512 << 20))
        );
        assert_eq!(limit("r.example/a:c"), Ok(Some(DEFAULT_CACHE_MOUNT_LIMIT)));
        assert_eq!(
            limit("type=registry,ref=r.example/a,cache-mounts-max-size=2GiB"),
            Ok(Some(2 << 30))
        );
        assert_eq!(
            limit("type=local,src=d,cache-mounts-max-size=100"),
            Ok(Some(100))
        );
        assert_eq!(limit("type=local,src=d,cache-mounts=false"), Ok(None));
        assert!(
            limit("type=local,src=d,cache-mounts-max-size=lots")
                .unwrap_err()
                .0
                .contains("cache-mounts-max-size=lots is not a size")
        );
        assert!(
            CacheExport::parse("type=local,dest=d,cache-mounts-max-size=1")
                .unwrap_err()
                .0
                .contains("unknown option")
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |r: Result<CacheExport, InvalidCacheSpec>| r.unwrap_err().to_string();
        assert!(err(CacheExport::parse("type=registry")).contains("needs ref="));
        assert!(err(CacheExport::parse("type=local,src=x")).contains("needs dest="));
        assert!(err(CacheExport::parse("type=inline")).contains("\"inline\" is not supported"));
        assert!(err(CacheExport::parse("type=gha,url=x")).contains("not supported"));
        assert!(err(CacheExport::parse("type=local,dest=x,mode=all")).contains("mode=all"));
        assert!(err(CacheExport::parse("type=local,dest=x,colour=red")).contains("\"colour\""));
        assert!(err(CacheExport::parse("ref=x")).contains("missing type="));
        assert!(err(CacheExport::parse("type=registry,ref=example.com/App")).contains("ref="));
        let import_err = |value| CacheImport::parse(value).unwrap_err();
        assert!(import_err("type=local,dest=x").0.contains("needs src="));
        assert!(
            import_err("type=registry,ref=a/b,mode=max")
                .0
                .contains("\"mode\"")
        );
        assert!(import_err("").0.contains("empty"));
        assert_eq!(
            import_err("").kind(),
            kiln_error::ErrorKind::InvalidArgument
        );
    }
}
