//! `--cache-from` and `--cache-to` values, in BuildKit's CSV form: `type=registry,ref=R` and
//! `type=local,src=DIR` / `type=local,dest=DIR`, with `mode=min|max` for exports. A bare value
//! is a registry reference, as buildx reads it.

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

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    pub location: CacheLocation,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
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
        match &location {
            CacheLocation::Registry(_) => attrs.only(&["type", "ref"])?,
            CacheLocation::Local { .. } => attrs.only(&["type", "src", "tag"])?,
        }
        Ok(CacheImport { location })
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
            CacheLocation::Registry(_) => attrs.only(&["type", "ref", "mode", "ignore-error"])?,
            CacheLocation::Local { .. } => {
                attrs.only(&["type", "dest", "tag", "mode", "ignore-error"])?
            }
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
        })
    }
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
                location: registry("127.0.0.1:5000/app:cache")
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
