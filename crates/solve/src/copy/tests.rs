//! These tests chown files and so expect to run as root (as the builder itself does).

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::time::{Duration, SystemTime};

use super::*;
use crate::context::{BuildContext, SelectOptions, SourceTree};

struct Fixture {
    context_dir: tempfile::TempDir,
    root_dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture {
            context_dir: tempfile::tempdir().unwrap(),
            root_dir: tempfile::tempdir().unwrap(),
        };
        fixture.write("a.txt", "alpha", 0o640);
        fixture.write("b.txt", "beta", 0o644);
        fixture.write("dir/x", "ex", 0o755);
        fixture.write("dir/sub/y", "why", 0o600);
        symlink("a.txt", fixture.context_dir.path().join("link")).unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for rel in ["a.txt", "dir/x"] {
            let file = File::options()
                .write(true)
                .open(fixture.context_dir.path().join(rel))
                .unwrap();
            file.set_modified(old).unwrap();
        }
        fixture
    }

    fn write(&self, rel: &str, content: &str, mode: u32) {
        let path = self.context_dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn root(&self) -> &Path {
        self.root_dir.path()
    }

    fn copy(&self, patterns: &[&str], dest: &str, opts: &CopyOptions) -> Result<(), CopyError> {
        self.copy_selected(patterns, dest, opts, &SelectOptions::default())
    }

    fn copy_selected(
        &self,
        patterns: &[&str],
        dest: &str,
        opts: &CopyOptions,
        select: &SelectOptions,
    ) -> Result<(), CopyError> {
        let context = BuildContext::open(self.context_dir.path()).unwrap();
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let sources = SourceTree::Context(context).select(&patterns, select)?;
        copy_into(self.root(), &sources, dest, opts)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap()
    }

    fn meta(&self, rel: &str) -> std::fs::Metadata {
        std::fs::symlink_metadata(self.root().join(rel)).unwrap()
    }
}

#[test]
fn file_to_file_keeps_mode_and_mtime_and_is_root_owned() {
    let fixture = Fixture::new();
    let file = fixture.context_dir.path().join("a.txt");
    std::os::unix::fs::chown(&file, Some(4321), Some(4321)).unwrap();
    fixture
        .copy(&["a.txt"], "/dst/b.txt", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("dst/b.txt"), "alpha");
    let meta = fixture.meta("dst/b.txt");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(meta.mtime(), 1_000_000);
    let parent = fixture.meta("dst");
    assert_eq!(parent.mode() & 0o7777, 0o755);

    // Copying again over an existing file replaces it.
    fixture.write("a.txt", "second", 0o600);
    fixture
        .copy(&["a.txt"], "/dst/b.txt", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("dst/b.txt"), "second");
}

#[test]
fn file_goes_inside_a_directory_destination() {
    let fixture = Fixture::new();
    fixture
        .copy(&["a.txt"], "/slash/", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("slash/a.txt"), "alpha");
    std::fs::create_dir(fixture.root().join("existing")).unwrap();
    fixture
        .copy(&["a.txt"], "/existing", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("existing/a.txt"), "alpha");
}

#[test]
fn directory_source_copies_its_contents() {
    let fixture = Fixture::new();
    fixture
        .copy(&["dir"], "/app", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("app/x"), "ex");
    assert_eq!(fixture.read("app/sub/y"), "why");
    assert!(!fixture.root().join("app/dir").exists());
    assert_eq!(fixture.meta("app/x").mode() & 0o7777, 0o755);
    assert_eq!(fixture.meta("app/x").mtime(), 1_000_000);
    let source_sub = std::fs::metadata(fixture.context_dir.path().join("dir/sub")).unwrap();
    assert_eq!(fixture.meta("app/sub").mtime(), source_sub.mtime());
}

/// Where sources land, as BuildKit decides it: dockerfile2llb's convert_copy.go makes one
/// `llb.Copy` per source pattern, and the file op (solver/llbsolver/file/backend.go) copies
/// each wildcard match on its own with fsutil's `copy.Copy` (copy/copy.go): the destination
/// is a directory when it ends with `/` or exists as one at that moment, else a file source
/// becomes it. Each row: sources, destination, a directory made first, then the files
/// expected (path → content; `/` for a directory) and how many sources replaced an earlier
/// one at the destination.
#[test]
fn each_source_is_placed_on_its_own_as_in_buildkit() {
    struct Case {
        sources: &'static [&'static str],
        dest: &'static str,
        existing_dir: Option<&'static str>,
        want: &'static [(&'static str, &'static str)],
        replaced: usize,
    }
    let cases = [
        // One file, no slash: the destination is the file's new name.
        Case {
            sources: &["a.txt"],
            dest: "/one",
            existing_dir: None,
            want: &[("one", "alpha")],
            replaced: 0,
        },
        // A wildcard matching one file behaves the same.
        Case {
            sources: &["a*.txt"],
            dest: "/app4/file.txt",
            existing_dir: None,
            want: &[("app4/file.txt", "alpha")],
            replaced: 0,
        },
        // Several sources without a slash: each replaces the one before (moby/buildkit#1853).
        Case {
            sources: &["a.txt", "b.txt"],
            dest: "/multi",
            existing_dir: None,
            want: &[("multi", "beta")],
            replaced: 1,
        },
        Case {
            sources: &["*.txt"],
            dest: "/wild",
            existing_dir: None,
            want: &[("wild", "beta")],
            replaced: 1,
        },
        // A trailing slash, or a directory already there, takes them all.
        Case {
            sources: &["*.txt"],
            dest: "/wild/",
            existing_dir: None,
            want: &[("wild/a.txt", "alpha"), ("wild/b.txt", "beta")],
            replaced: 0,
        },
        Case {
            sources: &["a.txt", "b.txt"],
            dest: "/existing",
            existing_dir: Some("existing"),
            want: &[("existing/a.txt", "alpha"), ("existing/b.txt", "beta")],
            replaced: 0,
        },
        // A directory source makes the destination a directory, which later files go into.
        Case {
            sources: &["dir", "a.txt"],
            dest: "/mixed",
            existing_dir: None,
            want: &[
                ("mixed/x", "ex"),
                ("mixed/sub", "/"),
                ("mixed/a.txt", "alpha"),
            ],
            replaced: 0,
        },
    ];
    for case in cases {
        let fixture = Fixture::new();
        if let Some(dir) = case.existing_dir {
            std::fs::create_dir(fixture.root().join(dir)).unwrap();
        }
        let context = BuildContext::open(fixture.context_dir.path()).unwrap();
        let patterns: Vec<String> = case.sources.iter().map(|p| p.to_string()).collect();
        let sources = SourceTree::Context(context)
            .select(&patterns, &SelectOptions::default())
            .unwrap();
        let what = format!("{:?} -> {}", case.sources, case.dest);
        let outcome = copy_into_reusing(
            fixture.root(),
            &sources,
            case.dest,
            &CopyOptions::default(),
            CopyReuse::default(),
        )
        .unwrap_or_else(|error| panic!("{what}: {error}"));
        for (path, content) in case.want {
            if *content == "/" {
                assert!(fixture.meta(path).is_dir(), "{what}: {path} is a directory");
            } else {
                assert_eq!(fixture.read(path), *content, "{what}: {path}");
            }
        }
        assert_eq!(outcome.replaced_at_dest, case.replaced, "{what}");
    }
}

#[test]
fn a_directory_source_cannot_replace_a_file_destination() {
    let fixture = Fixture::new();
    let error = fixture
        .copy(&["a.txt", "dir"], "/dst", &CopyOptions::default())
        .unwrap_err();
    assert!(error.to_string().contains("/dst"), "{error}");
}

#[test]
fn chown_and_chmod_apply_to_everything_copied() {
    let fixture = Fixture::new();
    let opts = CopyOptions {
        owner: Some((1000, 1001)),
        chmod: Some(Chmod::parse("600").unwrap()),
        keep_source_owner: false,
    };
    fixture.copy(&["dir"], "/owned/deep/", &opts).unwrap();
    for rel in ["owned/deep/x", "owned/deep/sub", "owned/deep/sub/y"] {
        let meta = fixture.meta(rel);
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{rel}");
        assert_eq!(meta.mode() & 0o7777, 0o600, "{rel}");
    }
    // The destination the copy creates takes the source directory's metadata; its missing
    // parents are plain 0755 directories of the --chown owner.
    let created = fixture.meta("owned/deep");
    assert_eq!((created.uid(), created.mode() & 0o7777), (1000, 0o600));
    let parent = fixture.meta("owned");
    assert_eq!((parent.uid(), parent.mode() & 0o7777), (1000, 0o755));
}

#[test]
fn from_stage_sources_keep_their_owner() {
    let fixture = Fixture::new();
    let file = fixture.context_dir.path().join("b.txt");
    std::os::unix::fs::chown(&file, Some(123), Some(456)).unwrap();
    let opts = CopyOptions {
        keep_source_owner: true,
        ..CopyOptions::default()
    };
    fixture.copy(&["b.txt"], "/kept", &opts).unwrap();
    let meta = fixture.meta("kept");
    assert_eq!((meta.uid(), meta.gid()), (123, 456));
}

#[test]
fn symlink_source_is_copied_as_a_link() {
    let fixture = Fixture::new();
    fixture
        .copy(&["link"], "/l", &CopyOptions::default())
        .unwrap();
    assert!(fixture.meta("l").file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(fixture.root().join("l")).unwrap(),
        Path::new("a.txt")
    );
}

#[test]
fn absolute_symlink_in_the_image_cannot_redirect_to_the_host() {
    let fixture = Fixture::new();
    let host_dir = tempfile::tempdir().unwrap();
    let host_name = host_dir.path().strip_prefix("/").unwrap();
    symlink(host_dir.path(), fixture.root().join("evil")).unwrap();
    fixture
        .copy(&["a.txt"], "/evil/", &CopyOptions::default())
        .unwrap();
    assert!(!host_dir.path().join("a.txt").exists(), "wrote on the host");
    assert_eq!(
        fixture.read(&format!("{}/a.txt", host_name.display())),
        "alpha"
    );
}

#[test]
fn relative_symlink_climbing_out_stays_in_the_root() {
    let fixture = Fixture::new();
    symlink("../../../../", fixture.root().join("x")).unwrap();
    fixture
        .copy(&["a.txt"], "/x/y/", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("y/a.txt"), "alpha");
}

#[test]
fn final_symlink_is_replaced_not_written_through() {
    let fixture = Fixture::new();
    let host_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_file.path(), "host").unwrap();
    std::fs::create_dir(fixture.root().join("app")).unwrap();
    symlink(host_file.path(), fixture.root().join("app/config")).unwrap();
    fixture
        .copy(&["a.txt"], "/app/config", &CopyOptions::default())
        .unwrap();
    assert_eq!(std::fs::read_to_string(host_file.path()).unwrap(), "host");
    assert!(fixture.meta("app/config").is_file());
    assert_eq!(fixture.read("app/config"), "alpha");
}

#[test]
fn directories_merge_through_symlinks_inside_the_image() {
    let fixture = Fixture::new();
    fixture.write("tree/lib/z", "zed", 0o644);
    std::fs::create_dir_all(fixture.root().join("usr/lib")).unwrap();
    symlink("usr/lib", fixture.root().join("lib")).unwrap();
    fixture
        .copy(&["tree"], "/", &CopyOptions::default())
        .unwrap();
    assert_eq!(fixture.read("usr/lib/z"), "zed");
    assert!(fixture.meta("lib").file_type().is_symlink());
}

#[test]
fn file_over_directory_is_an_error() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.root().join("out/x")).unwrap();
    let error = fixture
        .copy(&["dir"], "/out", &CopyOptions::default())
        .unwrap_err();
    assert!(
        matches!(error, CopyError::DirectoryInTheWay { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("/out/x"), "{error}");
}

#[test]
fn chown_specs_resolve_against_the_image() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1002::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
    let root = root.path();
    assert_eq!(parse_chown("app", root).unwrap(), (1000, 1002));
    assert_eq!(parse_chown("app:staff", root).unwrap(), (1000, 50));
    assert_eq!(parse_chown("1234", root).unwrap(), (1234, 1234));
    assert_eq!(parse_chown("1234:staff", root).unwrap(), (1234, 50));
    assert_eq!(parse_chown("app:7", root).unwrap(), (1000, 7));
    let error = parse_chown("nobody", root).unwrap_err();
    assert!(error.to_string().contains("\"nobody\""), "{error}");
    assert!(matches!(
        parse_chown("app:wheel", root),
        Err(CopyError::UnknownGroup { .. })
    ));
    assert!(matches!(
        parse_chown("", root),
        Err(CopyError::BadOwner { .. })
    ));
    assert!(matches!(
        parse_chown("app:", root),
        Err(CopyError::BadOwner { .. })
    ));
}

#[test]
fn chown_lookup_does_not_follow_links_out_of_the_image() {
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("passwd"), "root:x:1:1::/:/bin/sh\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    // Unconfined, `etc` would be the host directory; inside the image it is the same path
    // under the image root.
    let host_rel = host_dir.path().strip_prefix("/").unwrap();
    symlink(
        Path::new("../../../../../../..").join(host_rel),
        root.path().join("etc"),
    )
    .unwrap();
    let image_etc = root.path().join(host_rel);
    std::fs::create_dir_all(&image_etc).unwrap();
    std::fs::write(image_etc.join("passwd"), "root:x:7:7::/:/bin/sh\n").unwrap();
    assert_eq!(parse_chown("root", root.path()).unwrap(), (7, 7));
}

#[test]
fn symbolic_chmod_starts_from_each_entrys_own_mode() {
    let fixture = Fixture::new();
    let opts = CopyOptions {
        chmod: Some(Chmod::parse("go-rwx,u+X").unwrap()),
        ..CopyOptions::default()
    };
    fixture.copy(&["dir"], "/sym/", &opts).unwrap();
    // dir/x was 0755, dir/sub 0755 (created by the fixture), dir/sub/y 0600.
    for (rel, want) in [("sym/x", 0o700), ("sym/sub", 0o700), ("sym/sub/y", 0o600)] {
        assert_eq!(fixture.meta(rel).mode() & 0o7777, want, "{rel}");
    }
    let opts = CopyOptions {
        chmod: Some(Chmod::parse("a=rX").unwrap()),
        ..CopyOptions::default()
    };
    fixture.copy(&["a.txt", "dir"], "/rx/", &opts).unwrap();
    for (rel, want) in [("rx/a.txt", 0o444), ("rx/x", 0o555), ("rx/sub", 0o555)] {
        assert_eq!(fixture.meta(rel).mode() & 0o7777, want, "{rel}");
    }
}

#[test]
fn parents_keep_source_paths_under_the_destination() {
    let fixture = Fixture::new();
    fixture.write("dir/sub/z", "zed", 0o644);
    let select = SelectOptions {
        parents: true,
        ..SelectOptions::default()
    };
    let opts = CopyOptions::default();
    fixture
        .copy_selected(&["dir/sub/*", "a.txt"], "/p", &opts, &select)
        .unwrap();
    assert_eq!(fixture.read("p/dir/sub/y"), "why");
    assert_eq!(fixture.read("p/dir/sub/z"), "zed");
    assert_eq!(fixture.read("p/a.txt"), "alpha");
    fixture
        .copy_selected(&["dir/./sub"], "/pivot/", &opts, &select)
        .unwrap();
    assert_eq!(fixture.read("pivot/sub/y"), "why");
    assert!(!fixture.root().join("pivot/dir").exists());
}

#[test]
fn exclude_leaves_matching_files_out() {
    let fixture = Fixture::new();
    let select = SelectOptions {
        exclude: std::sync::Arc::new(
            crate::dockerignore::IgnoreMatcher::from_patterns(&["sub/y".into(), "*.txt".into()])
                .unwrap(),
        ),
        ..SelectOptions::default()
    };
    fixture
        .copy_selected(&["dir", "*.txt"], "/ex/", &CopyOptions::default(), &select)
        .unwrap();
    assert_eq!(fixture.read("ex/x"), "ex");
    assert!(fixture.meta("ex/sub").is_dir());
    assert!(!fixture.root().join("ex/sub/y").exists());
    assert!(!fixture.root().join("ex/a.txt").exists());
}

#[test]
fn standalone_files_are_copied_by_name() {
    let fixture = Fixture::new();
    let extra = tempfile::tempdir().unwrap();
    let path = extra.path().join("inline.conf");
    std::fs::write(&path, "k=v\n").unwrap();
    let source = Source::standalone(path);
    copy_into(
        fixture.root(),
        std::slice::from_ref(&source),
        "/etc/app/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(fixture.read("etc/app/inline.conf"), "k=v\n");
    copy_into(fixture.root(), &[source], "/named", &CopyOptions::default()).unwrap();
    assert_eq!(fixture.read("named"), "k=v\n");
}
