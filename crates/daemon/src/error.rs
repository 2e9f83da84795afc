//! The daemon's two error types: [`DaemonError`] for starting and running the server (what
//! `kiln serve` reports and exits on), and [`ApiError`] for one request (what the client gets
//! as an HTTP status and a `{"message": ...}` body).
//!
//! An [`ApiError`] is made from any library error through its `kind()`, never by parsing a
//! message: the status follows the kind (dockerd's table in `api/server/httpstatus`), the text
//! is the library's, except where clients match on dockerd's words (`No such image: X`), which
//! the handlers write themselves.

use std::path::PathBuf;

use hyper::StatusCode;
use kiln_error::ErrorKind;

/// Why the daemon could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A `--host` that is not `unix://PATH`.
    #[error("invalid --host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    /// Plain TCP would hand root's engine to anyone who can reach the port.
    #[error(
        "refusing to listen on {host:?}: plain TCP gives root access to anyone who can connect; \
         use a unix:// socket, or TCP with mutual TLS (--tlsverify --tlscacert --tlscert --tlskey)"
    )]
    PlainTcp { host: String },
    /// `tcp://` without `--tlsverify` and its three files.
    #[error("{0}")]
    TlsIncomplete(String),
    /// A TLS file that cannot be read or used.
    #[error("{}: {reason}", .path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("listening on {addr}: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("{}: another daemon is listening on this socket", .path.display())]
    SocketInUse { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// A bad or refused host is the caller's [`ErrorKind::InvalidArgument`]; a socket another
    /// daemon holds is a [`ErrorKind::Conflict`]; a socket that cannot be made is
    /// [`ErrorKind::Unavailable`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            DaemonError::BadHost { .. }
            | DaemonError::PlainTcp { .. }
            | DaemonError::TlsIncomplete(_)
            | DaemonError::Tls { .. } => ErrorKind::InvalidArgument,
            DaemonError::Tcp { .. } => ErrorKind::Unavailable,
            DaemonError::SocketInUse { .. } => ErrorKind::Conflict,
            DaemonError::Socket { .. } => ErrorKind::Unavailable,
        }
    }
}

/// A failed request: the HTTP status and the message of its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `errorDetail.code` when the error goes in-band: a failed RUN's exit code, which the
    /// docker CLI exits with.
    pub code: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The error of a library call, with the status its kind maps to.
    pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError::new(status_of(kind), message)
    }

    /// An image lookup's error: dockerd's `No such image: NAME` for an unknown one (docker-py
    /// and compose decide to pull or build on exactly that text), else the library's.
    pub fn image(err: kiln_images::ImageError, name: &str) -> ApiError {
        match err {
            kiln_images::ImageError::NotFound(_) => {
                ApiError::not_found(format!("No such image: {name}"))
            }
            err => ApiError::from_kind(err.kind(), err.to_string()),
        }
    }
}

/// dockerd's mapping of error classes to statuses. A cancelled operation is answered only when
/// the daemon itself stopped it (the client that cancelled is gone): 503, as for a daemon
/// shutting down.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Unavailable | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

macro_rules! from_library_error {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for ApiError {
            fn from(err: $t) -> ApiError {
                ApiError::from_kind(err.kind(), err.to_string())
            }
        })*
    };
}

from_library_error!(
    kiln_images::ImageError,
    kiln_store::StoreError,
    kiln_registry::RegistryError,
    kiln_solve::SolveError,
    kiln_export::ExportError,
    kiln_image::ReferenceError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_dockerd_statuses() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorKind::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(ErrorKind::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of(ErrorKind::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn an_unknown_image_gets_dockerds_text() {
        let err = ApiError::image(kiln_images::ImageError::NotFound("x".into()), "nope:1");
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert_eq!(err.message, "No such image: nope:1");
    }
}
