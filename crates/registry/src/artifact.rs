//! Single objects of a repository, for callers that manage their own artifacts (the build
//! cache export): one image manifest by reference, one blob by descriptor. Unlike
//! [`RegistryClient::pull`] nothing else is fetched, so a caller can read a manifest's config
//! and download its layers only when, and if, it needs them.

use kiln_image::{Descriptor, Digest, Manifest};
use kiln_store::Store;

use crate::RegistryClient;
use crate::content::ParsedManifest;
use crate::error::RegistryError;
use crate::reference::Reference;

/// An image manifest as the registry holds it.
#[derive(Debug, Clone)]
pub struct FetchedImageManifest {
    pub digest: Digest,
    /// The exact bytes (their SHA-256 is `digest`).
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl RegistryClient {
    /// GETs the image manifest `reference` names, verified against the pinned digest or the
    /// registry's `Docker-Content-Digest`. An index is an error: artifacts are single manifests.
    pub async fn fetch_image_manifest(
        &self,
        reference: &Reference,
    ) -> Result<FetchedImageManifest, RegistryError> {
        let repo = self.repo(reference, "pull")?;
        let fetched = self
            .fetch_manifest(
                &repo,
                reference,
                &reference.manifest_reference(),
                reference.digest(),
            )
            .await?;
        match fetched.parsed {
            ParsedManifest::Image { manifest, .. } => Ok(FetchedImageManifest {
                digest: fetched.digest,
                bytes: fetched.bytes.to_vec(),
                manifest,
            }),
            ParsedManifest::Index { media_type, .. } => Err(RegistryError::UnsupportedManifest {
                reference: reference.familiar(),
                media_type: format!("{media_type} (an index, not a single manifest)"),
            }),
        }
    }

    /// Downloads the blob `descriptor` from `reference`'s repository into `store` (streamed,
    /// verified against its digest and size, resumed after a cut) unless the store has it.
    /// Returns whether it was downloaded. The repository is remembered as a source of the blob
    /// for later cross-repository mounts.
    pub async fn fetch_blob(
        &self,
        store: &Store,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<bool, RegistryError> {
        if store.has_blob(&descriptor.digest) {
            return Ok(false);
        }
        let repo = self.repo(reference, "pull")?;
        self.download_blob(
            store,
            &repo,
            descriptor,
            &format!("blob {}", descriptor.digest),
        )
        .await?;
        // A lost hint only costs an upload later.
        let _ = store.record_blob_source(&repo.registry, &descriptor.digest, &repo.repository);
        Ok(true)
    }
}
