use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn sample_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for rel in [
        "a.txt",
        "b.txt",
        "c.md",
        "abc",
        "axc",
        "ac",
        "dir/x",
        "dir/y/z",
        "secret/key",
        "docs/keep.md",
        "docs/other.md",
    ] {
        write(root, rel, rel);
    }
    write(
        root,
        ".dockerignore",
        "b.txt\nsecret\ndocs\n!docs/keep.md\n",
    );
    dir
}

fn resolve(context: &BuildContext, pattern: &str) -> Result<Vec<String>> {
    Ok(context
        .resolve_sources(&[pattern.to_string()])?
        .into_iter()
        .map(|source| source.rel_path)
        .collect())
}

fn walk_names(source: &Source) -> Vec<String> {
    source
        .entries()
        .map(|entry| path_to_slash(&entry.unwrap().rel))
        .collect()
}

#[test]
fn wildcards_match_per_component_and_skip_excluded_paths() {
    let dir = sample_context();
    let context = BuildContext::open(dir.path()).unwrap();
    assert_eq!(resolve(&context, "*.txt").unwrap(), ["a.txt"]);
    assert_eq!(resolve(&context, "dir/*").unwrap(), ["dir/x", "dir/y"]);
    assert_eq!(resolve(&context, "a?c").unwrap(), ["abc", "axc"]);
    assert_eq!(resolve(&context, "/d*/*.md").unwrap(), ["docs/keep.md"]);
    assert_eq!(resolve(&context, "*/y/z").unwrap(), ["dir/y/z"]);
    let sources = context.resolve_sources(&["dir/*".to_string()]).unwrap();
    assert!(!sources[0].is_dir && sources[1].is_dir);
    assert_eq!(sources[1].host_path, context.root().join("dir/y"));
}

#[test]
fn missing_and_excluded_sources_are_errors_that_say_why() {
    let dir = sample_context();
    let context = BuildContext::open(dir.path()).unwrap();
    let error = resolve(&context, "nope.txt").unwrap_err();
    assert_eq!(
        error.to_string(),
        "\"nope.txt\": not found in build context"
    );
    let error = resolve(&context, "b.txt").unwrap_err();
    assert!(
        matches!(&error, ContextError::NoSourceMatch { excluded: true, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("excluded by .dockerignore"));
    assert!(matches!(
        resolve(&context, "secret/key"),
        Err(ContextError::NoSourceMatch { excluded: true, .. })
    ));
    // A wildcard may match nothing (BuildKit allows it; the engine reports an instruction
    // whose sources are all empty), including when only ignored files would match.
    assert_eq!(resolve(&context, "b*.txt").unwrap(), Vec::<String>::new());
    assert_eq!(resolve(&context, "*.none").unwrap(), Vec::<String>::new());
    assert!(matches!(
        resolve(&context, "nodir/*.txt"),
        Err(ContextError::NoSourceMatch {
            excluded: false,
            ..
        })
    ));
    assert!(matches!(
        resolve(&context, "[z-a]"),
        Err(ContextError::BadPattern { .. })
    ));
}

#[test]
fn excluded_directory_with_exception_shows_only_the_exception() {
    let dir = sample_context();
    let context = BuildContext::open(dir.path()).unwrap();
    let sources = context.resolve_sources(&["docs".to_string()]).unwrap();
    assert_eq!(walk_names(&sources[0]), ["", "keep.md"]);
    let sources = context.resolve_sources(&[".".to_string()]).unwrap();
    let names = walk_names(&sources[0]);
    assert!(names.contains(&"docs".to_string()) && names.contains(&"docs/keep.md".to_string()));
    assert!(
        !names
            .iter()
            .any(|name| name.contains("secret") || name == "b.txt")
    );
    assert!(!names.contains(&"docs/other.md".to_string()));
}

#[test]
fn dot_dot_and_symlinks_never_leave_the_context() {
    let outer = tempfile::tempdir().unwrap();
    write(outer.path(), "outside/secret.txt", "host secret");
    let root = outer.path().join("ctx");
    write(&root, "a.txt", "a");
    write(&root, "dir/x", "x");
    symlink("../outside", root.join("out")).unwrap();
    symlink("/dir", root.join("abs")).unwrap();
    symlink("../../../../..", root.join("up")).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    let context = BuildContext::open(&root).unwrap();

    assert_eq!(resolve(&context, "../../a.txt").unwrap(), ["a.txt"]);
    assert!(resolve(&context, "../outside/secret.txt").is_err());
    assert!(resolve(&context, "out/secret.txt").is_err());
    assert!(resolve(&context, "up/outside/secret.txt").is_err());
    assert!(resolve(&context, "out/*").is_err());
    // Symlinked parents resolve as inside a chroot.
    let sources = context.resolve_sources(&["abs/x".to_string()]).unwrap();
    assert_eq!(sources[0].host_path, context.root().join("dir/x"));
    let sources = context.resolve_sources(&["up/dir/x".to_string()]).unwrap();
    assert_eq!(sources[0].host_path, context.root().join("dir/x"));
    // A source that is a symlink stays a symlink.
    let sources = context.resolve_sources(&["link".to_string()]).unwrap();
    assert!(!sources[0].is_dir);
    let entry = sources[0].entries().next().unwrap().unwrap();
    assert!(entry.metadata.file_type().is_symlink());
}

#[test]
fn rootfs_tree_has_no_ignore_file_and_confines_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "etc/app.conf", "conf");
    write(dir.path(), ".dockerignore", "etc\n");
    symlink("/etc", dir.path().join("config")).unwrap();
    let tree = SourceTree::Rootfs(dir.path().to_path_buf());
    let sources = tree
        .resolve_sources(&["/config/app.conf".to_string()])
        .unwrap();
    assert_eq!(sources[0].host_path, dir.path().join("etc/app.conf"));
    let error = tree.resolve_sources(&["nope".to_string()]).unwrap_err();
    assert!(
        error.to_string().contains("source stage filesystem"),
        "{error}"
    );
}

fn hash_of(root: &Path) -> Digest {
    let context = BuildContext::open(root).unwrap();
    let sources = context.resolve_sources(&[".".to_string()]).unwrap();
    context.hash_sources(&sources).unwrap()
}

#[test]
fn hash_covers_content_names_and_modes_but_not_location_or_times() {
    let make = || {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/main.rs", "fn main() {}");
        write(dir.path(), "README", "hello");
        write(dir.path(), "ignored.log", "noise");
        write(dir.path(), ".dockerignore", "*.log\n");
        symlink("src/main.rs", dir.path().join("entry")).unwrap();
        dir
    };
    let first = make();
    let second = make();
    let base = hash_of(first.path());
    assert_eq!(base, hash_of(second.path()));

    // Excluded files are not part of the hash.
    write(second.path(), "ignored.log", "other noise");
    assert_eq!(base, hash_of(second.path()));

    // Timestamps do not count.
    let readme = second.path().join("README");
    let file = std::fs::File::options().write(true).open(&readme).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(base, hash_of(second.path()));

    // One byte, one mode bit, one name: each changes the hash.
    write(second.path(), "README", "hellO");
    assert_ne!(base, hash_of(second.path()));
    write(second.path(), "README", "hello");
    assert_eq!(base, hash_of(second.path()));
    let mode = std::fs::metadata(&readme).unwrap().permissions().mode();
    std::fs::set_permissions(&readme, std::fs::Permissions::from_mode(mode ^ 0o100)).unwrap();
    assert_ne!(base, hash_of(second.path()));
    std::fs::set_permissions(&readme, std::fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(base, hash_of(second.path()));
    std::fs::rename(&readme, second.path().join("README2")).unwrap();
    assert_ne!(base, hash_of(second.path()));
    std::fs::rename(second.path().join("README2"), &readme).unwrap();
    std::fs::remove_file(second.path().join("entry")).unwrap();
    symlink("src/other.rs", second.path().join("entry")).unwrap();
    assert_ne!(base, hash_of(second.path()));
}

#[test]
fn hash_covers_only_the_selected_sources() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "a");
    write(dir.path(), "b.txt", "b");
    let context = BuildContext::open(dir.path()).unwrap();
    let only_a = context.resolve_sources(&["a.txt".to_string()]).unwrap();
    let before = context.hash_sources(&only_a).unwrap();
    write(dir.path(), "b.txt", "changed");
    assert_eq!(before, context.hash_sources(&only_a).unwrap());
    write(dir.path(), "a.txt", "changed");
    assert_ne!(before, context.hash_sources(&only_a).unwrap());
}

fn select(
    context: &BuildContext,
    patterns: &[&str],
    exclude: &[&str],
    parents: bool,
) -> Vec<(String, Option<String>, Vec<String>)> {
    let exclude: Vec<String> = exclude.iter().map(|p| p.to_string()).collect();
    let options = SelectOptions {
        exclude: Arc::new(IgnoreMatcher::from_patterns(&exclude).unwrap()),
        parents,
    };
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    SourceTree::Context(context.clone())
        .select(&patterns, &options)
        .unwrap()
        .into_iter()
        .map(|source| {
            let names = walk_names(&source);
            (source.rel_path, source.parents_path, names)
        })
        .collect()
}

#[test]
fn exclude_hides_paths_below_a_source_and_matched_names() {
    let dir = sample_context();
    write(dir.path(), "dir/y/skip.log", "log");
    write(dir.path(), "dir/keep.log", "log");
    let context = BuildContext::open(dir.path()).unwrap();
    let picked = select(&context, &["dir"], &["**/*.log", "!keep.log"], false);
    assert_eq!(
        picked,
        [(
            "dir".to_string(),
            None,
            vec!["", "keep.log", "x", "y", "y/z"]
                .into_iter()
                .map(String::from)
                .collect()
        )]
    );
    // A whole directory, and wildcard matches by their own name.
    let picked = select(&context, &["dir"], &["y"], false);
    assert_eq!(picked[0].2, ["", "keep.log", "x"]);
    let picked = select(&context, &["a*"], &["*c"], false);
    let names: Vec<&str> = picked.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["a.txt"], "abc, axc and ac end in c");
    // .dockerignore still applies underneath.
    let picked = select(&context, &["."], &["dir"], false);
    assert!(
        !picked[0]
            .2
            .iter()
            .any(|n| n.starts_with("dir") || n == "b.txt")
    );
    assert!(picked[0].2.contains(&"docs/keep.md".to_string()));
}

#[test]
fn parents_keep_the_path_below_the_pivot() {
    let dir = sample_context();
    write(dir.path(), "x/y/a.txt", "1");
    write(dir.path(), "x/z/a.txt", "2");
    let context = BuildContext::open(dir.path()).unwrap();
    let kept = |patterns: &[&str]| -> Vec<Option<String>> {
        select(&context, patterns, &[], true)
            .into_iter()
            .map(|p| p.1)
            .collect()
    };
    assert_eq!(
        kept(&["./x/*/a.txt"]),
        [Some("x/y/a.txt".into()), Some("x/z/a.txt".into())]
    );
    assert_eq!(
        kept(&["x/./*/a.txt"]),
        [Some("y/a.txt".into()), Some("z/a.txt".into())]
    );
    assert_eq!(kept(&["x/./y"]), [Some("y".into())]);
    assert_eq!(kept(&["./x/."]), [Some("x".into())]);
    assert_eq!(kept(&["/dir/y"]), [Some("dir/y".into())]);
    // Without --parents a `/./` is just part of the path.
    assert_eq!(select(&context, &["x/./y"], &[], false)[0].1, None);
}

#[test]
fn bad_exclude_patterns_are_refused() {
    let error = IgnoreMatcher::from_patterns(&["[z-a".to_string()]).unwrap_err();
    assert!(error.to_string().starts_with("--exclude=[z-a:"), "{error}");
    assert!(IgnoreMatcher::from_patterns(&["!".to_string()]).is_err());
}
