//! Word expansion as BuildKit's shell lexer does it for Dockerfile instructions: quote
//! removal, escapes, and `$VAR` / `${VAR…}` substitution, either as one word
//! ([`expand_word`]) or split into words at unquoted whitespace ([`expand_words`]).
//!
//! This is not a shell: no command substitution, globbing or arithmetic. Unset variables,
//! positional (`$1`) and special (`$@ $# …`) parameters expand to the empty string.

use crate::error::ExpandError;
use crate::pattern::Pattern;

/// Expands `word` to a single string (whitespace is kept, not split on).
pub fn expand_word(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    expand_word_with(word, env, escape, LexOptions::default())
}

/// Expands the body of an unquoted-delimiter heredoc (`COPY <<EOF`), as BuildKit's raw
/// expansion does: `$` substitutions and `\` escapes are processed with `\` as the escape
/// whatever the file's escape directive, while quotes are ordinary characters.
pub fn expand_heredoc(
    body: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let options = LexOptions {
        skip_quotes: true,
        ..LexOptions::default()
    };
    expand_word_with(body, env, '\\', options)
}

/// Switches of the word lexer, named after BuildKit's `shell.Lex` fields, which the parser
/// uses to find heredoc delimiters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LexOptions {
    /// Keep quote characters in the output (quoting still groups words).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (escaping still protects the next character).
    pub raw_escapes: bool,
    /// Quotes are ordinary characters.
    pub skip_quotes: bool,
    /// An unset variable is left as written instead of expanding to nothing.
    pub skip_unset: bool,
}

pub(crate) fn expand_word_with(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
    options: LexOptions,
) -> Result<String, ExpandError> {
    let mut lexer = WordLexer::new(word, env, escape, options);
    let (text, _) = lexer
        .process_until(None, options.raw_escapes)
        .map_err(|message| error(word, message))?;
    Ok(text)
}

pub(crate) fn expand_words_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
    options: LexOptions,
) -> Result<Vec<String>, ExpandError> {
    let mut lexer = WordLexer::new(text, env, escape, options);
    let (_, words) = lexer
        .process_until(None, options.raw_escapes)
        .map_err(|message| error(text, message))?;
    Ok(words.finish())
}

/// Expands `text` and splits the result into words at unquoted whitespace, including
/// whitespace that came from an unquoted variable. Empty words are dropped.
pub fn expand_words(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    expand_words_with(text, env, escape, LexOptions::default())
}

fn error(word: &str, message: String) -> ExpandError {
    ExpandError {
        word: word.to_string(),
        message,
    }
}

/// Collects words while expanding: text from quotes or escapes is "raw" (never splits),
/// text from unquoted characters or `$` expansions splits at whitespace.
#[derive(Debug, Default)]
struct WordSplitter {
    words: Vec<String>,
    current: String,
}

impl WordSplitter {
    fn add_splitting(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.current.is_empty() {
                self.words.push(std::mem::take(&mut self.current));
            }
        } else {
            self.current.push(c);
        }
    }

    fn add_raw(&mut self, text: &str) {
        self.current.push_str(text);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.words.push(self.current);
        }
        self.words
    }
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How deep `${a:-${b:-…}}` may nest. The lexer recurses per level; the limit keeps the stack
/// bounded (Go's growable stacks let BuildKit go deeper, but no real Dockerfile nests this far).
const MAX_NESTING: usize = 128;

struct WordLexer<'a> {
    chars: Vec<char>,
    pos: usize,
    env: Lookup<'a>,
    escape: char,
    options: LexOptions,
    /// Current `${…}` nesting depth.
    depth: usize,
}

impl<'a> WordLexer<'a> {
    fn new(text: &str, env: Lookup<'a>, escape: char, options: LexOptions) -> WordLexer<'a> {
        WordLexer {
            chars: text.chars().collect(),
            pos: 0,
            env,
            escape,
            options,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Processes up to `stop` (consumed) or the end. With `raw_escapes` the escape
    /// characters are kept in the output (used for `${VAR/pattern/…}` patterns).
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, WordSplitter), String> {
        // Like BuildKit, the setting holds for this level and what it calls (double quotes
        // included), and is restored afterwards.
        let saved = self.options.raw_escapes;
        self.options.raw_escapes = raw_escapes;
        let result = self.process_until_inner(stop);
        self.options.raw_escapes = saved;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, WordSplitter), String> {
        let raw_escapes = self.options.raw_escapes;
        let quotes_special = !self.options.skip_quotes;
        let mut text = String::new();
        let mut words = WordSplitter::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((text, words));
            }
            match c {
                '\'' if quotes_special => {
                    let quoted = self.single_quoted()?;
                    words.add_raw(&quoted);
                    text.push_str(&quoted);
                }
                '"' if quotes_special => {
                    let quoted = self.double_quoted()?;
                    words.add_raw(&quoted);
                    text.push_str(&quoted);
                }
                '$' => {
                    let value = self.dollar()?;
                    value.chars().for_each(|c| words.add_splitting(c));
                    text.push_str(&value);
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        if raw_escapes {
                            words.add_raw(&c.to_string());
                            text.push(c);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw(&escaped.to_string());
                        text.push(escaped);
                    } else {
                        words.add_splitting(c);
                        text.push(c);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((text, words)),
        }
    }

    /// Everything up to the next `'` is literal; nothing can be escaped.
    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        if self.options.raw_quotes {
            text.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.options.raw_quotes {
                        text.push('\'');
                    }
                    return Ok(text);
                }
                Some(c) => text.push(c),
            }
        }
    }

    /// Expands `$` inside; the escape only escapes `"`, `$` and itself, else stays literal.
    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        if self.options.raw_quotes {
            text.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.options.raw_quotes {
                        text.push('"');
                    }
                    return Ok(text);
                }
                Some('$') => text.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        if self.options.raw_escapes {
                            text.push(c);
                        }
                        match self.peek() {
                            // Dropped; the missing closing quote is reported next turn.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                text.push(next);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    text.push(c);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Reads a variable name: letters, digits and `_`; or all the digits of a positional
    /// parameter; or one special-parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                    name.push(c);
                    self.pos += 1;
                }
                return name;
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                self.pos += 1;
                return c.to_string();
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|&c| c.is_alphanumeric() || c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// Processes the word of a `${NAME<op>word}` up to the closing brace.
    fn operand(&mut self, raw_escapes: bool) -> Result<String, String> {
        match self.process_until(Some('}'), raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".into()),
            Err(message) => Err(message),
        }
    }

    fn dollar(&mut self) -> Result<String, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "substitutions nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let result = self.dollar_inner();
        self.depth -= 1;
        result
    }

    fn dollar_inner(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(op) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let skip_unset = self.options.skip_unset;
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let modifier = self.next();
                let word = self.operand(false)?;
                let value = self.lookup(&name);
                if skip_unset && value.is_none() {
                    let modifier = modifier.map(String::from).unwrap_or_default();
                    return Ok(format!("${{{name}:{modifier}{word}}}"));
                }
                let is_set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
                match modifier {
                    Some('-') if is_set_nonempty => Ok(value.unwrap_or_default()),
                    Some('-') => Ok(word),
                    Some('+') if is_set_nonempty => Ok(word),
                    Some('+') => Ok(String::new()),
                    Some('?') if is_set_nonempty => Ok(value.unwrap_or_default()),
                    Some('?') => Err(unset_message(&name, &word, value.is_some())),
                    Some(other) => Err(format!("unsupported modifier ({other}) in substitution")),
                    None => Err("syntax error: missing '}'".into()),
                }
            }
            '-' | '+' | '?' => {
                let word = self.operand(false)?;
                let value = self.lookup(&name);
                if skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{op}{word}}}"));
                }
                match (op, value) {
                    ('-', Some(value)) => Ok(value),
                    ('-', None) => Ok(word),
                    ('+', Some(_)) => Ok(word),
                    ('+', None) => Ok(String::new()),
                    (_, Some(value)) => Ok(value),
                    (_, None) => Err(unset_message(&name, &word, false)),
                }
            }
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let operand = self.operand(true)?;
                let value = self.lookup(&name);
                if skip_unset && value.is_none() {
                    let greedy = if longest {
                        op.to_string()
                    } else {
                        String::new()
                    };
                    return Ok(format!("${{{name}{op}{greedy}{operand}}}"));
                }
                let value = value.unwrap_or_default();
                let pattern = compile(&operand)?;
                Ok(if op == '#' {
                    pattern.trim_prefix(&value, longest)
                } else {
                    pattern.trim_suffix(&value, longest)
                })
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern_text = match self.process_until(Some('/'), true) {
                    Ok((text, _)) => text,
                    // `${VAR/pattern}` without replacement: the pattern ended at `}`.
                    Err(_) => return Err("syntax error: missing '/' in substitution".into()),
                };
                let pattern = compile(&pattern_text)?;
                let replacement = self.operand(false)?;
                let value = self.lookup(&name);
                if skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pattern_text}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                Ok(pattern.replace(&value, &replacement, all))
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }
}

fn compile(pattern: &str) -> Result<Pattern, String> {
    Pattern::new(pattern).map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))
}

fn unset_message(name: &str, word: &str, set_but_empty: bool) -> String {
    match (word.is_empty(), set_but_empty) {
        (false, _) => format!("{name}: {word}"),
        (true, true) => format!("{name}: is not allowed to be empty"),
        (true, false) => format!("{name}: is not allowed to be unset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("hello".into()),
            "PATHY" => Some("/usr/local/bin.tar.gz".into()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("a  b".into()),
            _ => None,
        }
    }

    fn word(text: &str) -> Result<String, ExpandError> {
        expand_word(text, &env, '\\')
    }

    #[test]
    fn simple_and_braced_variables() {
        assert_eq!(word("x$A.y${A}z").unwrap(), "xhello.yhelloz");
        assert_eq!(word("$NOPE-${NOPE}").unwrap(), "-");
        assert_eq!(word("$").unwrap(), "$");
    }

    #[test]
    fn colon_and_colonless_defaults() {
        assert_eq!(word("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(word("${EMPTY-d}").unwrap(), "");
        assert_eq!(word("${NOPE-d}").unwrap(), "d");
        assert_eq!(word("${EMPTY:+p}").unwrap(), "");
        assert_eq!(word("${EMPTY+p}").unwrap(), "p");
        assert_eq!(word("${NOPE+p}").unwrap(), "");
        assert_eq!(word("${A:+${A}!}").unwrap(), "hello!");
    }

    #[test]
    fn required_variables_report_the_message() {
        let err = word("${NOPE:?need it}").unwrap_err();
        assert_eq!(err.message, "NOPE: need it");
        assert!(word("${EMPTY:?}").is_err());
        assert_eq!(word("${EMPTY?}").unwrap(), "");
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${PATHY#*/}").unwrap(), "usr/local/bin.tar.gz");
        assert_eq!(word("${PATHY##*/}").unwrap(), "bin.tar.gz");
        assert_eq!(word("${PATHY%.*}").unwrap(), "/usr/local/bin.tar");
        assert_eq!(word("${PATHY%%.*}").unwrap(), "/usr/local/bin");
        assert_eq!(word("${PATHY#nomatch}").unwrap(), "/usr/local/bin.tar.gz");
        assert_eq!(word("${A%l?}").unwrap(), "hel");
        // No bracket expressions in BuildKit's patterns: `[` is literal.
        assert_eq!(word("${A#[gh]}").unwrap(), "hello");
    }

    #[test]
    fn replacement() {
        assert_eq!(word("${A/l/L}").unwrap(), "heLlo");
        assert_eq!(word("${A//l/L}").unwrap(), "heLLo");
        assert_eq!(word("${A//l*/_}").unwrap(), "he_");
        assert_eq!(word("${PATHY//./-}").unwrap(), "/usr/local/bin-tar-gz");
        let err = word("${PATHY//\\./-}").unwrap_err();
        assert_eq!(
            err.message,
            "invalid pattern (\\.) in substitution: invalid escape '\\.'"
        );
        assert_eq!(word("${A/\\//x}").unwrap(), "hello");
        assert_eq!(word("${NOPE/a/b}").unwrap(), "");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#"'$A' "$A" \$A"#).unwrap(), "$A hello $A");
        assert_eq!(word(r#""a\b\"c""#).unwrap(), r#"a\b"c"#);
        assert_eq!(expand_word("`$A", &env, '`').unwrap(), "$A");
        assert!(word("'open").is_err());
        assert!(word("${A").is_err());
        assert!(word("${A:=x}").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| "${A:-".repeat(depth) + "x" + &"}".repeat(depth);
        assert_eq!(word(&nested(MAX_NESTING)).unwrap(), "hello");
        assert_eq!(word(&nested(MAX_NESTING).replace('A', "N")).unwrap(), "x");
        let err = word(&nested(10_000)).unwrap_err();
        assert!(err.message.contains("nested"), "{}", err.message);
    }

    #[test]
    fn words_split_on_unquoted_whitespace_only() {
        let words = |t| expand_words(t, &env, '\\').unwrap();
        assert_eq!(words("x$SPACED y"), ["xa", "b", "y"]);
        assert_eq!(words("\"$SPACED\" ''"), ["a  b"]);
        assert_eq!(words("a\\ b"), ["a b"]);
    }
}
