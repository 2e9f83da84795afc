//! Chunked blob uploads with resume: the blob goes up in `PATCH` requests with `Content-Range`,
//! each answered with the session's next URL; when one breaks off, a `GET` of the session URL
//! says how many bytes the registry kept (`Range: 0-<last>`) and the upload continues from there.
//! A session the registry no longer knows (or will not resume) is started over. A final `PUT`
//! with the digest completes it.

use std::io::{Seek, SeekFrom};

use kiln_image::{Descriptor, Digest};
use kiln_store::{Store, StoreError};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Body, Response, StatusCode, Url};
use tokio_util::io::ReaderStream;

use crate::RegistryClient;
use crate::error::RegistryError;
use crate::push::{PushEvent, local_error};
use crate::transport::{Repo, check_status, resolve_location, upload_completion_url};

/// Blobs larger than this go up in chunks, so a dropped connection costs at most one chunk.
pub(crate) const CHUNKED_UPLOAD_THRESHOLD: u64 = 8 * 1024 * 1024;
/// The size of each `PATCH`.
pub(crate) const UPLOAD_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

impl RegistryClient {
    /// Uploads `blob` in chunks into `session` (or a new session), resuming after failures worth
    /// retrying, up to the client's attempt limit in a row without progress.
    pub(crate) async fn upload_chunked(
        &self,
        store: &Store,
        repo: &Repo,
        blob: &Descriptor,
        session: Option<Url>,
        upload_object: &str,
        on_event: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let max_attempts = self.config().max_attempts.max(1);
        let mut location = match session {
            Some(url) => url,
            None => self.start_upload(repo, upload_object).await?,
        };
        let mut offset = 0u64;
        // Failures since the last chunk that went through.
        let mut failures = 0u32;
        while offset < blob.size {
            let len = UPLOAD_CHUNK_SIZE.min(blob.size - offset);
            match self
                .patch_chunk(store, repo, blob, &location, offset, len, upload_object)
                .await
            {
                Ok((next, kept)) => {
                    location = next;
                    offset = kept.unwrap_or(offset + len);
                    failures = 0;
                }
                Err(error) if error.is_retryable() && failures + 1 < max_attempts => {
                    failures += 1;
                    tokio::time::sleep(self.retry_delay(failures, None)).await;
                    (location, offset) =
                        match self.upload_status(repo, &location, upload_object).await {
                            Ok(Some((url, kept))) if kept <= blob.size => (url, kept),
                            // The registry lost or refuses the session: start over.
                            Ok(_) | Err(_) => (self.start_upload(repo, upload_object).await?, 0),
                        };
                    on_event(PushEvent::BlobUploadResumed {
                        digest: blob.digest.clone(),
                        offset,
                    });
                }
                Err(error) if error.is_retryable() && failures > 0 => {
                    return Err(RegistryError::GaveUp {
                        attempts: failures + 1,
                        last: Box::new(error),
                    });
                }
                Err(error) => return Err(error),
            }
        }
        let put_url = upload_completion_url(&location, &blob.digest);
        let response = self
            .send(repo, upload_object, |http| {
                Ok(http.put(put_url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match check_status(repo, upload_object, response, &[StatusCode::CREATED]).await {
            Ok(response) => Ok(response),
            // A retried PUT finds its session gone when an earlier try completed it but the
            // answer was lost: the blob being there settles it.
            Err(error) => {
                let blob_url = repo.url(&format!("blobs/{}", blob.digest));
                let head = self
                    .send(repo, upload_object, |http| Ok(http.head(blob_url.clone())))
                    .await?;
                if head.status() == StatusCode::OK {
                    Ok(head)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Sends bytes `offset..offset+len` of the blob. Returns the session's next URL and, when the
    /// registry says, how many bytes it now holds.
    #[allow(clippy::too_many_arguments)] // One upload's coordinates; a struct would only rename them.
    async fn patch_chunk(
        &self,
        store: &Store,
        repo: &Repo,
        blob: &Descriptor,
        location: &Url,
        offset: u64,
        len: u64,
        upload_object: &str,
    ) -> Result<(Url, Option<u64>), RegistryError> {
        let response = self
            .send_once_authorized(repo, upload_object, |http| {
                let body = file_section_body(store, &blob.digest, offset, len, upload_object)?;
                Ok(http
                    .patch(location.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                    .header(CONTENT_LENGTH, len)
                    .body(body))
            })
            .await?;
        let response = check_status(repo, upload_object, response, &[StatusCode::ACCEPTED]).await?;
        let next = upload_location(repo, upload_object, &response)?;
        Ok((next, kept_bytes(&response)))
    }

    /// Where an upload session stands: its URL and the bytes the registry holds, or `None` when
    /// the registry does not know the session (any more).
    async fn upload_status(
        &self,
        repo: &Repo,
        location: &Url,
        upload_object: &str,
    ) -> Result<Option<(Url, u64)>, RegistryError> {
        let response = self
            .send(repo, upload_object, |http| Ok(http.get(location.clone())))
            .await?;
        if response.status() != StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let url =
            upload_location(repo, upload_object, &response).unwrap_or_else(|_| location.clone());
        Ok(Some((url, kept_bytes(&response).unwrap_or(0))))
    }
}

/// The bytes a registry holds from its `Range: 0-<last byte>` header. Registries send `0-0` both
/// for nothing and for one byte; it is read as nothing, and a wrong guess is refused by the
/// registry (416) and the upload started over.
pub(crate) fn kept_bytes(response: &Response) -> Option<u64> {
    parse_kept_range(response.headers().get(RANGE)?.to_str().ok()?)
}

fn parse_kept_range(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

/// The upload session URL in a response's `Location`.
pub(crate) fn upload_location(
    repo: &Repo,
    upload_object: &str,
    response: &Response,
) -> Result<Url, RegistryError> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            repo.protocol(
                upload_object,
                "the registry answered an upload request without a Location header",
            )
        })?;
    resolve_location(response.url(), location).map_err(|m| repo.protocol(upload_object, m))
}

/// A request body streaming `len` bytes of a store blob from `offset`. Opened anew for each
/// request: a streamed body cannot be replayed.
pub(crate) fn file_section_body(
    store: &Store,
    digest: &Digest,
    offset: u64,
    len: u64,
    object: &str,
) -> Result<Body, RegistryError> {
    let path = store.blob_path(digest);
    let io_error = |e| {
        local_error(
            object,
            StoreError::Io {
                path: path.clone(),
                source: e,
            },
        )
    };
    let mut file = std::fs::File::open(&path).map_err(io_error)?;
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    let reader = tokio::fs::File::from_std(file);
    let section = tokio::io::AsyncReadExt::take(reader, len);
    Ok(Body::wrap_stream(ReaderStream::new(section)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// What the mock registry holds of the one upload session.
    #[derive(Default)]
    struct Session {
        held: Vec<u8>,
        patches: usize,
        completed: Option<String>,
    }

    /// A minimal registry upload endpoint that, unlike distribution 2.8, keeps its session
    /// consistent after a cut PATCH: the `patch_to_cut`-th PATCH is read halfway, kept, and its
    /// connection dropped without an answer.
    fn mock_registry(patch_to_cut: usize) -> (String, Arc<Mutex<Session>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let session = Arc::new(Mutex::new(Session::default()));
        let state = session.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                serve(conn, &state, patch_to_cut);
            }
        });
        (addr, session)
    }

    fn serve(conn: TcpStream, state: &Mutex<Session>, patch_to_cut: usize) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        );
        let mut length = 0usize;
        let mut range_start = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-range" => {
                    range_start = value
                        .trim()
                        .split('-')
                        .next()
                        .unwrap()
                        .parse::<usize>()
                        .ok();
                }
                _ => {}
            }
        }
        let mut s = state.lock().unwrap();
        let location = "/v2/r/blobs/uploads/u1";
        let kept = |held: usize| format!("0-{}", held.saturating_sub(1));
        let answer = match method.as_str() {
            "HEAD" => "404 Not Found\r\n".to_owned(),
            "POST" => format!("202 Accepted\r\nLocation: {location}\r\nRange: 0-0\r\n"),
            "GET" => format!(
                "204 No Content\r\nLocation: {location}\r\nRange: {}\r\n",
                kept(s.held.len())
            ),
            "PATCH" if range_start != Some(s.held.len()) => {
                "416 Range Not Satisfiable\r\n".to_owned()
            }
            "PATCH" => {
                s.patches += 1;
                let take = if s.patches == patch_to_cut {
                    length / 2
                } else {
                    length
                };
                let mut body = vec![0; take];
                reader.read_exact(&mut body).unwrap();
                s.held.extend_from_slice(&body);
                if take < length {
                    // Unread body in the socket: closing resets the connection mid-request.
                    return;
                }
                format!(
                    "202 Accepted\r\nLocation: {location}\r\nRange: {}\r\n",
                    kept(s.held.len())
                )
            }
            "PUT" => {
                let digest = Digest::of(&s.held).to_string();
                s.completed = Some(target.clone());
                if target.contains(&digest.replace(':', "%3A")) {
                    "201 Created\r\n".to_owned()
                } else {
                    "400 Bad Request\r\n".to_owned()
                }
            }
            _ => "405 Method Not Allowed\r\n".to_owned(),
        };
        let mut conn = conn;
        let _ = write!(
            conn,
            "HTTP/1.1 {answer}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_cut_chunk_resumes_at_the_range_the_registry_reports() {
        let (addr, session) = mock_registry(2);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let digest = store.write_blob(&bytes).unwrap();
        let blob = Descriptor::new(
            "application/octet-stream",
            digest.clone(),
            bytes.len() as u64,
        );
        let client = RegistryClient::new(RegistryConfig {
            credentials: None,
            retry_base_delay: std::time::Duration::from_millis(1),
            ..RegistryConfig::default()
        })
        .unwrap();
        let reference: crate::Reference = format!("{addr}/r:1").parse().unwrap();
        let repo = client.repo(&reference, "pull,push").unwrap();
        let events = Mutex::new(Vec::new());
        let on_event = |e: PushEvent| events.lock().unwrap().push(e);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client.upload_chunked(&store, &repo, &blob, None, "upload", &on_event))
            .unwrap();

        let s = session.lock().unwrap();
        assert!(s.held == bytes, "the registry holds the blob exactly");
        assert!(s.completed.is_some());
        // 8 MiB went through, half of the next chunk was kept; the upload continued there.
        let resumed_at = UPLOAD_CHUNK_SIZE + UPLOAD_CHUNK_SIZE / 2;
        assert_eq!(
            *events.lock().unwrap(),
            [PushEvent::BlobUploadResumed {
                digest,
                offset: resumed_at
            }]
        );
        assert_eq!(s.patches, 3, "8 MiB, the cut one, then the last 8 MiB");
    }

    #[test]
    fn kept_ranges_count_bytes() {
        assert_eq!(parse_kept_range("0-8388607"), Some(8 * 1024 * 1024));
        assert_eq!(parse_kept_range("bytes=0-99"), Some(100));
        assert_eq!(parse_kept_range("0-0"), Some(0));
        assert_eq!(parse_kept_range("5-9"), None);
        assert_eq!(parse_kept_range("junk"), None);
    }
}
