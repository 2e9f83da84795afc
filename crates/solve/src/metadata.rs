//! Instructions that only change the image config (ENV, LABEL, EXPOSE, HEALTHCHECK, …): how
//! each one updates the config, how its arguments are validated, and the history text
//! recorded for it, which follows BuildKit's wording so `docker history` reads the same.

use std::collections::BTreeMap;

use kiln_dockerfile::{Command, Healthcheck, HealthcheckOptions, Instruction, ShellOrExec};
use kiln_image::{ContainerConfig, HealthConfig};

use crate::error::Result;
use crate::stage::{StageBuilder, StageState};

impl StageBuilder<'_> {
    /// Applies a metadata instruction (already expanded) to the stage's config and records its
    /// history entry (no layer).
    pub(crate) fn apply_metadata(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        command: &Command,
    ) -> Result<()> {
        let fail = |message: String| self.fail(ins, message);
        let cfg = &mut state.config.config;
        let shown: String = match command {
            Command::Env(pairs) => {
                for (k, v) in pairs {
                    cfg.env_set(k, v);
                }
                format!("ENV {}", key_values(pairs))
            }
            Command::Label(pairs) => {
                for (k, v) in pairs {
                    if k.is_empty() {
                        return Err(fail("LABEL names can not be blank".into()));
                    }
                    cfg.labels.insert(k.clone(), v.clone());
                }
                format!("LABEL {}", key_values(pairs))
            }
            Command::Maintainer(m) => {
                // Docker records MAINTAINER as the image author, not as a label.
                state.config.author = Some(m.clone());
                format!("MAINTAINER {m}")
            }
            Command::User(u) => {
                if u.is_empty() {
                    return Err(fail("USER requires a user name or uid".into()));
                }
                cfg.user = Some(u.clone());
                format!("USER {u}")
            }
            Command::Expose(ports) => {
                let mut added = BTreeMap::new();
                for word in ports {
                    for port in expand_port_spec(word).map_err(fail)? {
                        added.insert(port, ());
                    }
                }
                // BuildKit prints Go's rendering of this instruction's port set.
                let shown: Vec<String> = added.keys().map(|p| format!("{p}:{{}}")).collect();
                cfg.exposed_ports.extend(added);
                format!("EXPOSE map[{}]", shown.join(" "))
            }
            Command::Volume(vols) => {
                for v in vols {
                    if v.trim().is_empty() {
                        return Err(fail("VOLUME specified can not be an empty string".into()));
                    }
                    cfg.volumes.insert(v.clone(), ());
                }
                format!("VOLUME [{}]", vols.join(" "))
            }
            Command::StopSignal(s) => {
                check_signal(s).map_err(fail)?;
                cfg.stop_signal = Some(s.clone());
                format!("STOPSIGNAL {s}")
            }
            Command::Shell(argv) => {
                if argv.is_empty() {
                    return Err(fail("SHELL requires a non-empty JSON array".into()));
                }
                cfg.shell = argv.clone();
                format!("SHELL [{}]", argv.join(" "))
            }
            Command::Cmd(c) => {
                let argv = config_argv(cfg, c);
                cfg.cmd = Some(argv.clone());
                state.cmd_set = true;
                format!("CMD {}", go_quoted_list(&argv))
            }
            Command::Entrypoint(c) => {
                let argv = config_argv(cfg, c);
                cfg.entrypoint = Some(argv.clone());
                // ENTRYPOINT resets a CMD inherited from the base, never one set in this stage.
                if !state.cmd_set {
                    cfg.cmd = None;
                }
                format!("ENTRYPOINT {}", go_quoted_list(&argv))
            }
            Command::Healthcheck(check) => {
                let health = health_config(check).map_err(fail)?;
                let shown = format!("HEALTHCHECK {}", go_quoted_list(&health.test));
                cfg.healthcheck = Some(health);
                shown
            }
            Command::Onbuild(trigger) => {
                cfg.on_build.push(trigger.clone());
                format!("ONBUILD {trigger}")
            }
            other => {
                return Err(fail(format!(
                    "{} is not a metadata instruction ({other:?})",
                    ins.keyword
                )));
            }
        };
        state.metadata_step(&shown);
        Ok(())
    }
}

fn key_values(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `["a" "b"]`: how BuildKit's history shows a command (Go's `%q` of a string slice).
pub(crate) fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// Shell form of CMD/ENTRYPOINT goes through the stage's SHELL, as Docker records it.
fn config_argv(cfg: &ContainerConfig, c: &ShellOrExec) -> Vec<String> {
    match c {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut v = shell_of(cfg);
            v.push(s.clone());
            v
        }
    }
}

/// The shell for shell-form commands: `SHELL`, else `/bin/sh -c`.
pub(crate) fn shell_of(cfg: &ContainerConfig) -> Vec<String> {
    if cfg.shell.is_empty() {
        vec!["/bin/sh".into(), "-c".into()]
    } else {
        cfg.shell.clone()
    }
}

/// The `Healthcheck` a HEALTHCHECK instruction gives. Options left out inherit nothing: like
/// Docker, each HEALTHCHECK replaces the whole check.
fn health_config(check: &Healthcheck) -> std::result::Result<HealthConfig, String> {
    let (test, options) = match check {
        Healthcheck::None => {
            return Ok(HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            });
        }
        Healthcheck::Cmd { test, options } => (test, options),
    };
    let test = match test {
        ShellOrExec::Shell(command) => vec!["CMD-SHELL".to_string(), command.clone()],
        ShellOrExec::Exec(argv) => std::iter::once("CMD".to_string())
            .chain(argv.iter().cloned())
            .collect(),
    };
    let HealthcheckOptions {
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    } = options;
    let duration = |flag: &str, value: &Option<String>| -> std::result::Result<i64, String> {
        let Some(text) = value else { return Ok(0) };
        let ns = parse_go_duration(text).map_err(|e| format!("--{flag}={text}: {e}"))?;
        // Docker's rule: zero means "default"; anything else must be at least 1ms.
        if ns != 0 && ns < 1_000_000 {
            return Err(format!("--{flag} cannot be less than 1ms (got {text})"));
        }
        Ok(ns)
    };
    let retries = match retries {
        None => 0,
        Some(text) => {
            let n: i64 = text
                .parse()
                .map_err(|_| format!("--retries={text}: not an integer"))?;
            if n < 0 {
                return Err("--retries cannot be negative".into());
            }
            n
        }
    };
    Ok(HealthConfig {
        test,
        interval: duration("interval", interval)?,
        timeout: duration("timeout", timeout)?,
        start_period: duration("start-period", start_period)?,
        start_interval: duration("start-interval", start_interval)?,
        retries,
    })
}

/// Parses a Go `time.Duration` string (`300ms`, `1.5h`, `2h45m`, `0`) into nanoseconds.
pub(crate) fn parse_go_duration(text: &str) -> std::result::Result<i64, String> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("invalid duration".into());
    }
    let units: [(&str, f64); 8] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("μs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err("invalid duration".into());
        }
        let value: f64 = number.parse().map_err(|_| "invalid duration".to_string())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let Some((_, scale)) = units.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                "missing unit in duration".into()
            } else {
                format!("unknown unit {unit:?} in duration")
            });
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err("duration out of range".into());
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

/// Expands one EXPOSE word to `port/proto` keys: `80`, `80/tcp`, `53/UDP`, `8000-8002`
/// (each port of the range), as Docker's port-spec parser does.
pub(crate) fn expand_port_spec(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto {proto:?} in EXPOSE {word}"));
    }
    let port = |text: &str| -> std::result::Result<u16, String> {
        text.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {text}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Signals STOPSIGNAL accepts: a number or a Linux signal name, with or without `SIG`.
fn check_signal(signal: &str) -> std::result::Result<(), String> {
    const NAMES: [&str; 34] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
    ];
    if let Ok(n) = signal.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(format!("invalid signal: {signal}"))
        };
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
        .is_some_and(|r| r.is_empty() || r.trim_start_matches(['+', '-']).parse::<u8>().is_ok());
    if NAMES.contains(&name) || name == "XFSZ" || realtime {
        Ok(())
    } else {
        Err(format!("invalid signal: {signal}"))
    }
}

/// History text of a RUN as BuildKit writes it: the ARGs in scope (`|N K=V …`) before the
/// command, so two builds with different ARG values are told apart.
pub(crate) fn run_history(args: &BTreeMap<String, String>, argv: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !args.is_empty() {
        words.push(format!("|{}", args.len()));
        words.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(argv.iter().cloned());
    format!("RUN {} # buildkit", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("2us"), Ok(2_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("5d").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn port_specs() {
        assert_eq!(expand_port_spec("80").unwrap(), ["80/tcp"]);
        assert_eq!(expand_port_spec("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expand_port_spec("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(expand_port_spec("7-8/udp").unwrap(), ["7/udp", "8/udp"]);
        assert!(expand_port_spec("http").is_err());
        assert!(expand_port_spec("9-8").is_err());
        assert!(expand_port_spec("80/icmp").is_err());
        assert!(expand_port_spec("70000").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "SIGUSR1"] {
            assert!(check_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["SIGNOPE", "0", "100", "RTMIN+x"] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn healthcheck_forms() {
        let h = health_config(&Healthcheck::Cmd {
            test: ShellOrExec::Shell("curl -f http://x/".into()),
            options: HealthcheckOptions {
                interval: Some("30s".into()),
                timeout: Some("5s".into()),
                start_period: Some("1m".into()),
                start_interval: Some("2s".into()),
                retries: Some("4".into()),
            },
        })
        .unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "curl -f http://x/"]);
        assert_eq!(
            (
                h.interval,
                h.timeout,
                h.start_period,
                h.start_interval,
                h.retries
            ),
            (30e9 as i64, 5e9 as i64, 60e9 as i64, 2e9 as i64, 4)
        );
        let exec = Healthcheck::Cmd {
            test: ShellOrExec::Exec(vec!["/bin/check".into(), "-q".into()]),
            options: HealthcheckOptions::default(),
        };
        assert_eq!(
            health_config(&exec).unwrap().test,
            ["CMD", "/bin/check", "-q"]
        );
        assert_eq!(health_config(&Healthcheck::None).unwrap().test, ["NONE"]);
        let too_short = Healthcheck::Cmd {
            test: ShellOrExec::Shell("x".into()),
            options: HealthcheckOptions {
                interval: Some("10us".into()),
                ..HealthcheckOptions::default()
            },
        };
        assert!(health_config(&too_short).is_err());
        let negative = Healthcheck::Cmd {
            test: ShellOrExec::Shell("x".into()),
            options: HealthcheckOptions {
                retries: Some("-1".into()),
                ..HealthcheckOptions::default()
            },
        };
        assert!(health_config(&negative).is_err());
    }

    #[test]
    fn run_history_lists_args_like_buildkit() {
        let args = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let argv = ["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(
            run_history(&args, &argv),
            "RUN |1 A=1 /bin/sh -c echo hi # buildkit"
        );
        assert_eq!(
            run_history(&BTreeMap::new(), &argv),
            "RUN /bin/sh -c echo hi # buildkit"
        );
    }
}
