//! Pushing an image from the store: every blob the registry lacks (monolithic upload, streamed
//! from the store file), then the manifest bytes exactly as stored, so the registry computes the
//! same digest kiln did.
//!
//! A later issue adds chunked and resumable uploads and cross-repository mounts in
//! [`RegistryClient::push_blob`].

use futures_util::TryStreamExt;
use kiln_image::{Descriptor, Digest};
use kiln_store::{Store, StoreError};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, StatusCode};
use tokio_util::io::ReaderStream;

use crate::RegistryClient;
use crate::content::{ManifestError, ParsedManifest, parse_manifest};
use crate::error::RegistryError;
use crate::pull::content_digest_header;
use crate::reference::Reference;
use crate::transport::{Repo, check_status, resolve_location, upload_completion_url};

/// Blobs uploaded at the same time.
const CONCURRENT_UPLOADS: usize = 3;

/// Progress of a push, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The registry already has this blob; it was not uploaded.
    BlobExists {
        digest: Digest,
    },
    BlobUploadStart {
        digest: Digest,
        size: u64,
    },
    BlobUploaded {
        digest: Digest,
    },
    /// A manifest (or index) was stored under `reference` (a tag, or a digest for the manifests
    /// of an index).
    ManifestPushed {
        digest: Digest,
        reference: String,
    },
}

impl RegistryClient {
    /// Pushes the manifest (or index) `manifest_digest` and everything it references from
    /// `store` to `dest`'s repository, tagged with `dest`'s tag (by digest if it has none).
    /// Returns the pushed digest.
    pub async fn push(
        &self,
        store: &Store,
        manifest_digest: &Digest,
        dest: &Reference,
        on_event: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<Digest, RegistryError> {
        if let Some(pinned) = dest.digest()
            && pinned != manifest_digest
        {
            return Err(RegistryError::Protocol {
                registry: dest.registry().to_owned(),
                repository: dest.repository().to_owned(),
                object: format!("manifest {manifest_digest}"),
                message: format!("the destination is pinned to a different digest, {pinned}"),
            });
        }
        let repo = self.repo(dest, "pull,push")?;
        let (bytes, parsed) = read_stored_manifest(store, dest, manifest_digest)?;
        match &parsed {
            ParsedManifest::Image { manifest, .. } => {
                self.push_image_blobs(store, &repo, &manifest.config, &manifest.layers, on_event)
                    .await?;
            }
            ParsedManifest::Index { index, .. } => {
                for child in &index.manifests {
                    let (child_bytes, child_parsed) =
                        read_stored_manifest(store, dest, &child.digest)?;
                    let ParsedManifest::Image { manifest, .. } = &child_parsed else {
                        return Err(RegistryError::UnsupportedManifest {
                            reference: format!(
                                "{}@{}",
                                dest.repository_with_registry(),
                                child.digest
                            ),
                            media_type: format!(
                                "{} (an index nested in an index)",
                                child_parsed.media_type()
                            ),
                        });
                    };
                    self.push_image_blobs(
                        store,
                        &repo,
                        &manifest.config,
                        &manifest.layers,
                        on_event,
                    )
                    .await?;
                    let name = child.digest.to_string();
                    self.put_manifest(
                        &repo,
                        &name,
                        child_bytes,
                        &child.digest,
                        child_parsed.media_type(),
                    )
                    .await?;
                    on_event(PushEvent::ManifestPushed {
                        digest: child.digest.clone(),
                        reference: name,
                    });
                }
            }
        }
        let name = dest
            .tag()
            .map_or_else(|| manifest_digest.to_string(), str::to_owned);
        self.put_manifest(&repo, &name, bytes, manifest_digest, parsed.media_type())
            .await?;
        on_event(PushEvent::ManifestPushed {
            digest: manifest_digest.clone(),
            reference: name,
        });
        Ok(manifest_digest.clone())
    }

    async fn push_image_blobs(
        &self,
        store: &Store,
        repo: &Repo,
        config: &Descriptor,
        layers: &[Descriptor],
        on_event: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<(), RegistryError> {
        futures_util::stream::iter(std::iter::once(config).chain(layers).map(Ok))
            .try_for_each_concurrent(CONCURRENT_UPLOADS, |blob| {
                self.push_blob(store, repo, blob, on_event)
            })
            .await
    }

    /// Uploads one blob unless the registry already has it.
    async fn push_blob(
        &self,
        store: &Store,
        repo: &Repo,
        blob: &Descriptor,
        on_event: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let object = format!("blob {}", blob.digest);
        let size = store
            .blob_size(&blob.digest)
            .map_err(|e| local_error(&object, e))?;
        if size != blob.size {
            return Err(local_error(
                &object,
                StoreError::SizeMismatch {
                    digest: blob.digest.clone(),
                    expected: blob.size,
                    actual: size,
                },
            ));
        }

        let blob_url = repo.url(&format!("blobs/{}", blob.digest));
        let response = self
            .send(repo, &object, |http| Ok(http.head(blob_url.clone())))
            .await?;
        if response.status() == StatusCode::OK {
            on_event(PushEvent::BlobExists {
                digest: blob.digest.clone(),
            });
            return Ok(());
        }
        check_status(repo, &object, response, &[StatusCode::NOT_FOUND]).await?;

        on_event(PushEvent::BlobUploadStart {
            digest: blob.digest.clone(),
            size,
        });
        let upload_object = format!("upload of {object}");
        // A broken PUT leaves the upload session in an unknown state, so a retry starts a new
        // upload rather than repeating the PUT.
        let max_attempts = self.config().max_attempts.max(1);
        let mut tries = 1;
        let response = loop {
            match self
                .upload_blob_once(store, repo, blob, size, &object, &upload_object)
                .await
            {
                Err(error) if error.is_retryable() && tries < max_attempts => {
                    tokio::time::sleep(self.retry_delay(tries, None)).await;
                    tries += 1;
                }
                Err(error) if error.is_retryable() && tries > 1 => {
                    return Err(RegistryError::GaveUp {
                        attempts: tries,
                        last: Box::new(error),
                    });
                }
                result => break result?,
            }
        };
        if let Some(Ok(reported)) = content_digest_header(response.headers())
            && reported != blob.digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: repo.registry.clone(),
                repository: repo.repository.clone(),
                object: upload_object,
                expected: blob.digest.clone(),
                actual: reported,
            });
        }
        on_event(PushEvent::BlobUploaded {
            digest: blob.digest.clone(),
        });
        Ok(())
    }

    /// Starts an upload and PUTs the whole blob, streamed from the store file. The PUT is sent
    /// once; [`Self::push_blob`] retries by starting over.
    async fn upload_blob_once(
        &self,
        store: &Store,
        repo: &Repo,
        blob: &Descriptor,
        size: u64,
        object: &str,
        upload_object: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let start_url = repo.url("blobs/uploads/");
        let response = self
            .send(repo, upload_object, |http| {
                Ok(http.post(start_url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        let response = check_status(repo, upload_object, response, &[StatusCode::ACCEPTED]).await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                repo.protocol(
                    upload_object,
                    "the registry started an upload without a Location header",
                )
            })?;
        let location = resolve_location(response.url(), location)
            .map_err(|m| repo.protocol(upload_object, m))?;
        let put_url = upload_completion_url(&location, &blob.digest);

        let path = store.blob_path(&blob.digest);
        let response = self
            .send_once_authorized(repo, upload_object, |http| {
                // Reopened for each attempt: a streamed body cannot be replayed.
                let file = std::fs::File::open(&path).map_err(|e| {
                    local_error(
                        object,
                        StoreError::Io {
                            path: path.clone(),
                            source: e,
                        },
                    )
                })?;
                let body = Body::wrap_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
                Ok(http
                    .put(put_url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(body))
            })
            .await?;
        check_status(repo, upload_object, response, &[StatusCode::CREATED]).await
    }

    /// PUTs manifest bytes unchanged under `name` (a tag or a digest).
    async fn put_manifest(
        &self,
        repo: &Repo,
        name: &str,
        bytes: Vec<u8>,
        digest: &Digest,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let object = format!("manifest {name}");
        let url = repo.url(&format!("manifests/{name}"));
        let body = bytes::Bytes::from(bytes);
        let response = self
            .send(repo, &object, |http| {
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        let response = check_status(
            repo,
            &object,
            response,
            &[StatusCode::CREATED, StatusCode::OK],
        )
        .await?;
        if let Some(Ok(reported)) = content_digest_header(response.headers())
            && reported != *digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: repo.registry.clone(),
                repository: repo.repository.clone(),
                object,
                expected: digest.clone(),
                actual: reported,
            });
        }
        Ok(())
    }
}

fn read_stored_manifest(
    store: &Store,
    dest: &Reference,
    digest: &Digest,
) -> Result<(Vec<u8>, ParsedManifest), RegistryError> {
    let object = format!("manifest {digest}");
    let bytes = store
        .read_blob(digest)
        .map_err(|e| local_error(&object, e))?;
    let parsed = parse_manifest(None, &bytes).map_err(|e| match e {
        ManifestError::Unsupported(media_type) => RegistryError::UnsupportedManifest {
            reference: format!("{}@{digest}", dest.repository_with_registry()),
            media_type,
        },
        ManifestError::Invalid(message) => RegistryError::LocalStore {
            object: object.clone(),
            source: Box::new(StoreError::Corrupt {
                path: store.blob_path(digest),
                message,
            }),
        },
    })?;
    Ok((bytes, parsed))
}

fn local_error(object: &str, source: StoreError) -> RegistryError {
    RegistryError::LocalStore {
        object: format!("local {object}"),
        source: Box::new(source),
    }
}
