//! Carrying out a container's `RestartPolicy` the way dockerd's restart manager does: which
//! exits restart the process, after how long, and the `--restart` flag's text form.
//!
//! The decision is made by the container's supervisor (which keeps the running lock across
//! runs, so the container reads as running, `restarting` between runs), never by a daemon: a
//! CLI-started container restarts as well as one `kiln serve` started. The facts follow moby's
//! `restartmanager`: the delay starts at 100 ms and doubles after each restart up to one
//! minute, and goes back to 100 ms once a run lasted 10 s or more; `on-failure:N` counts the
//! restarts since the last start by a user (`RestartCount` in inspect counts them all); a
//! user's stop or kill ends the restarting until the next start.

use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::spec::RestartPolicy;

/// The first delay, and the one after a run that lasted [`RESET_AFTER`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The delay never grows past this.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay.
const RESET_AFTER: Duration = Duration::from_secs(10);

impl RestartPolicy {
    /// The `--restart` flag: `no`, `always`, `unless-stopped`, `on-failure` or
    /// `on-failure:N`, checked as [`RestartPolicy::check`] does.
    pub fn parse_flag(flag: &str) -> Result<RestartPolicy> {
        let (name, count) = match flag.split_once(':') {
            Some((name, count)) => {
                let count = count.parse::<i64>().map_err(|_| RuntimeError::Invalid {
                    what: "restart policy",
                    value: flag.to_owned(),
                    reason: "the maximum retry count after ':' must be a number",
                })?;
                (name, count)
            }
            None => (flag, 0),
        };
        let policy = RestartPolicy {
            name: name.to_owned(),
            maximum_retry_count: count,
        };
        policy.check()?;
        Ok(policy)
    }

    /// Whether the policy restarts anything at all.
    pub fn restarts(&self) -> bool {
        !matches!(self.name.as_str(), "" | "no")
    }

    /// Whether a run that ended with `exit_code` is followed by another. `restarts`: the
    /// restarts since the user's last start; `manually_stopped`: the user stopped or killed
    /// it (no policy restarts that; `unless-stopped` differs from `always` only at a daemon's
    /// start, [`RestartPolicy::restarts_at_boot`]).
    pub fn restarts_after(&self, exit_code: i32, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                let max = self.maximum_retry_count;
                exit_code != 0 && (max == 0 || i64::from(restarts) < max)
            }
            _ => false,
        }
    }

    /// Whether a daemon starting up (`kiln serve`) starts a stopped container with this
    /// policy, as dockerd does: `always` in any case, `unless-stopped` unless a user stopped
    /// it, `on-failure` when it failed (its count begins anew).
    pub fn restarts_at_boot(&self, exit_code: i32, manually_stopped: bool) -> bool {
        match self.name.as_str() {
            "always" => true,
            "unless-stopped" => !manually_stopped,
            "on-failure" => exit_code != 0,
            _ => false,
        }
    }
}

/// The delay before each restart of one supervisor's container.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    /// The delay before the restart that follows a run of length `ran`.
    pub(crate) fn next(&mut self, ran: Duration) -> Duration {
        if ran >= RESET_AFTER {
            self.current = None;
        }
        let delay = match self.current {
            None => FIRST_DELAY,
            Some(d) => (d * 2).min(MAX_DELAY),
        };
        self.current = Some(delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(flag: &str) -> RestartPolicy {
        RestartPolicy::parse_flag(flag).unwrap()
    }

    #[test]
    fn flags_parse_as_the_docker_cli_reads_them() {
        assert!(!policy("no").restarts());
        assert_eq!(policy("on-failure:3").maximum_retry_count, 3);
        assert_eq!(policy("on-failure").maximum_retry_count, 0);
        assert_eq!(policy("unless-stopped").name, "unless-stopped");
        for bad in ["sometimes", "always:2", "on-failure:x", "on-failure:-1", ""] {
            if bad.is_empty() {
                // The empty name is `no`, as dockerd reads it.
                assert!(!policy(bad).restarts());
                continue;
            }
            let e = RestartPolicy::parse_flag(bad).unwrap_err();
            assert!(e.to_string().contains("restart policy"), "{bad}: {e}");
        }
    }

    #[test]
    fn exits_restart_as_the_policy_says() {
        assert!(!policy("no").restarts_after(1, 0, false));
        assert!(policy("always").restarts_after(0, 7, false));
        assert!(policy("unless-stopped").restarts_after(0, 0, false));
        // A user's stop ends every policy's restarting.
        assert!(!policy("always").restarts_after(137, 0, true));
        assert!(!policy("unless-stopped").restarts_after(0, 0, true));
        let twice = policy("on-failure:2");
        assert!(!twice.restarts_after(0, 0, false));
        assert!(twice.restarts_after(1, 0, false));
        assert!(twice.restarts_after(1, 1, false));
        assert!(!twice.restarts_after(1, 2, false));
        assert!(policy("on-failure").restarts_after(3, 1000, false));
    }

    #[test]
    fn boot_restarts_follow_dockerd() {
        assert!(policy("always").restarts_at_boot(0, true));
        assert!(policy("unless-stopped").restarts_at_boot(0, false));
        assert!(!policy("unless-stopped").restarts_at_boot(137, true));
        assert!(policy("on-failure:1").restarts_at_boot(2, false));
        assert!(!policy("on-failure:1").restarts_at_boot(0, false));
        assert!(!policy("no").restarts_at_boot(1, false));
    }

    #[test]
    fn the_delay_doubles_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(5);
        let delays: Vec<_> = (0..4).map(|_| b.next(short)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        assert_eq!(b.next(Duration::from_secs(10)), FIRST_DELAY);
        for _ in 0..20 {
            b.next(short);
        }
        assert_eq!(b.next(short), MAX_DELAY);
    }
}
