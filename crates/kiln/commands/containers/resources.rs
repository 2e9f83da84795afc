//! `kiln pause`/`unpause`, `kiln top`, `kiln stats` and `kiln update`: thin commands over the
//! runtime's calls that the Engine API serves too; `stats` prints `docker stats`'s table.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use kiln_runtime::{Runtime, StatsSample, UpdateRequest};
use kiln_store::Store;

pub fn pause(store: &Store, queries: &[String], pause: bool) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    for query in queries {
        if pause {
            rt.pause(query)?;
        } else {
            rt.unpause(query)?;
        }
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn top(store: &Store, query: &str, ps_args: &str) -> Result<ExitCode> {
    let top = Runtime::new(store.clone()).top(query, ps_args)?;
    let mut rows = vec![top.titles];
    rows.extend(top.processes);
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Docker's binary units for memory (`12.5MiB`) and decimal ones for I/O (`1.2kB`).
fn size(bytes: u64, binary: bool) -> String {
    let (base, units): (f64, [&str; 5]) = if binary {
        (1024.0, ["B", "KiB", "MiB", "GiB", "TiB"])
    } else {
        (1000.0, ["B", "kB", "MB", "GB", "TB"])
    };
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    // go-units' `%.4g`: four significant digits, no trailing zeros.
    let digits = if value >= 1.0 {
        value.log10().floor() as usize + 1
    } else {
        1
    };
    let text = format!("{value:.prec$}", prec = 4usize.saturating_sub(digits));
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", units[unit])
}

/// One `docker stats` row from two samples.
fn row(id: &str, name: &str, pre: &StatsSample, s: &StatsSample) -> [String; 8] {
    let cpu_delta = s.cpu_total_ns.saturating_sub(pre.cpu_total_ns) as f64;
    let system_delta = s.system_cpu_ns.saturating_sub(pre.system_cpu_ns) as f64;
    let cpu = if system_delta > 0.0 {
        cpu_delta / system_delta * f64::from(s.online_cpus) * 100.0
    } else {
        0.0
    };
    // As docker stats: the page cache the kernel can drop is not "used".
    let cache = s
        .memory_stats
        .get("total_inactive_file")
        .or_else(|| s.memory_stats.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    let used = s.memory_usage.saturating_sub(cache);
    let (rx, tx) = s
        .networks
        .values()
        .fold((0, 0), |(r, t), c| (r + c[0], t + c[4]));
    [
        id[..12].to_owned(),
        name.to_owned(),
        format!("{cpu:.2}%"),
        format!("{} / {}", size(used, true), size(s.memory_limit, true)),
        format!("{:.2}%", used as f64 * 100.0 / s.memory_limit.max(1) as f64),
        format!("{} / {}", size(rx, false), size(tx, false)),
        format!(
            "{} / {}",
            size(s.io_read_bytes, false),
            size(s.io_write_bytes, false)
        ),
        s.pids.to_string(),
    ]
}

pub fn stats(store: &Store, queries: &[String], no_stream: bool) -> Result<ExitCode> {
    let rt = Runtime::new(store.clone());
    let mut containers = Vec::new();
    for q in queries {
        let c = rt.container(q)?;
        let first = rt.stats(&c.id)?;
        containers.push((c, first));
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let mut rows = vec![
            [
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]
            .map(str::to_owned),
        ];
        for (c, pre) in &mut containers {
            let now = rt
                .stats(&c.id)
                .with_context(|| format!("container {}", c.name))?;
            rows.push(row(&c.id, &c.name, pre, &now));
            *pre = now;
        }
        let widths: Vec<usize> = (0..8)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = std::io::stdout().lock();
        for r in &rows {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        out.flush()?;
        if no_stream {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

pub fn update(
    store: &Store,
    queries: &[String],
    memory: Option<&str>,
    cpus: Option<f64>,
    pids_limit: Option<i64>,
    restart: Option<&str>,
) -> Result<ExitCode> {
    let request = UpdateRequest {
        memory: memory
            .map(|m| super::super::flags::parse_size(m).map(|b| b as i64))
            .transpose()?,
        nano_cpus: cpus.map(|c| (c * 1e9) as i64),
        pids_limit,
        restart_policy: restart
            .map(kiln_runtime::RestartPolicy::parse_flag)
            .transpose()?,
    };
    let rt = Runtime::new(store.clone());
    for query in queries {
        for warning in rt.update(query, &request)? {
            eprintln!("warning: {query}: {warning}");
        }
        println!("{query}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compute_cpu_and_memory_as_docker_stats() {
        let pre = StatsSample {
            cpu_total_ns: 1_000,
            system_cpu_ns: 10_000,
            ..StatsSample::default()
        };
        let now = StatsSample {
            cpu_total_ns: 2_000,
            system_cpu_ns: 20_000,
            online_cpus: 2,
            memory_usage: 3 << 20,
            memory_limit: 4 << 20,
            memory_stats: [("total_inactive_file".to_owned(), 1 << 20)].into(),
            pids: 3,
            ..StatsSample::default()
        };
        let r = row(&"a".repeat(64), "web", &pre, &now);
        assert_eq!(r[2], "20.00%");
        assert_eq!(r[3], "2MiB / 4MiB");
        assert_eq!(size(1_234_567, false), "1.235MB");
        assert_eq!(size(675_840, true), "660KiB");
        assert_eq!(size(0, true), "0B");
        assert_eq!(r[4], "50.00%");
        assert_eq!(r[7], "3");
    }
}
