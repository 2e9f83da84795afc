//! Here-documents as BuildKit's Dockerfile parser finds them.
//!
//! After a RUN, COPY or ADD line (or `ONBUILD` of one), not in JSON form, the line is split
//! into words with quotes and escapes kept; every word of the form `[fd]<<[-]NAME` opens a
//! heredoc, and the bodies follow the instruction in that order, each up to a line equal to
//! its `NAME` (after stripping leading tabs for `<<-`). The body keeps its line endings.
//! A delimiter with any quoting (`<<'EOF'`, `<<"EOF"`, `<<E"O"F`) disables variable expansion
//! of a COPY/ADD body; an escaped quote does not.

use crate::expand::{LexOptions, expand_word_with, expand_words_with};

/// One `<<NAME` word of an instruction line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeredocWord {
    /// The delimiter, quotes removed.
    pub name: String,
    /// Whether the body's variables are expanded (no quoting in the delimiter).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and from the terminator line.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

/// A heredoc read from the file: its word plus the raw body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawHeredoc {
    pub word: HeredocWord,
    /// The body lines as written, each with its own line ending (`\n` or `\r\n`); no
    /// tabs stripped even for `<<-`.
    pub content: String,
}

/// Parses one word as a heredoc opener (`<<EOF`, `<<-'EOF'`, `2<<EOF`…), or `None` if it is
/// not one. The word must be exactly: digits, `<<`, an optional `-`, then a non-empty rest
/// without `<` that lexes as a single word.
pub fn parse_heredoc_word(word: &str) -> Option<HeredocWord> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let no_env = |_: &str| None;
    let options = LexOptions {
        skip_unset: true,
        ..LexOptions::default()
    };
    let words = expand_words_with(rest, &no_env, '\\', options).ok()?;
    let [name] = words.as_slice() else {
        return None;
    };
    // BuildKit lexes the rest with and without raw quotes and compares quote counts: any
    // quoted section (even an empty one) makes them differ.
    let raw = expand_word_with(
        rest,
        &no_env,
        '\\',
        LexOptions {
            raw_quotes: true,
            ..options
        },
    )
    .ok()?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    let expand = quotes(name) == quotes(&raw);
    Some(HeredocWord {
        name: name.clone(),
        expand,
        chomp,
        fd: word[..digits].parse().unwrap_or(0),
    })
}

/// The heredoc openers of a whole instruction line, in order. A line that does not lex
/// (unterminated quote, bad `${`) has none, as in BuildKit.
pub(crate) fn heredoc_words_in_line(line: &str) -> Vec<HeredocWord> {
    if !line.contains("<<") {
        return Vec::new();
    }
    let no_env = |_: &str| None;
    let options = LexOptions {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        skip_quotes: false,
    };
    match expand_words_with(line, &no_env, '\\', options) {
        Ok(words) => words.iter().filter_map(|w| parse_heredoc_word(w)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Strips leading tabs from every line (what `<<-` does to a body).
pub fn chomp_leading_tabs(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(name: &str, expand: bool, chomp: bool) -> Option<HeredocWord> {
        Some(HeredocWord {
            name: name.into(),
            expand,
            chomp,
            fd: 0,
        })
    }

    #[test]
    fn heredoc_words_like_buildkit() {
        // BuildKit's TestParseHeredocHelpers cases.
        for valid in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
        ] {
            assert_eq!(parse_heredoc_word(valid).unwrap().name, "EOF", "{valid}");
        }
        for not in [
            "", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh", "x<<EOF",
        ] {
            assert_eq!(parse_heredoc_word(not), None, "{not}");
        }
        for invalid in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert_eq!(parse_heredoc_word(invalid), None, "{invalid}");
        }
        assert_eq!(parse_heredoc_word("<<EOF"), word("EOF", true, false));
        assert_eq!(parse_heredoc_word("<<-'EOF'"), word("EOF", false, true));
        assert_eq!(parse_heredoc_word("<<E\"O\"F"), word("EOF", false, false));
        assert_eq!(parse_heredoc_word("<<E\\'F"), word("E'F", true, false));
        assert_eq!(parse_heredoc_word("<<$X"), word("$X", true, false));
        let fd = parse_heredoc_word("3<<EOF").unwrap();
        assert_eq!(fd.fd, 3);
    }

    #[test]
    fn words_in_line_respect_quotes_and_json() {
        let names = |line: &str| -> Vec<String> {
            heredoc_words_in_line(line)
                .into_iter()
                .map(|w| w.name)
                .collect()
        };
        assert_eq!(names("RUN <<A cat - <<-B"), ["A", "B"]);
        assert_eq!(names("COPY <<A <<'B' /dst/"), ["A", "B"]);
        assert_eq!(names("RUN echo '<<A' \"<<B\" \\<<C"), Vec::<String>::new());
        assert_eq!(names("RUN cat <<EOF>out"), ["EOF>out"]);
        assert_eq!(names("RUN echo 'open <<A"), Vec::<String>::new());
        assert_eq!(names("RUN echo hi"), Vec::<String>::new());
    }

    #[test]
    fn chomp_strips_only_leading_tabs() {
        assert_eq!(chomp_leading_tabs("\t\ta\n  \tb\n\t\n"), "a\n  \tb\n\n");
        assert_eq!(chomp_leading_tabs("\tlast"), "last");
    }
}
