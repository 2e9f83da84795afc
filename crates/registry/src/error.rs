//! The one error type of the registry client. Every variant names the registry and, where there is
//! one, the repository and object (manifest, blob, upload) the failure is about.

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

    #[error("{registry}: authentication failed: {message}")]
    Auth { registry: String, message: String },

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

    #[error("{object}: {source}")]
    LocalStore {
        object: String,
        #[source]
        source: Box<StoreError>,
    },
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
}
