//! Source positions and the error types of parsing and word expansion.

use std::fmt;

use kiln_error::ErrorKind;

/// Where an instruction sits in the Dockerfile. Lines and column are 1-based.
///
/// `end_line` is the last physical line the instruction used, including continuation lines
/// and blank or comment lines skipped inside a continuation; `col` is the column (in
/// characters) of the instruction keyword on `start_line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
    pub col: usize,
}

impl Span {
    /// A span covering one whole line, for errors not tied to an instruction.
    pub fn line(line: usize) -> Span {
        Span {
            start_line: line,
            end_line: line,
            col: 1,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start_line == self.end_line {
            write!(f, "line {}", self.start_line)
        } else {
            write!(f, "lines {}-{}", self.start_line, self.end_line)
        }
    }
}

/// A Dockerfile that cannot be parsed. Display reads `line N: message`; the binary renders
/// `Dockerfile:N` with source context from `span`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {message}", span.start_line)]
pub struct ParseError {
    pub span: Span,
    pub message: String,
}

impl ParseError {
    /// Always [`ErrorKind::InvalidArgument`]: the Dockerfile is the caller's input.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }

    pub(crate) fn new(span: Span, message: impl Into<String>) -> ParseError {
        ParseError {
            span,
            message: message.into(),
        }
    }
}

/// A word that cannot be expanded (unterminated quote, bad substitution, `${VAR:?msg}`…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// The raw word being expanded.
    pub word: String,
    pub message: String,
}

impl ExpandError {
    /// Always [`ErrorKind::InvalidArgument`]: the word and the variables are the caller's.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}
