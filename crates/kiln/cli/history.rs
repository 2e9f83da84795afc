//! `kiln build history …` (typed as two words; `main` turns them into the hidden
//! `build-history` command, since `kiln build` itself takes a context as its first argument;
//! clap's usage lines therefore say `kiln build-history`, which is accepted too).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// List recorded builds, newest first
    Ls {
        /// Only print build IDs
        #[arg(short, long)]
        quiet: bool,
        /// Print the records as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one build: inputs, result, error with file:line, every step with its cache result
    Inspect {
        /// A build ID or a unique prefix of one
        build: String,
        /// Print the record as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a build's full step output, as it was printed (nothing is cut)
    Logs {
        build: String,
        /// Only the output of step N (as `inspect` numbers them)
        #[arg(long, value_name = "N")]
        step: Option<usize>,
    },
    /// Remove recorded builds
    Rm {
        /// Remove every finished build
        #[arg(long, conflicts_with = "builds")]
        all: bool,
        builds: Vec<String>,
    },
    /// Apply the retention rules now (count and age); flags override KILN_HISTORY_MAX_BUILDS
    /// and KILN_HISTORY_MAX_AGE
    Prune {
        /// Keep at most N builds
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Remove builds that ended longer ago than this (e.g. 48h, 7d, 30m)
        #[arg(long = "max-age", value_name = "DURATION")]
        max_age: Option<String>,
    },
}

/// Global options that take their value as the next argument (`--root DIR`).
const GLOBAL_VALUE_OPTIONS: &[&str] = &[
    "--root",
    "--insecure-registry",
    "--registry-certs-dir",
    "-H",
    "--host",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// `kiln [global options] build history …` becomes `kiln … build-history …`; every other
/// command line is left as it is.
pub fn build_history_words(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if GLOBAL_VALUE_OPTIONS.contains(&arg.as_ref()) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            if arg == "build" && args.get(i + 1).is_some_and(|a| a == "history") {
                args[i] = "build-history".into();
                args.remove(i + 1);
            }
            break;
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        build_history_words(line.split(' ').map(std::ffi::OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn only_build_history_as_the_command_is_rewritten() {
        assert_eq!(
            words("kiln build history ls"),
            ["kiln", "build-history", "ls"]
        );
        assert_eq!(
            words("kiln --root /r build history logs x"),
            ["kiln", "--root", "/r", "build-history", "logs", "x"]
        );
        // A context directory named `history` after flags stays a build.
        assert_eq!(
            words("kiln build -t a history"),
            ["kiln", "build", "-t", "a", "history"]
        );
        assert_eq!(
            words("kiln run img build history"),
            ["kiln", "run", "img", "build", "history"]
        );
        assert_eq!(
            words("kiln --root build history"),
            ["kiln", "--root", "build", "history"]
        );
    }
}
