//! Named build contexts (`--build-context NAME=VALUE`, as buildx): a name the Dockerfile uses
//! as an image — in `FROM NAME`, `COPY --from=NAME` or `RUN --mount=from=NAME` — stands for
//! another image, an image of an OCI layout directory, or a local directory.
//!
//! The key decision: every kind becomes an image in the store, resolved where base images
//! are (`ImagePins`), so the three places a name can appear, the cache keys (a manifest
//! digest) and the provenance's materials work for it unchanged. A directory becomes an
//! unnamed image of one layer written from it (its content decides the digest, so an
//! unchanged directory hits the cache); a layout's blobs are copied into the store, each
//! verified against its digest, and nothing is named. Names are matched as references
//! (`alpine` is `docker.io/library/alpine:latest`), as BuildKit matches them.

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_image::{Descriptor, Digest, ImageConfig, Platform, Reference};
use kiln_images::StoredImage;
use kiln_store::Store;

/// What a named context stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory on this machine (absolute, checked to exist when parsed).
    Directory(PathBuf),
    /// `docker-image://REF`: another image, resolved like a base image.
    Image(Reference),
    /// `oci-layout://PATH[@DIGEST|:TAG]`: an image of an OCI image layout directory.
    OciLayout { path: PathBuf, select: LayoutSelect },
    /// A git repository or a tarball URL, fetched when the build first reads it and then
    /// used as a directory.
    Remote(crate::remote_context::RemoteContext),
}

/// Which image of an OCI layout's `index.json` a named context takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelect {
    /// The only one (an error when there are several).
    Only,
    /// The one whose `org.opencontainers.image.ref.name` is this tag.
    Tag(String),
    Digest(Digest),
}

/// A `--build-context` that cannot be used, naming it.
#[derive(Debug, thiserror::Error)]
pub enum NamedContextError {
    #[error("invalid --build-context {value:?}: expected NAME=VALUE")]
    Syntax { value: String },
    #[error("--build-context {name}: {reason}")]
    Unsupported { name: String, reason: String },
    #[error("--build-context {name}: directory {path}: {source}")]
    MissingDirectory {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--build-context {name}: {reference:?} is not an image reference: {source}")]
    Reference {
        name: String,
        reference: String,
        source: kiln_image::ReferenceError,
    },
    #[error("--build-context {name}: the OCI layout {path}: {reason}")]
    Layout {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("--build-context {name}: {source}")]
    Image {
        name: String,
        source: Box<kiln_images::ImageError>,
    },
    #[error("--build-context {name}: {source}")]
    Remote {
        name: String,
        source: Box<crate::remote_context::RemoteContextError>,
    },
    #[error("--build-context {name}: {source}")]
    Store {
        name: String,
        source: kiln_store::StoreError,
    },
    #[error("--build-context {name}: {source}")]
    Layer {
        name: String,
        source: kiln_layer::LayerError,
    },
}

impl NamedContextError {
    pub fn kind(&self) -> kiln_error::ErrorKind {
        use kiln_error::ErrorKind;
        match self {
            NamedContextError::Syntax { .. }
            | NamedContextError::Unsupported { .. }
            | NamedContextError::Reference { .. } => ErrorKind::InvalidArgument,
            NamedContextError::MissingDirectory { .. } | NamedContextError::Layout { .. } => {
                ErrorKind::NotFound
            }
            NamedContextError::Image { source, .. } => source.kind(),
            NamedContextError::Store { source, .. } => source.kind(),
            NamedContextError::Remote { source, .. } => source.kind(),
            NamedContextError::Layer { source, .. } => source.kind(),
        }
    }
}

impl NamedContext {
    /// Parses buildx's `NAME=VALUE`, relative directories against `cwd`. A directory or
    /// layout that does not exist is an error now, before anything is built.
    pub fn parse(flag: &str, cwd: &Path) -> Result<(String, NamedContext), NamedContextError> {
        let Some((name, value)) = flag
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        else {
            return Err(NamedContextError::Syntax {
                value: flag.to_owned(),
            });
        };
        let owned = || name.to_owned();
        let directory = |path: &str| -> Result<PathBuf, NamedContextError> {
            let path = cwd.join(path);
            let missing = |source| NamedContextError::MissingDirectory {
                name: owned(),
                path: path.clone(),
                source,
            };
            let canonical = std::fs::canonicalize(&path).map_err(missing)?;
            if !canonical.is_dir() {
                return Err(missing(std::io::Error::other("not a directory")));
            }
            Ok(canonical)
        };
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            NamedContext::Image(reference.parse().map_err(|source| {
                NamedContextError::Reference {
                    name: owned(),
                    reference: reference.to_owned(),
                    source,
                }
            })?)
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, select) = if let Some((path, digest)) = rest.split_once('@') {
                let digest = digest.parse().map_err(|_| NamedContextError::Layout {
                    name: owned(),
                    path: PathBuf::from(path),
                    reason: format!("{digest:?} is not a digest"),
                })?;
                (path, LayoutSelect::Digest(digest))
            } else {
                // A tag follows the last ':' after the last '/'.
                let last = rest.rsplit('/').next().unwrap_or(rest);
                match last.rsplit_once(':') {
                    Some((_, tag)) => (
                        &rest[..rest.len() - tag.len() - 1],
                        LayoutSelect::Tag(tag.to_owned()),
                    ),
                    None => (rest, LayoutSelect::Only),
                }
            };
            let path = directory(path)?;
            if !path.join("index.json").is_file() {
                return Err(NamedContextError::Layout {
                    name: owned(),
                    path,
                    reason: "no index.json (not an OCI image layout)".to_owned(),
                });
            }
            NamedContext::OciLayout { path, select }
        } else if let Some(remote) = crate::remote_context::RemoteContext::parse(value) {
            NamedContext::Remote(remote)
        } else if value.contains("://") {
            return Err(NamedContextError::Unsupported {
                name: owned(),
                reason: format!(
                    "{value:?}: kiln takes a directory, docker-image://REF, \
                     oci-layout://PATH[@DIGEST|:TAG], a git URL or an http(s) URL"
                ),
            });
        } else {
            NamedContext::Directory(directory(value)?)
        };
        Ok((name.to_owned(), context))
    }

    /// The image this context stands for, for `platform`, in `store`. An `Image` is resolved
    /// by the caller (a pull like any base image), so it is not handled here.
    pub(crate) fn local_image(
        &self,
        name: &str,
        engine: &crate::Engine,
        access: &crate::remote_context::GitAccess,
        platform: &Platform,
    ) -> Result<StoredImage, NamedContextError> {
        let store = &engine.store;
        match self {
            NamedContext::Directory(dir) => directory_image(name, store, dir, platform),
            NamedContext::Remote(remote) => {
                let fetched =
                    engine
                        .fetch_context(remote, None, access, name)
                        .map_err(|source| NamedContextError::Remote {
                            name: name.to_owned(),
                            source: Box::new(source),
                        })?;
                // Removed when `fetched` drops: the image holds a layer of it.
                directory_image(name, store, &fetched.context_dir, platform)
            }
            NamedContext::OciLayout { path, select } => {
                layout_image(name, store, path, select, platform)
            }
            NamedContext::Image(_) => Err(NamedContextError::Unsupported {
                name: name.to_owned(),
                reason: "an image reference is resolved, not read locally".to_owned(),
            }),
        }
    }
}

/// An unnamed image of one layer holding `dir`'s files, for `platform`.
fn directory_image(
    name: &str,
    store: &Store,
    dir: &Path,
    platform: &Platform,
) -> Result<StoredImage, NamedContextError> {
    let layer = kiln_layer::write_layer_from(
        store,
        dir,
        kiln_layer::SourceKind::Plain,
        kiln_layer::Compression::default(),
    )
    .map_err(|source| NamedContextError::Layer {
        name: name.to_owned(),
        source,
    })?;
    let mut config = ImageConfig {
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
        ..Default::default()
    };
    let mut layers = Vec::new();
    if let Some(layer) = layer {
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        layers.push(layer.descriptor());
    }
    kiln_images::write_image(store, &config, layers).map_err(|source| NamedContextError::Image {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

/// The image `select` names in the OCI layout at `path`, its blobs copied into `store`.
fn layout_image(
    name: &str,
    store: &Store,
    path: &Path,
    select: &LayoutSelect,
    platform: &Platform,
) -> Result<StoredImage, NamedContextError> {
    let bad = |reason: String| NamedContextError::Layout {
        name: name.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let index: kiln_image::Index = serde_json::from_slice(
        &std::fs::read(path.join("index.json")).map_err(|e| bad(format!("index.json: {e}")))?,
    )
    .map_err(|e| bad(format!("index.json: {e}")))?;
    let chosen = match select {
        LayoutSelect::Digest(digest) => index.manifests.iter().find(|d| &d.digest == digest),
        LayoutSelect::Tag(tag) => index.manifests.iter().find(|d| {
            d.annotations
                .get(kiln_image::layout::ANNOTATION_REF_NAME)
                .is_some_and(|n| n == tag || kiln_image::layout::tag_of(n) == Some(tag.as_str()))
        }),
        LayoutSelect::Only => match index.manifests.as_slice() {
            [one] => Some(one),
            _ => {
                return Err(bad(format!(
                    "it holds {} images: name one with :TAG or @DIGEST",
                    index.manifests.len()
                )));
            }
        },
    };
    let what = match select {
        LayoutSelect::Digest(d) => d.to_string(),
        LayoutSelect::Tag(t) => format!("tag {t:?}"),
        LayoutSelect::Only => "an image".to_owned(),
    };
    let mut desc = chosen
        .cloned()
        .ok_or_else(|| bad(format!("index.json has no {what}")))?;
    let store_err = |source| NamedContextError::Store {
        name: name.to_owned(),
        source,
    };
    copy_blob(path, &desc, store).map_err(&bad)?;
    if kiln_image::media_type::is_index(&desc.media_type) {
        let nested: kiln_image::Index =
            serde_json::from_slice(&store.read_blob(&desc.digest).map_err(store_err)?)
                .map_err(|e| bad(format!("{}: {e}", desc.digest)))?;
        desc = nested
            .select(platform)
            .cloned()
            .ok_or_else(|| bad(format!("{what} has no image for {platform}")))?;
        copy_blob(path, &desc, store).map_err(&bad)?;
    }
    let manifest = kiln_image::parse_manifest(&store.read_blob(&desc.digest).map_err(store_err)?)
        .map_err(|e| bad(format!("{}: {e}", desc.digest)))?;
    copy_blob(path, &manifest.config, store).map_err(&bad)?;
    for layer in &manifest.layers {
        copy_blob(path, layer, store).map_err(&bad)?;
    }
    StoredImage::load(store, &desc.digest).map_err(|source| NamedContextError::Image {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

/// Copies the blob `desc` names from the layout into the store, unless it is there already;
/// it is published only if its digest and size are the descriptor's.
fn copy_blob(layout: &Path, desc: &Descriptor, store: &Store) -> Result<(), String> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let path = layout.join(kiln_image::layout::blob_path(&desc.digest));
    let mut file = std::fs::File::open(&path).map_err(|e| format!("blob {}: {e}", desc.digest))?;
    let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("blob {}: {e}", desc.digest))?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut writer, &buf[..n])
            .map_err(|e| format!("blob {}: {e}", desc.digest))?;
    }
    writer
        .commit(Some((&desc.digest, desc.size)))
        .map_err(|e| format!("blob {}: {e}", desc.digest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_values_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let (name, ctx) = NamedContext::parse("project=src", dir.path()).unwrap();
        assert_eq!(name, "project");
        assert!(matches!(ctx, NamedContext::Directory(p) if p.ends_with("src")));
        let (_, ctx) =
            NamedContext::parse("alpine=docker-image://busybox:1.36", dir.path()).unwrap();
        assert!(matches!(ctx, NamedContext::Image(r) if r.to_string().ends_with("busybox:1.36")));
        std::fs::write(dir.path().join("src/index.json"), "{}").unwrap();
        let (_, ctx) = NamedContext::parse("b=oci-layout://src:v1", dir.path()).unwrap();
        assert!(
            matches!(ctx, NamedContext::OciLayout { select: LayoutSelect::Tag(t), .. } if t == "v1")
        );

        let e = NamedContext::parse("p=nowhere", dir.path()).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        assert_eq!(e.kind(), kiln_error::ErrorKind::NotFound);
        for bad in ["noequals", "=x", "p=", "p=ftp://x/y.tar"] {
            let e = NamedContext::parse(bad, dir.path()).unwrap_err();
            assert_eq!(
                e.kind(),
                kiln_error::ErrorKind::InvalidArgument,
                "{bad}: {e}"
            );
        }
    }
}
