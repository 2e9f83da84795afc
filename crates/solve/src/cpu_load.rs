//! How busy a running RUN step is, so that a step that only waits (sleeping, on the network, on
//! a lock) does not hold one of the build's `--jobs` slots.
//!
//! A step's CPU demand is a sum over its sandbox's live process tree, read from `/proc`: for
//! each process `utime + stime` (its own) `+ cutime + cstime` (its children it has already
//! reaped, which are no longer in the tree), plus the time it spent runnable but waiting for a
//! CPU (`schedstat`), so that a busy step on an overloaded machine is not taken for a waiting
//! one. A [`LoadMeter`] turns successive totals into a verdict per window: busy when the tree
//! wanted at least [`IDLE_BELOW`] of a core or has a runnable process at the sample, idle
//! otherwise. The scheduler (`schedule::Slot`) lends an idle step's slot to the next ready
//! stage and counts it again as soon as it is busy, as `make -l` does with load.

use std::collections::HashMap;
use std::time::Duration;

/// How often a running step is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(150);
/// Below this share of one core over a window, a step counts as waiting.
pub(crate) const IDLE_BELOW: f64 = 0.25;
/// `/proc` reports CPU times in `USER_HZ` ticks, which Linux fixes at 100 on every architecture
/// (the kernel's own `HZ` may differ; `USER_HZ` is the ABI).
const TICKS_PER_SECOND: u64 = 100;

/// What a window of samples says about a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Load {
    Busy,
    Idle,
}

/// Turns cumulative CPU times sampled over time into busy/idle verdicts, one per window.
#[derive(Debug)]
pub(crate) struct LoadMeter {
    idle_below: f64,
    /// CPU time and wall-clock time of the previous sample.
    last: Option<(Duration, Duration)>,
}

impl LoadMeter {
    pub fn new(idle_below: f64) -> LoadMeter {
        LoadMeter {
            idle_below,
            last: None,
        }
    }

    /// Drops the previous sample: the next one starts a new window.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// Feeds a sample of the tree taken at wall-clock time `at` (any fixed origin); the verdict
    /// on the window since the previous sample, `None` for the first sample or an empty window.
    /// A tree with a process runnable right now is busy whatever the window says (CPU spent by
    /// short-lived children waiting for a CPU is lost when they exit, so a fork-heavy step on
    /// a loaded machine can look idler than it is). A total that went down (a process left the
    /// tree without being reaped by one in it) counts as no CPU used.
    pub fn sample(&mut self, tree: TreeSample, at: Duration) -> Option<Load> {
        let previous = self.last.replace((tree.demand, at));
        if tree.runnable {
            return Some(Load::Busy);
        }
        let cpu = tree.demand;
        let (last_cpu, last_at) = previous?;
        let wall = at.checked_sub(last_at)?.as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let used = cpu.saturating_sub(last_cpu).as_secs_f64();
        Some(if used / wall < self.idle_below {
            Load::Idle
        } else {
            Load::Busy
        })
    }
}

/// What one look at a process tree saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeSample {
    /// CPU time used plus time spent waiting for a CPU, so far.
    pub demand: Duration,
    /// Whether a process of the tree was running or runnable (state `R`).
    pub runnable: bool,
}

/// One process's line in `/proc/<pid>/stat`, the fields that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// `utime + stime + cutime + cstime`, in ticks.
    pub ticks: u64,
    /// State `R`.
    pub runnable: bool,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    // After the name: state (field 3), ppid (4), …, utime (14), stime, cutime, cstime (17).
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        runnable: *fields.first()? == "R",
    })
}

/// `root` and all its live descendants among `processes`.
pub(crate) fn tree_members(root: u32, processes: &[ProcStat]) -> Vec<&ProcStat> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    let mut root_stat = None;
    for process in processes {
        if process.pid == root {
            root_stat = Some(process);
        } else {
            children.entry(process.ppid).or_default().push(process);
        }
    }
    let mut members = Vec::new();
    let mut pending: Vec<&ProcStat> = root_stat.into_iter().collect();
    while let Some(process) = pending.pop() {
        members.push(process);
        if let Some(below) = children.get(&process.pid) {
            pending.extend(below);
        }
    }
    members
}

/// The second field of `/proc/<pid>/schedstat`: nanoseconds spent runnable, waiting for a CPU.
pub(crate) fn parse_run_delay(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// A look at the process tree under host pid `root`; `None` once the root is gone. Reads every
/// process's stat (a few hundred small reads), which keeps working on kernels without
/// `/proc/<pid>/task/<tid>/children`.
pub(crate) fn sample_process_tree(root: u32) -> Option<TreeSample> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes come and go while /proc is read; a vanished one is simply not counted.
        if let Ok(line) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(stat) = parse_stat(&line)
        {
            processes.push(stat);
        }
    }
    let members = tree_members(root, &processes);
    if members.is_empty() {
        return None;
    }
    let ticks: u64 = members.iter().map(|process| process.ticks).sum();
    // Without schedstats in the kernel, CPU time alone.
    let run_delay_ns: u64 = members
        .iter()
        .filter_map(|process| {
            std::fs::read_to_string(format!("/proc/{}/schedstat", process.pid)).ok()
        })
        .filter_map(|schedstat| parse_run_delay(&schedstat))
        .sum();
    Some(TreeSample {
        demand: Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
            + Duration::from_nanos(run_delay_ns),
        runnable: members.iter().any(|process| process.runnable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A tree that used `demand` ms so far and has no runnable process now.
    fn waiting(demand: u64) -> TreeSample {
        TreeSample {
            demand: ms(demand),
            runnable: false,
        }
    }

    #[test]
    fn a_window_under_a_quarter_core_is_idle_and_over_it_busy() {
        let mut meter = LoadMeter::new(IDLE_BELOW);
        assert_eq!(
            meter.sample(waiting(40), ms(0)),
            None,
            "the first sample has no window"
        );
        // 10 ms of CPU in 150 ms: a process sleeping or waiting on the network.
        assert_eq!(meter.sample(waiting(50), ms(150)), Some(Load::Idle));
        // 140 ms in 150 ms: compiling.
        assert_eq!(meter.sample(waiting(190), ms(300)), Some(Load::Busy));
        // Two cores' worth (a parallel make) is busy too.
        assert_eq!(meter.sample(waiting(490), ms(450)), Some(Load::Busy));
        // Just under and just at the threshold.
        assert_eq!(meter.sample(waiting(527), ms(600)), Some(Load::Idle));
        assert_eq!(meter.sample(waiting(565), ms(750)), Some(Load::Busy));
    }

    #[test]
    fn a_runnable_process_makes_the_tree_busy_whatever_the_window() {
        let mut meter = LoadMeter::new(IDLE_BELOW);
        let runnable = |demand| TreeSample {
            demand: ms(demand),
            runnable: true,
        };
        assert_eq!(meter.sample(runnable(0), ms(0)), Some(Load::Busy));
        assert_eq!(meter.sample(runnable(1), ms(150)), Some(Load::Busy));
        // The window after it is judged from that sample on.
        assert_eq!(meter.sample(waiting(2), ms(300)), Some(Load::Idle));
    }

    #[test]
    fn odd_samples_give_no_verdict_or_idle_rather_than_a_panic() {
        let mut meter = LoadMeter::new(IDLE_BELOW);
        meter.sample(waiting(0), ms(0));
        meter.forget();
        assert_eq!(
            meter.sample(waiting(500), ms(600)),
            None,
            "a new window starts"
        );
        meter.sample(waiting(100), ms(1000));
        // The same instant twice, then a clock that went back: no window.
        assert_eq!(meter.sample(waiting(200), ms(1000)), None);
        assert_eq!(meter.sample(waiting(300), ms(900)), None);
        // CPU total went down (a process left the tree): nothing used.
        assert_eq!(meter.sample(waiting(50), ms(1050)), Some(Load::Idle));
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (a) b (c)) R 17 4242 17 0 -1 4194560 100 0 0 0 \
                    12 3 40 5 20 0 1 0 900 1000 50 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                ppid: 17,
                ticks: 12 + 3 + 40 + 5,
                runnable: true,
            })
        );
        assert!(!parse_stat(&line.replace(") R ", ") S ")).unwrap().runnable);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn a_tree_is_the_root_and_every_descendant_only() {
        let stat = |pid, ppid, ticks| ProcStat {
            pid,
            ppid,
            ticks,
            runnable: false,
        };
        let processes = [
            stat(1, 0, 1000),
            stat(10, 1, 5),  // the sandbox init
            stat(11, 10, 7), // sh
            stat(12, 11, 20),
            stat(13, 12, 1),
            stat(20, 1, 500), // another build's step
            stat(21, 20, 300),
        ];
        let members = tree_members(10, &processes);
        let mut pids: Vec<u32> = members.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 12, 13]);
        assert_eq!(members.iter().map(|p| p.ticks).sum::<u64>(), 5 + 7 + 20 + 1);
        assert_eq!(tree_members(20, &processes).len(), 2);
        assert!(tree_members(99, &processes).is_empty());
        assert_eq!(
            parse_run_delay("119859069 356071016 431\n"),
            Some(356071016)
        );
        assert_eq!(parse_run_delay("12"), None);
    }

    #[test]
    fn this_process_tree_is_found_in_proc() {
        let me = std::process::id();
        let before = sample_process_tree(me).expect("this process is in /proc");
        // Burn CPU until the total moves by a tick (however loaded the machine is).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        let after = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            let now = sample_process_tree(me).unwrap();
            if now.demand > before.demand || std::time::Instant::now() > deadline {
                break now;
            }
        };
        std::hint::black_box(x);
        assert!(after.demand > before.demand, "{before:?} → {after:?}");
        assert_eq!(sample_process_tree(u32::MAX), None);
    }
}
