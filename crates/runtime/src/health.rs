//! HEALTHCHECK probes. The supervisor runs them for every container that has a check, detached
//! or not (a foreground `kiln run` is supervised too), so `inspect` shows Docker's health for
//! both. A probe is a process in the container, started as `exec` starts one.

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_image::HealthConfig;
use kiln_sandbox::{ProcessSpec, SecurityOptions};
use kiln_store::{ContainerRecord, Health, HealthProbe, HealthStatus, Store};

/// Docker's defaults for durations left at zero.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Probe results kept in the record, as Docker keeps five.
const KEPT_PROBES: usize = 5;
/// Output kept per probe (Docker keeps 4 KiB).
const MAX_PROBE_OUTPUT: usize = 4096;

/// The image's check, unless it has none or says `NONE`.
pub fn healthcheck(config: &Option<HealthConfig>) -> Option<HealthConfig> {
    config
        .clone()
        .filter(|h| !h.test.is_empty() && h.test[0] != "NONE")
}

fn nanos_or(n: i64, default: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        default
    }
}

/// Runs the check every interval (every start interval during the start period) until
/// `exited` is set.
pub fn run_health_checks(
    store: &Store,
    record: &ContainerRecord,
    check: &HealthConfig,
    pid: u32,
    security: &SecurityOptions,
    exited: &AtomicBool,
) {
    let interval = nanos_or(check.interval, DEFAULT_INTERVAL);
    let timeout = nanos_or(check.timeout, DEFAULT_TIMEOUT);
    let start_period = nanos_or(check.start_period, Duration::ZERO);
    let start_interval = nanos_or(check.start_interval, DEFAULT_START_INTERVAL);
    let retries = if check.retries > 0 {
        check.retries as u32
    } else {
        DEFAULT_RETRIES
    };
    let args = match check.test[0].as_str() {
        "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), check.test[1..].join(" ")],
        "CMD" => check.test[1..].to_vec(),
        _ => check.test.clone(),
    };
    let process = ProcessSpec {
        args,
        env: record.config.env.clone(),
        cwd: Some(record.config.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: Some(record.config.user.clone()).filter(|u| !u.is_empty()),
        terminal: false,
    };
    let began = Instant::now();
    loop {
        let in_start_period = began.elapsed() < start_period;
        let wait = if in_start_period {
            start_interval
        } else {
            interval
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if exited.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
        let start = chrono::Utc::now();
        let (exit_code, output) = probe(pid, &process, security, timeout);
        if exited.load(Ordering::SeqCst) {
            return;
        }
        let result = HealthProbe {
            start,
            end: chrono::Utc::now(),
            exit_code,
            output,
        };
        let _ = store.update_container(&record.id, |r| {
            let health = r.state.health.get_or_insert_with(Health::default);
            apply_probe(health, result.clone(), in_start_period, retries);
        });
    }
}

/// Docker's rules: a success makes the container healthy and resets the streak; a failure
/// adds to the streak, except during the start period, and `retries` failures in a row make
/// it unhealthy. The last five results are kept.
pub fn apply_probe(health: &mut Health, result: HealthProbe, in_start_period: bool, retries: u32) {
    let passed = result.exit_code == 0;
    health.log.push(result);
    if health.log.len() > KEPT_PROBES {
        health.log.remove(0);
    }
    if passed {
        health.status = HealthStatus::Healthy;
        health.failing_streak = 0;
    } else if !in_start_period {
        health.failing_streak += 1;
        if health.failing_streak >= retries {
            health.status = HealthStatus::Unhealthy;
        }
    }
}

/// One probe: its exit code and output, or -1 with a timeout message.
fn probe(
    pid: u32,
    process: &ProcessSpec,
    security: &SecurityOptions,
    timeout: Duration,
) -> (i32, String) {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return (-1, format!("pipe: {e}")),
    };
    let stdio = kiln_sandbox::Stdio {
        stdin: Stdio::null(),
        stdout: match writer.try_clone() {
            Ok(w) => w.into(),
            Err(e) => return (-1, format!("pipe: {e}")),
        },
        stderr: writer.into(),
    };
    let mut child = match kiln_sandbox::spawn_in(pid, process, security, stdio) {
        Ok(c) => c,
        Err(e) => return (-1, e.to_string()),
    };
    let output = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.take(MAX_PROBE_OUTPUT as u64).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(code)) => return (code.code(), output.join().unwrap_or_default()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // Killing the helper kills the probe (its parent-death signal).
                let _ = child.kill();
                let _ = child.wait();
                return (
                    -1,
                    format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64()),
                );
            }
            Err(e) => return (-1, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_result(exit_code: i32) -> HealthProbe {
        HealthProbe {
            start: chrono::Utc::now(),
            end: chrono::Utc::now(),
            exit_code,
            output: String::new(),
        }
    }

    #[test]
    fn health_follows_dockers_rules() {
        let mut h = Health::default();
        // Failures in the start period do not count.
        for _ in 0..4 {
            apply_probe(&mut h, probe_result(1), true, 2);
        }
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        apply_probe(&mut h, probe_result(1), false, 2);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        apply_probe(&mut h, probe_result(1), false, 2);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 2));
        apply_probe(&mut h, probe_result(0), false, 2);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        assert_eq!(h.log.len(), KEPT_PROBES);
        assert_eq!(h.log.last().unwrap().exit_code, 0);
        // A success during the start period counts at once.
        let mut early = Health::default();
        apply_probe(&mut early, probe_result(0), true, 3);
        assert_eq!(early.status, HealthStatus::Healthy);
    }

    #[test]
    fn check_forms() {
        let check = |test: &[&str]| {
            healthcheck(&Some(HealthConfig {
                test: test.iter().map(|s| s.to_string()).collect(),
                ..HealthConfig::default()
            }))
        };
        assert!(check(&["NONE"]).is_none());
        assert!(check(&[]).is_none());
        assert!(check(&["CMD", "true"]).is_some());
        assert!(healthcheck(&None).is_none());
    }
}
