//! Pushing an image under one or more names, with progress events.

use kiln_image::{Digest, Reference};
use kiln_registry::{PushFormat, RegistryClient};
use kiln_store::Store;

use crate::error::Result;
use crate::stored::StoredImage;

/// What a push reports while it runs, in order for each reference: `Started`, the blob events
/// of the registry client, `Pushed`.
#[derive(Debug, Clone)]
pub enum PushProgress {
    /// The push of `reference` begins.
    Started { reference: Reference },
    /// A blob was skipped, mounted, uploaded or resumed.
    Blob(kiln_registry::PushEvent),
    /// The manifest is stored under `reference` (Docker prints `<tag>: digest: … size: N`).
    Pushed {
        reference: Reference,
        digest: Digest,
        size: u64,
    },
}

/// What one push stored: the manifest digest and size under `references`.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub references: Vec<Reference>,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Pushes `img` under each of `references`, in `format` (`--format docker|oci`: a manifest
/// with rewritten media types, same config and layers) or as stored — an image reached
/// through an index (attestations) is pushed as that index, with every manifest it lists.
pub async fn push_image(
    store: &Store,
    registry: &RegistryClient,
    img: &StoredImage,
    references: &[Reference],
    format: Option<PushFormat>,
    on_event: &(dyn Fn(PushProgress) + Send + Sync),
) -> Result<Pushed> {
    let manifest_digest = match format {
        Some(format) => kiln_registry::manifest_in_format(store, &img.manifest_digest, format)?,
        None => img.root_digest().clone(),
    };
    let media_type = if Some(&manifest_digest) == img.index_digest.as_ref() {
        kiln_image::media_type::OCI_INDEX.to_owned()
    } else {
        kiln_image::parse_manifest(&store.read_blob(&manifest_digest)?)
            .map_err(|source| crate::ImageError::Invalid {
                reference: manifest_digest.to_string(),
                source,
            })?
            .media_type
            .unwrap_or_else(|| kiln_image::media_type::OCI_MANIFEST.to_owned())
    };
    let size = store.blob_size(&manifest_digest)?;
    for reference in references {
        on_event(PushProgress::Started {
            reference: reference.clone(),
        });
        let on_blob = |e| on_event(PushProgress::Blob(e));
        let digest = registry
            .push(store, &manifest_digest, reference, &on_blob)
            .await?;
        on_event(PushProgress::Pushed {
            reference: reference.clone(),
            digest,
            size,
        });
    }
    Ok(Pushed {
        references: references.to_vec(),
        digest: manifest_digest,
        size,
        media_type,
    })
}
