//! The `Status` text Docker shows for a container (`docker ps`, `containers/json`): `Created`,
//! `Up 3 minutes (healthy)`, `Exited (0) 2 seconds ago`. One implementation for the CLI and the
//! API, since clients and people compare the two.

use kiln_store::{ContainerRecord, ContainerStatus, HealthStatus, Timestamp};

/// The container's `Status` text at `now`.
pub fn status_text(c: &ContainerRecord, now: Timestamp) -> String {
    match c.state.status {
        ContainerStatus::Created => "Created".into(),
        // Docker's text between two runs of a restart policy.
        ContainerStatus::Running if c.state.restarting => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            human_since(c.state.finished_at, now)
        ),
        ContainerStatus::Running if c.state.paused => {
            format!("Up {} (Paused)", human_since(c.state.started_at, now))
        }
        ContainerStatus::Running => {
            let health = match &c.state.health {
                Some(h) if h.status == HealthStatus::Starting => " (health: starting)".to_owned(),
                Some(h) => format!(" ({})", h.status.as_str()),
                None => String::new(),
            };
            format!("Up {}{health}", human_since(c.state.started_at, now))
        }
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            human_since(c.state.finished_at, now)
        ),
    }
}

/// The time from `since` to `now` the way Docker writes it (go-units' `HumanDuration`):
/// `Less than a second`, `5 seconds`, `About a minute`, `3 hours`, `2 weeks`, … An unknown
/// time reads as the shortest.
pub fn human_since(since: Option<Timestamp>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "Less than a second".into();
    };
    let secs = (now - since).num_seconds().max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..60 => format!("{secs} seconds"),
        60..120 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours < 2 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 14 => format!("{} days", hours / 24),
        _ if hours < 24 * 60 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_writes_them() {
        let now = chrono::Utc::now();
        let ago = |secs: i64| Some(now - chrono::Duration::seconds(secs));
        assert_eq!(human_since(None, now), "Less than a second");
        assert_eq!(human_since(ago(0), now), "Less than a second");
        assert_eq!(human_since(ago(1), now), "1 second");
        assert_eq!(human_since(ago(5), now), "5 seconds");
        assert_eq!(human_since(ago(90), now), "About a minute");
        assert_eq!(human_since(ago(600), now), "10 minutes");
        assert_eq!(human_since(ago(3600 + 5), now), "About an hour");
        assert_eq!(human_since(ago(7200 + 5), now), "2 hours");
        assert_eq!(human_since(ago(3 * 86_400), now), "3 days");
        assert_eq!(human_since(ago(21 * 86_400), now), "3 weeks");
        assert_eq!(human_since(ago(90 * 86_400), now), "3 months");
        assert_eq!(human_since(ago(800 * 86_400), now), "2 years");
        // A clock that went backwards is no negative duration.
        assert_eq!(human_since(ago(-30), now), "Less than a second");
    }
}
