//! From source text to logical instruction lines.
//!
//! This stage knows about physical lines, the UTF-8 BOM, CRLF, parser directives, comments
//! and line continuations; it knows nothing about instructions. It follows BuildKit's
//! `parser.Parse` line loop (see `testdata/conformance/buildkit/README.md` §1.2). The lexer
//! is pulled one logical line at a time so that the parser can read the raw heredoc body
//! lines that follow an instruction from the same cursor ([`Lexer::read_heredoc_body`]).

use crate::error::{ParseError, Span};

/// The directive names BuildKit recognises; any other `# name=value` ends the directive zone.
const KNOWN_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// Parser directives read from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
    seen_escape: bool,
    /// Set once a line that is not a directive was seen: directives are only read at the top.
    zone_closed: bool,
}

impl Directives {
    fn new() -> Directives {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
            seen_escape: false,
            zone_closed: false,
        }
    }

    /// Reads `line` (leading whitespace already removed) as a possible directive.
    fn consider(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.zone_closed {
            return Ok(());
        }
        let Some((name, value)) = split_directive(line) else {
            self.zone_closed = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN_DIRECTIVES.contains(&name.as_str()) {
            self.zone_closed = true;
            return Ok(());
        }
        let duplicate = || {
            ParseError::new(
                Span::line(line_no),
                format!("only one {name} parser directive can be used"),
            )
        };
        match name.as_str() {
            "escape" => {
                if self.seen_escape {
                    return Err(duplicate());
                }
                self.seen_escape = true;
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError::new(
                            Span::line(line_no),
                            format!("invalid escape token {other:?} does not match ` or \\"),
                        ));
                    }
                };
            }
            "syntax" => {
                if self.syntax.replace(value.to_string()).is_some() {
                    return Err(duplicate());
                }
            }
            _ => {
                if self.check.replace(value.to_string()).is_some() {
                    return Err(duplicate());
                }
            }
        }
        Ok(())
    }
}

/// Splits `#  name = value ` into its name and trimmed, non-empty value.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim_matches([' ', '\t']);
    (!value.is_empty()).then_some((name, value))
}

/// One instruction's text with continuations joined and escapes removed, untrimmed at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    pub text: String,
    pub span: Span,
    /// A blank line sat inside the continuation (BuildKit warns: NoEmptyContinuation).
    pub empty_continuation: bool,
}

/// A cursor over the physical lines of a Dockerfile.
#[derive(Debug)]
pub(crate) struct Lexer<'a> {
    /// Physical lines, each with its line ending (`\n`, `\r\n` or none for the last).
    lines: Vec<&'a str>,
    /// Index of the next physical line to read (so also the 1-based number of the last read).
    next: usize,
    directives: Directives,
}

impl<'a> Lexer<'a> {
    pub fn new(source: &'a str) -> Lexer<'a> {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let lines = source.split_inclusive('\n').collect();
        Lexer {
            lines,
            next: 0,
            directives: Directives::new(),
        }
    }

    pub fn directives(&self) -> &Directives {
        &self.directives
    }

    /// The next physical line with its line ending.
    fn read_raw(&mut self) -> Option<&'a str> {
        let line = self.lines.get(self.next).copied()?;
        self.next += 1;
        Some(line)
    }

    /// The next physical line without its line ending.
    fn read_physical(&mut self) -> Option<&'a str> {
        self.read_raw().map(trim_newline)
    }

    /// The 1-based number of the last line read (0 before the first).
    pub fn line_number(&self) -> usize {
        self.next
    }

    /// Reads a heredoc body: raw lines, endings kept, up to the line that equals
    /// `terminator` once its line ending (and, for `<<-`, its leading tabs) are removed.
    /// `None` when the file ends first.
    pub fn read_heredoc_body(&mut self, terminator: &str, chomp: bool) -> Option<String> {
        let mut body = String::new();
        while let Some(raw) = self.read_raw() {
            let mut candidate = trim_newline(raw);
            if chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == terminator {
                return Some(body);
            }
            body.push_str(raw);
        }
        None
    }

    /// Reads the next logical line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        while let Some(raw) = self.read_physical() {
            let start_line = self.next;
            let text = raw.trim_start();
            let col = raw[..raw.len() - text.len()].chars().count() + 1;
            self.directives.consider(text, start_line)?;
            let text = if is_comment(text) { "" } else { text };
            let escape = self.directives.escape;
            let (first, mut continued) = trim_continuation(text, escape);
            if first.is_empty() && !continued {
                continue;
            }
            let mut joined = first.to_string();
            let mut empty_continuation = false;
            while continued {
                let Some(raw) = self.read_physical() else {
                    // A dangling escape on the last line is accepted (BuildKit `continue-at-eof`).
                    break;
                };
                // Comments and blank lines inside a continuation are skipped without ending it.
                if is_comment(raw.trim_start()) {
                    continue;
                }
                if raw.trim().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, more) = trim_continuation(raw, escape);
                joined.push_str(part);
                continued = more;
            }
            return Ok(Some(LogicalLine {
                text: joined,
                span: Span {
                    start_line,
                    end_line: self.next,
                    col,
                },
                empty_continuation,
            }));
        }
        Ok(None)
    }
}

/// Removes every trailing `\r` and `\n` (BuildKit's `trimNewline`).
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.starts_with('#')
}

/// Removes a trailing continuation marker: the escape character followed only by spaces or
/// tabs, not itself escaped. Returns the text and whether the line continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape)
        && !before.ends_with(escape)
    {
        return (before, true);
    }
    (line, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(source: &str) -> Vec<(String, usize, usize)> {
        let mut lexer = Lexer::new(source);
        let mut out = Vec::new();
        while let Some(line) = lexer.next_line().unwrap() {
            out.push((line.text, line.span.start_line, line.span.end_line));
        }
        out
    }

    #[test]
    fn continuation_joins_without_separator_and_skips_comments_and_blanks() {
        let got = lines("RUN a \\\n# note\n\n  b\\\nc\nFROM x\n");
        assert_eq!(
            got,
            vec![
                ("RUN a   bc".to_string(), 1, 5),
                ("FROM x".to_string(), 6, 6)
            ]
        );
    }

    #[test]
    fn heredoc_bodies_are_raw_and_keep_line_endings() {
        let mut lexer = Lexer::new("RUN <<A\r\n# not a comment\r\n\tA\r\nA\r\nFROM x\n");
        lexer.next_line().unwrap();
        assert_eq!(
            lexer.read_heredoc_body("A", false).as_deref(),
            Some("# not a comment\r\n\tA\r\n")
        );
        assert_eq!(lexer.line_number(), 4);
        assert_eq!(lexer.next_line().unwrap().unwrap().text, "FROM x");

        let mut lexer = Lexer::new("RUN <<-A\n\tbody\n\t\tA");
        lexer.next_line().unwrap();
        assert_eq!(
            lexer.read_heredoc_body("A", true).as_deref(),
            Some("\tbody\n")
        );
        let mut lexer = Lexer::new("RUN <<A\nbody\n");
        lexer.next_line().unwrap();
        assert_eq!(lexer.read_heredoc_body("A", false), None);
        assert_eq!(lexer.line_number(), 2);
    }

    #[test]
    fn double_escape_does_not_continue() {
        assert_eq!(
            lines("ENV C a\\\\\nENV D b"),
            vec![("ENV C a\\\\".into(), 1, 1), ("ENV D b".into(), 2, 2)]
        );
    }

    #[test]
    fn crlf_bom_and_indent_are_handled() {
        let mut lexer = Lexer::new("\u{feff}  FROM a \\\r\n  b\r\n");
        let line = lexer.next_line().unwrap().unwrap();
        assert_eq!(line.text, "FROM a   b");
        assert_eq!(
            line.span,
            Span {
                start_line: 1,
                end_line: 2,
                col: 3
            }
        );
    }

    #[test]
    fn escape_directive_switches_to_backtick() {
        let mut lexer = Lexer::new("# escape=`\nRUN a `\n b\\\nFROM c\n");
        assert_eq!(lexer.next_line().unwrap().unwrap().text, "RUN a  b\\");
        assert_eq!(lexer.directives().escape, '`');
    }

    #[test]
    fn directives_only_count_before_anything_else() {
        let mut lexer = Lexer::new("# hello\n# escape=`\nFROM a\n");
        lexer.next_line().unwrap();
        assert_eq!(lexer.directives().escape, '\\');

        let mut lexer = Lexer::new("# Syntax = docker/dockerfile:1\n#escape = `\nFROM a\n");
        lexer.next_line().unwrap();
        assert_eq!(
            lexer.directives().syntax.as_deref(),
            Some("docker/dockerfile:1")
        );
        assert_eq!(lexer.directives().escape, '`');
    }

    #[test]
    fn bad_or_repeated_directive_is_an_error_with_its_line() {
        let err = Lexer::new("# escape=x\nFROM a").next_line().unwrap_err();
        assert_eq!(err.span.start_line, 1);
        let err = Lexer::new("# escape=`\n# escape=`\nFROM a")
            .next_line()
            .unwrap_err();
        assert_eq!(err.span.start_line, 2);
        assert!(err.message.contains("only one escape"), "{}", err.message);
    }

    #[test]
    fn split_directive_requires_name_and_value() {
        assert_eq!(split_directive("# escape = ` "), Some(("escape", "`")));
        assert_eq!(split_directive("#a1=b"), Some(("a1", "b")));
        assert_eq!(split_directive("# 1a=b"), None);
        assert_eq!(split_directive("# escape="), None);
        assert_eq!(split_directive("# just a comment"), None);
    }
}
