//! Shell glob patterns (`*`, `?`, `[…]`, escapes) for `${VAR#p}`, `${VAR%p}` and
//! `${VAR/p/r}`, matched against whole strings by backtracking. Values are short (variable
//! contents), so the simple quadratic search is fine.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    AnySequence,
    /// `[…]`: ranges (single characters are `(c, c)`), and whether it is negated (`[!…]`/`[^…]`).
    Class(Vec<(char, char)>, bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`; `escape` makes the next character literal. An unterminated `[` is
    /// a literal `[`, as in shells.
    pub fn new(pattern: &str, escape: char) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let token = match c {
                c if c == escape => match chars.get(i) {
                    Some(&next) => {
                        i += 1;
                        Token::Literal(next)
                    }
                    None => Token::Literal(c),
                },
                '*' => Token::AnySequence,
                '?' => Token::AnyChar,
                '[' => match parse_class(&chars[i..]) {
                    Some((token, used)) => {
                        i += used;
                        token
                    }
                    None => Token::Literal('['),
                },
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Pattern { tokens }
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

    /// Replaces the leftmost-longest match (or every non-overlapping one with `all`).
    /// An empty pattern replaces nothing.
    pub fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        if self.tokens.is_empty() {
            return value.to_string();
        }
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

/// Parses the inside of `[…]` (after the `[`); returns the token and characters used.
fn parse_class(chars: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        // `]` right after `[` or `[!` is a member, not the end.
        if c == ']' && !first {
            return Some((Token::Class(ranges, negated), i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

fn matches_from(tokens: &[Token], text: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match token {
        Token::AnySequence => (0..=text.len()).any(|skip| matches_from(rest, &text[skip..])),
        single => match text.split_first() {
            Some((&c, text_rest)) => matches_one(single, c) && matches_from(rest, text_rest),
            None => false,
        },
    }
}

fn matches_one(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => true,
        Token::Class(ranges, negated) => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Token::AnySequence => unreachable!("handled by matches_from"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pattern: &str) -> Pattern {
        Pattern::new(pattern, '\\')
    }

    #[test]
    fn whole_string_matching() {
        let m = |pat: &str, text: &str| p(pat).matches(&text.chars().collect::<Vec<_>>());
        assert!(m("a*c", "abbc"));
        assert!(!m("a*c", "abcd"));
        assert!(m("a?c", "abc"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[!a-c]x", "bx"));
        assert!(m("[]]", "]"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("[", "["));
    }

    #[test]
    fn trims_and_replaces() {
        assert_eq!(p("a*").trim_prefix("abab", false), "bab");
        assert_eq!(p("a*").trim_prefix("abab", true), "");
        assert_eq!(p("*b").trim_suffix("abab", false), "aba");
        assert_eq!(p("*b").trim_suffix("abab", true), "");
        assert_eq!(p("b").replace("abab", "X", false), "aXab");
        assert_eq!(p("b").replace("abab", "X", true), "aXaX");
        assert_eq!(p("").replace("abab", "X", true), "abab");
        assert_eq!(p("*").replace("abab", "X", true), "X");
        assert_eq!(p("x*").replace("abab", "X", true), "abab");
    }
}
