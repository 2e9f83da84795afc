//! `docker top`'s table: `ps` output formats (`-ef`, `aux`, `-o FIELDS`) rendered from the
//! container's processes as `/proc` describes them, with procps' column titles and time
//! formats, so `docker top` reads as it does with dockerd on a Debian host.

use std::collections::BTreeMap;

use super::{ProcessInfo, TICKS, Top, field};
use crate::error::{Result, RuntimeError};

/// What `top` needs to turn ticks into times.
pub(super) struct BootContext {
    /// Boot time, Unix seconds.
    boot: i64,
    now: i64,
    /// uid → name, from the host's `/etc/passwd` (as the host's `ps` shows them).
    users: BTreeMap<u32, String>,
    memory_total: u64,
}

pub(super) fn boot_context() -> BootContext {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let boot = field(&stat, "btime ") as i64;
    let users = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect();
    BootContext {
        boot,
        now: chrono::Utc::now().timestamp(),
        users,
        memory_total: field(
            &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            "MemTotal:",
        ) * 1024,
    }
}

/// A `ps` output format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PsFormat {
    /// `-ef`: UID PID PPID C STIME TTY TIME CMD.
    Full,
    /// `aux`: USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND.
    User,
    /// `-o a,b,c`.
    Fields(Vec<String>),
}

/// The fields `-o` knows, with their titles.
const FIELDS: [(&str, &str); 14] = [
    ("pid", "PID"),
    ("ppid", "PPID"),
    ("uid", "UID"),
    ("user", "USER"),
    ("comm", "COMMAND"),
    ("args", "COMMAND"),
    ("cmd", "CMD"),
    ("command", "COMMAND"),
    ("time", "TIME"),
    ("etime", "ELAPSED"),
    ("stat", "STAT"),
    ("rss", "RSS"),
    ("vsz", "VSZ"),
    ("tty", "TT"),
];

impl PsFormat {
    pub(super) fn parse(args: &str) -> Result<PsFormat> {
        let invalid = |reason| RuntimeError::Invalid {
            what: "ps_args",
            value: args.to_owned(),
            reason,
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.is_empty() {
            return Ok(PsFormat::Full);
        }
        if let Some(i) = words
            .iter()
            .position(|w| w.ends_with('o') && w.starts_with('-'))
        {
            let list = words
                .get(i + 1)
                .ok_or_else(|| invalid("-o needs a field list"))?;
            let fields: Vec<String> = list.split(',').map(str::to_owned).collect();
            if fields.iter().any(|f| !FIELDS.iter().any(|(k, _)| k == f)) {
                return Err(invalid(
                    "unknown -o field (known: pid, ppid, uid, user, comm, args, cmd, command, time, etime, stat, rss, vsz, tty)",
                ));
            }
            return Ok(PsFormat::Fields(fields));
        }
        let letters: String = words.concat().trim_start_matches('-').to_owned();
        if letters.contains('u') {
            return Ok(PsFormat::User);
        }
        if letters.chars().all(|c| "efAaxwl".contains(c)) {
            return Ok(PsFormat::Full);
        }
        Err(invalid("supported: -ef (default), aux, -o FIELDS"))
    }

    fn titles(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            PsFormat::Full => &["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            PsFormat::User => &[
                "USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT", "START", "TIME",
                "COMMAND",
            ],
            PsFormat::Fields(fields) => {
                return fields
                    .iter()
                    .map(|f| {
                        FIELDS
                            .iter()
                            .find(|(k, _)| k == f)
                            .map_or(f.to_uppercase(), |(_, t)| (*t).to_owned())
                    })
                    .collect();
            }
        };
        fixed.iter().map(|t| (*t).to_owned()).collect()
    }

    pub(super) fn render(&self, processes: &[ProcessInfo], ctx: &BootContext) -> Top {
        let rows = processes
            .iter()
            .map(|p| {
                let started = ctx.boot + (p.start_ticks / TICKS) as i64;
                let elapsed = (ctx.now - started).max(1) as u64;
                let cpu_percent = p.cpu_ticks as f64 / TICKS as f64 * 100.0 / elapsed as f64;
                let user = ctx
                    .users
                    .get(&p.uid)
                    .cloned()
                    .unwrap_or_else(|| p.uid.to_string());
                let tty = tty_name(p.tty);
                let time = cpu_time(p.cpu_ticks / TICKS);
                let start = start_time(started, ctx.now);
                match self {
                    PsFormat::Full => vec![
                        user,
                        p.pid.to_string(),
                        p.ppid.to_string(),
                        (cpu_percent as u64).to_string(),
                        start,
                        tty,
                        time,
                        p.command.clone(),
                    ],
                    PsFormat::User => vec![
                        user,
                        p.pid.to_string(),
                        format!("{cpu_percent:.1}"),
                        format!(
                            "{:.1}",
                            p.rss_bytes as f64 * 100.0 / ctx.memory_total.max(1) as f64
                        ),
                        (p.vsz_bytes / 1024).to_string(),
                        (p.rss_bytes / 1024).to_string(),
                        tty,
                        p.state.to_string(),
                        start,
                        time,
                        p.command.clone(),
                    ],
                    PsFormat::Fields(fields) => fields
                        .iter()
                        .map(|f| match f.as_str() {
                            "pid" => p.pid.to_string(),
                            "ppid" => p.ppid.to_string(),
                            "uid" => p.uid.to_string(),
                            "user" => user.clone(),
                            "comm" => p
                                .command
                                .split_whitespace()
                                .next()
                                .and_then(|c| c.rsplit('/').next())
                                .unwrap_or_default()
                                .to_owned(),
                            "time" => time.clone(),
                            "etime" => cpu_time(elapsed),
                            "stat" => p.state.to_string(),
                            "rss" => (p.rss_bytes / 1024).to_string(),
                            "vsz" => (p.vsz_bytes / 1024).to_string(),
                            "tty" => tty.clone(),
                            _ => p.command.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        Top {
            titles: self.titles(),
            processes: rows,
        }
    }
}

/// `tty_nr` as `ps` names it: `pts/N`, `ttyN`, or `?`.
fn tty_name(tty: u64) -> String {
    if tty == 0 {
        return "?".into();
    }
    let major = (tty >> 8) & 0xfff;
    let minor = (tty & 0xff) | ((tty >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => "?".into(),
    }
}

/// `[DD-]HH:MM:SS`.
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `HH:MM` for a start today (UTC), `MonDD` before.
fn start_time(started: i64, now: i64) -> String {
    let (Some(t), Some(n)) = (
        chrono::DateTime::from_timestamp(started, 0),
        chrono::DateTime::from_timestamp(now, 0),
    ) else {
        return "?".into();
    };
    if t.date_naive() == n.date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%b%d").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_formats_and_their_titles() {
        assert_eq!(PsFormat::parse("").unwrap(), PsFormat::Full);
        assert_eq!(PsFormat::parse("-ef").unwrap(), PsFormat::Full);
        assert_eq!(PsFormat::parse("aux").unwrap(), PsFormat::User);
        assert_eq!(
            PsFormat::parse("-eo pid,comm").unwrap().titles(),
            ["PID", "COMMAND"]
        );
        for bad in ["-o", "-o nope", "--forest"] {
            let err = PsFormat::parse(bad).unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument, "{bad}");
        }
        let p = ProcessInfo {
            pid: 7,
            ppid: 1,
            uid: 0,
            tty: 0,
            cpu_ticks: 250,
            start_ticks: 100,
            rss_bytes: 4096,
            vsz_bytes: 8192,
            state: 'S',
            command: "sleep 60".into(),
        };
        let ctx = BootContext {
            boot: 1_000_000,
            now: 1_000_101,
            users: BTreeMap::from([(0, "root".to_owned())]),
            memory_total: 1 << 30,
        };
        let top = PsFormat::Full.render(&[p], &ctx);
        assert_eq!(
            top.processes,
            [["root", "7", "1", "2", "13:46", "?", "00:00:02", "sleep 60"]]
        );
        assert_eq!(top.titles.len(), top.processes[0].len());
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(cpu_time(90061), "1-01:01:01");
    }
}
