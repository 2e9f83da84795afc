//! The explain diff: one test per kind of cause, and the recording across builds.

use super::*;
use crate::cache::KeyBuilder;
use kiln_image::Platform;

fn file(path: &str, fingerprint: &str) -> FileFingerprint {
    FileFingerprint {
        path: path.into(),
        fingerprint: fingerprint.into(),
    }
}

fn run_inputs(parent: &CacheKey, env: &[&str], args: &[&str], argv: &str) -> Vec<KeyInput> {
    let mut key = KeyBuilder::new("RUN", Some(parent));
    key.list("argv", ["/bin/sh", "-c", argv])
        .list("env", env.iter().copied())
        .list("build-args", args.iter().copied())
        .field("workdir", "/");
    key.finish_recorded().1
}

#[test]
fn unchanged_inputs_have_no_changes() {
    let p = CacheKey::from_hash(Digest::of(b"p"));
    let a = run_inputs(&p, &["PATH=/bin"], &[], "make");
    assert!(input_changes(&a, &a).is_empty());
}

#[test]
fn build_arg_change_shows_old_and_new_values() {
    let p = CacheKey::from_hash(Digest::of(b"p"));
    let old = run_inputs(&p, &["PATH=/bin"], &["VERSION=1.2"], "make");
    let new = run_inputs(&p, &["PATH=/bin"], &["VERSION=1.3"], "make");
    assert_eq!(
        input_changes(&old, &new),
        vec!["build-arg VERSION 1.2 → 1.3"]
    );
    let added = run_inputs(&p, &["PATH=/bin"], &["VERSION=1.2", "X=1"], "make");
    assert_eq!(input_changes(&old, &added), vec!["build-arg X set to 1"]);
    assert_eq!(
        input_changes(&added, &old),
        vec!["build-arg X no longer set (was 1)"]
    );
}

#[test]
fn env_changes_name_the_variable_not_the_value() {
    let p = CacheKey::from_hash(Digest::of(b"p"));
    let old = run_inputs(&p, &["PATH=/bin", "A=1"], &[], "make");
    let new = run_inputs(&p, &["PATH=/usr/bin:/bin", "B=secretish"], &[], "make");
    assert_eq!(
        input_changes(&old, &new),
        vec!["ENV A removed", "ENV B added", "ENV PATH changed"]
    );
}

#[test]
fn command_and_parent_changes() {
    let (p, q) = (
        CacheKey::from_hash(Digest::of(b"p")),
        CacheKey::from_hash(Digest::of(b"q")),
    );
    let old = run_inputs(&p, &[], &[], "make");
    assert_eq!(
        input_changes(&old, &run_inputs(&p, &[], &[], "make all")),
        vec!["command changed"]
    );
    // The parent alone is not one of the step's own changes.
    assert!(input_changes(&old, &run_inputs(&q, &[], &[], "make")).is_empty());
}

#[test]
fn file_diff_counts_and_caps_names() {
    let old = vec![
        file(".", "d 755"),
        file("a", "f 644 1"),
        file("b", "f 644 2"),
    ];
    let new = vec![
        file(".", "d 755"),
        file("a", "f 644 9"),
        file("c", "f 644 3"),
    ];
    assert_eq!(
        describe_files(&old, &new).unwrap(),
        "1 file changed: a; 1 file added: c; 1 file removed: b"
    );
    assert_eq!(describe_files(&old, &old), None);
    let many: Vec<FileFingerprint> = (0..8).map(|i| file(&format!("f{i}"), "f 644 0")).collect();
    assert_eq!(
        describe_files(&[], &many).unwrap(),
        "8 files added: f0, f1, f2, f3, f4 and 3 more"
    );
    // Mode changes are changes too.
    assert_eq!(
        describe_files(&[file("x", "f 644 1")], &[file("x", "f 755 1")]).unwrap(),
        "1 file changed: x"
    );
}

#[test]
fn copy_content_change_is_told_by_files() {
    let copy = |content: &str, files: Vec<FileFingerprint>| {
        let mut key = KeyBuilder::new("COPY", None);
        key.field("content", content)
            .detail("content-files", files)
            .field("dest", "/app/");
        key.finish_recorded().1
    };
    let old = copy("sha256:1", vec![file("src/main.rs", "f 644 1")]);
    let new = copy("sha256:2", vec![file("src/main.rs", "f 644 2")]);
    assert_eq!(
        input_changes(&old, &new),
        vec!["1 file changed: src/main.rs"]
    );
}

#[test]
fn base_image_and_arg_steps() {
    let from = |d: &[u8]| {
        let mut key = KeyBuilder::new("FROM", None);
        key.field("base", &Digest::of(d).to_string());
        key.finish_recorded().1
    };
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    assert_eq!(
        input_changes(&from(b"a"), &from(b"b")),
        vec![format!(
            "base image digest changed (sha256:{}… → sha256:{}…)",
            a.short(),
            b.short()
        )]
    );
    let arg = |v: &str| {
        let mut key = KeyBuilder::new("ARG", None);
        key.field("arg", "VERSION").field("value", v);
        key.finish_recorded().1
    };
    assert_eq!(
        input_changes(&arg("1.2"), &arg("1.3")),
        vec!["build-arg VERSION 1.2 → 1.3"]
    );
}

#[test]
fn generic_fields_show_short_values() {
    let w = |dir: &str, user: &str| {
        let mut key = KeyBuilder::new("RUN", None);
        key.field("workdir", dir)
            .field("user", user)
            .field("chmod", "");
        key.finish_recorded().1
    };
    assert_eq!(
        input_changes(&w("/a", ""), &w("/b", "nobody")),
        vec!["WORKDIR changed (/a → /b)", "USER changed (\"\" → nobody)"]
    );
    let mut run = KeyBuilder::new("RUN", None);
    run.field("workdir", "/a");
    let mut copy = KeyBuilder::new("COPY", None);
    copy.field("chmod", "755");
    assert_eq!(
        input_changes(&run.finish_recorded().1, &copy.finish_recorded().1),
        vec![
            "instruction kind changed (RUN → COPY)",
            "chmod changed",
            "WORKDIR changed (/a → \"\")"
        ]
    );
}

#[test]
fn cause_reasons() {
    assert_eq!(MissCause::NoCache.reason(), "--no-cache");
    assert_eq!(MissCause::NoCacheFilter.reason(), "--no-cache-filter");
    assert_eq!(
        MissCause::NoPrevious.reason(),
        "no previous build of this step"
    );
    assert_eq!(
        MissCause::Changed(vec!["a".into(), "b".into()]).reason(),
        "a; b"
    );
    assert_eq!(
        MissCause::ParentChanged {
            first_cause: Some("[app 2/3] COPY . /: 1 file changed: x".into())
        }
        .reason(),
        "parent step changed; first cause: [app 2/3] COPY . /: 1 file changed: x"
    );
    assert_eq!(
        MissCause::ParentChanged { first_cause: None }.reason(),
        "parent step changed"
    );
    assert!(MissCause::RecordMissing.reason().contains("unchanged"));
    let kinds: BTreeSet<&str> = [
        MissCause::NoCache,
        MissCause::NoCacheFilter,
        MissCause::NoPrevious,
        MissCause::Changed(vec![]),
        MissCause::ParentChanged { first_cause: None },
        MissCause::RecordMissing,
    ]
    .iter()
    .map(MissCause::kind)
    .collect();
    assert_eq!(kinds.len(), 6);
}

/// Two "builds" of a FROM, a metadata step and a RUN through the explainer and a real store:
/// the first says "no previous build", the second names the first cause.
#[test]
fn explainer_tracks_first_cause_across_builds() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events: Mutex<Vec<(usize, MissCause)>> = Mutex::new(Vec::new());
    let progress = |e: ProgressEvent| {
        if let ProgressEvent::StepExplained { step, cause } = e {
            events.lock().unwrap().push((step.position, cause));
        }
    };
    let dockerfile = dir.path().join("Dockerfile");
    let explainer = Explainer {
        store: &store,
        progress: &progress,
        dockerfile: &dockerfile,
        stage: "app".into(),
    };
    let label = |position: usize, text: &str| StepLabel {
        stage: "app".into(),
        position,
        total: 3,
        text: text.into(),
    };
    let build = |label_value: &str, run_hit: bool| {
        let mut state = StageState::scratch(&Platform::new("linux", "amd64"));
        let mut metadata = KeyBuilder::new("WORKDIR", Some(&state.key));
        metadata.field("instruction", label_value);
        let (meta_key, meta_inputs) = metadata.finish_recorded();
        let l2 = label(2, "WORKDIR $V");
        if let Some(r) = explainer.step(
            &mut state,
            KeyedStep {
                label: &l2,
                slot: "2".into(),
                key: &meta_key,
                inputs: meta_inputs,
                outcome: if run_hit {
                    StepOutcome::Hit
                } else {
                    StepOutcome::Miss { forced: None }
                },
            },
        ) {
            r.save(&store).unwrap();
        }
        let mut run = KeyBuilder::new("RUN", Some(&meta_key));
        run.list("argv", ["make"]);
        let (run_key, run_inputs) = run.finish_recorded();
        let l3 = label(3, "RUN make");
        let pending = explainer.step(
            &mut state,
            KeyedStep {
                label: &l3,
                slot: "3".into(),
                key: &run_key,
                inputs: run_inputs,
                outcome: if run_hit {
                    StepOutcome::Hit
                } else {
                    StepOutcome::Miss { forced: None }
                },
            },
        );
        if let Some(r) = pending {
            r.save(&store).unwrap();
        }
    };
    build("x=1", false);
    assert_eq!(
        events.lock().unwrap().drain(..).collect::<Vec<_>>(),
        vec![(2, MissCause::NoPrevious), (3, MissCause::NoPrevious)]
    );
    build("x=1", true);
    assert!(events.lock().unwrap().is_empty());
    build("x=2", false);
    assert_eq!(
        events.lock().unwrap().drain(..).collect::<Vec<_>>(),
        vec![
            (
                2,
                MissCause::Changed(vec!["instruction changed (x=1 → x=2)".into()])
            ),
            (
                3,
                MissCause::ParentChanged {
                    first_cause: Some(
                        "[app 2/3] WORKDIR $V: instruction changed (x=1 → x=2)".into()
                    )
                }
            )
        ]
    );
    // Same inputs as the last build, but a miss: the cached result is gone.
    build("x=2", false);
    assert_eq!(
        events.lock().unwrap().drain(..).collect::<Vec<_>>(),
        vec![(2, MissCause::RecordMissing), (3, MissCause::RecordMissing)]
    );
}

/// The explain records of a store written before cache keys and diffIDs were types
/// (`testdata/stores/typed-ids`) read, and write back byte for byte.
#[test]
fn records_written_before_typed_ids_read_and_write_the_same_bytes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/stores/typed-ids/explain");
    let (mut steps, mut copied) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let again = if path.extension().is_some_and(|e| e == "copied") {
            copied += 1;
            let c: CopiedFiles = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(c.diff_id.hex().len(), 64);
            serde_json::to_vec(&c).unwrap()
        } else {
            steps += 1;
            let r: StepRecord = serde_json::from_slice(&bytes).unwrap();
            assert!(r.key.to_string().starts_with("sha256:"));
            serde_json::to_vec(&r).unwrap()
        };
        assert_eq!(
            String::from_utf8(again).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{}",
            path.display()
        );
    }
    assert_eq!((steps, copied), (3, 2));
}
