//! The raw parse tree: each logical line split into keyword, flags and argument strings,
//! exactly as BuildKit's parser does (README §1.3 in `testdata/conformance/buildkit/`).
//!
//! Nothing here checks meaning: unknown keywords and flags are kept, quotes stay in place and
//! no variable is expanded. The typed layer (`crate::instruction`) builds on this tree, and
//! the conformance dump (`crate::dump`) renders it.

use crate::error::{ParseError, Span};
use crate::heredoc::{RawHeredoc, heredoc_words_in_line};
use crate::lexer::Lexer;

/// One instruction of the raw tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub span: Span,
    /// The keyword as written (dispatch is case-insensitive).
    pub keyword: String,
    /// Flags exactly as read, quotes and escapes removed, e.g. `--mount=type=cache,target=/x`.
    pub flags: Vec<String>,
    /// The argument strings, per keyword (see `parse_node`). For ENV and LABEL these are
    /// triples `name value sep` where `sep` is `=` for the `k=v` form and empty for the
    /// legacy `KEY name value` form.
    pub args: Vec<String>,
    /// The argument text after the flags, trimmed, as written.
    pub args_text: String,
    /// Whether the arguments came from a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's nested instruction.
    pub nested: Option<Box<Node>>,
    /// The logical line trimmed: continuation escapes removed, joined.
    pub original: String,
    /// Heredoc bodies that followed the line (RUN, COPY, ADD, or ONBUILD of one), in the
    /// order of their `<<NAME` words. Not part of BuildKit's dump format.
    pub heredocs: Vec<RawHeredoc>,
    /// A blank line sat inside the instruction's continuation lines.
    pub empty_continuation: bool,
}

impl Node {
    /// Whether BuildKit reads heredocs after this line: RUN, COPY or ADD (directly or as an
    /// ONBUILD trigger) in shell form.
    fn can_contain_heredoc(&self) -> bool {
        let node = match &self.nested {
            Some(nested) if self.keyword.eq_ignore_ascii_case("onbuild") => nested,
            _ => self,
        };
        let keyword = node.keyword.to_ascii_lowercase();
        matches!(keyword.as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// The raw parse of a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDockerfile {
    pub escape: char,
    pub syntax: Option<String>,
    /// The `# check=` directive's value, kept for later lint support.
    pub check: Option<String>,
    pub nodes: Vec<Node>,
}

/// Parses source text into the raw tree. Fails on bad directives, JSON arrays with
/// non-string elements, ENV/LABEL without a value, and files without instructions.
pub fn parse_raw(source: &str) -> Result<RawDockerfile, ParseError> {
    let mut lexer = Lexer::new(source);
    let mut nodes = Vec::new();
    while let Some(line) = lexer.next_line()? {
        let escape = lexer.directives().escape;
        let mut node = parse_node(&line.text, line.span, escape)?;
        node.empty_continuation = line.empty_continuation;
        if node.can_contain_heredoc() {
            for word in heredoc_words_in_line(&line.text) {
                let Some(content) = lexer.read_heredoc_body(&word.name, word.chomp) else {
                    let span = Span {
                        end_line: lexer.line_number(),
                        ..node.span
                    };
                    return Err(ParseError::new(
                        span,
                        format!(
                            "unterminated heredoc {:?}: no line {:?} ends it",
                            word.name, word.name
                        ),
                    ));
                };
                node.heredocs.push(RawHeredoc { word, content });
            }
            // The span covers the bodies and terminators too.
            node.span.end_line = lexer.line_number();
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::new(
            Span::line(1),
            "the Dockerfile has no instructions",
        ));
    }
    let directives = lexer.directives();
    Ok(RawDockerfile {
        escape: directives.escape,
        syntax: directives.syntax.clone(),
        check: directives.check.clone(),
        nodes,
    })
}

/// Whitespace that separates tokens, as BuildKit's `[\t\v\f\r ]+`.
fn is_token_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// How many `ONBUILD` may nest in one line before the parser stops recursing (the typed
/// layer rejects even two; the raw tree keeps a few, as BuildKit's dump does).
const MAX_ONBUILD_NESTING: usize = 16;

/// Parses one logical line (also used for ONBUILD's nested instruction).
pub(crate) fn parse_node(line: &str, span: Span, escape: char) -> Result<Node, ParseError> {
    parse_node_nested(line, span, escape, 0)
}

fn parse_node_nested(
    line: &str,
    span: Span,
    escape: char,
    depth: usize,
) -> Result<Node, ParseError> {
    let original = line.trim().to_string();
    let (keyword, rest) = match original.find(is_token_space) {
        Some(at) => (
            &original[..at],
            original[at..].trim_start_matches(is_token_space),
        ),
        None => (original.as_str(), ""),
    };
    let (flags, args_text) = extract_flags(rest, escape);
    let args_text = args_text.trim();
    let mut node = Node {
        span,
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        args_text: args_text.to_string(),
        json: false,
        nested: None,
        original: original.clone(),
        heredocs: Vec::new(),
        empty_continuation: false,
    };
    let error = |message: String| ParseError::new(span, message);
    match keyword.to_ascii_lowercase().as_str() {
        "run" | "cmd" | "entrypoint" | "shell" => {
            (node.args, node.json) = maybe_json(args_text, |a| vec![a.to_string()])
                .map_err(|m| error(format!("{keyword}: {m}")))?;
        }
        "add" | "copy" | "volume" => {
            (node.args, node.json) = maybe_json(args_text, split_token_space)
                .map_err(|m| error(format!("{keyword}: {m}")))?;
        }
        "from" | "expose" => node.args = split_token_space(args_text),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !args_text.is_empty() {
                node.args = vec![args_text.to_string()];
            }
        }
        "arg" => node.args = quote_aware_words(args_text, escape),
        "env" | "label" => node.args = name_values(keyword, args_text, escape).map_err(error)?,
        "healthcheck" => {
            let kind_len = args_text
                .find(char::is_whitespace)
                .unwrap_or(args_text.len());
            if kind_len > 0 {
                let (kind, rest) = args_text.split_at(kind_len);
                let (rest, json) = maybe_json(rest, |a| vec![a.to_string()])
                    .map_err(|m| error(format!("{keyword}: {m}")))?;
                node.args = std::iter::once(kind.to_string()).chain(rest).collect();
                node.json = json;
            }
        }
        "onbuild" => {
            if depth >= MAX_ONBUILD_NESTING {
                return Err(error("ONBUILD nested too deeply".into()));
            }
            if !args_text.is_empty() {
                node.nested = Some(Box::new(parse_node_nested(
                    args_text,
                    span,
                    escape,
                    depth + 1,
                )?));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Reads leading `--flag` words (README §1.3): quotes and escapes are removed, a bare `--`
/// ends the flags. Returns the flags and the remaining text.
fn extract_flags(line: &str, escape: char) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return (flags, "");
        };
        if !line[start..].starts_with("--") {
            return (flags, &line[start..]);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut ended_at = None;
        while let Some((at, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    ended_at = Some(at);
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == escape => {
                    if let Some((_, escaped)) = chars.next() {
                        word.push(escaped);
                    }
                }
                _ => word.push(c),
            }
        }
        if word == "--" && quote.is_none() {
            return (flags, ended_at.map_or("", |at| &line[at..]));
        }
        if !word.is_empty() {
            flags.push(word);
        }
        if ended_at.is_none() {
            return (flags, "");
        }
    }
}

fn split_token_space(text: &str) -> Vec<String> {
    text.split(is_token_space)
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// JSON (exec) form if `text` is a JSON array of strings; a JSON array with any other
/// element is an error; anything else falls back to `otherwise` (no arguments if empty).
fn maybe_json(
    text: &str,
    otherwise: impl Fn(&str) -> Vec<String>,
) -> Result<(Vec<String>, bool), String> {
    let text = text.trim();
    if text.starts_with('[')
        && let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text)
    {
        let strings = items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                other => Err(format!(
                    "JSON array elements must be strings, found {other}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((strings, true));
    }
    if text.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok((otherwise(text), false))
}

/// Splits at unquoted whitespace keeping quotes and escapes in the words (ENV, LABEL, ARG).
pub(crate) fn quote_aware_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    // Quotes stay in the word, so a quoted empty string (`""`) is still a non-empty word.
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        if c == escape && quote != Some('\'') {
            // The escape and the escaped character are both kept; a final escape is dropped.
            if let Some(next) = chars.next() {
                word.push(c);
                word.push(next);
            }
            continue;
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// ENV / LABEL arguments as `name value sep` triples.
fn name_values(keyword: &str, text: &str, escape: char) -> Result<Vec<String>, String> {
    let words = quote_aware_words(text, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy `ENV name value…`: the value is the verbatim rest of the line.
        return match text.find(is_token_space) {
            Some(at) => Ok(vec![
                text[..at].to_string(),
                text[at..].trim_start_matches(is_token_space).to_string(),
                String::new(),
            ]),
            None => Err(format!("{keyword} must have two arguments")),
        };
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        args.extend([name.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(line: &str) -> Node {
        parse_node(line, Span::line(1), '\\').unwrap()
    }

    #[test]
    fn flags_are_read_until_a_non_flag_word_or_double_dash() {
        let n = node("COPY --from=build --chown=\"a b\" x y");
        assert_eq!(n.flags, ["--from=build", "--chown=a b"]);
        assert_eq!(n.args, ["x", "y"]);
        let n = node("COPY --link -- --x y");
        assert_eq!(n.flags, ["--link"]);
        assert_eq!(n.args, ["--x", "y"]);
        let n = node("CMD --doit");
        assert_eq!(n.flags, ["--doit"]);
        assert!(n.args.is_empty());
    }

    #[test]
    fn json_form_versus_shell_form() {
        let n = node("RUN [\"echo\", \"a b\"]");
        assert!(n.json);
        assert_eq!(n.args, ["echo", "a b"]);
        let n = node("RUN ['echo']");
        assert!(!n.json);
        assert_eq!(n.args, ["['echo']"]);
        let n = node("COPY [\"a b\", \"/c\"]");
        assert_eq!(n.args, ["a b", "/c"]);
        let err = parse_node("CMD [\"a\", 1]", Span::line(7), '\\').unwrap_err();
        assert_eq!(err.span.start_line, 7);
    }

    #[test]
    fn quote_aware_words_keep_quotes_and_escapes() {
        assert_eq!(
            quote_aware_words(r#"abc="123 456" def a\ b 'x\'"#, '\\'),
            [r#"abc="123 456""#, "def", r"a\ b", r"'x\'"]
        );
        assert_eq!(quote_aware_words(r#"a="" b"#, '\\'), [r#"a="""#, "b"]);
    }

    #[test]
    fn env_forms() {
        assert_eq!(node("ENV a b  c").args, ["a", "b  c", ""]);
        assert_eq!(
            node("ENV a=1 b=\"x y\"").args,
            ["a", "1", "=", "b", "\"x y\"", "="]
        );
        assert!(parse_node("ENV a", Span::line(1), '\\').is_err());
        assert!(parse_node("ENV a=1 b", Span::line(1), '\\').is_err());
    }

    #[test]
    fn healthcheck_and_onbuild() {
        let n = node("HEALTHCHECK --retries=3 CMD [\"true\"]");
        assert_eq!(n.args, ["CMD", "true"]);
        assert!(n.json);
        let n = node("ONBUILD RUN echo hi");
        assert_eq!(n.nested.unwrap().args, ["echo hi"]);
    }

    #[test]
    fn heredoc_bodies_attach_to_their_node_and_extend_its_span() {
        let raw = parse_raw(
            "FROM a\nRUN <<A cat - <<-'B'\nbody a\nA\n\tbody b\n\tB\nRUN [\"<<C\"]\nCOPY x /y\n",
        )
        .unwrap();
        let run = &raw.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].word.name, "A");
        assert_eq!(run.heredocs[0].content, "body a\n");
        assert!(!run.heredocs[1].word.expand && run.heredocs[1].word.chomp);
        assert_eq!(run.heredocs[1].content, "\tbody b\n");
        assert_eq!((run.span.start_line, run.span.end_line), (2, 6));
        assert!(raw.nodes[2].heredocs.is_empty(), "JSON form has none");
        assert_eq!(raw.nodes[3].span.start_line, 8);

        let onbuild = parse_raw("FROM a\nONBUILD RUN <<A\nx\nA\n").unwrap();
        assert_eq!(onbuild.nodes[1].heredocs[0].content, "x\n");
        let not_here = parse_raw("FROM a\nENV A=<<B\nB\n").unwrap();
        assert_eq!(
            not_here.nodes.len(),
            3,
            "ENV takes no heredoc: `B` is a line of its own"
        );
    }

    #[test]
    fn unterminated_heredoc_names_its_lines() {
        let err = parse_raw("FROM a\nRUN <<EOF\necho hi\nEO\n").unwrap_err();
        assert_eq!((err.span.start_line, err.span.end_line), (2, 4));
        assert!(
            err.message.contains("unterminated heredoc"),
            "{}",
            err.message
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(parse_raw("").is_err());
        assert!(parse_raw("# only\n\n").is_err());
    }
}
