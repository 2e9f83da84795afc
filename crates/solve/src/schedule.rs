//! The pieces that let a build run its stages concurrently: a board where each stage is claimed
//! once and publishes its result for the stages that read it (as a base, `COPY --from`,
//! `RUN --mount=from=` or an ONBUILD trigger's source), and a bound on how many stages do work
//! at once (`--jobs`). Waiting for another stage never holds a slot, so any bound, even one,
//! makes progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A counting semaphore: at most `n` holders of a [`Slot`] at once.
pub(crate) struct Slots {
    free: Mutex<usize>,
    released: Condvar,
}

/// The right to do work, given back when dropped.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            released: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self
                .released
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.released.notify_one();
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

    /// Takes a finished stage's result out of the board.
    pub fn take(&self, index: usize) -> Option<T> {
        lock(&self.inner).done.remove(&index)
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
        assert_eq!(board.take(3), Some("built"));
        assert_eq!(board.take(3), None);
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
}
