//! `SOURCE_DATE_EPOCH`: the one time a reproducible build writes
//! (<https://reproducible-builds.org/specs/source-date-epoch/>).
//!
//! The value comes from the build arg of that name (the binary puts kiln's own environment
//! variable there when no build arg is given, as buildx does, so the build arg wins). With it
//! set, the build's image config `created` and every history entry the build adds are that time,
//! each layer the build writes has its entries' mtimes clamped to it (newer ones only,
//! BuildKit's `rewrite-timestamp=true`), and each filesystem step's cache key includes it. The
//! key decision is the last one: the epoch changes the bytes of every layer whose files are
//! newer than it, and whether they are is only known after the step ran, so a key without it
//! could hand a build a layer clamped to another epoch. Without the epoch no key changes, so
//! existing caches stay valid.
//!
//! The value is checked once, before the build plans anything: a malformed one is an error
//! naming where it came from, never ignored.

use kiln_error::ErrorKind;

/// The build arg (and environment variable) that sets the epoch.
pub use kiln_plan::SOURCE_DATE_EPOCH;

/// The cache key field that carries the epoch (only present when one is set).
pub(crate) const KEY_FIELD: &str = "source-date-epoch";

/// Where a `SOURCE_DATE_EPOCH` value came from, for the error that rejects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochOrigin {
    /// `--build-arg SOURCE_DATE_EPOCH=…` (or the build request's build args).
    BuildArg,
    /// kiln's own environment.
    Environment,
}

impl std::fmt::Display for EpochOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EpochOrigin::BuildArg => "build arg",
            EpochOrigin::Environment => "environment variable",
        })
    }
}

/// A malformed `SOURCE_DATE_EPOCH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin} {SOURCE_DATE_EPOCH}={value:?} is not a valid time: \
     expected a non-negative whole number of seconds since 1970-01-01 00:00:00 UTC{detail}"
)]
pub struct EpochError {
    pub origin: EpochOrigin,
    pub value: String,
    /// More about why, when the digits alone are fine (a time past what a date can hold).
    detail: String,
}

impl EpochError {
    /// Always [`ErrorKind::InvalidArgument`]: the value came from the caller.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// A valid `SOURCE_DATE_EPOCH`: seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceDateEpoch(u64);

impl SourceDateEpoch {
    /// Parses a value from `origin`. An empty value means "not set" (`Ok(None)`), as in
    /// BuildKit, where CI systems export the variable empty; anything but ASCII digits (a sign,
    /// spaces, a fraction, an exponent) is an error, as is a time no date can hold.
    pub fn parse(value: &str, origin: EpochOrigin) -> Result<Option<Self>, EpochError> {
        if value.is_empty() {
            return Ok(None);
        }
        let error = |detail: &str| EpochError {
            origin,
            value: value.to_owned(),
            detail: detail.to_owned(),
        };
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(""));
        }
        let secs: u64 = value
            .parse()
            .map_err(|_| error(" (the number is too large)"))?;
        // The time must also be one an RFC 3339 `created` can say.
        let in_range = i64::try_from(secs)
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .is_some_and(|t| t.format("%Y").to_string().len() == 4);
        if !in_range {
            return Err(error(" (it is after the year 9999)"));
        }
        Ok(Some(SourceDateEpoch(secs)))
    }

    /// The epoch of a build: its `SOURCE_DATE_EPOCH` build arg, checked.
    pub fn of_build_args(
        build_args: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Self>, EpochError> {
        match build_args.get(SOURCE_DATE_EPOCH) {
            Some(value) => Self::parse(value, EpochOrigin::BuildArg),
            None => Ok(None),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// The time as image configs write it (RFC 3339, UTC, whole seconds).
    pub fn rfc3339(self) -> String {
        let secs = i64::try_from(self.0).unwrap_or(i64::MAX);
        chrono::DateTime::from_timestamp(secs, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// What the layer writer is told: no mtime newer than the epoch.
    pub fn tar_options(epoch: Option<Self>) -> kiln_layer::TarOptions {
        kiln_layer::TarOptions {
            mtime_ceiling: epoch.map(Self::secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_parse_and_format_as_rfc3339() {
        let e = SourceDateEpoch::parse("1700000000", EpochOrigin::BuildArg)
            .unwrap()
            .unwrap();
        assert_eq!(e.secs(), 1_700_000_000);
        assert_eq!(e.rfc3339(), "2023-11-14T22:13:20Z");
        let zero = SourceDateEpoch::parse("0", EpochOrigin::Environment)
            .unwrap()
            .unwrap();
        assert_eq!(zero.rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            SourceDateEpoch::parse("", EpochOrigin::BuildArg).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_values_are_errors_naming_their_origin() {
        for bad in [
            "-1",
            "+5",
            "1.5",
            " 1",
            "1e9",
            "abc",
            "0x10",
            "99999999999999999999",
        ] {
            let err = SourceDateEpoch::parse(bad, EpochOrigin::BuildArg).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            let text = err.to_string();
            assert!(text.starts_with("build arg SOURCE_DATE_EPOCH="), "{text}");
            assert!(text.contains(&format!("{bad:?}")), "{text}");
        }
        let err = SourceDateEpoch::parse("x", EpochOrigin::Environment).unwrap_err();
        assert!(err.to_string().starts_with("environment variable "));
        // Past year 9999 no RFC 3339 time can say it.
        let err = SourceDateEpoch::parse("253402300800", EpochOrigin::BuildArg).unwrap_err();
        assert!(err.to_string().contains("after the year 9999"), "{err}");
        assert!(SourceDateEpoch::parse("253402300799", EpochOrigin::BuildArg).is_ok());
    }

    #[test]
    fn the_build_arg_is_read_from_the_build_args() {
        let mut args = std::collections::BTreeMap::new();
        assert_eq!(SourceDateEpoch::of_build_args(&args).unwrap(), None);
        args.insert(SOURCE_DATE_EPOCH.to_owned(), "10".to_owned());
        assert_eq!(
            SourceDateEpoch::of_build_args(&args)
                .unwrap()
                .map(SourceDateEpoch::secs),
            Some(10)
        );
        args.insert(SOURCE_DATE_EPOCH.to_owned(), "ten".to_owned());
        assert!(SourceDateEpoch::of_build_args(&args).is_err());
    }
}
