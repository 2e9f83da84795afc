//! Renders the raw parse tree in BuildKit's test dump format, one line per instruction:
//! `(keyword ["--flag"] "arg" …)` (README §1.4 in `testdata/conformance/buildkit/`).
//!
//! Used by the conformance tests; also handy for debugging (`kiln` may expose it later).

use crate::ast::Node;
use std::fmt::Write;

/// Renders every node, each line ending in `\n`.
pub fn dump(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        dump_node(node, &mut out);
        out.push('\n');
    }
    out
}

fn dump_node(node: &Node, out: &mut String) {
    out.push('(');
    out.push_str(&node.keyword.to_lowercase());
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote(flag, out);
        }
        out.push(']');
    }
    if let Some(nested) = &node.nested {
        out.push(' ');
        dump_node(nested, out);
    }
    for arg in &node.args {
        out.push(' ');
        go_quote(arg, out);
    }
    out.push(')');
}

/// Writes `text` as a Go `strconv.Quote` string literal.
fn go_quote(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `strconv.IsPrint`: categories L, M, N, P, S and the ASCII space. Rust's std has no
/// general-category tables, so this approximates "not printable" as control characters,
/// whitespace other than U+0020, the common format (Cf) characters and private use. It
/// differs from Go only for unassigned code points and rare Cf characters.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::parse_raw;

    fn quoted(text: &str) -> String {
        let mut out = String::new();
        go_quote(text, &mut out);
        out
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("\u{0}\u{8}\t"), r#""\x00\b\t""#);
        assert_eq!(quoted("♥ '"), "\"♥ '\"");
        assert_eq!(quoted("\u{a0}\u{2028}\u{7f}"), r#""\u00a0\u2028\x7f""#);
        assert_eq!(quoted("\u{e0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn dump_renders_flags_args_and_nested() {
        let df = parse_raw("FROM a\nCOPY --x=1 b c\nONBUILD RUN [\"d\"]\nHEALTHCHECK\n").unwrap();
        assert_eq!(
            dump(&df.nodes),
            "(from \"a\")\n(copy [\"--x=1\"] \"b\" \"c\")\n(onbuild (run \"d\"))\n(healthcheck)\n"
        );
    }
}
