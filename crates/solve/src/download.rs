//! `ADD <url>`: fetching a remote file into a step's scratch directory.
//!
//! As BuildKit does it: the body is streamed to disk and hashed on the way, the file is named
//! after the last segment of the URL path (`__unnamed__` when there is none), gets mode `0600`
//! and, when the server sends `Last-Modified`, that time as its mtime. `--checksum` is checked
//! against the sha256 of the body before anything is used. The file is never unpacked, even if
//! it is an archive.
//!
//! The request goes through the registry client's transport ([`RegistryClient::get_url`]): the
//! URL host's certs.d CAs, the proxy variables, timeouts and retries are those of a pull, so a
//! download works wherever pulls do. There is no second HTTP client.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_image::{Digest, Sha256Hasher};
use kiln_registry::{RegistryClient, RegistryError};

/// The name BuildKit gives a download whose URL path has no last segment.
pub const UNNAMED: &str = "__unnamed__";

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--checksum={value}: {reason}")]
    BadChecksum { value: String, reason: String },
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: String },
    #[error("{url}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{url}: writing {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The build was cancelled during the download; the partial file is removed.
    #[error("{url}: download cancelled")]
    Cancelled { url: String },
}

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// `<dir>/<file name>`.
    pub path: PathBuf,
}

/// Whether an ADD source names a remote file.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Parses `--checksum`: `sha256:<64 hex digits>` (the only algorithm kiln verifies).
pub fn parse_checksum(value: &str) -> Result<Digest, DownloadError> {
    let bad = |reason: &str| DownloadError::BadChecksum {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let Some((algorithm, _)) = value.split_once(':') else {
        return Err(bad("expected sha256:<hex>"));
    };
    if algorithm != "sha256" {
        return Err(bad("only sha256 checksums are supported"));
    }
    value
        .parse::<Digest>()
        .map_err(|_| bad("expected sha256 followed by 64 lowercase hex digits"))
}

/// The file name BuildKit gives the download of `url`: the last non-empty segment of its path,
/// percent-decoded.
pub fn file_name_for(url: &str) -> Result<String, DownloadError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let last = parsed
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(percent_decode)
        .filter(|name| !name.is_empty() && name != "." && name != ".." && !name.contains('/'));
    Ok(last.unwrap_or_else(|| UNNAMED.to_string()))
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads `url` into `dir` (which must exist) under [`file_name_for`]'s name through
/// `registry`'s transport and checks it against `expected` when given. On a mismatch the file
/// is removed.
pub fn download(
    rt: &tokio::runtime::Handle,
    cancel: &crate::CancelToken,
    registry: &RegistryClient,
    url: &str,
    dir: &Path,
    expected: Option<&Digest>,
) -> Result<Downloaded, DownloadError> {
    let name = file_name_for(url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let path = dir.join(&name);
    let request_error = |error: reqwest::Error| DownloadError::Request {
        url: url.to_string(),
        detail: kiln_registry::error_chain(&error),
    };
    let write_error = |source: std::io::Error| DownloadError::Write {
        url: url.to_string(),
        path: path.clone(),
        source,
    };

    let fetched = crate::cancel::block_on(rt, cancel, async {
        let mut response = registry
            .get_url(&parsed)
            .await
            .map_err(|e| transport_error(url, e))?;
        if !response.status().is_success() {
            return Err(DownloadError::Status {
                url: url.to_string(),
                status: response.status().to_string(),
            });
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_http_date);
        let mut file = File::create(&path).map_err(write_error)?;
        let mut hasher = Sha256Hasher::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(write_error)?;
        }
        file.sync_all().map_err(write_error)?;
        Ok((hasher.finish(), last_modified))
    });
    let (digest, last_modified) = match fetched {
        Ok(result) => result?,
        Err(_) => {
            let _ = std::fs::remove_file(&path);
            return Err(DownloadError::Cancelled {
                url: url.to_string(),
            });
        }
    };

    if let Some(expected) = expected
        && *expected != digest
    {
        let _ = std::fs::remove_file(&path);
        return Err(DownloadError::ChecksumMismatch {
            url: url.to_string(),
            expected: expected.clone(),
            actual: digest,
        });
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
    if let Some(modified) = last_modified {
        let file = File::options()
            .write(true)
            .open(&path)
            .map_err(write_error)?;
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(modified)
                .set_modified(modified),
        )
        .map_err(write_error)?;
    }
    Ok(Downloaded { path })
}

/// A transport failure, told as a download's: the registry error's wording names a registry
/// and repository, which a URL has not.
fn transport_error(url: &str, error: RegistryError) -> DownloadError {
    let url = url.to_string();
    match error {
        RegistryError::GaveUp { attempts, last } => {
            let suffix = format!(" (gave up after {attempts} attempts)");
            match transport_error(&url, *last) {
                DownloadError::Status { url, status } => DownloadError::Status {
                    url,
                    status: status + &suffix,
                },
                DownloadError::Request { url, detail } => DownloadError::Request {
                    url,
                    detail: detail + &suffix,
                },
                other => other,
            }
        }
        RegistryError::Status { status, .. } => DownloadError::Status {
            url,
            status: status.to_string(),
        },
        RegistryError::NotFound { .. } => DownloadError::Status {
            url,
            status: reqwest::StatusCode::NOT_FOUND.to_string(),
        },
        RegistryError::Unreachable { detail, .. } | RegistryError::Transfer { detail, .. } => {
            DownloadError::Request { url, detail }
        }
        // certs.d material that cannot be used, or a client that cannot be built: the
        // error's own text names the directory.
        other => DownloadError::Request {
            url,
            detail: other.to_string(),
        },
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's preferred form, which is also
/// valid RFC 2822).
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
    Some(SystemTime::from(parsed.with_timezone(&chrono::Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::{ScriptedHttp, http_response};

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        let name = |url: &str| file_name_for(url).unwrap();
        assert_eq!(name("http://h/dir/file.tar.gz"), "file.tar.gz");
        assert_eq!(name("http://h/dir/sub/?x=1"), "sub");
        assert_eq!(name("http://h/a%20b.txt#frag"), "a b.txt");
        assert_eq!(name("http://h/"), UNNAMED);
        assert_eq!(name("http://h"), UNNAMED);
        assert!(file_name_for("http://").is_err());
    }

    #[test]
    fn checksums_must_be_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(parse_checksum(&format!("sha256:{hex}")).unwrap().hex(), hex);
        for bad in ["abc", "sha256:xyz", "md5:abcd", &format!("sha512:{hex}")] {
            let error = parse_checksum(bad).unwrap_err().to_string();
            assert!(error.starts_with(&format!("--checksum={bad}:")), "{error}");
        }
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(parse_http_date("yesterday").is_none());
    }

    /// The registry client whose transport downloads use, retrying quickly.
    fn registry() -> RegistryClient {
        RegistryClient::new(kiln_registry::RegistryConfig {
            credentials: None,
            certs_dir: PathBuf::from("/nonexistent/kiln-test-certs.d"),
            max_attempts: 3,
            retry_base_delay: std::time::Duration::from_millis(1),
            ..kiln_registry::RegistryConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_cancelled_download_stops_mid_body_and_leaves_no_file() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // Sends the headers and a little of the body, then nothing for a long time.
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial");
            std::thread::sleep(std::time::Duration::from_secs(60));
        });
        let cancel = crate::CancelToken::new();
        let canceller = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            canceller.cancel();
        });
        let url = format!("http://{address}/big.bin");
        let started = std::time::Instant::now();
        let error =
            download(rt.handle(), &cancel, &registry(), &url, dir.path(), None).unwrap_err();
        assert!(matches!(error, DownloadError::Cancelled { .. }), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        assert!(!dir.path().join("big.bin").exists());
    }

    #[test]
    fn downloads_stream_to_a_0600_file_with_the_servers_mtime() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let body = b"remote content\n";
        let response = http_response(
            "200 OK",
            "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            body,
        );
        let base = ScriptedHttp::in_order(vec![response.clone(), response]);
        let url = format!("{base}/files/data.txt");
        let got = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &url,
            dir.path(),
            Some(&Digest::of(body)),
        )
        .unwrap();
        assert_eq!(got.path, dir.path().join("data.txt"));
        assert_eq!(std::fs::read(&got.path).unwrap(), body);
        let meta = std::fs::metadata(&got.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let mtime = meta.modified().unwrap();
        assert_eq!(
            mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784_111_777
        );

        let wrong = Digest::of(b"something else");
        let other = tempfile::tempdir().unwrap();
        let error = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &url,
            other.path(),
            Some(&wrong),
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&url) && text.contains(&wrong.to_string()),
            "{text}"
        );
        assert!(text.contains(&Digest::of(body).to_string()), "{text}");
        assert!(!other.path().join("data.txt").exists(), "nothing is kept");
    }

    #[test]
    fn failures_name_the_url_and_the_reason() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = ScriptedHttp::in_order(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        ]);
        let error = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &format!("{base}/gone"),
            dir.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/gone") && error.contains("404"), "{error}");

        // A port nobody listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/x");
        let error = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &url,
            dir.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with(&url), "{error}");
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[test]
    fn server_errors_are_retried_as_for_a_pull() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let busy =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let base =
            ScriptedHttp::in_order(vec![busy.to_vec(), http_response("200 OK", "", b"late\n")]);
        let got = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &format!("{base}/f"),
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), b"late\n");

        let base = ScriptedHttp::in_order(vec![busy.to_vec(); 3]);
        let url = format!("{base}/f");
        let error = download(
            rt.handle(),
            &crate::CancelToken::new(),
            &registry(),
            &url,
            dir.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with(&url), "{error}");
        assert!(
            error.contains("503") && error.contains("3 attempts"),
            "{error}"
        );
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("https://example.invalid/x"));
        assert!(is_url("http://127.0.0.1:1/x"));
        assert!(!is_url("httpdocs/x"));
        assert!(!is_url("git@host:repo"));
    }
}
