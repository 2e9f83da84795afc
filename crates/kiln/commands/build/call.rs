//! `kiln build --call outline|targets` (and `--print`, its older name): what a build would
//! read and which stages it could build, printed instead of building. `--call check` is
//! `--check`, handled with the build checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

/// The subrequest `--call`/`--print` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Build,
    Check,
    Outline,
    Targets,
}

impl Call {
    pub fn from_flags(call: &str, print: Option<&str>) -> Result<Call> {
        let method = match (call, print) {
            (_, Some(print)) if call != "build" && call != print => {
                bail!("--print {print:?} and --call {call:?} ask for different things")
            }
            (_, Some(print)) => print,
            (call, None) => call,
        };
        Ok(match method {
            "build" => Call::Build,
            "check" => Call::Check,
            "outline" => Call::Outline,
            "targets" => Call::Targets,
            other => bail!("unknown --call method {other:?} (build, check, outline or targets)"),
        })
    }
}

/// Prints the targets (`Call::Targets`) or else the outline of the Dockerfile at `path` on
/// stdout.
pub fn print(
    call: Call,
    path: &Path,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: &kiln_image::Platform,
) -> Result<ExitCode> {
    let (outline, targets) = kiln_solve::outline::describe(path, build_args, target, platform)?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let out = if call == Call::Targets {
        targets_text(&targets, &file)
    } else {
        outline_text(&outline, &file)
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Columns padded to the widest cell, as buildx's tables (tabwriter) look.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn targets_text(targets: &[kiln_solve::outline::Target], file: &str) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let name = if t.default {
                format!("{} (default)", t.name)
            } else {
                t.name.clone()
            };
            vec![name, format!("{file}:{}", t.line), t.description.clone()]
        })
        .collect();
    table(&["TARGET", "LINE", "DESCRIPTION"], &rows)
}

fn outline_text(o: &kiln_solve::outline::Outline, file: &str) -> String {
    let mut out = format!("TARGET:      {}\n", o.target);
    if !o.description.is_empty() {
        out.push_str(&format!("DESCRIPTION: {}\n", o.description));
    }
    if !o.args.is_empty() {
        let rows: Vec<Vec<String>> = o
            .args
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.default.clone().unwrap_or_else(|| "<none>".to_owned()),
                    format!("{file}:{}", a.line),
                    a.description.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["BUILD ARG", "VALUE", "LINE", "DESCRIPTION"],
            &rows,
        ));
    }
    for (title, mounts) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if mounts.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = mounts
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    m.required.to_string(),
                    format!("{file}:{}", m.line),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&[title, "REQUIRED", "LINE"], &rows));
    }
    out
}
