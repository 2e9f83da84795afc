use super::*;

fn excluded(patterns: &str, path: &str) -> bool {
    IgnoreMatcher::parse(patterns).unwrap().is_excluded(path)
}

// Vectors adapted from moby/patternmatcher's patternmatcher_test.go (TestMatches,
// TestMatchesOrParentMatches, TestWildcardMatches, TestMatchesWithMalformedPatterns).
#[test]
fn patternmatcher_vectors() {
    let cases: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        // From TestMatchesOrParentMatches: a pattern matching a parent dir matches the path.
        ("**/dir2", "dir/dir2/file", true),
        ("dir", "dir/file", true),
        ("dir/*", "dir/a/b/c", true),
        ("*.go", "dir/a.go", false),
        ("*/*.go", "dir/a.go", true),
        // The suffix quirk: `**` followed by a literal is a plain suffix test.
        ("**foo", "barfoo", true),
        ("**/foo", "barfoo", false),
    ];
    for (pattern, path, want) in cases {
        assert_eq!(
            excluded(pattern, path),
            *want,
            "pattern {pattern:?} against {path:?}"
        );
    }
}

#[test]
fn last_matching_line_wins() {
    let text = "*.md\n!README.md\nREADME.md\n";
    assert!(excluded(text, "README.md"));
    let text = "*.md\n!README.md\n";
    assert!(!excluded(text, "README.md"));
    assert!(excluded(text, "CHANGES.md"));
    assert!(excluded("docs\n!docs/keep.txt", "docs/other.txt"));
    assert!(!excluded("docs\n!docs/keep.txt", "docs/keep.txt"));
}

#[test]
fn file_syntax_comments_bom_whitespace_and_leading_slash() {
    let text = "\u{feff}# comment\n  /build/  \n\n #not-a-comment\n./tmp/../out\r\n";
    let matcher = IgnoreMatcher::parse(text).unwrap();
    assert_eq!(
        matcher.patterns().collect::<Vec<_>>(),
        ["build", "#not-a-comment", "out"]
    );
    assert!(matcher.is_excluded("build/x"));
    assert!(matcher.is_excluded("out"));
    assert!(!matcher.is_excluded("comment"));
    assert!(!matcher.is_excluded("tmp"));
    // A BOM only counts at the very start of the file.
    let matcher = IgnoreMatcher::parse("a\n\u{feff}b").unwrap();
    assert!(!matcher.is_excluded("b"));
}

#[test]
fn bad_patterns_are_errors_naming_the_line() {
    let error = IgnoreMatcher::parse("ok\n!\n").unwrap_err();
    assert!(
        matches!(error, IgnoreError::BareExclusion { line: 2 }),
        "{error}"
    );
    assert!(error.to_string().contains("line 2"));
    for bad in ["[", "a[]b", "[z-a]", "a\\", "[-a]"] {
        assert!(
            matches!(
                IgnoreMatcher::parse(bad),
                Err(IgnoreError::BadPattern { line: 1, .. })
            ),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn missing_ignore_file_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let matcher = IgnoreMatcher::from_context(dir.path()).unwrap();
    assert!(matcher.is_empty());
    assert!(!matcher.is_excluded("anything"));
    std::fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
    let matcher = IgnoreMatcher::from_context(dir.path()).unwrap();
    assert!(matcher.is_excluded("a.log"));
}

/// BuildKit's rules for `.dockerignore` (current moby/buildkit sends the context through
/// tonistiigi/fsutil's `filterFS.Walk`, filter.go, which calls moby/patternmatcher's
/// `MatchesUsingParentResults`, patternmatcher.go, for each path with its parent directory's
/// result). Each row: the ignore file, a path, whether BuildKit leaves it out. The rows marked
/// "old BuildKit" differ from Docker 20.10's BuildKit, whose walk skipped an excluded directory
/// unless an exception *started with* its path, wildcards or not.
#[test]
fn exclusions_and_exceptions_follow_buildkits_walk() {
    let cases: &[(&str, &str, bool)] = &[
        // A matched directory excludes everything below it.
        ("subdir", "subdir", true),
        ("subdir", "subdir/sub2.txt", true),
        // An exception re-includes a file below an excluded directory, wildcards too: the
        // parent's match is inherited, the exception is tried on the file's own path
        // (old BuildKit: excluded, the walk never entered `subdir`).
        ("subdir\n!*/sub1*", "subdir/sub1.txt", false),
        ("subdir\n!*/sub1*", "subdir/sub2.txt", true),
        ("subdir\n!*/sub1*\n!subdir/sub3*", "subdir/sub3.txt", false),
        // `volume/` then `!**/oneline.txt` (old BuildKit: excluded).
        ("volume/\n!**/oneline.txt", "volume/data/oneline.txt", false),
        ("volume/\n!**/oneline.txt", "volume/data", true),
        // Allow-lists: `**` then exceptions; the directories on the way stay excluded (the
        // walk shows them only as parents of something visible).
        ("**\n!folder/subfolder/file", "folder", true),
        ("**\n!folder/subfolder/file", "folder/subfolder", true),
        ("**\n!folder/subfolder/file", "folder/subfolder/file", false),
        ("**\n!folder/subfolder/file", "folder/file", true),
        ("**\n!folder1/file1", "folder1/file1", false),
        ("**\n!folder1/file1", "folder1/file2", true),
        // An exception naming a directory re-includes what is below it...
        ("**\n!subdir", "subdir/a/b", false),
        // ...until a later line excludes again.
        ("**\n!subdir\nsubdir/subdir1", "subdir/subdir1/x", true),
        (
            "**\n!subdir\nsubdir/subdir1\n!subdir/subdir1/subdir2",
            "subdir/subdir1/subdir2/x",
            false,
        ),
        // The last matching line decides...
        ("*.md\n!README.md\nREADME.md", "README.md", true),
        ("!docs/keep.md\ndocs", "docs/keep.md", true),
        // ...except that a pattern skipped at a directory (it could not change the verdict
        // there) is not inherited: below `dir`, the third line is tried on the path itself
        // only, so `dir/keep1` stays included, although the line `dir` matches its parent.
        ("dir\n!dir/keep*\ndir", "dir", true),
        ("dir\n!dir/keep*\ndir", "dir/keep1", false),
        ("dir\n!dir/keep*\ndir", "dir/other", true),
        // `*` stays inside one path component; `**` does not.
        ("*/sub1*", "a/b/sub1", false),
        ("**/sub1*", "a/b/sub1", true),
        // `*` matches every top-level name, so everything below is excluded through its
        // top-level directory; an exception for a directory brings back all of it.
        ("*", "dir/a/b", true),
        ("*\n!dir", "dir/a/b", false),
        ("*\n!dir/x", "dir/x", false),
        ("*\n!dir/x", "dir/y", true),
        ("*/*\n!a/b", "a", false),
        ("*/*\n!a/b", "a/b/c", false),
        ("*/*\n!a/b", "a/c/d", true),
    ];
    for (text, path, want) in cases {
        assert_eq!(
            excluded(text, path),
            *want,
            ".dockerignore {text:?}, path {path:?}"
        );
    }
}

/// Whether a walk may skip an excluded directory. BuildKit only skips one when every exception
/// is a plain path that does not start with the directory (filter.go,
/// `onlyPrefixExcludeExceptions`), else it walks everything; kiln skips exactly the directories
/// in which no exception can match, which gives the same result and walks less.
#[test]
fn pruning_skips_only_what_no_exception_can_reach() {
    let cases: &[(&str, &str, bool)] = &[
        ("node_modules", "node_modules", false),
        ("node_modules", "src", true),
        ("docs\n!docs/keep/*.md", "docs", true),
        ("docs\n!docs/keep/*.md", "docs/keep", true),
        ("docs\n!docs/keep/*.md", "docs/other", false),
        // An exception before the line that excludes the directory cannot re-include anything.
        ("!docs/keep.md\ndocs", "docs", false),
        // Exceptions that can cross directories keep the walk going.
        ("*\n!**/*.rs", "any/dir", true),
        ("*\n!*/keep", "x", true),
        ("*\n!*/keep", "x/y", false),
        ("subdir\n!*/sub1*", "subdir", true),
        ("volume/\n!**/oneline.txt", "volume", true),
        ("**\n!folder/subfolder/file", "folder", true),
        ("**\n!folder/subfolder/file", "other", false),
        ("**\n!folder1/file", "folder1", true),
        ("**\n!subdir\nsubdir/subdir1", "subdir/subdir1", false),
        (
            "**\n!subdir\nsubdir/subdir1\n!subdir/subdir1/subdir2",
            "subdir/subdir1",
            true,
        ),
        // Below `dir` the last line is not inherited, so the exception can still apply.
        ("dir\n!dir/keep*\ndir", "dir", true),
    ];
    for (text, dir, want) in cases {
        let matcher = IgnoreMatcher::parse(text).unwrap();
        assert_eq!(
            matcher.may_include_below(dir),
            *want,
            ".dockerignore {text:?}, directory {dir:?}"
        );
    }
}

#[test]
fn go_clean_matches_go() {
    for (input, want) in [
        ("", "."),
        ("a/b/../c", "a/c"),
        ("/../x", "/x"),
        ("../../x", "../../x"),
        ("a//b/./", "a/b"),
        ("/", "/"),
        ("a/..", "."),
    ] {
        assert_eq!(go_clean(input), want, "{input:?}");
    }
}

#[test]
fn component_globs_follow_filepath_match() {
    let glob = compile_component_glob("a?c").unwrap();
    assert!(glob.is_match("abc"));
    assert!(!glob.is_match("ac"));
    let glob = compile_component_glob("[&&-]x").unwrap_err();
    assert_eq!(glob, GlobError::BadClass);
    let glob = compile_component_glob("[[&~]x").unwrap();
    assert!(glob.is_match("[x") && glob.is_match("&x") && glob.is_match("~x"));
    let glob = compile_component_glob("\\*").unwrap();
    assert!(glob.is_match("*") && !glob.is_match("a"));
    assert!(contains_wildcards("*.txt") && !contains_wildcards("a\\*b"));
}
