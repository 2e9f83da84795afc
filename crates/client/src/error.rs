//! What can go wrong talking to an Engine API, with the kind a caller branches on.
//!
//! The daemon's own words are kept: an error answer's `{"message"}` becomes
//! [`ClientError::Api`] whose text is that message verbatim (`No such image: X`), and an
//! in-band `errorDetail` of a stream becomes [`ClientError::Stream`] with its code (a failed
//! RUN's exit code, which the docker CLI exits with, and so does kiln).

use std::path::PathBuf;

use kiln_error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error(
        "refusing {host} without TLS: the Engine API over TCP is served only with mutual TLS; \
         give --tlsverify with --tlscacert, --tlscert and --tlskey (or KILN_TLS_VERIFY=1 and \
         KILN_CERT_PATH with ca.pem, cert.pem and key.pem)"
    )]
    PlainTcp { host: String },
    #[error("TLS file {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("cannot connect to the kiln daemon at {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    Handshake {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon ended the TLS session with an alert: under TLS 1.3 this is how a client
    /// certificate it does not accept is reported, after the client's handshake is done.
    #[error(
        "the daemon at {host} refused this client over TLS ({alert}): is the client certificate \
         signed by the CA the daemon trusts?"
    )]
    Refused { host: String, alert: String },
    #[error("talking to {host}: {source}")]
    Http {
        host: String,
        #[source]
        source: hyper::Error,
    },
    /// An error status: the message of its `{"message"}` body, verbatim.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// A stream's in-band `errorDetail`, after the daemon had answered 200.
    #[error("{message}")]
    Stream { message: String, code: Option<i64> },
    #[error("unexpected answer to {what}: {reason}")]
    Protocol { what: String, reason: String },
    /// A file sent as a request body (a build context's, an archive) could not be read.
    #[error("reading {path}: {source}")]
    Context {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Dockerfile {path} is not a file")]
    NoDockerfile { path: PathBuf },
    /// A callback of the caller stopped a stream (its output went away).
    #[error("writing {what}: {source}")]
    Output {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The kind: an API error's from its status as the daemon chose it (404 → NotFound,
    /// 409 → Conflict, …), so a caller sees the daemon's judgement, not a guess.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::InvalidHost { .. }
            | ClientError::PlainTcp { .. }
            | ClientError::Tls { .. }
            | ClientError::NoDockerfile { .. } => ErrorKind::InvalidArgument,
            ClientError::Connect { .. } | ClientError::Http { .. } => ErrorKind::Unavailable,
            ClientError::Handshake { .. } | ClientError::Refused { .. } => ErrorKind::Unauthorized,
            ClientError::Api { status, .. } => kind_of_status(*status),
            // A build whose step failed: repeating it unchanged fails the same way.
            ClientError::Stream { .. } => ErrorKind::InvalidArgument,
            ClientError::Protocol { .. } => ErrorKind::Internal,
            ClientError::Context { source, .. } | ClientError::Output { source, .. } => {
                ErrorKind::of_io(source)
            }
        }
    }

    /// The exit code the docker CLI gives for this error: a stream's `errorDetail.code` (a
    /// failed RUN's status) when there is one, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Stream {
                code: Some(code), ..
            } if (1..=255).contains(code) => *code as u8,
            _ => 1,
        }
    }
}

/// The kind an HTTP error status stands for, the inverse of the daemon's mapping.
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 => ErrorKind::Unauthorized,
        400 | 413 | 431 => ErrorKind::InvalidArgument,
        503 | 502 | 504 | 429 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_daemons_message_and_kind() {
        let e = ClientError::Api {
            status: 404,
            message: "No such image: nothere:1".into(),
        };
        assert_eq!(e.to_string(), "No such image: nothere:1");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(kind_of_status(409), ErrorKind::Conflict);
        assert_eq!(kind_of_status(500), ErrorKind::Internal);
    }

    #[test]
    fn a_failed_run_exits_with_its_code() {
        let e = ClientError::Stream {
            message: "The command '/bin/sh -c exit 3' returned a non-zero code: 3".into(),
            code: Some(3),
        };
        assert_eq!(e.exit_code(), 3);
        let odd = ClientError::Stream {
            message: "x".into(),
            code: Some(300),
        };
        assert_eq!(odd.exit_code(), 1);
    }
}
