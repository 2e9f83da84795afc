//! The one error type of the registry client. Every variant names the registry and, where there is
//! one, the repository and object (manifest, blob, upload) the failure is about.

use kiln_error::ErrorKind;
use kiln_image::Digest;
use kiln_store::StoreError;

use crate::reference::ReferenceError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),

    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// Nothing answered at the registry's address. `detail` is the full cause chain, as text.
    #[error("registry {registry} is unreachable at {url}: {detail}")]
    Unreachable {
        registry: String,
        url: String,
        detail: String,
    },

    /// A request failed after connecting (reset, timeout, truncated body, TLS, …). `detail` is the
    /// full cause chain, as text.
    #[error("{registry}/{repository}: {object}: request failed: {detail}")]
    Transfer {
        registry: String,
        repository: String,
        object: String,
        detail: String,
    },

    /// The registry answered with an unexpected status. `message` is the registry's own error text
    /// (from its `{"errors":[…]}` body) when it sent one.
    #[error("{registry}/{repository}: {object}: {status}{}", message_suffix(.message))]
    Status {
        registry: String,
        repository: String,
        object: String,
        status: reqwest::StatusCode,
        message: String,
    },

    #[error("{registry}/{repository}: {object} not found{}", message_suffix(.message))]
    NotFound {
        registry: String,
        repository: String,
        object: String,
        message: String,
    },

    /// Authentication could not be done: access denied for a scope, no usable challenge, a
    /// token server refusing the request or answering nonsense.
    #[error("{registry}: authentication failed: {message}")]
    Auth { registry: String, message: String },

    /// The token server could not be reached or answered `429` or a server error: the
    /// credentials were never judged.
    #[error("{registry}: authentication failed: {message}")]
    AuthUnavailable { registry: String, message: String },

    /// The registry (or its token server) refused the credentials, or wants some and there are
    /// none. Never retried.
    #[error("unauthorized: authentication required at {registry} ({hint})")]
    Unauthorized { registry: String, hint: String },

    #[error("{registry}: reading credentials: {source}")]
    Credentials {
        registry: String,
        #[source]
        source: crate::credentials::CredentialError,
    },

    /// `certs.d` material for a registry that cannot be used.
    #[error("{registry}: TLS configuration in {}: {message}", .dir.display())]
    TlsConfig {
        registry: String,
        dir: std::path::PathBuf,
        message: String,
    },

    /// A request kept failing with errors worth retrying; `last` is the final one, naming the
    /// registry, repository and object.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<RegistryError>,
    },

    #[error("{registry}/{repository}: {object}: {message}")]
    Protocol {
        registry: String,
        repository: String,
        object: String,
        message: String,
    },

    #[error(
        "{registry}/{repository}: {object}: content does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        registry: String,
        repository: String,
        object: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{reference}: unsupported manifest type {media_type:?}{}", hint(.media_type))]
    UnsupportedManifest {
        reference: String,
        media_type: String,
    },

    #[error("{reference}: no image for platform {wanted}; available: {}", list_or_none(.available))]
    PlatformNotFound {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },

    // Store errors are boxed: they are large and rare, and every `Result` here carries the
    // size of the largest variant.
    #[error("{registry}/{repository}: {object}: {source}")]
    Store {
        registry: String,
        repository: String,
        object: String,
        #[source]
        source: Box<StoreError>,
    },

    /// The manifest cannot be pushed with the requested media types (`--format`).
    #[error("manifest {manifest}: cannot push with {format} media types: {message}")]
    IncompatibleFormat {
        manifest: Digest,
        format: &'static str,
        message: String,
    },

    #[error("{object}: {source}")]
    LocalStore {
        object: String,
        #[source]
        source: Box<StoreError>,
    },
}

impl RegistryError {
    /// What kind of failure this is: `401`/`403` and refused credentials are
    /// [`ErrorKind::Unauthorized`], `404` and a missing platform [`ErrorKind::NotFound`], no
    /// connection, a dropped transfer, `429` and server errors [`ErrorKind::Unavailable`];
    /// a reference, `certs.d` setting or push format that cannot work is
    /// [`ErrorKind::InvalidArgument`]; a registry breaking the protocol (or serving content
    /// that does not match its digest) is [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::InvalidReference(e) => e.kind(),
            RegistryError::Unreachable { .. }
            | RegistryError::Transfer { .. }
            | RegistryError::AuthUnavailable { .. } => ErrorKind::Unavailable,
            RegistryError::Status { status, .. } => kind_of_status(*status),
            RegistryError::NotFound { .. } | RegistryError::PlatformNotFound { .. } => {
                ErrorKind::NotFound
            }
            RegistryError::Auth { .. } | RegistryError::Unauthorized { .. } => {
                ErrorKind::Unauthorized
            }
            RegistryError::Credentials { source, .. } => source.kind(),
            RegistryError::TlsConfig { .. }
            | RegistryError::UnsupportedManifest { .. }
            | RegistryError::IncompatibleFormat { .. } => ErrorKind::InvalidArgument,
            RegistryError::GaveUp { last, .. } => last.kind(),
            RegistryError::Store { source, .. } | RegistryError::LocalStore { source, .. } => {
                source.kind()
            }
            RegistryError::Client(_)
            | RegistryError::Protocol { .. }
            | RegistryError::DigestMismatch { .. } => ErrorKind::Internal,
        }
    }

    /// Whether trying the same request again may succeed: connection failures, resets and
    /// timeouts, `429 Too Many Requests` and server errors (except `501 Not Implemented`).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Transfer { .. } => true,
            RegistryError::Status { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }
}

/// The kind of an unexpected HTTP status from a registry.
fn kind_of_status(status: reqwest::StatusCode) -> ErrorKind {
    use reqwest::StatusCode as S;
    match status {
        S::UNAUTHORIZED | S::FORBIDDEN => ErrorKind::Unauthorized,
        S::NOT_FOUND => ErrorKind::NotFound,
        S::CONFLICT => ErrorKind::Conflict,
        S::NOT_IMPLEMENTED => ErrorKind::Internal,
        status if is_retryable_status(status) => ErrorKind::Unavailable,
        status if status.is_client_error() => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

pub(crate) fn is_retryable_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED)
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn hint(media_type: &str) -> &'static str {
    if media_type.contains("manifest.v1") {
        " (Docker schema 1 manifests are deprecated and not supported; push the image again with a current tool)"
    } else {
        ""
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object_and_include_registry_text() {
        let e = RegistryError::Status {
            registry: "r:5000".into(),
            repository: "a/b".into(),
            object: "manifest latest".into(),
            status: reqwest::StatusCode::FORBIDDEN,
            message: "DENIED: no".into(),
        };
        assert_eq!(
            e.to_string(),
            "r:5000/a/b: manifest latest: 403 Forbidden: DENIED: no"
        );

        let e = RegistryError::PlatformNotFound {
            reference: "x".into(),
            wanted: "linux/s390x".into(),
            available: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
        };
        assert_eq!(
            e.to_string(),
            "x: no image for platform linux/s390x; available: linux/amd64, linux/arm64/v8"
        );

        let e = RegistryError::UnsupportedManifest {
            reference: "x".into(),
            media_type: "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
        };
        assert!(e.to_string().contains("schema 1"), "{e}");
    }

    #[test]
    fn retryable_errors_are_transport_failures_429_and_5xx() {
        let status = |code: u16| RegistryError::Status {
            registry: "r".into(),
            repository: "a".into(),
            object: "blob x".into(),
            status: reqwest::StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        for code in [429, 500, 502, 503, 504] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 501] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        let transfer = RegistryError::Transfer {
            registry: "r:1".into(),
            repository: "a/b".into(),
            object: "layer sha256:ab".into(),
            detail: "connection reset".into(),
        };
        assert!(transfer.is_retryable());
        let gave_up = RegistryError::GaveUp {
            attempts: 5,
            last: Box::new(transfer),
        };
        assert!(!gave_up.is_retryable());
        assert_eq!(
            gave_up.to_string(),
            "r:1/a/b: layer sha256:ab: request failed: connection reset (gave up after 5 attempts)"
        );
        let denied = RegistryError::Unauthorized {
            registry: "r".into(),
            hint: "x".into(),
        };
        assert!(!denied.is_retryable());
    }

    #[test]
    fn statuses_map_to_kinds_as_a_client_branches_on_them() {
        let status = |code: u16| RegistryError::Status {
            registry: "r".into(),
            repository: "a".into(),
            object: "manifest latest".into(),
            status: reqwest::StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        for (code, kind) in [
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Unauthorized),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (400, ErrorKind::InvalidArgument),
            (413, ErrorKind::InvalidArgument),
            (429, ErrorKind::Unavailable),
            (502, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
            (501, ErrorKind::Internal),
        ] {
            assert_eq!(status(code).kind(), kind, "{code}");
        }
        let token_server_down = RegistryError::AuthUnavailable {
            registry: "r".into(),
            message: "token request to http://127.0.0.1:1/token failed".into(),
        };
        assert_eq!(token_server_down.kind(), ErrorKind::Unavailable);
        let bad_reference = "Upper/Case".parse::<crate::Reference>().unwrap_err();
        assert_eq!(
            RegistryError::from(bad_reference).kind(),
            ErrorKind::InvalidArgument
        );
    }
}
