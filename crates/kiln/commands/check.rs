//! Build checks for `kiln build`: warnings printed before a build, or alone with `--check`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_dockerfile::checks::{CHECK_BUILD_ARG, CheckOptions, check_with};
use kiln_solve::{SolveError, location_in};

use crate::render;

/// Checks the Dockerfile at `path` and prints its warnings on stderr. With `check_only`,
/// returns the exit code of `kiln build --check` (failure on a fatal finding, or on any finding
/// with `error=true`); otherwise returns `None` so the build goes on, or fails the build when
/// the checks say so. `reproducible` (a build with `SOURCE_DATE_EPOCH`) adds the
/// reproducibility rules. With `json`, warnings are `check.warning` lines of the rawjson
/// stream. A Dockerfile that cannot be read or parsed is left to the build to report,
/// except with `check_only`, where it is the error.
pub fn run_checks(
    path: &Path,
    build_args: &BTreeMap<String, String>,
    reproducible: bool,
    check_only: bool,
    json: bool,
) -> Result<Option<ExitCode>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if check_only => {
            return Err(e).with_context(|| format!("reading {}", path.display()));
        }
        Err(_) => return Ok(None),
    };
    let options = CheckOptions {
        check_override: build_args.get(CHECK_BUILD_ARG).map(String::as_str),
        reproducible: reproducible.then_some(build_args),
    };
    let report = match check_with(&text, &options) {
        Ok(report) => report,
        Err(e) if check_only => {
            return Err(SolveError::Dockerfile {
                location: location_in(path, &text, e.span.start_line, e.span.col, 0),
                message: e.message,
            }
            .into());
        }
        Err(_) => return Ok(None),
    };
    let mut out = String::new();
    for warning in &report.warnings {
        if json {
            // The same stream as `--progress=rawjson`'s events: one object per line.
            let event = serde_json::json!({
                "type": "check.warning",
                "rule": warning.rule,
                "message": warning.message,
                "file": path.display().to_string(),
                "line": warning.span.start_line,
                "col": warning.span.col,
            });
            out.push_str(&format!("{event}\n"));
        } else {
            out.push_str(&render::warning_text(path, &text, warning));
        }
    }
    if check_only {
        out.push_str(&match report.warnings.len() {
            0 => "Check complete, no warnings found.\n".to_string(),
            1 => "Check complete, 1 warning has been found!\n".to_string(),
            n => format!("Check complete, {n} warnings have been found!\n"),
        });
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
    if check_only {
        return Ok(Some(if report.fails() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }));
    }
    if report.fails() {
        bail!(
            "the build checks failed ({} finding(s){})",
            report.warnings.len(),
            if report.config.error {
                ", and the check configuration says error=true"
            } else {
                ""
            }
        );
    }
    Ok(None)
}
