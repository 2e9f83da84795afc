//! Image references (`busybox`, `ghcr.io/org/app:1.2`, `x@sha256:…`) and Docker's rules for
//! normalising them.
//!
//! The rules are those of Docker's `distribution/reference` package: a first path component is a
//! registry host only if it contains `.` or `:`, is `localhost`, or has uppercase letters (which
//! no repository may have); otherwise the registry is `docker.io`, and a single-component name
//! there lives under `library/`. A reference with neither tag nor digest means `:latest`.
//!
//! The type lives in this pure crate (not in the registry client) because every layer names
//! images by it: the store's names, the image service, the solver, the CLI.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry Docker Hub images are named under.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Docker's limit on the length of `registry/repository`.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a valid reference. Displays as `invalid reference "<input>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl ReferenceError {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the text came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }

    fn new(input: &str, reason: impl Into<String>) -> Self {
        ReferenceError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Reference {
    /// The registry host (with port, if any) as written, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The host to send API requests to: Docker Hub's API lives on another host than its name.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What a manifest request names: the digest when pinned (it wins over a tag, as in Docker),
    /// else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            // Construction always sets one of the two.
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        check_tag(tag).map_err(|reason| ReferenceError::new(tag, reason))?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The name without tag or digest in the short form people type: `busybox`, `user/app`,
    /// `127.0.0.1:5000/x`. This is what `kiln images` shows as REPOSITORY.
    pub fn repository_with_registry(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(official) if !official.contains('/') => official.to_owned(),
                _ => self.repository.clone(),
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The short form with tag and digest: `busybox:latest`, `user/app:1`, `127.0.0.1:5000/x:y`.
    pub fn familiar(&self) -> String {
        let mut out = self.repository_with_registry();
        self.push_tag_and_digest(&mut out);
        out
    }

    fn push_tag_and_digest(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{}/{}", self.registry, self.repository);
        self.push_tag_and_digest(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError::new(input, reason);
        if input.is_empty() {
            return Err(err("reference is empty"));
        }

        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|e| ReferenceError::new(input, e.to_string()))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };

        // A `:` after the last `/` starts the tag; an earlier one is a registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let colon = last_slash + i;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|reason| err(&reason))?;
        }
        if name.is_empty() {
            return Err(err("repository name is empty"));
        }

        let (registry, remainder) = split_registry(name);
        let registry = match registry {
            Some(host) => {
                check_registry_host(host).map_err(|reason| err(&reason))?;
                if host == "index.docker.io" || host == DOCKER_HUB_API {
                    DOCKER_HUB
                } else {
                    host
                }
            }
            None => DOCKER_HUB,
        };
        for component in remainder.split('/') {
            check_path_component(component).map_err(|reason| err(&reason))?;
        }
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_owned()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err(&format!(
                "repository name is longer than {MAX_NAME_LEN} characters"
            )));
        }

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

/// Splits `name` into (registry, repository path) by Docker's rule for the first component.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// A host name or IPv4 address, or a bracketed IPv6 address, with an optional numeric port.
fn check_registry_host(host: &str) -> Result<(), String> {
    let bad = || Err(format!("registry host {host:?} is not a valid host[:port]"));
    let (name, port) = if let Some(after_bracket) = host.strip_prefix('[') {
        let Some((addr, rest)) = after_bracket.split_once(']') else {
            return bad();
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad();
        }
        match rest {
            "" => (None, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// One path component: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn check_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("repository name has an empty path component".into());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "repository path component {component:?} must start and end with a letter or digit"
        ));
    }
    let mut separator = String::new();
    for &b in bytes {
        if is_alnum(b) {
            let ok = matches!(separator.as_str(), "" | "." | "_" | "__")
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return Err(format!(
                    "repository path component {component:?} has an invalid separator {separator:?}"
                ));
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return Err(format!(
                "repository path component {component:?} contains the invalid character {:?}",
                b as char
            ));
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let valid = match chars.next() {
        Some(first) => word(first) && chars.all(|c| word(c) || c == '.' || c == '-'),
        None => false,
    };
    if !valid {
        return Err(format!(
            "tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]*"
        ));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("tag is longer than {MAX_TAG_LEN} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn reason(s: &str) -> String {
        match s.parse::<Reference>() {
            Ok(r) => panic!("{s:?} parsed as {r}"),
            Err(e) => {
                assert_eq!(e.input, s);
                e.reason
            }
        }
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            ("user/app:1", "docker.io/user/app:1", "user/app:1"),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/library/alpine:3",
                "docker.io/library/alpine:3",
                "alpine:3",
            ),
            (
                "registry-1.docker.io/user/app",
                "docker.io/user/app:latest",
                "user/app:latest",
            ),
            (
                "docker.io/library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            (
                "ghcr.io/org/app:v1.2",
                "ghcr.io/org/app:v1.2",
                "ghcr.io/org/app:v1.2",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/app:x",
                "localhost:5000/app:x",
                "localhost:5000/app:x",
            ),
            (
                "127.0.0.1:5000/x:y",
                "127.0.0.1:5000/x:y",
                "127.0.0.1:5000/x:y",
            ),
            (
                "[::1]:5000/a/b",
                "[::1]:5000/a/b:latest",
                "[::1]:5000/a/b:latest",
            ),
            (
                "quay.io/a/b/c/d",
                "quay.io/a/b/c/d:latest",
                "quay.io/a/b/c/d:latest",
            ),
            (
                "a_b/c__d/e--f/g.h",
                "docker.io/a_b/c__d/e--f/g.h:latest",
                "a_b/c__d/e--f/g.h:latest",
            ),
            (
                "app:_tag-1.x",
                "docker.io/library/app:_tag-1.x",
                "app:_tag-1.x",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = parse(input);
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(parse(full), r, "the full form parses back: {full}");
        }
    }

    #[test]
    fn digests_pin_and_tags_are_optional_with_them() {
        let r = parse(&format!("busybox@sha256:{HEX}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), HEX);
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));

        let r = parse(&format!("127.0.0.1:5000/x:y@sha256:{HEX}"));
        assert_eq!(r.tag(), Some("y"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.familiar(), format!("127.0.0.1:5000/x:y@sha256:{HEX}"));
        assert_eq!(
            r.manifest_reference(),
            format!("sha256:{HEX}"),
            "the digest wins over the tag"
        );
    }

    #[test]
    fn parts_and_api_host() {
        let r = parse("busybox");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(parse("localhost:5000/a").api_host(), "localhost:5000");
    }

    #[test]
    fn repository_with_registry_is_the_familiar_name() {
        assert_eq!(parse("busybox:1").repository_with_registry(), "busybox");
        assert_eq!(parse("user/app").repository_with_registry(), "user/app");
        assert_eq!(
            parse("127.0.0.1:5000/x:y").repository_with_registry(),
            "127.0.0.1:5000/x"
        );
        assert_eq!(
            parse("ghcr.io/library/x").repository_with_registry(),
            "ghcr.io/library/x"
        );
    }

    #[test]
    fn with_tag_and_with_digest() {
        let r = parse(&format!("busybox:1@sha256:{HEX}"));
        let retagged = r.with_tag("2").unwrap();
        assert_eq!(retagged.to_string(), "docker.io/library/busybox:2");
        assert!(r.with_tag("-bad").is_err());
        let pinned = parse("busybox").with_digest(Digest::from_hex(HEX).unwrap());
        assert_eq!(pinned.familiar(), format!("busybox:latest@sha256:{HEX}"));
    }

    #[test]
    fn rejects_invalid_references_with_reasons() {
        assert_eq!(reason("Foo"), "repository name must be lowercase");
        assert_eq!(reason("user/Foo"), "repository name must be lowercase");
        assert!(reason("").contains("empty"));
        assert!(reason(":tag").contains("empty"));
        assert!(reason("a//b").contains("empty path component"));
        assert!(reason("a/").contains("empty path component"));
        assert!(reason("-a").contains("start and end"));
        assert!(reason("a.").contains("start and end"));
        assert!(reason("a..b").contains("separator"));
        assert!(reason("a___b").contains("separator"));
        assert!(reason("a-_b").contains("separator"));
        assert!(reason("a b").contains("invalid character"));
        assert!(reason("a:").contains("tag"));
        assert!(reason("a:-x").contains("tag"));
        assert!(
            reason("a:x/y").contains("host[:port]"),
            "a tag cannot contain '/', so `a:x` is a host with a bad port"
        );
        assert!(reason(&format!("a:{}", "t".repeat(129))).contains("longer than 128"));
        assert!(reason("a@sha256:abc").contains("64"));
        assert!(reason("a@md5:abc").contains("algorithm"));
        assert!(reason("host:port/x").contains("host[:port]"));
        assert!(reason("-host.io/x").contains("host[:port]"));
        assert!(reason("[zz]:5000/x").contains("host[:port]"));
        assert!(reason(&format!("a/{}", "b".repeat(260))).contains("longer than 255"));
    }

    #[test]
    fn uppercase_first_component_is_a_registry_host() {
        // As in Docker: no repository may contain uppercase, so `Host/x` names a host.
        let r = parse("MyHost/x");
        assert_eq!(r.registry(), "MyHost");
        assert_eq!(r.repository(), "x");
    }

    #[test]
    fn error_message_names_the_input() {
        let e = "Foo".parse::<Reference>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid reference "Foo": repository name must be lowercase"#
        );
    }
}
