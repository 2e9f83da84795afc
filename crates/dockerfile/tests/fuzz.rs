//! Deterministic mutation fuzzing of parse + expand + checks + dump, and size tests that
//! would time out if any stage were quadratic.
//!
//! Seeds: every Dockerfile under `testdata/conformance/buildkit` and `testdata/dockerfile`,
//! plus the inputs of the `envVarTest` and `wordsTest` vectors. Each iteration picks a seed
//! and applies 1–8 mutations (byte flips, splices with another seed, deletions, insertions of
//! `\`, `<<`, `${`, quotes, CRLF…, huge repeats), then runs everything and requires no panic.
//! `KILN_FUZZ_ITERS` sets the number of iterations (default 2000), `KILN_FUZZ_SEED` the seed.
//! See docs/fuzzing.md for a long run's figures.

use kiln_dockerfile::{ast, checks, dump, expand_heredoc, expand_word, expand_words, parse};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_testkit::SeededRng as Rng;

/// Fragments that reach the interesting corners of the grammar.
const TOKENS: [&str; 30] = [
    "\\",
    "\\\n",
    "<<",
    "<<-",
    "<<EOF\n",
    "EOF\n",
    "<<'Q'\n",
    "Q\n",
    "${",
    "}",
    "${A:-",
    "${A#",
    "${A//",
    "$",
    "'",
    "\"",
    "`",
    "\r\n",
    "\n",
    "# escape=`\n",
    "# check=skip=all\n",
    "#",
    "[\"",
    "\"]",
    "--mount=",
    " AS ",
    "ONBUILD ",
    "RUN ",
    "COPY ",
    "\t",
];

fn collect_dockerfiles(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_dockerfiles(&path, out);
        } else if path.file_name().is_some_and(|n| n == "Dockerfile") {
            out.push(String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned());
        }
    }
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut seeds = Vec::new();
    collect_dockerfiles(&root.join("conformance/buildkit"), &mut seeds);
    collect_dockerfiles(&root.join("dockerfile"), &mut seeds);
    for vectors in ["envVarTest", "wordsTest"] {
        let text = fs::read_to_string(root.join("conformance/buildkit/shell").join(vectors))
            .unwrap_or_default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(input) = line.split('|').nth(1) {
                // As a word and inside an instruction that expands it.
                seeds.push(input.trim().to_string());
                seeds.push(format!("FROM x\nWORKDIR {}\n", input.trim()));
            }
        }
    }
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[String]) -> String {
    let mut bytes = seeds[rng.below(seeds.len())].clone().into_bytes();
    for _ in 0..=rng.below(8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let other = seeds[rng.below(seeds.len())].as_bytes();
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            2 if !bytes.is_empty() => {
                let end = (at + rng.below(32)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            3 => {
                // A huge repeat of a short piece.
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let times = 1 + rng.below(2000);
                let piece: Vec<u8> = token.repeat(times);
                bytes.splice(at..at, piece);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Everything a build does with Dockerfile text before running anything.
fn exercise(input: &str) {
    if let Ok(raw) = ast::parse_raw(input) {
        let _ = dump(&raw.nodes);
    }
    if let Ok(df) = parse(input) {
        let env = |name: &str| match name {
            "A" => Some("a/b.c-d".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for ins in &df.instructions {
            let _ = ins.command.expand(&env, df.escape);
        }
    }
    let _ = checks::check(input, None);
    let env = |_: &str| Some("v a l".to_string());
    let _ = expand_word(input, &env, '\\');
    let _ = expand_words(input, &env, '`');
    let _ = expand_heredoc(input, &env);
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_dockerfiles_never_panic() {
    let seeds = seeds();
    assert!(seeds.len() > 300, "seeds: {}", seeds.len());
    let iterations = env_number("KILN_FUZZ_ITERS", 2000);
    let mut rng = Rng(env_number("KILN_FUZZ_SEED", 0x6b69_6c6e));
    // Panics are caught to report the input; keep the default hook quiet meanwhile.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut failure = None;
    for i in 0..iterations {
        let input = mutate(&mut rng, &seeds);
        bytes += input.len();
        if catch_unwind(AssertUnwindSafe(|| exercise(&input))).is_err() {
            failure = Some((i, input));
            break;
        }
    }
    std::panic::set_hook(hook);
    if let Some((i, input)) = failure {
        exercise(&input); // panics again, now with the message
        panic!("iteration {i} panicked on {input:?}");
    }
    eprintln!(
        "fuzz: {iterations} inputs, {bytes} bytes in {:.2?}",
        started.elapsed()
    );
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    eprintln!("{what}: {:.2?}", started.elapsed());
    out
}

#[test]
fn one_mebibyte_line() {
    let line = format!("FROM x\nRUN echo {}\n", "a".repeat(1 << 20));
    let df = timed("1 MiB RUN line", || parse(&line).unwrap());
    assert_eq!(df.instructions.len(), 2);
    let word = format!("FROM x\nWORKDIR /{}$A\n", "b".repeat(1 << 20));
    timed("1 MiB WORKDIR line, parse + checks", || {
        checks::check(&word, None).unwrap()
    });
    timed("1 MiB word expansion", || {
        expand_words(&"x ".repeat(1 << 19), &|_| None, '\\').unwrap()
    });
    let unknown = format!("FROM x\n{}\n", "Q".repeat(1 << 20));
    let err = timed("1 MiB unknown instruction", || parse(&unknown).unwrap_err());
    assert!(err.message.contains("unknown instruction"));
}

#[test]
fn hundred_thousand_continuation_lines() {
    let mut text = String::from("FROM x\nRUN true");
    for i in 0..100_000 {
        text.push_str(&format!(" \\\n  && echo {i}"));
    }
    text.push('\n');
    let df = timed("100k continuation lines", || parse(&text).unwrap());
    assert_eq!(df.instructions[1].span.end_line, 100_002);
    timed("100k continuation lines, checks", || {
        checks::check(&text, None).unwrap()
    });
}

#[test]
fn ten_thousand_nested_substitutions() {
    let nested = "${a:-".repeat(10_000) + "x" + &"}".repeat(10_000);
    let text = format!("FROM x\nWORKDIR /{nested}\n");
    let df = timed("10k nested ${a:-…} parse", || parse(&text).unwrap());
    let err = timed("10k nested ${a:-…} expand", || {
        df.instructions[1]
            .command
            .expand(&|_| None, '\\')
            .unwrap_err()
    });
    assert!(err.message.contains("nested"), "{err}");
    timed("10k nested ${a:-…} checks", || {
        checks::check(&text, None).unwrap()
    });
}

#[test]
fn many_heredocs() {
    let mut text = String::from("FROM x\n");
    for i in 0..10_000 {
        text.push_str(&format!("RUN <<EOF{i}\necho {i}\nEOF{i}\n"));
    }
    let df = timed("10k RUN heredocs", || parse(&text).unwrap());
    assert_eq!(df.instructions.len(), 10_001);

    let names: Vec<String> = (0..10_000).map(|i| format!("<<F{i}")).collect();
    let mut copy = format!("FROM x\nCOPY {} /dst/\n", names.join(" "));
    for i in 0..10_000 {
        copy.push_str(&format!("body {i}\nF{i}\n"));
    }
    let df = timed("10k heredocs on one COPY line", || parse(&copy).unwrap());
    let kiln_dockerfile::Command::Copy(c) = &df.instructions[1].command else {
        panic!("not a COPY")
    };
    assert_eq!(c.heredocs.len(), 10_000);
    assert_eq!(c.heredocs[9_999].content, "body 9999\n");
}
