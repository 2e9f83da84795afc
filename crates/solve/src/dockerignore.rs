//! `.dockerignore` parsing and matching, with Docker's semantics.
//!
//! The behaviour follows moby's `patternmatcher` and `patternmatcher/ignorefile` packages and
//! the way current BuildKit applies them while it walks the context (tonistiigi/fsutil's
//! `filterFS.Walk`): one pattern per line, `#` comments, `!exceptions`, Go `filepath.Match` globs
//! plus `**`, a pattern that matches a directory also matches everything beneath it, and
//! (almost always) the last matching line wins; `IgnoreMatcher::evaluate` has the exact rule.
//! An exception re-includes paths below an excluded directory whatever its wildcards; the walk
//! shows such a directory only as the parent of something visible (`context::walk`), and skips
//! an excluded directory only where no exception can match ([`IgnoreMatcher::may_include_below`]).
//!
//! The glob → regex translation lives here and is shared with `crate::context`, which matches
//! COPY source patterns one path component at a time with plain Go `filepath.Match` rules.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use regex::Regex;

/// The name of the ignore file at the root of a build context.
pub const IGNORE_FILE_NAME: &str = ".dockerignore";

/// Why an ignore file or a glob could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error(".dockerignore line {line}: illegal exclusion pattern \"!\"")]
    BareExclusion { line: usize },
    #[error(".dockerignore line {line}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: GlobError,
    },
    #[error("--exclude={pattern}: {reason}")]
    BadExclude { pattern: String, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A malformed Go `filepath.Match` pattern (Go reports all of these as `ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("unterminated character class")]
    UnterminatedClass,
    #[error("empty or malformed character class")]
    BadClass,
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// A parsed `.dockerignore`: decides which context paths are invisible to the build.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<IgnorePattern>,
}

#[derive(Debug, Clone)]
struct IgnorePattern {
    /// The cleaned pattern text, without the leading `!`.
    text: String,
    /// A `!` line: re-includes what earlier lines excluded.
    exception: bool,
    matcher: PathMatcher,
    /// One single-component glob per path component, used to decide whether an exception could
    /// apply below a directory. `None` when the pattern can span components (`**`, a negated
    /// class that may match `/`, escapes), in which case we assume it could.
    components: Option<Vec<Regex>>,
}

/// patternmatcher compiles each pattern to one of four match kinds. They are not all expressible
/// as the regex it would otherwise build (`**foo` is a plain suffix test and also matches
/// `barfoo`), so the kinds are reproduced as they are.
#[derive(Debug, Clone)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(text) => path == text,
            PathMatcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix
                        .strip_prefix('/')
                        .is_some_and(|without_slash| path == without_slash)
            }
            PathMatcher::Regex(regex) => regex.is_match(path),
        }
    }
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw_line) in text.split('\n').enumerate() {
            let line_number = index + 1;
            // Go's line scanner drops a trailing `\r`; comments are recognised before trimming.
            let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if body.is_empty() {
                return Err(IgnoreError::BareExclusion { line: line_number });
            }
            let mut cleaned = go_clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let bad = |reason| IgnoreError::BadPattern {
                line: line_number,
                pattern: line.to_string(),
                reason,
            };
            let tokens = tokenize(&cleaned).map_err(bad)?;
            let matcher = compile_path_matcher(&tokens);
            let components = if exception {
                component_regexes(&cleaned)
            } else {
                None
            };
            patterns.push(IgnorePattern {
                text: cleaned,
                exception,
                matcher,
                components,
            });
        }
        Ok(IgnoreMatcher { patterns })
    }

    /// The matcher for COPY/ADD `--exclude` values: each value is one pattern with the syntax of
    /// a `.dockerignore` line (`!` exceptions included), in the order given.
    pub fn from_patterns(patterns: &[String]) -> Result<Self, IgnoreError> {
        let mut matcher = IgnoreMatcher::default();
        for pattern in patterns {
            let bad = |reason: String| IgnoreError::BadExclude {
                pattern: pattern.clone(),
                reason,
            };
            if pattern.contains('\n') || pattern.trim().is_empty() {
                return Err(bad("empty or multi-line pattern".into()));
            }
            let parsed = Self::parse(pattern).map_err(|error| match error {
                IgnoreError::BadPattern { reason, .. } => bad(reason.to_string()),
                IgnoreError::BareExclusion { .. } => bad("a lone \"!\" excludes nothing".into()),
                other => bad(other.to_string()),
            })?;
            matcher.patterns.extend(parsed.patterns);
        }
        Ok(matcher)
    }

    /// Reads `<dir>/.dockerignore`; a context without one ignores nothing.
    pub fn from_context(dir: &Path) -> Result<Self, IgnoreError> {
        let path = dir.join(IGNORE_FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&String::from_utf8_lossy(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(IgnoreError::Read { path, source }),
        }
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The cleaned pattern texts, `!` included for exceptions, in file order.
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.patterns.iter().map(|pattern| {
            if pattern.exception {
                format!("!{}", pattern.text)
            } else {
                pattern.text.clone()
            }
        })
    }

    /// Whether a context path (slash-separated, relative to the context root) is excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        self.evaluate(rel_path)
            .is_some_and(|evaluation| evaluation.excluded)
    }

    /// Whether anything strictly below the directory `rel_dir` can be visible. False only when
    /// the directory is excluded and no exception could re-include a path beneath it, so a walk
    /// may skip the directory entirely without changing the result.
    pub fn may_include_below(&self, rel_dir: &str) -> bool {
        let Some(evaluation) = self.evaluate(rel_dir) else {
            return true;
        };
        if !evaluation.excluded {
            return true;
        }
        // A descendant inherits every pattern the directory matched (see `evaluate`), so the
        // last excluding pattern that matched the directory still matches it; only an exception
        // after that one, matching a path strictly below the directory, can flip it back.
        let last_exclusion = evaluation
            .matched
            .iter()
            .zip(&self.patterns)
            .rposition(|(matched, pattern)| *matched && !pattern.exception)
            .expect("an excluded path matched an excluding pattern");
        let dir = clean_rel(rel_dir);
        let dir_components: Vec<&str> = dir.split('/').collect();
        self.patterns[last_exclusion + 1..]
            .iter()
            .filter(|pattern| pattern.exception)
            .any(|pattern| could_match_below(pattern, &dir_components))
    }

    /// Evaluates a path the way BuildKit's context walk does (fsutil's `filterFS.Walk` calling
    /// patternmatcher's `MatchesUsingParentResults` for each path, top-level first, with its
    /// parent's result): `None` for the context root.
    ///
    /// Per path, the patterns are taken in order with a running verdict (excluded or not). A
    /// pattern the parent directory matched matches again without being looked at; any other
    /// pattern is only tried when it could change the verdict (an excluding pattern while the
    /// path is not excluded, an exception while it is), and then only against the path itself.
    /// Each matching pattern sets the verdict (excluded for a plain line, included for `!`), so
    /// the last matching line usually decides — but a pattern skipped at a directory because it
    /// could not have changed the verdict there is not inherited by the directory's children,
    /// which BuildKit then test against that pattern on their own path.
    fn evaluate(&self, rel_path: &str) -> Option<Evaluation> {
        let path = clean_rel(rel_path);
        if path == "." || path.is_empty() {
            return None;
        }
        let count = self.patterns.len();
        // The parent directory's per-pattern matches; the top level has none.
        let mut parent: Option<Vec<bool>> = None;
        let mut evaluation = Evaluation {
            excluded: false,
            matched: vec![false; count],
        };
        let ends = path
            .match_indices('/')
            .map(|(slash, _)| slash)
            .chain(std::iter::once(path.len()));
        for end in ends {
            let prefix = &path[..end];
            let mut excluded = false;
            let mut matched = vec![false; count];
            for (index, pattern) in self.patterns.iter().enumerate() {
                let mut hit = parent.as_ref().is_some_and(|parent| parent[index]);
                if !hit {
                    if pattern.exception != excluded {
                        continue;
                    }
                    hit = pattern.matcher.matches(prefix);
                }
                matched[index] = hit;
                if hit {
                    excluded = !pattern.exception;
                }
            }
            evaluation.excluded = excluded;
            parent = Some(matched);
        }
        evaluation.matched = parent.unwrap_or_default();
        Some(evaluation)
    }
}

/// What [`IgnoreMatcher::evaluate`] found for one path.
struct Evaluation {
    excluded: bool,
    /// Per pattern: whether it matched the path (directly or through its parent).
    matched: Vec<bool>,
}

fn could_match_below(pattern: &IgnorePattern, dir_components: &[&str]) -> bool {
    let Some(components) = &pattern.components else {
        return true;
    };
    components.len() > dir_components.len()
        && components
            .iter()
            .zip(dir_components)
            .all(|(glob, name)| glob.is_match(name))
}

fn component_regexes(cleaned: &str) -> Option<Vec<Regex>> {
    if cleaned.contains("**") || cleaned.contains("[^") || cleaned.contains('\\') {
        return None;
    }
    cleaned
        .split('/')
        .map(|component| compile_component_glob(component).ok())
        .collect()
}

fn clean_rel(rel_path: &str) -> String {
    let cleaned = go_clean(rel_path);
    match cleaned.strip_prefix('/') {
        Some("") => ".".to_string(),
        Some(rest) => rest.to_string(),
        None => cleaned,
    }
}

/// Go's `path.Clean`: collapses slashes, drops `.`, resolves `..` lexically (never above `/` for
/// a rooted path), no trailing slash, and `.` for an empty result.
pub(crate) fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// BuildKit's test for whether a COPY source component needs wildcard expansion: an unescaped
/// `*`, `?` or `[`.
pub(crate) fn contains_wildcards(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Compiles one path component of a Go `filepath.Match` pattern (no `/` inside) to an anchored
/// regex. `**` has no special meaning here, as in Go.
pub(crate) fn compile_component_glob(pattern: &str) -> Result<Regex, GlobError> {
    let tokens = tokenize(pattern)?;
    let mut regex = String::from("^");
    for token in &tokens {
        push_token_regex(&mut regex, token);
    }
    regex.push('$');
    Ok(Regex::new(&regex).expect("glob translation always yields a valid regex"))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// A literal written with a backslash escape (patternmatcher treats it as needing a regex).
    Escaped(char),
    Star,
    Question,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Splits a Go `filepath.Match` pattern into tokens, rejecting what Go rejects as
/// `ErrBadPattern`.
fn tokenize(pattern: &str) -> Result<Vec<Token>, GlobError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        let token = match ch {
            '*' => Token::Star,
            '?' => Token::Question,
            '\\' => Token::Escaped(chars.next().ok_or(GlobError::TrailingBackslash)?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    let lo = match chars.next() {
                        None => return Err(GlobError::UnterminatedClass),
                        Some(']') if !ranges.is_empty() => break,
                        Some(']' | '-') => return Err(GlobError::BadClass),
                        Some('\\') => chars.next().ok_or(GlobError::UnterminatedClass)?,
                        Some(other) => other,
                    };
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        match chars.next() {
                            None => return Err(GlobError::UnterminatedClass),
                            Some(']' | '-') => return Err(GlobError::BadClass),
                            Some('\\') => chars.next().ok_or(GlobError::UnterminatedClass)?,
                            Some(other) => other,
                        }
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err(GlobError::BadClass);
                    }
                    ranges.push((lo, hi));
                }
                Token::Class { negated, ranges }
            }
            other => Token::Literal(other),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

fn push_literal(regex: &mut String, ch: char) {
    regex.push_str(&regex::escape(ch.encode_utf8(&mut [0; 4])));
}

fn push_token_regex(regex: &mut String, token: &Token) {
    match token {
        Token::Literal(ch) | Token::Escaped(ch) => push_literal(regex, *ch),
        Token::Star => regex.push_str("[^/]*"),
        Token::Question => regex.push_str("[^/]"),
        Token::Class { negated, ranges } => {
            regex.push('[');
            if *negated {
                regex.push('^');
            }
            for (lo, hi) in ranges {
                // Escape every class member so Rust's class syntax (`&&`, `--`, nested `[`)
                // never kicks in; `\x{..}` is valid for any char.
                let _ = write!(regex, "\\x{{{:x}}}", *lo as u32);
                if lo != hi {
                    let _ = write!(regex, "-\\x{{{:x}}}", *hi as u32);
                }
            }
            regex.push(']');
        }
    }
}

/// patternmatcher's `compile`: the same state machine deciding exact/prefix/suffix/regex.
fn compile_path_matcher(tokens: &[Token]) -> PathMatcher {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut kind = Kind::Exact;
    let mut regex = String::from("^");
    let mut index = 0;
    while index < tokens.len() {
        let at_start = index == 0;
        match &tokens[index] {
            Token::Star if tokens.get(index + 1) == Some(&Token::Star) => {
                index += 2;
                // `**/` is treated as `**`.
                if tokens.get(index) == Some(&Token::Literal('/')) {
                    index += 1;
                }
                if index == tokens.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if at_start {
                    kind = Kind::Suffix;
                }
                continue;
            }
            Token::Literal(ch) => push_literal(&mut regex, *ch),
            other => {
                push_token_regex(&mut regex, other);
                kind = Kind::Regex;
            }
        }
        index += 1;
    }
    let text: String = tokens.iter().map(token_text).collect();
    match kind {
        Kind::Exact => PathMatcher::Exact(text),
        Kind::Prefix => PathMatcher::Prefix(text[..text.len() - 2].to_string()),
        Kind::Suffix => PathMatcher::Suffix(text[2..].to_string()),
        Kind::Regex => {
            regex.push('$');
            PathMatcher::Regex(Regex::new(&regex).expect("glob translation yields a valid regex"))
        }
    }
}

/// Exact/prefix/suffix kinds only arise from literal tokens (and the `**` being stripped), so
/// the text of the tokens is the cleaned pattern itself.
fn token_text(token: &Token) -> String {
    match token {
        Token::Literal(ch) => ch.to_string(),
        Token::Star => "*".to_string(),
        // Never part of a non-regex kind; kept for completeness.
        Token::Escaped(ch) => format!("\\{ch}"),
        Token::Question => "?".to_string(),
        Token::Class { .. } => String::new(),
    }
}

#[cfg(test)]
mod tests;
