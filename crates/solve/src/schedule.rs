//! The pieces that let a build run its stages concurrently: a board where each stage is claimed
//! once and publishes its result for the stages that read it (as a base, `COPY --from`,
//! `RUN --mount=from=` or an ONBUILD trigger's source), and a bound on how many stages do work
//! at once (`--jobs`). Waiting for another stage never holds a slot, so any bound, even one,
//! makes progress. Nor does a RUN step that only waits (`sleep`, the network): its stage lends
//! its slot while the step's processes use almost no CPU (`cpu_load`), and counts again as soon
//! as they do, so `--jobs` bounds the steps that are busy rather than those that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::cpu_load::{IDLE_BELOW, Load, LoadMeter, SAMPLE_EVERY, sample_process_tree};

/// A counting semaphore: at most `limit` busy holders of a [`Slot`] at once, where a holder
/// that lent its slot does not count, and one that takes it back while the others are busy
/// oversubscribes briefly.
pub(crate) struct Slots {
    limit: usize,
    counts: Mutex<Counts>,
    released: Condvar,
}

#[derive(Default)]
struct Counts {
    /// Holders counted as busy.
    busy: usize,
    /// Stages blocked waiting for room.
    waiting: usize,
}

/// The right to do work, given back when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    /// Lent while its holder waits; changed only under `slots.counts`'s lock.
    lent: AtomicBool,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            limit: n.max(1),
            counts: Mutex::new(Counts::default()),
            released: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> Slot<'_> {
        let mut counts = self.wait_for_room();
        counts.busy += 1;
        Slot {
            slots: self,
            lent: AtomicBool::new(false),
        }
    }

    fn wait_for_room(&self) -> MutexGuard<'_, Counts> {
        let mut counts = lock(&self.counts);
        if counts.busy >= self.limit {
            counts.waiting += 1;
            while counts.busy >= self.limit {
                counts = self
                    .released
                    .wait(counts)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            counts.waiting -= 1;
        }
        counts
    }

    /// Holders counted as busy now.
    #[cfg(test)]
    fn busy(&self) -> usize {
        lock(&self.counts).busy
    }
}

impl Slot<'_> {
    /// The holder is waiting: another stage may work in its place.
    pub fn lend(&self) {
        let mut counts = lock(&self.slots.counts);
        if !self.lent.swap(true, Ordering::Relaxed) {
            counts.busy -= 1;
            self.slots.released.notify_one();
        }
    }

    /// The holder is busy again and counts at once, even beyond the limit: its processes are
    /// already running and cannot be made to wait.
    pub fn reclaim(&self) {
        let mut counts = lock(&self.slots.counts);
        if self.lent.swap(false, Ordering::Relaxed) {
            counts.busy += 1;
        }
    }

    /// Before work that can wait its turn (the next step): a lent slot is taken back only when
    /// there is room, so that work stays within the limit.
    pub fn resume(&self) {
        if !self.lent.load(Ordering::Relaxed) {
            return;
        }
        let mut counts = self.slots.wait_for_room();
        if self.lent.swap(false, Ordering::Relaxed) {
            counts.busy += 1;
        }
    }

    /// Whether watching the holder's load can help anyone: it is lent (and must be counted
    /// again once busy), or a stage is waiting for room.
    fn worth_watching(&self) -> bool {
        let counts = lock(&self.slots.counts);
        self.lent.load(Ordering::Relaxed) || counts.waiting > 0
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.slots.counts);
        if !self.lent.load(Ordering::Relaxed) {
            counts.busy -= 1;
            self.slots.released.notify_one();
        }
    }
}

/// Samples the CPU demand of the process tree under host pid `root` until `stop` closes (or the
/// tree is gone), lending `slot` while a window shows it idle and reclaiming it when busy. The
/// caller calls [`Slot::resume`] afterwards. While no stage waits for a slot, `/proc` is not
/// read at all, so a build without contention pays nothing.
pub(crate) fn lend_while_idle(slot: &Slot<'_>, root: u32, stop: &Receiver<()>) {
    let started = Instant::now();
    let mut meter = LoadMeter::new(IDLE_BELOW);
    loop {
        if slot.worth_watching() {
            let Some(tree) = sample_process_tree(root) else {
                return;
            };
            match meter.sample(tree, started.elapsed()) {
                Some(Load::Idle) => slot.lend(),
                Some(Load::Busy) => slot.reclaim(),
                None => {}
            }
        } else {
            // A window that was not watched says nothing; start afresh when it matters.
            meter.forget();
        }
        match stop.recv_timeout(SAMPLE_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Which stages have been claimed, the results of those that finished, and whether the build
/// has failed (then nobody waits any longer).
pub(crate) struct StageBoard<T> {
    inner: Mutex<Board<T>>,
    changed: Condvar,
}

struct Board<T> {
    claimed: BTreeSet<usize>,
    done: BTreeMap<usize, T>,
    failed: bool,
}

impl<T: Clone> StageBoard<T> {
    pub fn new() -> StageBoard<T> {
        StageBoard {
            inner: Mutex::new(Board {
                claimed: BTreeSet::new(),
                done: BTreeMap::new(),
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Claims stage `index` for building: true for the first caller only, so a stage needed
    /// by several others is built once.
    pub fn claim(&self, index: usize) -> bool {
        lock(&self.inner).claimed.insert(index)
    }

    pub fn finish(&self, index: usize, value: T) {
        lock(&self.inner).done.insert(index, value);
        self.changed.notify_all();
    }

    /// Marks the build failed and wakes every waiter.
    pub fn fail(&self) {
        lock(&self.inner).failed = true;
        self.changed.notify_all();
    }

    pub fn has_failed(&self) -> bool {
        lock(&self.inner).failed
    }

    /// Waits for stage `index`'s result; `None` once the build has failed.
    pub fn wait(&self, index: usize) -> Option<T> {
        let mut board = lock(&self.inner);
        loop {
            if board.failed {
                return None;
            }
            if let Some(value) = board.done.get(&index) {
                return Some(value.clone());
            }
            board = self
                .changed
                .wait(board)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The result of stage `index` if it is done, without waiting.
    pub fn get(&self, index: usize) -> Option<T> {
        lock(&self.inner).done.get(&index).cloned()
    }
}

/// A panic on another thread already fails the build; the data behind the lock stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_stage_is_claimed_once_and_its_result_reaches_every_waiter() {
        let board = StageBoard::new();
        assert!(board.claim(3));
        assert!(!board.claim(3));
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..4).map(|_| s.spawn(|| board.wait(3))).collect();
            std::thread::sleep(Duration::from_millis(20));
            board.finish(3, "built");
            for w in waiters {
                assert_eq!(w.join().unwrap(), Some("built"));
            }
        });
        assert_eq!(board.get(3), Some("built"));
    }

    #[test]
    fn failure_releases_waiters() {
        let board: StageBoard<u8> = StageBoard::new();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| board.wait(1));
            std::thread::sleep(Duration::from_millis(20));
            board.fail();
            assert_eq!(waiter.join().unwrap(), None);
        });
        assert!(board.has_failed());
    }

    #[test]
    fn slots_bound_concurrency() {
        let slots = Slots::new(2);
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _slot = slots.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} at once");
        // Zero is taken as one, so a build always progresses.
        let one = Slots::new(0);
        drop(one.acquire());
        drop(one.acquire());
    }

    #[test]
    fn a_lent_slot_lets_another_holder_in_and_is_counted_again_when_busy() {
        let slots = Slots::new(1);
        let first = slots.acquire();
        first.lend();
        first.lend();
        assert_eq!(slots.busy(), 0);
        // Room for a second holder although the first still exists.
        let second = slots.acquire();
        assert_eq!(slots.busy(), 1);
        // The first wakes up busy: counted at once, over the limit.
        first.reclaim();
        first.reclaim();
        assert_eq!(slots.busy(), 2);
        // Nobody else gets in until both are under the limit again.
        std::thread::scope(|s| {
            let third = s.spawn(|| {
                let _slot = slots.acquire();
                slots.busy()
            });
            std::thread::sleep(Duration::from_millis(30));
            assert!(!third.is_finished());
            drop(second);
            std::thread::sleep(Duration::from_millis(30));
            assert!(
                !third.is_finished(),
                "still one busy holder at a limit of one"
            );
            first.lend();
            assert_eq!(third.join().unwrap(), 1);
        });
        // A lent slot that resumes waits for room; dropping a lent slot frees nothing twice.
        assert_eq!(slots.busy(), 0);
        first.resume();
        assert_eq!(slots.busy(), 1);
        drop(first);
        assert_eq!(slots.busy(), 0);
        let lent = slots.acquire();
        lent.lend();
        drop(lent);
        assert_eq!(slots.busy(), 0);
    }

    #[test]
    fn a_slot_is_worth_watching_only_while_lent_or_someone_waits() {
        let slots = Slots::new(1);
        let held = slots.acquire();
        assert!(!held.worth_watching(), "nobody waits, nothing to lend");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| drop(slots.acquire()));
            while !held.worth_watching() {
                std::thread::sleep(Duration::from_millis(1));
            }
            held.lend();
            waiter.join().unwrap();
            assert!(held.worth_watching(), "lent: watched until busy again");
            held.reclaim();
            assert!(!held.worth_watching());
        });
    }

    #[test]
    fn resume_waits_while_the_others_are_busy() {
        let slots = Slots::new(1);
        let waiting = slots.acquire();
        waiting.lend();
        let busy = slots.acquire();
        std::thread::scope(|s| {
            let resumed = s.spawn(|| {
                waiting.resume();
                slots.busy()
            });
            std::thread::sleep(Duration::from_millis(30));
            assert!(!resumed.is_finished());
            drop(busy);
            assert_eq!(resumed.join().unwrap(), 1);
        });
    }
}
