//! `GET /events`: what the daemon did, as dockerd reports it.
//!
//! The daemon records an event for each image operation it performs (pull, push, tag, untag,
//! delete, load, a build's tags) in a bounded in-memory history and broadcasts it to every open
//! `/events` stream. Decision: events are the daemon's own, not read back from the store, so
//! an image changed by a `kiln` CLI process beside the daemon produces none (dockerd has the
//! same property for anything that bypasses it). `since` replays from the history; `until`
//! ends the stream (at once when it is in the past).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::query::{Filters, Query};

/// Events kept for `since` (dockerd keeps 256 in memory).
const HISTORY: usize = 256;

/// One event, in dockerd's shape: `Type`, `Action`, `Actor{ID, Attributes}`, `scope`, `time`,
/// `timeNano`, plus the legacy `status`/`id`/`from` that compose still reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub action: &'static str,
    pub id: String,
    pub attributes: serde_json::Map<String, Value>,
    pub time_nano: i64,
}

impl Event {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        // The legacy fields are set only for container and image events, as by dockerd.
        v["status"] = json!(self.action);
        v["id"] = json!(self.id);
        if let Some(name) = self.attributes.get("name") {
            v["from"] = name.clone();
        }
        v
    }

    fn matches(&self, filters: &Filters) -> bool {
        let any = |name: &str, test: &dyn Fn(&str) -> bool| {
            let values = filters.get(name);
            values.is_empty() || values.iter().any(|v| test(v))
        };
        // A filter on another kind of object (container, volume, network) keeps only events
        // about such objects.
        let other_kinds = ["container", "volume", "network"]
            .iter()
            .all(|k| *k == self.kind || filters.get(k).is_empty());
        other_kinds
            && any("type", &|v| v == self.kind)
            && any("event", &|v| v == self.action)
            && any("image", &|v| {
                self.id == v
                    || self
                        .id
                        .strip_prefix("sha256:")
                        .is_some_and(|h| h.starts_with(v))
                    || self.attributes.get("name").and_then(Value::as_str) == Some(v)
            })
            && any("label", &|v| {
                let (key, value) = v.split_once('=').unwrap_or((v, ""));
                match self.attributes.get(key).and_then(Value::as_str) {
                    Some(have) => value.is_empty() || have == value,
                    None => false,
                }
            })
    }
}

/// The daemon's event history and live feed.
#[derive(Debug)]
pub struct EventBus {
    history: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(1024).0,
        }
    }
}

impl EventBus {
    /// Records an image event: `id` is the image ID or name as dockerd gives it, `name` the
    /// image name attribute when there is one.
    pub fn image(&self, action: &'static str, id: &str, name: Option<&str>) {
        let mut attributes = serde_json::Map::new();
        if let Some(name) = name {
            attributes.insert("name".into(), json!(name));
        }
        self.publish(Event {
            kind: "image",
            action,
            id: id.to_owned(),
            attributes,
            time_nano: now_nano(),
        });
    }

    pub fn publish(&self, event: Event) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent under the lock, so a subscriber that read the history under it misses nothing
        // and sees nothing twice.
        let _ = self.live.send(event);
    }

    /// Past events from `since` on, and the live feed from the same moment.
    fn subscribe(&self, since: Option<i64>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let past = match since {
            Some(since) => history
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, self.live.subscribe())
    }
}

pub(crate) fn now_nano() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A `since`/`until` value: Unix seconds with an optional fraction (`1700000000.5`), as the
/// clients send them, in nanoseconds.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid value for {name}: {value:?}"));
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    secs.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(bad)
}

/// What `/events` was asked for.
#[derive(Debug)]
pub struct EventsRequest {
    since: Option<i64>,
    until: Option<i64>,
    filters: Filters,
}

impl EventsRequest {
    pub fn parse(query: &Query) -> Result<EventsRequest, ApiError> {
        let time = |name| match query.get(name).filter(|v| !v.is_empty()) {
            Some(v) => parse_time(name, v).map(Some),
            None => Ok(None),
        };
        let filters = query.filters()?;
        filters.only(&[
            "type",
            "event",
            "image",
            "label",
            "container",
            "volume",
            "network",
        ])?;
        Ok(EventsRequest {
            since: time("since")?,
            until: time("until")?,
            filters,
        })
    }

    /// Streams the events asked for into `out` until `until` passes or `stop` fires.
    pub async fn run(
        self,
        bus: &EventBus,
        out: &crate::stream::Emitter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        let (past, mut live) = bus.subscribe(self.since);
        let until = self.until;
        let in_range = |e: &Event| until.is_none_or(|u| e.time_nano <= u);
        for e in past.iter().filter(|e| in_range(e)) {
            if e.matches(&self.filters) {
                out.send(&e.to_json());
            }
        }
        let deadline = until.map(|u| {
            let wait = (u - now_nano()).max(0) as u64;
            tokio::time::Instant::now() + std::time::Duration::from_nanos(wait)
        });
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => return,
                _ = stop.changed() => return,
                event = live.recv() => match event {
                    Ok(e) if in_range(&e) && e.matches(&self.filters) => out.send(&e.to_json()),
                    Ok(_) => {}
                    // A slow reader missed some; dockerd drops them too.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_the_clients_send_them() {
        assert_eq!(parse_time("since", "12").unwrap(), 12_000_000_000);
        assert_eq!(parse_time("since", "12.5").unwrap(), 12_500_000_000);
        assert!(parse_time("since", "x").is_err());
        assert!(parse_time("since", "1.2.3").is_err());
    }

    #[test]
    fn history_replays_from_since_and_filters_apply() {
        let bus = EventBus::default();
        bus.image("tag", "sha256:abcd", Some("a:1"));
        bus.image("delete", "sha256:ef01", None);
        let (past, _) = bus.subscribe(Some(0));
        assert_eq!(past.len(), 2);
        let filters = Filters::parse(Some(r#"{"event":["tag"]}"#)).unwrap();
        assert!(past[0].matches(&filters));
        assert!(!past[1].matches(&filters));
        let by_image = Filters::parse(Some(r#"{"image":["a:1"]}"#)).unwrap();
        assert!(past[0].matches(&by_image));
        let by_container = Filters::parse(Some(r#"{"container":["web"]}"#)).unwrap();
        assert!(!past[0].matches(&by_container));
        let json = past[0].to_json();
        assert_eq!(json["Type"], "image");
        assert_eq!(json["status"], "tag");
        assert_eq!(json["Actor"]["Attributes"]["name"], "a:1");
        let (none, _) = bus.subscribe(None);
        assert!(none.is_empty());
    }
}
