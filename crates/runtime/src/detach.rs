//! Docker's detach keys: a key sequence typed into an attached terminal (default ctrl-p
//! ctrl-q) that ends the attach and leaves the container running.
//!
//! As in dockerd, only input to a terminal (`-t`) is watched: without a tty the input is data,
//! and a byte sequence in it must reach the process. The sequence is matched byte by byte
//! across reads; bytes that start a match are held back until the match completes (and they
//! are swallowed) or fails (and they are passed on), so the process never sees half of it.

use crate::error::{Result, RuntimeError};

/// The key sequence, as bytes (and so on the attach socket's wire).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DetachKeys(Vec<u8>);

impl Default for DetachKeys {
    /// ctrl-p ctrl-q.
    fn default() -> Self {
        DetachKeys(vec![0x10, 0x11])
    }
}

impl DetachKeys {
    /// Parses Docker's notation: comma-separated keys, each one character, `ctrl-` and one of
    /// `@`, `a`-`z`, `[`, `\`, `]`, `^`, `_`, or `DEL`. Empty means the default.
    pub fn parse(spec: &str) -> Result<DetachKeys> {
        if spec.is_empty() {
            return Ok(DetachKeys::default());
        }
        let invalid = |reason| RuntimeError::Invalid {
            what: "detach keys",
            value: spec.to_owned(),
            reason,
        };
        let mut keys = Vec::new();
        for key in spec.split(',') {
            let code = match key.as_bytes() {
                [single] => *single,
                b"DEL" => 0x7f,
                [b'c', b't', b'r', b'l', b'-', c] => match c.to_ascii_lowercase() {
                    c @ b'a'..=b'z' => c - b'a' + 1,
                    // `@` is 0, and `[ \ ] ^ _` follow `z` (27 to 31), as in ASCII.
                    c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_') => c - b'@',
                    _ => return Err(invalid("expected ctrl- with a letter or one of @[\\]^_")),
                },
                _ => {
                    return Err(invalid(
                        "expected comma-separated keys: one character, ctrl-<key> or DEL",
                    ));
                }
            };
            keys.push(code);
        }
        Ok(DetachKeys(keys))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A watcher of one input stream.
    pub fn watch(&self) -> DetachWatch {
        DetachWatch {
            keys: self.0.clone(),
            matched: 0,
        }
    }
}

impl std::str::FromStr for DetachKeys {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        DetachKeys::parse(s)
    }
}

/// Watches an input stream for the detach sequence.
#[derive(Debug, Clone)]
pub struct DetachWatch {
    keys: Vec<u8>,
    /// How many keys of the sequence the input ended with (held back).
    matched: usize,
}

impl DetachWatch {
    /// Feeds `input`: appends to `pass` what goes on to the process, and returns true once the
    /// whole sequence was typed (what followed it in `input` is dropped: the client is gone).
    pub fn feed(&mut self, input: &[u8], pass: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            pass.extend_from_slice(input);
            return false;
        }
        for &byte in input {
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
                continue;
            }
            // Not the sequence after all: what was held back goes on, and this byte may
            // start the sequence afresh.
            pass.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if byte == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return true;
                }
            } else {
                pass.push(byte);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_notation_parses() {
        assert_eq!(DetachKeys::parse("").unwrap().bytes(), [0x10, 0x11]);
        assert_eq!(
            DetachKeys::parse("ctrl-p,ctrl-q").unwrap(),
            DetachKeys::default()
        );
        assert_eq!(DetachKeys::parse("ctrl-x").unwrap().bytes(), [0x18]);
        assert_eq!(
            DetachKeys::parse("a,ctrl-@,ctrl-[,ctrl-_,DEL")
                .unwrap()
                .bytes(),
            [b'a', 0, 27, 31, 127]
        );
        for bad in ["ctrl-1", "ctrl-", "alt-x", "ctrl-p,,ctrl-q", "ab"] {
            let err = DetachKeys::parse(bad).unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    fn feed_all(keys: &str, reads: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut watch = DetachKeys::parse(keys).unwrap().watch();
        let mut pass = Vec::new();
        for read in reads {
            if watch.feed(read, &mut pass) {
                return (pass, true);
            }
        }
        (pass, false)
    }

    #[test]
    fn the_sequence_detaches_across_reads_and_is_swallowed() {
        assert_eq!(
            feed_all("", &[b"ls\n\x10", b"\x11more"]),
            (b"ls\n".to_vec(), true)
        );
        assert_eq!(feed_all("ctrl-x", &[b"ab\x18c"]), (b"ab".to_vec(), true));
    }

    #[test]
    fn a_broken_sequence_is_passed_on_whole() {
        // ctrl-p then not ctrl-q: both reach the process, in order.
        assert_eq!(
            feed_all("", &[b"\x10", b"x\x11"]),
            (b"\x10x\x11".to_vec(), false)
        );
        // ctrl-p ctrl-p ctrl-q: the first is passed on, the last two detach.
        assert_eq!(feed_all("", &[b"a\x10\x10\x11"]), (b"a\x10".to_vec(), true));
    }
}
