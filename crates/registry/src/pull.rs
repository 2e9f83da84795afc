//! Pulling an image into the store: resolve the manifest (through an index if there is one),
//! then stream the config and missing layers into verified blobs. An index's attestation
//! manifests for the chosen image (BuildKit's SBOM and provenance) come along, and the pull
//! names what the store should point at: the index when it holds attestations (see
//! [`kiln_image::attestation`]), else the image manifest.
//!
//! Manifests are written to the store last, so a manifest in the store always has all its blobs
//! beside it, and a failed pull leaves only complete, verified blobs behind.

use std::io::Write;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use kiln_image::{Descriptor, Digest, ImageConfig, Manifest, Platform};
use kiln_store::{Store, StoreError};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, RANGE};
use tokio::sync::mpsc;

use crate::RegistryClient;
use crate::content::{
    MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, ManifestError, ParsedManifest, parse_manifest,
};
use crate::error::RegistryError;
use crate::reference::Reference;
use crate::transport::{Repo, check_status, read_capped};

/// Layers downloaded at the same time.
const CONCURRENT_DOWNLOADS: usize = 3;

/// Progress of a pull, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to this manifest (or index) digest.
    Resolved {
        digest: Digest,
    },
    LayerStart {
        digest: Digest,
        size: u64,
    },
    LayerDone {
        digest: Digest,
    },
    /// The layer was already in the store.
    LayerCached {
        digest: Digest,
    },
}

/// What a pull produced. All of it is in the store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The platform-specific image manifest (not the index).
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub config_digest: Digest,
    /// The index the manifest was selected from, when the reference named one.
    pub index_digest: Option<Digest>,
    /// What a local name should point at: `manifest_digest`, or an index in the store holding
    /// it and its attestation manifests (`index_digest` itself, or one made of those entries
    /// when the index lists other platforms too).
    pub root_digest: Digest,
}

/// A manifest as fetched: exact bytes, their digest, and what they parse to.
pub(crate) struct FetchedManifest {
    pub(crate) bytes: Bytes,
    pub(crate) digest: Digest,
    pub(crate) parsed: ParsedManifest,
}

impl RegistryClient {
    /// Pulls `reference` for `platform` into `store`. Blobs already in the store are not fetched.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        on_event: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<PulledImage, RegistryError> {
        let repo = self.repo(reference, "pull")?;
        let top = self
            .fetch_manifest(
                &repo,
                reference,
                &reference.manifest_reference(),
                reference.digest(),
            )
            .await?;
        on_event(PullEvent::Resolved {
            digest: top.digest.clone(),
        });

        let (index, image, attestations) = match &top.parsed {
            ParsedManifest::Image { .. } => (None, top, Vec::new()),
            ParsedManifest::Index { index, .. } => {
                let Some(chosen) = index.select(platform) else {
                    let available = index
                        .manifests
                        .iter()
                        .filter(|d| kiln_image::media_type::is_manifest(&d.media_type))
                        .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                        .collect();
                    return Err(RegistryError::PlatformNotFound {
                        reference: reference.familiar(),
                        wanted: platform.to_string(),
                        available,
                    });
                };
                let chosen = chosen.clone();
                let kept = kiln_image::attestation::keep(index, &chosen);
                let attestations: Vec<Descriptor> =
                    kiln_image::attestation::of(index, &chosen.digest)
                        .into_iter()
                        .cloned()
                        .collect();
                let image = self
                    .fetch_manifest(
                        &repo,
                        reference,
                        &chosen.digest.to_string(),
                        Some(&chosen.digest),
                    )
                    .await?;
                (Some((top, kept, chosen)), image, attestations)
            }
        };
        let ParsedManifest::Image { manifest, .. } = &image.parsed else {
            return Err(RegistryError::UnsupportedManifest {
                reference: format!("{}@{}", reference.repository_with_registry(), image.digest),
                media_type: format!(
                    "{} (an index nested in an index)",
                    image.parsed.media_type()
                ),
            });
        };

        let config_object = format!("config {}", manifest.config.digest);
        if !store.has_blob(&manifest.config.digest) {
            self.download_blob(store, &repo, &manifest.config, &config_object)
                .await?;
        }
        let config_bytes = store
            .read_blob(&manifest.config.digest)
            .map_err(|e| store_error(&repo, &config_object, e))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| repo.protocol(&config_object, format!("invalid image config: {e}")))?;

        let repo_ref = &repo;
        // An image may list one layer several times: fetch it once, not twice at once.
        let mut seen = std::collections::BTreeSet::new();
        let layers = manifest.layers.iter().filter(|l| seen.insert(&l.digest));
        futures_util::stream::iter(layers.map(Ok))
            .try_for_each_concurrent(CONCURRENT_DOWNLOADS, |layer| async move {
                if store.has_blob(&layer.digest) {
                    on_event(PullEvent::LayerCached {
                        digest: layer.digest.clone(),
                    });
                    return Ok(());
                }
                on_event(PullEvent::LayerStart {
                    digest: layer.digest.clone(),
                    size: layer.size,
                });
                self.download_blob(store, repo_ref, layer, &format!("layer {}", layer.digest))
                    .await?;
                on_event(PullEvent::LayerDone {
                    digest: layer.digest.clone(),
                });
                Ok::<(), RegistryError>(())
            })
            .await?;

        // The attestation manifests (small in-toto blobs) before the image manifest, which
        // stays the last thing stored for the image.
        let mut attested = true;
        for att in &attestations {
            match self.pull_attestation(store, &repo, reference, att).await {
                Ok(()) => {}
                // A registry that lost an attestation (or a partial copy that never had it)
                // still serves the image: it is kept bare, as before attestations travelled.
                Err(e) if e.kind() == kiln_error::ErrorKind::NotFound => {
                    attested = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        store_manifest(store, &repo, &image)?;
        // Hints for cross-repository mounts when these blobs are pushed to this registry later;
        // losing one only costs an upload.
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let _ = store.record_blob_source(&repo.registry, &blob.digest, &repo.repository);
        }
        let mut root_digest = image.digest.clone();
        if let Some((index, kept, chosen)) = &index {
            store_manifest(store, &repo, index)?;
            match kept {
                _ if !attested => {}
                kiln_image::attestation::Kept::Manifest => {}
                kiln_image::attestation::Kept::Whole => root_digest = index.digest.clone(),
                kiln_image::attestation::Kept::Reduced(reduced) => {
                    debug_assert_eq!(reduced.manifests[0].digest, chosen.digest);
                    root_digest = store
                        .write_blob(&kiln_image::to_canonical_json(reduced))
                        .map_err(|e| store_error(&repo, "image index", e))?;
                }
            }
        }
        Ok(PulledImage {
            manifest_digest: image.digest.clone(),
            manifest: manifest.clone(),
            config_digest: manifest.config.digest.clone(),
            config,
            index_digest: index.map(|(i, _, _)| i.digest),
            root_digest,
        })
    }

    /// Fetches an attestation manifest `att` and its blobs (config and in-toto statements)
    /// into the store, the manifest last.
    async fn pull_attestation(
        &self,
        store: &Store,
        repo: &Repo,
        reference: &Reference,
        att: &Descriptor,
    ) -> Result<(), RegistryError> {
        let fetched = self
            .fetch_manifest(repo, reference, &att.digest.to_string(), Some(&att.digest))
            .await?;
        let ParsedManifest::Image { manifest, .. } = &fetched.parsed else {
            return Err(RegistryError::UnsupportedManifest {
                reference: format!("{}@{}", reference.repository_with_registry(), att.digest),
                media_type: format!(
                    "{} (an attestation manifest that is an index)",
                    fetched.parsed.media_type()
                ),
            });
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !store.has_blob(&blob.digest) {
                let object = format!("attestation blob {}", blob.digest);
                self.download_blob(store, repo, blob, &object).await?;
            }
        }
        store_manifest(store, repo, &fetched)
    }

    /// The digest `reference` currently names (its manifest or index), asked with a HEAD request.
    pub async fn resolve_manifest_digest(
        &self,
        reference: &Reference,
    ) -> Result<Digest, RegistryError> {
        let repo = self.repo(reference, "pull")?;
        let name = reference.manifest_reference();
        let object = format!("manifest {name}");
        let url = repo.url(&format!("manifests/{name}"));
        let response = self
            .send(&repo, &object, |http| {
                Ok(http.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        let response = check_status(&repo, &object, response, &[StatusCode::OK]).await?;
        match content_digest_header(response.headers()) {
            Some(digest) => digest.map_err(|e| {
                repo.protocol(
                    &object,
                    format!("invalid Docker-Content-Digest header: {e}"),
                )
            }),
            // The header is optional in the spec; without it the bytes themselves tell.
            None => Ok(self
                .fetch_manifest(&repo, reference, &name, reference.digest())
                .await?
                .digest),
        }
    }

    /// GETs a manifest by tag or digest and verifies it against `expected` (when pinned) or the
    /// registry's `Docker-Content-Digest` header (when it sends one).
    pub(crate) async fn fetch_manifest(
        &self,
        repo: &Repo,
        reference: &Reference,
        name: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let object = format!("manifest {name}");
        let url = repo.url(&format!("manifests/{name}"));
        let response = self
            .send(repo, &object, |http| {
                Ok(http.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        let response = check_status(repo, &object, response, &[StatusCode::OK]).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header_digest = content_digest_header(response.headers())
            .transpose()
            .map_err(|e| repo.protocol(&object, e.to_string()))?;
        let bytes = read_capped(repo, &object, response, MAX_MANIFEST_SIZE).await?;
        let digest = Digest::of(&bytes);
        if let Some(want) = expected.or(header_digest.as_ref())
            && *want != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: repo.registry.clone(),
                repository: repo.repository.clone(),
                object,
                expected: want.clone(),
                actual: digest,
            });
        }
        let parsed = parse_manifest(content_type.as_deref(), &bytes).map_err(|e| match e {
            ManifestError::Unsupported(media_type) => RegistryError::UnsupportedManifest {
                reference: reference.familiar(),
                media_type,
            },
            ManifestError::Invalid(message) => repo.protocol(&object, message),
        })?;
        Ok(FetchedManifest {
            bytes,
            digest,
            parsed,
        })
    }

    /// Streams a blob into the store. A blocking task does the file writes; the store only
    /// publishes the blob if its digest and size match `descriptor`. A transfer cut off midway
    /// is resumed with `Range` from the bytes already written (or restarted, skipping them, if
    /// the registry ignores `Range`), up to the client's attempt limit; the digest is checked
    /// over the whole blob either way.
    pub(crate) async fn download_blob(
        &self,
        store: &Store,
        repo: &Repo,
        descriptor: &Descriptor,
        object: &str,
    ) -> Result<(), RegistryError> {
        let writer = store
            .blob_writer()
            .map_err(|e| store_error(repo, object, e))?;
        let (chunks, mut receiver) = mpsc::channel::<Chunk>(16);
        let expected = (descriptor.digest.clone(), descriptor.size);
        let write_task =
            tokio::task::spawn_blocking(move || write_chunks(writer, &mut receiver, expected));

        let outcome = self.receive_blob(repo, descriptor, object, &chunks).await;
        if outcome.is_ok() {
            // Only an explicit end commits; a dropped sender discards the partial blob.
            let _ = chunks.send(Chunk::End).await;
        }
        drop(chunks);
        let written = write_task
            .await
            .map_err(|e| repo.protocol(object, format!("blob writer task failed: {e}")))?;
        outcome?;
        written.map_err(|e| store_error(repo, object, e))
    }

    /// Fetches the blob's bytes into `chunks`, resuming after broken transfers.
    async fn receive_blob(
        &self,
        repo: &Repo,
        descriptor: &Descriptor,
        object: &str,
        chunks: &mpsc::Sender<Chunk>,
    ) -> Result<(), RegistryError> {
        let url = repo.url(&format!("blobs/{}", descriptor.digest));
        let max_attempts = self.config().max_attempts.max(1);
        let mut received = 0u64;
        let mut tries = 1;
        loop {
            let offset = received;
            let response = self
                .send(repo, object, |http| {
                    let request = http.get(url.clone());
                    Ok(if offset > 0 {
                        request.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        request
                    })
                })
                .await?;
            let response = check_status(
                repo,
                object,
                response,
                &[StatusCode::OK, StatusCode::PARTIAL_CONTENT],
            )
            .await?;
            // What the body starts with that is already written: all of it when the registry
            // ignored the Range and sent the blob from the start.
            let mut skip = 0u64;
            if response.status() == StatusCode::PARTIAL_CONTENT {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if offset == 0 || !range.starts_with(&format!("bytes {offset}-")) {
                    return Err(repo.protocol(
                        object,
                        format!("asked for bytes from {offset}, the registry sent range {range:?}"),
                    ));
                }
            } else {
                skip = offset;
                if let Some(length) = response.content_length()
                    && length != descriptor.size
                {
                    return Err(repo.protocol(
                        object,
                        format!(
                            "registry sent {length} bytes, the manifest says {}",
                            descriptor.size
                        ),
                    ));
                }
            }

            let mut body = response.bytes_stream();
            let mut broken = None;
            while let Some(chunk) = body.next().await {
                let mut chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        broken = Some(repo.transfer(object, &e));
                        break;
                    }
                };
                if skip > 0 {
                    let cut = skip.min(chunk.len() as u64);
                    chunk = chunk.slice(cut as usize..);
                    skip -= cut;
                }
                received += chunk.len() as u64;
                // Stop a server that keeps sending instead of writing it all to disk.
                if received > descriptor.size {
                    return Err(repo.protocol(
                        object,
                        format!(
                            "registry sent more than the {} bytes the manifest says",
                            descriptor.size
                        ),
                    ));
                }
                if !chunk.is_empty() && chunks.send(Chunk::Data(chunk)).await.is_err() {
                    return Ok(()); // The writer failed; its error is reported by the caller.
                }
            }
            let Some(error) = broken else {
                return Ok(());
            };
            if tries >= max_attempts {
                return Err(RegistryError::GaveUp {
                    attempts: tries,
                    last: Box::new(error),
                });
            }
            tokio::time::sleep(self.retry_delay(tries, None)).await;
            tries += 1;
        }
    }
}

enum Chunk {
    Data(Bytes),
    End,
}

fn write_chunks(
    mut writer: kiln_store::BlobWriter,
    receiver: &mut mpsc::Receiver<Chunk>,
    (digest, size): (Digest, u64),
) -> Result<(), StoreError> {
    while let Some(chunk) = receiver.blocking_recv() {
        match chunk {
            Chunk::Data(bytes) => writer.write_all(&bytes).map_err(|source| StoreError::Io {
                path: format!("temp file for blob {digest}").into(),
                source,
            })?,
            Chunk::End => return writer.commit(Some((&digest, size))).map(drop),
        }
    }
    Ok(()) // Aborted: dropping the writer deletes its temp file.
}

fn store_manifest(
    store: &Store,
    repo: &Repo,
    manifest: &FetchedManifest,
) -> Result<(), RegistryError> {
    let object = format!("manifest {}", manifest.digest);
    let mut writer = store
        .blob_writer()
        .map_err(|e| store_error(repo, &object, e))?;
    writer.write_all(&manifest.bytes).map_err(|source| {
        store_error(
            repo,
            &object,
            StoreError::Io {
                path: format!("temp file for {object}").into(),
                source,
            },
        )
    })?;
    writer
        .commit(Some((&manifest.digest, manifest.bytes.len() as u64)))
        .map(drop)
        .map_err(|e| store_error(repo, &object, e))
}

/// Store failures while pulling; a content mismatch is the registry's fault and says so.
fn store_error(repo: &Repo, object: &str, error: StoreError) -> RegistryError {
    match error {
        StoreError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
            registry: repo.registry.clone(),
            repository: repo.repository.clone(),
            object: object.to_owned(),
            expected,
            actual,
        },
        StoreError::SizeMismatch {
            expected, actual, ..
        } => repo.protocol(
            object,
            format!("registry sent {actual} bytes, the manifest says {expected}"),
        ),
        source => RegistryError::Store {
            registry: repo.registry.clone(),
            repository: repo.repository.clone(),
            object: object.to_owned(),
            source: Box::new(source),
        },
    }
}

/// The `Docker-Content-Digest` response header, if present.
pub(crate) fn content_digest_header(
    headers: &HeaderMap,
) -> Option<Result<Digest, kiln_image::DigestError>> {
    headers
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap_or_default().trim().parse())
}
