//! The kind of a failure, shared by every kiln library's error type.
//!
//! Each library error enum has a `kind()` method giving one [`ErrorKind`], so a caller can
//! branch on what went wrong without parsing messages: the CLI today, and an API server, which
//! answers `404` or `409` where Docker's clients expect them (docker-py and compose branch on
//! those). The kinds are few on purpose, in the spirit of gRPC's status codes and containerd's
//! `errdefs`: a caller needs to know whom to blame and whether to retry, not the cause.
//!
//! The rules the libraries follow:
//! - [`ErrorKind::NotFound`] is for *objects*: images, blobs, manifests, containers, volumes,
//!   files a request names. A stage name or build argument that does not exist is part of the
//!   request, so [`ErrorKind::InvalidArgument`].
//! - An error that wraps another library's error has that error's kind.
//! - An I/O error has the kind [`ErrorKind::of_io`] gives, unless the variant knows better
//!   (reading a caller's archive that turns out to be truncated is the caller's input).

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::fmt;
use std::io;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object named (image, blob, container, volume, file, …) does not exist.
    NotFound,
    /// The request clashes with the current state: a name in use, an object still in use, a
    /// container in the wrong state.
    Conflict,
    /// The request itself is wrong: a malformed reference, flag, Dockerfile or archive, or a
    /// build whose own steps fail. Repeating it unchanged fails the same way.
    InvalidArgument,
    /// Credentials are missing, wrong, or not enough for the operation.
    Unauthorized,
    /// Something needed is out of reach for now: a registry or server down or refusing
    /// service, a network failure, a missing helper program, a full disk. It may work later.
    Unavailable,
    /// The operation was stopped before it finished (by the caller, or because a sibling
    /// operation failed).
    Cancelled,
    /// Anything else: a bug, a broken invariant, a store found corrupt, an unexpected system
    /// error.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::InvalidArgument,
        ErrorKind::Unauthorized,
        ErrorKind::Unavailable,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
    ];

    /// The kind of an I/O error, by what the operating system said: a missing file is
    /// `NotFound`, an existing one `Conflict`, data that cannot be parsed `InvalidArgument`,
    /// network trouble and exhausted resources `Unavailable`, everything else (permission
    /// denied on kiln's own files included) `Internal`.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        use io::ErrorKind as Io;
        match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists | Io::DirectoryNotEmpty => ErrorKind::Conflict,
            Io::InvalidInput | Io::InvalidData | Io::UnexpectedEof | Io::InvalidFilename => {
                ErrorKind::InvalidArgument
            }
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::AddrNotAvailable
            | Io::BrokenPipe
            | Io::TimedOut
            | Io::HostUnreachable
            | Io::NetworkUnreachable
            | Io::NetworkDown
            | Io::StorageFull
            | Io::QuotaExceeded
            | Io::ResourceBusy
            | Io::WouldBlock => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// The kind of an I/O error met while reading input the caller supplied (an archive, a
    /// stream): a resource problem stays `Unavailable`, anything else means the input is bad.
    pub fn of_input_io(err: &io::Error) -> ErrorKind {
        match ErrorKind::of_io(err) {
            ErrorKind::Unavailable => ErrorKind::Unavailable,
            _ => ErrorKind::InvalidArgument,
        }
    }

    /// A short lowercase name: `not found`, `conflict`, `invalid argument`, `unauthorized`,
    /// `unavailable`, `cancelled`, `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_by_what_the_system_said() {
        let io = |kind: io::ErrorKind| io::Error::new(kind, "x");
        assert_eq!(
            ErrorKind::of_io(&io(io::ErrorKind::NotFound)),
            ErrorKind::NotFound
        );
        assert_eq!(
            ErrorKind::of_io(&io(io::ErrorKind::AlreadyExists)),
            ErrorKind::Conflict
        );
        assert_eq!(
            ErrorKind::of_io(&io(io::ErrorKind::UnexpectedEof)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ErrorKind::of_io(&io(io::ErrorKind::ConnectionRefused)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            ErrorKind::of_io(&io::Error::from_raw_os_error(28)), // ENOSPC
            ErrorKind::Unavailable
        );
        assert_eq!(
            ErrorKind::of_io(&io(io::ErrorKind::PermissionDenied)),
            ErrorKind::Internal
        );
        assert_eq!(
            ErrorKind::of_io(&io::Error::other("x")),
            ErrorKind::Internal
        );
    }

    #[test]
    fn input_io_errors_blame_the_input_unless_a_resource_ran_out() {
        // The tar reader reports a malformed header as a plain `other` error.
        assert_eq!(
            ErrorKind::of_input_io(&io::Error::other("invalid tar header")),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ErrorKind::of_input_io(&io::Error::from_raw_os_error(28)),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}
