//! Golden cases beyond BuildKit's vectors: `testdata/dockerfile/<case>/Dockerfile` parsed and
//! rendered to `<case>/expected` — the BuildKit-format dump, the directives, then every typed
//! instruction with its span, its heredocs and its expansion. Expansion runs as a build would:
//! ENV values and ARG defaults seen so far are the variables (ARGs as `--build-arg`-free
//! defaults). A case whose file does not parse renders its error instead. Regenerate with
//! `KILN_BLESS=1 cargo test -p kiln-dockerfile --test golden`.

use kiln_dockerfile::{Command, ast, dump, parse};
use kiln_testkit::assert_golden;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/dockerfile");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// Renders one case: everything the parser and the expander say about it.
pub fn render(source: &str) -> String {
    let mut out = String::new();
    match ast::parse_raw(source) {
        Ok(raw) => {
            out.push_str("== dump\n");
            out.push_str(&dump(&raw.nodes));
        }
        Err(e) => {
            let _ = writeln!(out, "== raw parse error\n{e}");
            return out;
        }
    }
    let df = match parse(source) {
        Ok(df) => df,
        Err(e) => {
            let _ = writeln!(out, "== parse error\n{e} ({})", e.span);
            return out;
        }
    };
    let _ = writeln!(
        out,
        "== directives\nescape={:?} syntax={:?} check={:?}",
        df.escape, df.syntax, df.check
    );
    out.push_str("== instructions\n");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for ins in &df.instructions {
        let _ = writeln!(
            out,
            "-- {} (lines {}-{}, col {}): {}",
            ins.keyword, ins.span.start_line, ins.span.end_line, ins.span.col, ins.original
        );
        let _ = writeln!(out, "raw: {:?}", ins.command);
        let lookup = |name: &str| vars.get(name).cloned();
        let expanded = match ins.command.expand(&lookup, df.escape) {
            Ok(expanded) => expanded,
            Err(e) => {
                let _ = writeln!(out, "expand error: {e}");
                continue;
            }
        };
        if expanded == ins.command {
            out.push_str("expanded: (same)\n");
        } else {
            let _ = writeln!(out, "expanded: {expanded:?}");
        }
        match &expanded {
            Command::Env(pairs) => vars.extend(pairs.iter().cloned()),
            Command::Arg(args) => {
                for (name, value) in args {
                    vars.insert(name.clone(), value.clone().unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn golden_dockerfiles() {
    let cases = cases();
    assert!(cases.len() >= 10, "golden cases found: {cases:?}");
    for case in &cases {
        let bytes = fs::read(case.join("Dockerfile")).unwrap();
        let source = String::from_utf8(bytes).expect("golden Dockerfiles are UTF-8");
        assert_golden(&case.join("expected"), &render(&source));
    }
}
