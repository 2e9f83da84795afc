//! Signal names as Docker accepts them (`SIGTERM`, `TERM`, `term`, `15`).

use rustix::process::Signal;

use crate::error::{Result, RuntimeError};

/// Linux signal numbers by name (the same on x86-64 and arm64).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The signal `s` names.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let invalid = || RuntimeError::Invalid {
        what: "signal",
        value: s.to_owned(),
        reason: "not a signal name or number",
    };
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name.parse::<i32>() {
        Ok(n) => n,
        Err(_) => SIGNALS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, n)| *n)
            .ok_or_else(invalid)?,
    };
    Signal::from_named_raw(number).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap().as_raw(), 15);
        assert_eq!(parse_signal("usr1").unwrap().as_raw(), 10);
        assert_eq!(parse_signal("9").unwrap().as_raw(), 9);
        let bad = parse_signal("SIGNOPE").unwrap_err();
        assert_eq!(bad.kind(), kiln_error::ErrorKind::InvalidArgument);
        assert!(bad.to_string().contains("SIGNOPE"), "{bad}");
        assert!(parse_signal("0").is_err());
    }
}
