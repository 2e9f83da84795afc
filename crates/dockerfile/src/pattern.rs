//! The glob patterns of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`, as BuildKit's shell lexer
//! reads them: `*` (any run), `?` (any character) and `\` escapes; no bracket expressions
//! (`[` is literal, unlike POSIX shells). `\}` and `\/` are the literal characters; `\*`,
//! `\?` and `\\` are literal too; any other escape is an error, as in BuildKit. The escape is
//! always `\`, whatever the Dockerfile's escape directive. Patterns are matched against
//! whole strings by backtracking; values are short (variable contents).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    AnySequence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`, or says which escape is invalid.
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        let mut chars = pattern.chars().peekable();
        let mut tokens = Vec::new();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::AnySequence,
                '?' => Token::AnyChar,
                '\\' => match chars.peek().copied() {
                    // `}` and `/` had to be escaped inside `${…}`; the escape is not part of
                    // the pattern, and they are literal anyway.
                    Some('}' | '/') => continue,
                    Some(next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Token::Literal(next)
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\' at the end".into()),
                },
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(Pattern { tokens })
    }

    fn matches(&self, text: &[char]) -> bool {
        matches_from(&self.tokens, text)
    }

    /// Removes the shortest (or longest) prefix matching the pattern.
    pub fn trim_prefix(&self, value: &str, longest: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut ends: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new((0..=chars.len()).rev())
        } else {
            Box::new(0..=chars.len())
        };
        match ends.find(|&end| self.matches(&chars[..end])) {
            Some(end) => chars[end..].iter().collect(),
            None => value.to_string(),
        }
    }

    /// Removes the shortest (or longest) suffix matching the pattern.
    pub fn trim_suffix(&self, value: &str, longest: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut starts: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new(0..=chars.len())
        } else {
            Box::new((0..=chars.len()).rev())
        };
        match starts.find(|&start| self.matches(&chars[start..])) {
            Some(start) => chars[..start].iter().collect(),
            None => value.to_string(),
        }
    }

    /// Replaces the leftmost-longest match (or every non-overlapping one with `all`). An
    /// empty pattern matches the empty string, as BuildKit's regular expression does.
    pub fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut pos = 0;
        let mut replaced = false;
        let mut previous_end = None;
        while pos <= chars.len() {
            let found = (!replaced || all)
                .then(|| {
                    (pos..=chars.len())
                        .rev()
                        .find(|&end| self.matches(&chars[pos..end]))
                })
                .flatten()
                // As in regex replace-all: no empty match right after the previous match.
                .filter(|&end| end > pos || previous_end != Some(pos));
            match found {
                Some(end) => {
                    out.push_str(replacement);
                    replaced = true;
                    previous_end = Some(end);
                    if end > pos {
                        pos = end;
                        continue;
                    }
                }
                None if !all && replaced => {
                    out.extend(&chars[pos..]);
                    break;
                }
                None => {}
            }
            // No match here (or an empty one): keep this character and move on.
            if let Some(&c) = chars.get(pos) {
                out.push(c);
            }
            pos += 1;
        }
        out
    }
}

/// Whole-string glob match in O(len(tokens) × len(text)): on a mismatch only the last `*`
/// is retried one character further (earlier stars never need to move again).
fn matches_from(tokens: &[Token], text: &[char]) -> bool {
    let (mut t, mut c) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while c < text.len() {
        match tokens.get(t) {
            Some(Token::AnySequence) => {
                last_star = Some((t, c));
                t += 1;
            }
            Some(token) if matches_one(token, text[c]) => {
                t += 1;
                c += 1;
            }
            _ => match last_star {
                Some((star, from)) => {
                    t = star + 1;
                    c = from + 1;
                    last_star = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::AnySequence)
}

fn matches_one(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => true,
        Token::AnySequence => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pattern: &str) -> Pattern {
        Pattern::new(pattern).unwrap()
    }

    #[test]
    fn whole_string_matching() {
        let m = |pat: &str, text: &str| p(pat).matches(&text.chars().collect::<Vec<_>>());
        assert!(m("a*c", "abbc"));
        assert!(!m("a*c", "abcd"));
        assert!(m("a?c", "abc"));
        assert!(m("[a-c]x", "[a-c]x"), "no bracket expressions, as BuildKit");
        assert!(!m("[a-c]x", "bx"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("a\\}b\\/", "a}b/"));
        assert!(m("\\\\", "\\"));
        assert!(m("*a*b", "xaxxab"));
        assert!(!m("*a*b", "xaxxa"));
        assert!(m("**", ""));
        // Would take exponential time with naive backtracking.
        let long = "a".repeat(5000);
        assert!(!m(
            &"*a"
                .repeat(50)
                .chars()
                .chain("b".chars())
                .collect::<String>(),
            &long
        ));
    }

    #[test]
    fn invalid_escapes_are_errors() {
        assert_eq!(Pattern::new("\\.gz").unwrap_err(), "invalid escape '\\.'");
        assert!(Pattern::new("x\\").is_err());
    }

    #[test]
    fn trims_and_replaces() {
        assert_eq!(p("a*").trim_prefix("abab", false), "bab");
        assert_eq!(p("a*").trim_prefix("abab", true), "");
        assert_eq!(p("*b").trim_suffix("abab", false), "aba");
        assert_eq!(p("*b").trim_suffix("abab", true), "");
        assert_eq!(p("b").replace("abab", "X", false), "aXab");
        assert_eq!(p("b").replace("abab", "X", true), "aXaX");
        assert_eq!(p("").replace("ab", "X", true), "XaXbX");
        assert_eq!(p("").replace("ab", "X", false), "Xab");
        assert_eq!(p("*").replace("abab", "X", true), "X");
        assert_eq!(p("x*").replace("abab", "X", true), "abab");
    }
}
