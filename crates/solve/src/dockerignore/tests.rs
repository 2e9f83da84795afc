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

#[test]
fn pruning_respects_later_exceptions() {
    let matcher = IgnoreMatcher::parse("node_modules\n").unwrap();
    assert!(!matcher.may_include_below("node_modules"));
    assert!(matcher.may_include_below("src"));

    let matcher = IgnoreMatcher::parse("docs\n!docs/keep/*.md\n").unwrap();
    assert!(matcher.may_include_below("docs"));
    assert!(matcher.may_include_below("docs/keep"));
    assert!(!matcher.may_include_below("docs/other"));

    // An exception before the excluding line cannot re-include anything.
    let matcher = IgnoreMatcher::parse("!docs/keep.md\ndocs\n").unwrap();
    assert!(!matcher.may_include_below("docs"));

    // Wildcard exceptions that can cross directories keep the walk going.
    let matcher = IgnoreMatcher::parse("*\n!**/*.rs\n").unwrap();
    assert!(matcher.may_include_below("any/dir"));
    let matcher = IgnoreMatcher::parse("*\n!*/keep\n").unwrap();
    assert!(matcher.may_include_below("x"));
    assert!(!matcher.may_include_below("x/y"));
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
