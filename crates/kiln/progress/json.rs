//! `--progress=rawjson`: one JSON object per line per event, for tools. The schema is in
//! `docs/progress.md`; [`event_json`] is its single definition.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use kiln_solve::{OutputStream, ProgressEvent, StepLabel};
use serde_json::{Value, json};

use super::{Outcome, Renderer};

/// Writes every event as a JSON line.
pub struct JsonRenderer<W: Write + Send> {
    out: Mutex<JsonState<W>>,
}

struct JsonState<W> {
    out: W,
    started: Instant,
    steps: usize,
    cached: usize,
}

impl<W: Write + Send> JsonRenderer<W> {
    pub fn new(out: W) -> Self {
        JsonRenderer {
            out: Mutex::new(JsonState {
                out,
                started: Instant::now(),
                steps: 0,
                cached: 0,
            }),
        }
    }

    fn write(state: &mut JsonState<W>, mut value: Value) {
        value["time"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let _ = writeln!(state.out, "{value}");
        let _ = state.out.flush();
    }

    /// The writer back, for tests.
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap().out
    }
}

impl<W: Write + Send> Renderer for JsonRenderer<W> {
    fn event(&self, event: ProgressEvent) {
        let mut state = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match &event {
            ProgressEvent::StepStarted(_) => state.steps += 1,
            ProgressEvent::StepCached(_) | ProgressEvent::StepCachedRemote { .. } => {
                state.steps += 1;
                state.cached += 1;
            }
            _ => {}
        }
        Self::write(&mut state, event_json(&event));
    }

    fn finish(&self, outcome: Outcome<'_>) {
        let mut state = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let duration_ms = state.started.elapsed().as_millis() as u64;
        let value = match outcome {
            Outcome::Built(id) => json!({
                "type": "build.done",
                "image": id,
                "steps": state.steps,
                "cached": state.cached,
                "duration_ms": duration_ms,
            }),
            Outcome::Failed(err) => json!({
                "type": "build.error",
                "message": format!("{err:#}"),
                "duration_ms": duration_ms,
            }),
        };
        Self::write(&mut state, value);
    }
}

fn step_json(step: &StepLabel) -> Value {
    json!({
        "stage": step.stage,
        "position": step.position,
        "total": step.total,
        "text": step.text,
    })
}

/// One event as its JSON object (without `time`, which the writer adds).
pub fn event_json(event: &ProgressEvent) -> Value {
    match event {
        ProgressEvent::StepStarted(step) => {
            json!({"type": "step.started", "step": step_json(step)})
        }
        ProgressEvent::StepCached(step) => json!({"type": "step.cached", "step": step_json(step)}),
        ProgressEvent::StepCachedRemote { step, source } => json!({
            "type": "step.cached",
            "step": step_json(step),
            "source": source,
        }),
        ProgressEvent::CacheImported { source, records } => json!({
            "type": "cache.imported",
            "source": source,
            "records": records,
        }),
        ProgressEvent::CacheExported {
            destination,
            records,
            layers,
            sent,
        } => json!({
            "type": "cache.exported",
            "destination": destination,
            "records": records,
            "layers": layers,
            "sent": sent,
        }),
        ProgressEvent::StepOutput { step, stream, line } => json!({
            "type": "step.output",
            "step": step_json(step),
            "stream": match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            },
            "line": line,
        }),
        ProgressEvent::StepMetadata(step) => {
            json!({"type": "step.metadata", "step": step_json(step)})
        }
        ProgressEvent::StepDone { step, elapsed } => json!({
            "type": "step.done",
            "step": step_json(step),
            "duration_ms": elapsed.as_millis() as u64,
        }),
        ProgressEvent::StepExplained { step, cause } => json!({
            "type": "step.explain",
            "step": step_json(step),
            "cause": cause.kind(),
            "reason": cause.reason(),
        }),
        ProgressEvent::LayerShared { step, from } => json!({
            "type": "step.layer_shared",
            "step": step_json(step),
            "from": step_json(from),
        }),
        ProgressEvent::SourcesHashed {
            step,
            from_context,
            stats,
        } => json!({
            "type": "sources.hashed",
            "step": step_json(step),
            "from_context": from_context,
            "entries": stats.entries,
            "files": stats.files,
            "files_read": stats.files_read,
            "bytes_read": stats.bytes_read,
        }),
        ProgressEvent::Pulling { reference } => {
            json!({"type": "pull.started", "reference": reference})
        }
        ProgressEvent::BlobFetched { digest, cached } => json!({
            "type": "pull.blob",
            "digest": digest.to_string(),
            "cached": cached,
        }),
        ProgressEvent::Warning(message) => json!({"type": "warning", "message": message}),
        ProgressEvent::ImageWritten { manifest, config } => json!({
            "type": "image.written",
            "manifest": manifest.to_string(),
            "config": config.to_string(),
        }),
        ProgressEvent::Tagged(name) => json!({"type": "image.tagged", "name": name}),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kiln_image::Digest;
    use kiln_solve::MissCause;

    use super::*;

    fn label() -> StepLabel {
        StepLabel {
            stage: "app".into(),
            position: 2,
            total: 3,
            text: "RUN make".into(),
        }
    }

    #[test]
    fn every_event_kind_has_its_schema() {
        let d = Digest::of(b"x");
        let cases = vec![
            (
                ProgressEvent::StepStarted(label()),
                json!({"type": "step.started", "step": {"stage": "app", "position": 2, "total": 3, "text": "RUN make"}}),
            ),
            (
                ProgressEvent::StepCached(label()),
                json!({"type": "step.cached", "step": step_json(&label())}),
            ),
            (
                ProgressEvent::LayerShared {
                    step: label(),
                    from: StepLabel {
                        stage: "linux/amd64 app".into(),
                        ..label()
                    },
                },
                json!({
                    "type": "step.layer_shared",
                    "step": step_json(&label()),
                    "from": {"stage": "linux/amd64 app", "position": 2, "total": 3, "text": "RUN make"},
                }),
            ),
            (
                ProgressEvent::StepCachedRemote {
                    step: label(),
                    source: "r.example/app:cache".into(),
                },
                json!({"type": "step.cached", "step": step_json(&label()), "source": "r.example/app:cache"}),
            ),
            (
                ProgressEvent::CacheImported {
                    source: "r.example/app:cache".into(),
                    records: 3,
                },
                json!({"type": "cache.imported", "source": "r.example/app:cache", "records": 3}),
            ),
            (
                ProgressEvent::CacheExported {
                    destination: "/tmp/c:latest".into(),
                    records: 3,
                    layers: 2,
                    sent: 1,
                },
                json!({"type": "cache.exported", "destination": "/tmp/c:latest", "records": 3, "layers": 2, "sent": 1}),
            ),
            (
                ProgressEvent::StepOutput {
                    step: label(),
                    stream: OutputStream::Stderr,
                    line: "hi".into(),
                },
                json!({"type": "step.output", "step": step_json(&label()), "stream": "stderr", "line": "hi"}),
            ),
            (
                ProgressEvent::StepDone {
                    step: label(),
                    elapsed: Duration::from_millis(1500),
                },
                json!({"type": "step.done", "step": step_json(&label()), "duration_ms": 1500}),
            ),
            (
                ProgressEvent::StepExplained {
                    step: label(),
                    cause: MissCause::Changed(vec!["build-arg V 1 → 2".into()]),
                },
                json!({"type": "step.explain", "step": step_json(&label()), "cause": "inputs-changed", "reason": "build-arg V 1 → 2"}),
            ),
            (
                ProgressEvent::Pulling {
                    reference: "busybox".into(),
                },
                json!({"type": "pull.started", "reference": "busybox"}),
            ),
            (
                ProgressEvent::BlobFetched {
                    digest: d.clone(),
                    cached: true,
                },
                json!({"type": "pull.blob", "digest": d.to_string(), "cached": true}),
            ),
            (
                ProgressEvent::Warning("w".into()),
                json!({"type": "warning", "message": "w"}),
            ),
            (
                ProgressEvent::ImageWritten {
                    manifest: d.clone(),
                    config: d.clone(),
                },
                json!({"type": "image.written", "manifest": d.to_string(), "config": d.to_string()}),
            ),
            (
                ProgressEvent::Tagged("app:latest".into()),
                json!({"type": "image.tagged", "name": "app:latest"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event_json(&event), expected);
        }
    }

    #[test]
    fn stream_is_one_object_per_line_with_a_summary() {
        let r = JsonRenderer::new(Vec::new());
        r.event(ProgressEvent::StepCached(label()));
        r.event(ProgressEvent::StepStarted(label()));
        r.event(ProgressEvent::StepOutput {
            step: label(),
            stream: OutputStream::Stdout,
            line: "a\nb".into(),
        });
        r.finish(Outcome::Built("sha256:abc"));
        let text = String::from_utf8(r.into_inner()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l["time"].is_string()));
        assert_eq!(lines[2]["line"], "a\nb");
        assert_eq!(lines[3]["type"], "build.done");
        assert_eq!(lines[3]["steps"], 2);
        assert_eq!(lines[3]["cached"], 1);
        assert_eq!(lines[3]["image"], "sha256:abc");
    }
}
