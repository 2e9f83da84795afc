use std::collections::BTreeMap;

use chrono::Timelike;
use kiln_image::Digest;

use super::*;

fn inputs() -> BuildInputs {
    BuildInputs {
        dockerfile: "/ctx/Dockerfile".into(),
        dockerfile_digest: Some(Digest::of(b"FROM scratch\n")),
        context: "/ctx".into(),
        build_args: BTreeMap::from([("A".into(), "1".into())]),
        target: Some("app".into()),
        platform: "linux/amd64".into(),
        tags: vec!["app:1".into()],
    }
}

fn step(index: usize) -> StepRecord {
    StepRecord {
        index,
        stage: "app".into(),
        position: index,
        total: 3,
        text: "RUN make".into(),
        status: StepStatus::Running,
        started: Some(Utc::now()),
        duration_ms: None,
        cache_source: None,
        miss_cause: None,
        miss_reason: None,
        output_lines: 0,
    }
}

#[test]
fn a_build_is_recorded_with_its_whole_log() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let w = store.history_begin(inputs()).unwrap();
    let id = w.id();
    let started = store.history_load(&id).unwrap().started;
    assert_eq!(
        started_of(&id),
        Some(
            started
                .with_nanosecond(started.nanosecond() / 1000 * 1000)
                .unwrap()
        )
    );
    assert_eq!(
        store.history_load(&id).unwrap().status,
        BuildStatus::Running
    );
    w.update(true, |r| r.steps.push(step(1))).unwrap();
    let long = "x".repeat(3 << 20);
    w.log_line(1, "stdout", &long).unwrap();
    w.log_line(1, "stderr", "second").unwrap();
    let done = w
        .finish(BuildStatus::Succeeded, Some("sha256:ab".into()), None)
        .unwrap();
    let loaded = store.history_load(&id).unwrap();
    assert_eq!(loaded, done);
    assert_eq!(loaded.inputs, inputs());
    let mut lines = Vec::new();
    store
        .history_logs(&id, Some(1), &mut |l| {
            lines.push(l);
            Ok(())
        })
        .unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].line.len(), 3 << 20, "nothing is cut");
    assert_eq!(lines[1].stream, "stderr");
    assert_eq!(store.history_find(&id[..14]).unwrap(), Some(id.clone()));
    assert!(store.history_remove(&id).unwrap());
    assert!(store.history_list().unwrap().is_empty());
}

#[test]
fn a_build_whose_process_died_reads_as_interrupted_and_a_torn_line_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let w = store.history_begin(inputs()).unwrap();
    let id = w.id();
    w.log_line(1, "stdout", "whole").unwrap();
    // A write cut short by a kill.
    w.log
        .lock()
        .unwrap()
        .write_all(b"{\"step\":1,\"str")
        .unwrap();
    // Removing a running build is refused.
    assert!(store.history_remove(&id).is_err());
    drop(w);
    assert_eq!(
        store.history_load(&id).unwrap().status,
        BuildStatus::Interrupted
    );
    let mut n = 0;
    store
        .history_logs(&id, None, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_record_written_by_schema_1_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/history/v1");
    let id = "26120718302700391218f015b1";
    let dir = store.history_root().join(id);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["record.json", "log", "lock"] {
        std::fs::copy(fixtures.join(id).join(file), dir.join(file)).unwrap();
    }
    let r = store.history_load(id).unwrap();
    assert_eq!(r.schema, 1);
    assert_eq!(r.status, BuildStatus::Failed);
    assert_eq!(r.inputs.build_args["GREETING"], "hi");
    assert_eq!(r.error.as_ref().unwrap().line, Some(5));
    let statuses: Vec<StepStatus> = r.steps.iter().map(|s| s.status).collect();
    use StepStatus::*;
    assert_eq!(statuses, [Done, Metadata, Metadata, Done, Failed]);
    assert_eq!(r.steps[3].miss_cause.as_deref(), Some("no-previous-build"));
    assert_eq!(r.duration(), Some(Duration::from_nanos(461_955_178)));
    assert_eq!(started_of(id).unwrap().timestamp(), r.started.timestamp());
    let mut lines = Vec::new();
    store
        .history_logs(id, Some(4), &mut |l| {
            lines.push((l.stream, l.line));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        lines,
        [
            ("stdout".to_owned(), "hi from the fixture".to_owned()),
            ("stderr".to_owned(), "to stderr".to_owned())
        ]
    );
}

#[test]
fn retention_keeps_the_newest_builds_within_the_age() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let w = store.history_begin(inputs()).unwrap();
        ids.push(w.id());
        w.finish(BuildStatus::Failed, None, None).unwrap();
    }
    let running = store.history_begin(inputs()).unwrap();
    let keep_two = HistoryRetention {
        max_builds: 2,
        max_age: Duration::from_secs(3600),
    };
    // The running build counts among the newest two.
    let (mut removed, bytes) = store.history_prune(keep_two, Utc::now()).unwrap();
    removed.sort();
    let mut oldest = ids[..3].to_vec();
    oldest.sort();
    assert_eq!(removed, oldest);
    assert!(bytes > 0);
    // Past the age, only the running build is left: it is kept whatever the rule says.
    let later = Utc::now() + chrono::Duration::hours(2);
    let (removed, _) = store.history_prune(keep_two, later).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    let left: Vec<String> = store
        .history_list()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![running.id()]);
}

#[test]
fn ages_in_go_syntax_with_days() {
    assert_eq!(parse_age("48h"), Some(Duration::from_secs(48 * 3600)));
    assert_eq!(parse_age("7d"), Some(Duration::from_secs(7 * 86400)));
    assert_eq!(parse_age("1h30m"), Some(Duration::from_secs(5400)));
    for bad in ["", "h", "5", "3w", "1.5h", "-1h"] {
        assert_eq!(parse_age(bad), None, "{bad}");
    }
}
