//! Golden files: expected output checked into the tree, compared line by line, rewritten on
//! request with `KILN_BLESS=1`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

/// Lines of unchanged context shown around each change.
const CONTEXT: usize = 3;
/// Above this many cells the LCS table is too big; the diff then shows the changed middle part
/// as one removal and one addition.
const MAX_TABLE_CELLS: usize = 4_000_000;

/// Panics with a line diff unless `actual` equals the contents of `path`. With `KILN_BLESS=1`
/// in the environment, writes `actual` to `path` (creating parent directories) instead.
#[track_caller]
pub fn assert_golden(path: &Path, actual: &str) {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    if let Err(message) = check_golden(path, actual, bless) {
        panic!("{message}");
    }
}

fn check_golden(path: &Path, actual: &str, bless: bool) -> Result<(), String> {
    if bless {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        return fs::write(path, actual)
            .map_err(|e| format!("writing golden file {}: {e}", path.display()));
    }
    let expected = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "golden file {} does not exist; run with KILN_BLESS=1 to create it",
                path.display()
            ));
        }
        Err(e) => return Err(format!("reading golden file {}: {e}", path.display())),
    };
    if expected == actual {
        return Ok(());
    }
    let mut diff = render_diff(&line_diff(&expected, actual));
    if diff.is_empty() {
        diff = "(the lines are equal; only line endings or the final newline differ)\n".into();
    }
    Err(format!(
        "output differs from golden file {} (- golden, + actual); run with KILN_BLESS=1 to accept it:\n{diff}",
        path.display()
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiffLine<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// A shortest-edit line diff (longest common subsequence), after trimming the common prefix
/// and suffix so typical small edits to big files stay cheap.
fn line_diff<'a>(expected: &'a str, actual: &'a str) -> Vec<DiffLine<'a>> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_mid, new_mid) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );

    let mut out: Vec<DiffLine> = old[..prefix].iter().map(|l| DiffLine::Same(l)).collect();
    if old_mid.len().saturating_mul(new_mid.len()) > MAX_TABLE_CELLS {
        out.extend(old_mid.iter().map(|l| DiffLine::Removed(l)));
        out.extend(new_mid.iter().map(|l| DiffLine::Added(l)));
    } else {
        out.extend(lcs_diff(old_mid, new_mid));
    }
    out.extend(old[old.len() - suffix..].iter().map(|l| DiffLine::Same(l)));
    out
}

fn lcs_diff<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<DiffLine<'a>> {
    let width = new.len() + 1;
    // common[i * width + j]: length of the LCS of old[i..] and new[j..].
    let mut common = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i * width + j] = if old[i] == new[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(old.len() + new.len());
    while i < old.len() && j < new.len() {
        if old[i] == new[j] {
            out.push(DiffLine::Same(old[i]));
            i += 1;
            j += 1;
        } else if common[(i + 1) * width + j] >= common[i * width + j + 1] {
            out.push(DiffLine::Removed(old[i]));
            i += 1;
        } else {
            out.push(DiffLine::Added(new[j]));
            j += 1;
        }
    }
    out.extend(old[i..].iter().map(|l| DiffLine::Removed(l)));
    out.extend(new[j..].iter().map(|l| DiffLine::Added(l)));
    out
}

/// Changed lines with `CONTEXT` lines around them; `...` marks skipped unchanged lines. Empty
/// when nothing changed.
fn render_diff(lines: &[DiffLine]) -> String {
    let changed: Vec<usize> = (0..lines.len())
        .filter(|&i| !matches!(lines[i], DiffLine::Same(_)))
        .collect();
    let near_change = |i: usize| {
        // `changed` is sorted: find the first change at or after i - CONTEXT.
        let from = changed.partition_point(|&c| c + CONTEXT < i);
        changed.get(from).is_some_and(|&c| c <= i + CONTEXT)
    };
    let mut out = String::new();
    let mut skipped = false;
    for (i, line) in lines.iter().enumerate() {
        if !near_change(i) {
            skipped = true;
            continue;
        }
        if skipped {
            out.push_str("...\n");
        }
        skipped = false;
        let (sign, text) = match line {
            DiffLine::Same(t) => (' ', t),
            DiffLine::Removed(t) => ('-', t),
            DiffLine::Added(t) => ('+', t),
        };
        let _ = writeln!(out, "{sign}{text}");
    }
    if skipped && !out.is_empty() {
        out.push_str("...\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiffLine::*;

    #[test]
    fn diff_finds_minimal_edit() {
        let d = line_diff("a\nb\nc\nd\n", "a\nc\nX\nd\n");
        assert_eq!(
            d,
            vec![Same("a"), Removed("b"), Same("c"), Added("X"), Same("d")]
        );
    }

    #[test]
    fn rendering_keeps_context_and_elides_the_rest() {
        let old: String = (1..=20).map(|i| format!("line{i}\n")).collect();
        let new = old.replace("line10\n", "changed\n");
        let text = render_diff(&line_diff(&old, &new));
        assert_eq!(
            text,
            "...\n line7\n line8\n line9\n-line10\n+changed\n line11\n line12\n line13\n...\n"
        );
        assert_eq!(render_diff(&line_diff("same\n", "same\n")), "");
    }

    #[test]
    fn golden_matches_mismatches_and_blesses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.golden");
        let missing = check_golden(&path, "x\n", false).unwrap_err();
        assert!(
            missing.contains("KILN_BLESS=1") && missing.contains("out.golden"),
            "{missing}"
        );

        check_golden(&path, "one\ntwo\n", true).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        check_golden(&path, "one\ntwo\n", false).unwrap();

        let mismatch = check_golden(&path, "one\nthree\n", false).unwrap_err();
        assert!(mismatch.contains("-two\n+three\n"), "{mismatch}");
        let newline_only = check_golden(&path, "one\ntwo", false).unwrap_err();
        assert!(newline_only.contains("final newline"), "{newline_only}");
    }

    #[test]
    #[should_panic(expected = "differs from golden file")]
    fn assert_golden_panics_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.txt");
        fs::write(&path, "expected\n").unwrap();
        // Only meaningful when the test run is not blessing.
        if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
            panic!("differs from golden file (skipped under KILN_BLESS=1)");
        }
        assert_golden(&path, "actual\n");
    }
}
