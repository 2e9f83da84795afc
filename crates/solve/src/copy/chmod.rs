//! `--chmod` values: an octal mode (`0755`) or a symbolic one (`u+x`, `go-w`, `a=rX`,
//! `u=rwx,g=rx,o=`).
//!
//! BuildKit parses symbolic modes with a port of BSD `setmode(3)` and a umask of 0, and applies
//! them to each copied file and directory starting from that entry's own permission bits. The
//! rules reproduced here: clauses are separated by `,`; each is `[ugoa]*` followed by one or more
//! `op perms` actions, `op` one of `+ - =` and `perms` either letters from `rwxXst` or one of
//! `u g o` (copy that class's current bits). No `who` means everyone (the umask being 0). `X` is
//! execute only for directories or for entries that already have an execute bit. `s` sets
//! set-uid/set-gid for the `u`/`g` classes named; `t` (sticky) is ignored when only `o` is named.

use super::CopyError;

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    /// The flag as written, for the cache key and messages.
    text: String,
    kind: ChmodKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChmodKind {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    /// Bits the `who` letters cover (set-id bits included for `u`/`g`); 0 means "not given".
    who: u32,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perms {
    /// Letters from `rwxst`, as mode bits before `who` masks them, and whether `X` was given.
    Letters { bits: u32, conditional_x: bool },
    /// `u`, `g` or `o` after the operator: the shift of the class whose bits are copied.
    CopyClass(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Action {
    op: Op,
    perms: Perms,
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o0007;
const ALL: u32 = 0o7777;

impl Chmod {
    /// Parses the value of `--chmod`.
    pub fn parse(spec: &str) -> Result<Chmod, CopyError> {
        let kind = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
            // Anything numeric must be a valid octal mode, as BuildKit insists.
            let mode = u32::from_str_radix(spec, 8)
                .ok()
                .filter(|mode| *mode <= 0o7777)
                .ok_or_else(|| CopyError::BadChmod {
                    spec: spec.to_string(),
                    reason: "it should be an octal string between 0 and 07777".into(),
                })?;
            ChmodKind::Octal(mode)
        } else {
            ChmodKind::Symbolic(parse_symbolic(spec).map_err(|reason| CopyError::BadChmod {
                spec: spec.to_string(),
                reason,
            })?)
        };
        Ok(Chmod {
            text: spec.to_string(),
            kind,
        })
    }

    /// The flag as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The permission bits an entry whose own bits are `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match &self.kind {
            ChmodKind::Octal(bits) => return *bits,
            ChmodKind::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & ALL;
        for clause in clauses {
            let who = if clause.who == 0 { ALL } else { clause.who };
            for action in &clause.actions {
                let bits = match action.perms {
                    Perms::Letters {
                        bits,
                        conditional_x,
                    } => {
                        let mut bits = bits;
                        if conditional_x && (is_dir || mode & 0o111 != 0) {
                            bits |= 0o111;
                        }
                        // Sticky is not a per-class bit: BSD drops it when only "other" is named.
                        if clause.who == OTHER {
                            bits &= !0o1000;
                        }
                        bits & (who | 0o1000)
                    }
                    Perms::CopyClass(shift) => {
                        let class = (mode >> shift) & 0o7;
                        (class * 0o111) & who & 0o777
                    }
                };
                mode = match action.op {
                    Op::Add => mode | bits,
                    Op::Remove => mode & !bits,
                    Op::Set => (mode & !who) | bits,
                };
            }
        }
        mode
    }
}

fn parse_symbolic(spec: &str) -> Result<Vec<Clause>, String> {
    if spec.is_empty() {
        return Err("empty mode".into());
    }
    spec.split(',').map(parse_clause).collect()
}

fn parse_clause(text: &str) -> Result<Clause, String> {
    let mut chars = text.chars().peekable();
    let mut who = 0;
    while let Some(&c) = chars.peek() {
        who |= match c {
            'u' => USER,
            'g' => GROUP,
            'o' => OTHER,
            'a' => ALL,
            _ => break,
        };
        chars.next();
    }
    let mut actions = Vec::new();
    while let Some(c) = chars.next() {
        let op = match c {
            '+' => Op::Add,
            '-' => Op::Remove,
            '=' => Op::Set,
            other => {
                return Err(format!(
                    "unexpected {other:?} in {text:?} (expected [ugoa]*[+-=][rwxXst]*)"
                ));
            }
        };
        let perms = match chars.peek() {
            Some(&class @ ('u' | 'g' | 'o')) => {
                chars.next();
                Perms::CopyClass(match class {
                    'u' => 6,
                    'g' => 3,
                    _ => 0,
                })
            }
            _ => {
                let mut bits = 0;
                let mut conditional_x = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => bits |= 0o444,
                        'w' => bits |= 0o222,
                        'x' => bits |= 0o111,
                        'X' => conditional_x = true,
                        's' => bits |= 0o6000,
                        't' => bits |= 0o1000,
                        _ => break,
                    }
                    chars.next();
                }
                Perms::Letters {
                    bits,
                    conditional_x,
                }
            }
        };
        actions.push(Action { op, perms });
    }
    if actions.is_empty() {
        return Err(format!("{text:?} has no operator (+, - or =)"));
    }
    Ok(Clause { who, actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, is_dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn octal_replaces_the_mode() {
        assert_eq!(apply("755", 0o600, false), 0o755);
        assert_eq!(apply("0640", 0o777, true), 0o640);
        assert_eq!(apply("4755", 0o644, false), 0o4755);
    }

    #[test]
    fn symbolic_modes_start_from_each_entrys_bits() {
        // Results as chmod(1) gives them with umask 0.
        let cases = [
            ("u+x", 0o644, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a+x", 0o600, false, 0o711),
            ("go-w", 0o666, false, 0o644),
            ("a=rX", 0o640, false, 0o444),
            ("a=rX", 0o740, false, 0o555),
            ("a=rX", 0o700, true, 0o555),
            ("u=rwx,g=rx,o=", 0o666, false, 0o750),
            ("o=", 0o777, true, 0o770),
            ("g=u", 0o640, false, 0o660),
            ("o=g", 0o750, false, 0o755),
            ("u-w+x", 0o644, false, 0o544),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o777, true, 0o1777),
            ("o+t", 0o777, true, 0o777),
            ("=", 0o755, false, 0o000),
            ("ug+rw,o-rwx", 0o604, false, 0o660),
        ];
        for (spec, mode, is_dir, want) in cases {
            assert_eq!(
                apply(spec, mode, is_dir),
                want,
                "{spec} on {mode:o} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for bad in ["", "999", "17777", "u", "u+x,", "z+x", "u+q", "u!x"] {
            let err = Chmod::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("--chmod={bad}")), "{bad}: {err}");
        }
        assert!(
            Chmod::parse("999")
                .unwrap_err()
                .to_string()
                .contains("octal")
        );
    }

    #[test]
    fn the_text_is_kept_for_the_cache_key() {
        assert_eq!(Chmod::parse("a=rX").unwrap().as_str(), "a=rX");
    }
}
