//! A BuildKit-compatible Dockerfile parser and word expander. Pure: no I/O.
//!
//! Parsing runs in layers, each usable on its own:
//! 1. `lexer`: source text → logical lines (BOM, CRLF, parser directives, comments,
//!    continuations with the escape character), each with its [`Span`].
//! 2. [`ast`]: logical line → raw [`ast::Node`] (keyword, flags, argument strings), exactly
//!    as BuildKit's parser, checked byte for byte by the conformance vectors via [`dump`].
//! 3. `instruction`: raw node → typed [`Command`], rejecting unknown instructions, unknown
//!    flags and wrong argument counts.
//!
//! Words stay raw (quotes kept, nothing expanded) until [`Command::expand`] /
//! [`expand_word`] / [`expand_words`] are called with the build's variables.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod ast;
pub mod checks;
mod command;
mod dump;
mod error;
mod expand;
mod heredoc;
mod instruction;
mod lexer;
mod pattern;

pub use command::{Command, CopyCommand, Healthcheck, HealthcheckOptions, Heredoc, ShellOrExec};
pub use dump::dump;
pub use error::{ExpandError, ParseError, Span};
pub use expand::{expand_heredoc, expand_word, expand_words};
pub use heredoc::{HeredocWord, RawHeredoc, chomp_leading_tabs, parse_heredoc_word};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character: `\` unless the `# escape=` directive chose `` ` ``.
    pub escape: char,
    /// The `# syntax=` directive, if any (kiln does not switch frontends; it is informative).
    pub syntax: Option<String>,
    /// The `# check=` directive's value, if any (e.g. `skip=JSONArgsRecommended;error=true`).
    pub check: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// One instruction with its position and raw typed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub span: Span,
    /// The keyword in upper case, e.g. `RUN`.
    pub keyword: String,
    /// The instruction as written, continuation lines joined with the escapes removed, e.g.
    /// `RUN make && make install`; for progress display and image history.
    pub original: String,
    pub command: Command,
}

/// Parses a Dockerfile. Fails, naming the line, on bad directives, unknown instructions or
/// flags, malformed arguments, and files without instructions.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    let raw = ast::parse_raw(source)?;
    let instructions = raw
        .nodes
        .iter()
        .map(|node| {
            Ok(Instruction {
                span: node.span,
                keyword: node.keyword.to_ascii_uppercase(),
                original: node.original.clone(),
                command: instruction::to_command(node)?,
            })
        })
        .collect::<Result<_, ParseError>>()?;
    Ok(Dockerfile {
        escape: raw.escape,
        syntax: raw.syntax,
        check: raw.check,
        instructions,
    })
}

#[cfg(test)]
mod tests;

/// Build args that may be passed without being declared (Docker's proxy family): RUN sees them,
/// the cache key and the history do not, and they are never reported unused.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];
