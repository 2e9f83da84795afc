//! `--call outline` and `--call targets` for a Dockerfile on disk: parsed and planned as a
//! build would (same errors, with their locations), then described by `kiln_plan::outline`.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_image::Platform;
use kiln_plan::BuildOptions;
pub use kiln_plan::outline::{Outline, OutlineArg, OutlineMount, Target};

use crate::build::location_in;
use crate::error::{Result, SolveError};

/// The outline of a build of `target` (the last stage when `None`) from the Dockerfile at
/// `path`, or with `targets`, every stage; never reads the context or a registry.
pub fn describe(
    path: &Path,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: &Platform,
) -> Result<(Outline, Vec<Target>)> {
    let text = std::fs::read_to_string(path).map_err(|source| SolveError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let located = |line: usize, col: usize, message: String| SolveError::Dockerfile {
        location: location_in(path, &text, line, col, 0),
        message,
    };
    let df = kiln_dockerfile::parse(&text)
        .map_err(|e| located(e.span.start_line, e.span.col, e.message.clone()))?;
    let opts = BuildOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        platform: platform.clone(),
        build_platform: Platform::host(),
    };
    let plan = kiln_plan::plan(&df, &opts).map_err(|e| {
        let line = e.span().map_or(1, |s| s.start_line);
        located(line, 1, e.to_string())
    })?;
    Ok((
        kiln_plan::outline::outline(&df, &text, &plan),
        kiln_plan::outline::targets(&text, &plan),
    ))
}
