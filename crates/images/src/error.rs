//! The image service's error type.

use kiln_error::ErrorKind;

/// Why an image operation failed. Each variant names the image it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no such image: {0}")]
    NotFound(String),
    /// An ID prefix that more than one image's ID starts with, as for containers.
    #[error("{query:?} matches {count} images; give more of the ID or a name")]
    Ambiguous { query: String, count: usize },
    /// `kiln rmi` of the last name of an image a container uses, without `-f`.
    #[error(
        "unable to remove repository reference \"{reference}\" (must force) - container {container} is using its referenced image {image}"
    )]
    ReferenceInUse {
        reference: String,
        container: String,
        image: String,
    },
    /// `kiln rmi` by ID of an image a container uses (running: even `-f` does not remove it,
    /// as in Docker).
    #[error(
        "unable to delete {image} ({}) - image is being used by {} container {container}",
        if *running { "cannot be forced" } else { "must be forced" },
        if *running { "running" } else { "stopped" }
    )]
    ImageInUse {
        image: String,
        container: String,
        running: bool,
    },
    /// `kiln rmi` by ID of an image with names in several repositories, without `-f`.
    #[error(
        "unable to delete {image} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleRepositories { image: String },
    #[error("refusing to create a tag with a digest reference: {0}")]
    TagWithDigest(String),
    #[error(
        "invalid filter {0:?}: expected reference=PATTERN, dangling=true|false or label=KEY[=VALUE]"
    )]
    BadFilter(String),
    #[error(
        "invalid prune filter {0:?}: expected dangling=true|false, until=TIME or label[!]=KEY[=VALUE]"
    )]
    BadPruneFilter(String),
    /// The image's blobs do not make an image (the message says what is wrong).
    #[error("image {reference}: {source}")]
    Invalid {
        reference: String,
        source: kiln_image::InvalidImage,
    },
    /// A stored image index has no image for this platform (and more than one for others).
    #[error("image index {index} has no image for this platform")]
    NoPlatform { index: kiln_image::Digest },
    /// A stored image index has no image for the platform asked for.
    #[error("image index {index} has no image for {platform}; it has: {available}")]
    PlatformNotInIndex {
        index: kiln_image::Digest,
        platform: String,
        available: String,
    },
    /// The local image is for another platform and pulling the wanted one failed too. (The
    /// pull error is part of the message, so it is not also reported as the source.)
    #[error(
        "the local image {image} is for {local}, not {platform}, and pulling it for {platform} failed: {pull_error}"
    )]
    LocalImageForOtherPlatform {
        image: String,
        local: String,
        platform: String,
        pull_error: Box<ImageError>,
    },
    #[error(transparent)]
    Reference(#[from] kiln_image::ReferenceError),
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Container(#[from] kiln_store::ContainerError),
    #[error(transparent)]
    Layer(#[from] kiln_layer::LayerError),
}

impl ImageError {
    /// An unknown image is [`ErrorKind::NotFound`]; an image or name in use
    /// [`ErrorKind::Conflict`] (Docker answers 409); an ambiguous prefix, a bad filter or tag
    /// [`ErrorKind::InvalidArgument`]; a damaged stored image [`ErrorKind::Internal`]. Errors of
    /// the libraries below keep their kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound(_)
            | ImageError::NoPlatform { .. }
            | ImageError::PlatformNotInIndex { .. } => ErrorKind::NotFound,
            ImageError::ReferenceInUse { .. }
            | ImageError::ImageInUse { .. }
            | ImageError::MultipleRepositories { .. } => ErrorKind::Conflict,
            ImageError::Ambiguous { .. }
            | ImageError::TagWithDigest(_)
            | ImageError::BadFilter(_)
            | ImageError::BadPruneFilter(_) => ErrorKind::InvalidArgument,
            ImageError::Invalid { source, .. } => source.kind(),
            ImageError::LocalImageForOtherPlatform { pull_error, .. } => pull_error.kind(),
            ImageError::Reference(e) => e.kind(),
            ImageError::Registry(e) => e.kind(),
            ImageError::Store(e) => e.kind(),
            ImageError::Container(e) => e.kind(),
            ImageError::Layer(e) => e.kind(),
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
