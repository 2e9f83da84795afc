//! BuildKit conformance vectors from `testdata/conformance/buildkit/` (formats described in
//! its README): parser dumps, negative parser cases, line numbers, and the shell lexer's
//! `envVarTest` / `wordsTest`. Pass counts are asserted so any regression fails.

use kiln_dockerfile::{ast, dump, expand_word, expand_words, parse};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance/buildkit")
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn parser_dumps_match_byte_for_byte() {
    let mut failures = Vec::new();
    let cases = case_dirs(&vectors().join("parser/testfiles"));
    for case in &cases {
        let source = read(&case.join("Dockerfile"));
        let expected = read(&case.join("result"));
        match ast::parse_raw(&source) {
            Ok(raw) if dump(&raw.nodes) == expected => {}
            Ok(raw) => failures.push(format!(
                "{}: dump differs\n--- got\n{}--- expected\n{expected}",
                case.display(),
                dump(&raw.nodes)
            )),
            Err(e) => failures.push(format!("{}: {e}", case.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 33, "all 33 positive parser cases ran");
}

/// The typed parser is stricter than BuildKit's raw parser (which the vectors test): it
/// rejects unknown flags and instructions and malformed arguments. These cases use such
/// things on purpose, so they must fail in `parse` even though the raw parse succeeds.
const TYPED_PARSE_REJECTS: [(&str, &str); 2] = [
    ("flags", "COPY --user / CMD --doit are not real flags"),
    (
        "health",
        "bare HEALTHCHECK and HEALTHCHECK CONNECT are not valid instructions",
    ),
];

#[test]
fn typed_parse_accepts_the_real_world_positive_cases() {
    let mut rejected = Vec::new();
    for case in case_dirs(&vectors().join("parser/testfiles")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if let Err(e) = parse(&read(&case.join("Dockerfile"))) {
            rejected.push((name, e.to_string()));
        }
    }
    let rejected_names: Vec<&str> = rejected.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = TYPED_PARSE_REJECTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(rejected_names, expected, "{rejected:#?}");
}

#[test]
fn negative_parser_cases_fail() {
    let cases = case_dirs(&vectors().join("parser/testfiles-negative"));
    for case in &cases {
        let source = read(&case.join("Dockerfile"));
        assert!(
            ast::parse_raw(&source).is_err(),
            "{} parsed (raw)",
            case.display()
        );
        assert!(parse(&source).is_err(), "{} parsed", case.display());
    }
    assert_eq!(cases.len(), 4);
}

#[test]
fn line_numbers_include_skipped_continuation_lines() {
    let df = parse(&read(&vectors().join("parser/testfile-line/Dockerfile"))).unwrap();
    let spans: Vec<(usize, usize)> = df
        .instructions
        .iter()
        .map(|i| (i.span.start_line, i.span.end_line))
        .collect();
    assert_eq!(spans, [(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn env_var_test_vectors() {
    let env: HashMap<&str, &str> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into();
    let lookup = |name: &str| env.get(name).map(|v| v.to_string());
    let mut passed = 0;
    let mut failures = Vec::new();
    for (number, line) in read(&vectors().join("shell/envVarTest"))
        .lines()
        .enumerate()
    {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            panic!("envVarTest:{}: malformed vector {line:?}", number + 1)
        };
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("envVarTest:{}: unknown platform {other}", number + 1),
        }
        let got = expand_word(input, &lookup, '\\');
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(value), expected) => value == expected,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "envVarTest:{}: {input:?} gave {got:?}, want {expected:?}",
                number + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 228, "all Unix vectors pass");
}

#[test]
fn words_test_vectors() {
    let mut env: HashMap<String, String> = HashMap::new();
    let mut passed = 0;
    let mut failures = Vec::new();
    for (number, line) in read(&vectors().join("shell/wordsTest")).lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            let (name, value) = entry.trim_start_matches(' ').split_once('=').unwrap();
            env.insert(name.to_string(), value.to_string());
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("wordsTest:{}: malformed {line:?}", number + 1));
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let lookup = |name: &str| env.get(name).cloned();
        let got =
            expand_words(input.trim(), &lookup, '\\').unwrap_or_else(|_| vec!["error".to_string()]);
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!(
                "wordsTest:{}: {input:?} gave {got:?}, want {expected:?}",
                number + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 24);
}
