//! `kiln images`: the listing and its filters, with Docker's semantics.
//!
//! One row per name; `dangling=true` rows are the image manifests in the store that no name
//! points at and whose ID no named image has (Docker's `<none>:<none>` images): images whose
//! name moved to a newer build, or that only a container holds. Finding those reads every small
//! blob, so the plain listing (named images only, as before) does not.
//!
//! Filters (`docker images --filter`): `reference=PATTERN` matches the familiar name with or
//! without its tag, `*` and `?` not crossing `/` (Go's `path.Match`, which Docker uses);
//! `dangling=true|false`; `label=KEY` or `label=KEY=VALUE` on the config's labels. Values of one
//! key are alternatives except for `label`, where every one must hold; different keys must all
//! hold.

use kiln_image::{Digest, Reference, media_type};
use kiln_store::Store;

use crate::error::{ImageError, Result};
use crate::stored::StoredImage;

/// The filters of one listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    references: Vec<String>,
    dangling: Option<bool>,
    /// Key and, if given, the value it must have.
    labels: Vec<(String, Option<String>)>,
    /// Without a `dangling` filter, list unnamed images too (the API's `all=1`).
    unnamed: bool,
}

impl ListFilter {
    /// Parses `--filter` values (`key=value` each).
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<ListFilter> {
        let mut out = ListFilter::default();
        for f in filters {
            let f = f.as_ref();
            let bad = || ImageError::BadFilter(f.to_owned());
            let (key, value) = f.split_once('=').ok_or_else(bad)?;
            match key {
                "reference" if !value.is_empty() => {
                    // A pattern Go's path.Match would refuse (an unclosed class) is refused
                    // here too rather than never matching.
                    glob_match(value, "").ok_or_else(bad)?;
                    out.references.push(value.to_owned());
                }
                "dangling" => {
                    let wanted = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    };
                    if out.dangling.is_some_and(|d| d != wanted) {
                        return Err(bad());
                    }
                    out.dangling = Some(wanted);
                }
                "label" if !value.is_empty() => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_owned())),
                        None => (value, None),
                    };
                    out.labels.push((k.to_owned(), v));
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }

    /// Lists unnamed images as well when no `dangling` filter decides (`docker images -a`,
    /// the API's `all=1`). They are not listed by default: an image `kiln rmi` untagged stays
    /// in the store until `kiln prune`, and should not come back as `<none>`.
    pub fn with_unnamed(mut self, unnamed: bool) -> ListFilter {
        self.unnamed = unnamed;
        self
    }

    fn keeps(&self, name: Option<&Reference>, img: &StoredImage) -> bool {
        if self.dangling.is_some_and(|d| d != name.is_none()) {
            return false;
        }
        if !self.references.is_empty()
            && !name.is_some_and(|n| self.references.iter().any(|p| reference_matches(p, n)))
        {
            return false;
        }
        let labels = &img.config.config.labels;
        self.labels.iter().all(|(k, v)| match (labels.get(k), v) {
            (Some(actual), Some(wanted)) => actual == wanted,
            (found, None) => found.is_some(),
            (None, Some(_)) => false,
        })
    }
}

/// The images in the store that no name points at (a build without `-t`, an image whose last
/// name was removed while a container or the cache still kept it, a load of an unnamed
/// archive), each once, newest first. Cache exports and attestation manifests are not images.
pub(crate) fn unnamed_images(
    store: &Store,
    names: &[(String, Digest)],
    named_ids: &[Digest],
) -> Result<Vec<StoredImage>> {
    let mut unnamed: Vec<StoredImage> = Vec::new();
    for (manifest, config_type) in store.list_image_manifests()? {
        // Cache exports are manifests too, of another config type.
        if config_type != media_type::OCI_CONFIG && config_type != media_type::DOCKER_CONFIG {
            continue;
        }
        if names.iter().any(|(_, m)| *m == manifest) {
            continue;
        }
        // A blob that does not load as an image (not ours to judge here) is no row.
        let Ok(image) = StoredImage::load(store, &manifest) else {
            continue;
        };
        // An attestation manifest (in-toto statements as layers) is not an image.
        if image.config.os == "unknown" && image.config.architecture == "unknown" {
            continue;
        }
        if named_ids.contains(&image.config_digest)
            || unnamed
                .iter()
                .any(|d| d.config_digest == image.config_digest)
        {
            continue;
        }
        unnamed.push(image);
    }
    unnamed.sort_by(|a, b| b.config.created.cmp(&a.config.created));
    Ok(unnamed)
}

/// One row of `kiln images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The name; `None` for a dangling image.
    pub name: Option<Reference>,
    pub image: StoredImage,
    /// The platforms of a name pointing at an index (a multi-platform build), in the index's
    /// order; empty for a single image.
    pub platforms: Vec<String>,
}

/// The images `filter` keeps: named ones in name order, then, when the filter asks for them,
/// unnamed (dangling) ones newest first.
pub fn list_images(store: &Store, filter: &ListFilter) -> Result<Vec<ImageSummary>> {
    let mut out = Vec::new();
    let names = store.list_names()?;
    let mut named_ids: Vec<Digest> = Vec::new();
    for (name, manifest) in &names {
        let image = StoredImage::load(store, manifest).map_err(|e| match e {
            // Say which name the broken image is under.
            ImageError::Invalid { source, .. } => ImageError::Invalid {
                reference: name.clone(),
                source,
            },
            e => e,
        })?;
        named_ids.push(image.config_digest.clone());
        // Every image of a named index is named through it, not a dangling row.
        let platforms = StoredImage::index_platforms(store, manifest)?;
        if platforms.len() > 1 {
            for platform in &platforms {
                if let Ok(p) = platform.parse()
                    && let Ok(member) = StoredImage::load_for_platform(store, manifest, &p)
                {
                    named_ids.push(member.config_digest);
                }
            }
        }
        let Ok(reference) = name.parse::<Reference>() else {
            continue;
        };
        if filter.keeps(Some(&reference), &image) {
            out.push(ImageSummary {
                name: Some(reference),
                image,
                platforms,
            });
        }
    }
    if filter.dangling.unwrap_or(filter.unnamed) {
        let unnamed = unnamed_images(store, &names, &named_ids)?;
        out.extend(
            unnamed
                .into_iter()
                .filter(|image| filter.keeps(None, image))
                .map(|image| ImageSummary {
                    name: None,
                    image,
                    platforms: Vec::new(),
                }),
        );
    }
    Ok(out)
}

/// Docker's reference filter: the pattern against `repo:tag` (familiar), else against `repo`.
fn reference_matches(pattern: &str, name: &Reference) -> bool {
    glob_match(pattern, &name.familiar()) == Some(true)
        || glob_match(pattern, &name.repository_with_registry()) == Some(true)
}

/// Go's `path.Match`: `*` any run of non-`/` characters, `?` one non-`/` character, `[...]` a
/// class (`^` or `!` negates, `a-z` ranges), `\` escapes. `None` for a malformed pattern.
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Checked up front, so a malformed pattern is an error whatever the name.
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 == p.len() => return None,
            '\\' => i += 2,
            '[' => i = class_end(&p, i)?,
            _ => i += 1,
        }
    }
    Some(match_at(&p, &n))
}

/// The index after the class starting at `p[start] == '['`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if matches!(p.get(i), Some('^' | '!')) {
        i += 1;
    }
    let mut first = true;
    loop {
        match p.get(i)? {
            ']' if !first => return Some(i + 1),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negated, mut i) = match class.first() {
        Some('^' | '!') => (true, 1),
        _ => (false, 0),
    };
    let mut found = false;
    while i < class.len() {
        let mut lo = class[i];
        if lo == '\\' {
            i += 1;
            lo = class[i];
        }
        i += 1;
        let mut hi = lo;
        if class.get(i) == Some(&'-') && i + 1 < class.len() {
            hi = class[i + 1];
            if hi == '\\' {
                hi = class[i + 2];
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            found = true;
        }
    }
    found != negated
}

fn match_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len())
            .take_while(|&k| k == 0 || n[k - 1] != '/')
            .any(|k| match_at(&p[1..], &n[k..])),
        Some('?') => n.first().is_some_and(|&c| c != '/') && match_at(&p[1..], &n[1..]),
        Some('[') => {
            let end = class_end(p, 0).unwrap_or(p.len());
            n.first()
                .is_some_and(|&c| c != '/' && class_matches(&p[1..end - 1], c))
                && match_at(&p[end..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && match_at(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && match_at(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::image;
    use crate::{tag, write_image};

    #[test]
    fn globs_match_as_go_path_match() {
        for (pattern, name, want) in [
            ("busy*", "busybox", true),
            ("busy*", "busybox:latest", true),
            ("*", "user/app", false),
            ("*/*", "user/app", true),
            ("user/*:1", "user/app:1", true),
            ("user/*:1", "user/app:2", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
        ] {
            assert_eq!(glob_match(pattern, name), Some(want), "{pattern} {name}");
        }
        assert_eq!(glob_match("[a", "a"), None);
        assert!(ListFilter::parse(&["reference=[a"]).is_err());
    }

    #[test]
    fn bad_filters_are_refused() {
        for f in [
            "dangling=maybe",
            "size=3",
            "reference=",
            "label",
            "dangling=true&",
        ] {
            let err = ListFilter::parse(&[f]).unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument, "{f}");
        }
        assert!(ListFilter::parse(&["dangling=true", "dangling=false"]).is_err());
    }

    fn names(rows: &[ImageSummary]) -> Vec<String> {
        rows.iter()
            .map(|r| r.name.as_ref().map_or("<none>".into(), Reference::familiar))
            .collect()
    }

    #[test]
    fn filters_by_reference_label_and_dangling() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut labelled = crate::test_support::config("labelled");
        labelled.config.labels.insert("tier".into(), "web".into());
        let web = write_image(&store, &labelled, Vec::new()).unwrap();
        let plain = image(&store, "plain");
        let old = image(&store, "old");
        for (img, name) in [(&web, "web:1"), (&plain, "user/tool:2"), (&old, "tool:old")] {
            tag(&store, img, &name.parse().unwrap()).unwrap();
        }
        // `tool:old` moves to the plain image: the old one becomes dangling.
        tag(&store, &plain, &"tool:old".parse().unwrap()).unwrap();

        let list =
            |f: &[&str]| names(&list_images(&store, &ListFilter::parse(f).unwrap()).unwrap());
        // Names sort by their full form: docker.io/library/… before docker.io/user/….
        assert_eq!(list(&[]), ["tool:old", "web:1", "user/tool:2"]);
        let all = ListFilter::parse::<&str>(&[]).unwrap().with_unnamed(true);
        assert_eq!(
            names(&list_images(&store, &all).unwrap()),
            ["tool:old", "web:1", "user/tool:2", "<none>"]
        );
        let named = ListFilter::parse(&["dangling=false"])
            .unwrap()
            .with_unnamed(true);
        assert_eq!(names(&list_images(&store, &named).unwrap()), list(&[]));
        assert_eq!(list(&["reference=web"]), ["web:1"]);
        assert_eq!(list(&["reference=*tool*"]), ["tool:old"]);
        assert_eq!(list(&["reference=*/tool"]), ["user/tool:2"]);
        assert_eq!(
            list(&["reference=web", "reference=*/*"]),
            ["web:1", "user/tool:2"]
        );
        assert_eq!(list(&["label=tier"]), ["web:1"]);
        assert_eq!(list(&["label=tier=web"]), ["web:1"]);
        assert!(list(&["label=tier=db"]).is_empty());
        assert!(list(&["label=tier", "label=other"]).is_empty());
        assert_eq!(
            list(&["dangling=false"]),
            ["tool:old", "web:1", "user/tool:2"]
        );
        let dangling =
            list_images(&store, &ListFilter::parse(&["dangling=true"]).unwrap()).unwrap();
        assert_eq!(names(&dangling), ["<none>"]);
        assert_eq!(dangling[0].image.config_digest, old.config_digest);
        assert!(list(&["dangling=true", "reference=*"]).is_empty());
        assert!(list(&["dangling=true", "label=tier"]).is_empty());
    }
}
