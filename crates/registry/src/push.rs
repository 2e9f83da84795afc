//! Pushing an image from the store: for each blob (several at once) a HEAD to skip what the
//! registry has, then a cross-repository mount when another repository of the registry is known
//! to hold it (see `Store::blob_sources`), then an upload streamed from the store file —
//! monolithic for small blobs, chunked with resume for large ones (`upload`); last the manifest
//! bytes exactly as stored, so the registry computes the same digest kiln did.

use futures_util::TryStreamExt;
use kiln_image::{Descriptor, Digest};
use kiln_store::{Store, StoreError};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

use crate::RegistryClient;
use crate::content::{ManifestError, ParsedManifest, parse_manifest};
use crate::error::RegistryError;
use crate::pull::content_digest_header;
use crate::reference::Reference;
use crate::transport::{Repo, check_status, upload_completion_url};
use crate::upload::{CHUNKED_UPLOAD_THRESHOLD, file_section_body, upload_location};

/// Blobs uploaded at the same time.
const CONCURRENT_UPLOADS: usize = 3;

/// Progress of a push, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The registry already has this blob; it was not uploaded.
    BlobExists {
        digest: Digest,
    },
    /// The registry mounted this blob from `from`, another of its repositories.
    BlobMounted {
        digest: Digest,
        from: String,
    },
    BlobUploadStart {
        digest: Digest,
        size: u64,
    },
    /// A chunked upload broke off and continues at byte `offset` (0: it started over).
    BlobUploadResumed {
        digest: Digest,
        offset: u64,
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
        // An image may list one layer several times: upload it once, not twice at once.
        let mut seen = std::collections::BTreeSet::new();
        let blobs = std::iter::once(config)
            .chain(layers)
            .filter(|b| seen.insert(&b.digest));
        futures_util::stream::iter(blobs.map(Ok))
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
            self.remember_source(store, repo, &blob.digest);
            on_event(PushEvent::BlobExists {
                digest: blob.digest.clone(),
            });
            return Ok(());
        }
        check_status(repo, &object, response, &[StatusCode::NOT_FOUND]).await?;

        let mut session = None;
        let sources = store
            .blob_sources(&repo.registry, &blob.digest)
            .unwrap_or_default();
        if let Some(from) = sources.into_iter().find(|r| *r != repo.repository) {
            match self.mount_blob(repo, &blob.digest, &from).await? {
                MountOutcome::Mounted => {
                    self.remember_source(store, repo, &blob.digest);
                    on_event(PushEvent::BlobMounted {
                        digest: blob.digest.clone(),
                        from,
                    });
                    return Ok(());
                }
                MountOutcome::Refused(upload) => session = upload,
            }
        }

        on_event(PushEvent::BlobUploadStart {
            digest: blob.digest.clone(),
            size,
        });
        let upload_object = format!("upload of {object}");
        let response = if size > CHUNKED_UPLOAD_THRESHOLD {
            self.upload_chunked(store, repo, blob, session, &upload_object, on_event)
                .await?
        } else {
            self.upload_monolithic(store, repo, blob, session, &upload_object)
                .await?
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
        self.remember_source(store, repo, &blob.digest);
        on_event(PushEvent::BlobUploaded {
            digest: blob.digest.clone(),
        });
        Ok(())
    }

    /// Notes that `repo` now holds `digest`, for mounts into other repositories later. A failure
    /// to write the hint must not fail the push.
    fn remember_source(&self, store: &Store, repo: &Repo, digest: &Digest) {
        let _ = store.record_blob_source(&repo.registry, digest, &repo.repository);
    }

    /// Asks the registry to mount `digest` from its repository `from` into `repo`. The token
    /// request includes pull access to `from`; a registry that will not mount (no access, blob
    /// gone, mounts disabled) starts an ordinary upload instead, whose URL is returned.
    async fn mount_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome, RegistryError> {
        let object = format!("mount of blob {digest} from {from}");
        let mount_repo = repo.clone().with_mount_source(from);
        let mut url = repo.url("blobs/uploads/");
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let response = self
            .send(&mount_repo, &object, |http| {
                Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::Refused(
                upload_location(repo, &object, &response).ok(),
            )),
            // Anything else (denied, unknown repository) is no reason to fail the push: the
            // blob is uploaded as if no source were known.
            _ => Ok(MountOutcome::Refused(None)),
        }
    }

    /// Starts an upload session; returns its URL.
    pub(crate) async fn start_upload(
        &self,
        repo: &Repo,
        upload_object: &str,
    ) -> Result<Url, RegistryError> {
        let start_url = repo.url("blobs/uploads/");
        let response = self
            .send(repo, upload_object, |http| {
                Ok(http.post(start_url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        let response = check_status(repo, upload_object, response, &[StatusCode::ACCEPTED]).await?;
        upload_location(repo, upload_object, &response)
    }

    /// Uploads a blob with one PUT, streamed from the store file. A broken PUT leaves the
    /// session in an unknown state, so a retry starts a new upload rather than repeating it.
    async fn upload_monolithic(
        &self,
        store: &Store,
        repo: &Repo,
        blob: &Descriptor,
        mut session: Option<Url>,
        upload_object: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let max_attempts = self.config().max_attempts.max(1);
        let mut tries = 1;
        loop {
            let result = async {
                let location = match session.take() {
                    Some(url) => url,
                    None => self.start_upload(repo, upload_object).await?,
                };
                let put_url = upload_completion_url(&location, &blob.digest);
                let response = self
                    .send_once_authorized(repo, upload_object, |http| {
                        let body =
                            file_section_body(store, &blob.digest, 0, blob.size, upload_object)?;
                        Ok(http
                            .put(put_url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, blob.size)
                            .body(body))
                    })
                    .await?;
                check_status(repo, upload_object, response, &[StatusCode::CREATED]).await
            }
            .await;
            match result {
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
                result => return result,
            }
        }
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

/// What became of a mount request.
enum MountOutcome {
    Mounted,
    /// Not mounted; the registry may have started an upload session instead (its URL).
    Refused(Option<Url>),
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

pub(crate) fn local_error(object: &str, source: StoreError) -> RegistryError {
    RegistryError::LocalStore {
        object: format!("local {object}"),
        source: Box::new(source),
    }
}
