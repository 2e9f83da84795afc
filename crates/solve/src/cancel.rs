//! Cancelling a build from outside: a [`CancelToken`] is handed to the engine in the request, and
//! whoever holds a clone (a Ctrl-C handler, a daemon watching its API connection) may cancel it.
//!
//! The key decision: cancellation is a flag the engine *looks at*, never a thread or a process
//! being killed from outside. Each kind of wait checks it where it can stop without leaving half
//! a result: stages before each step, a RUN step by killing its sandbox (the step then fails and
//! records nothing), context hashing between entries, registry transfers by dropping their future
//! (blobs are published only once complete). The build then returns [`SolveError::Cancelled`]
//! whatever error the interrupted work reported, so callers see one outcome.
//!
//! [`SolveError::Cancelled`]: crate::SolveError::Cancelled

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::error::SolveError;

/// A cheap, clonable handle on one "stop now" flag. Clones share the flag; cancelling is
/// one-way and idempotent.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Wakes blocking waiters; the mutex only pairs with the condvar.
    lock: Mutex<()>,
    woken: Condvar,
    /// Wakes async waiters.
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks every holder to stop. Safe from any thread (not from a signal handler: it locks).
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        // Taking the lock orders the flag before any waiter's re-check, so none misses it.
        drop(
            self.inner
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.inner.woken.notify_all();
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Blocks until the token is cancelled or `timeout` passed; whether it is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (_guard, _) = self
            .inner
            .woken
            .wait_timeout_while(guard, timeout, |()| !self.is_cancelled())
            .unwrap_or_else(PoisonError::into_inner);
        self.is_cancelled()
    }

    /// Completes once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel between the two still wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// A guard that cancels this token when dropped, unless [`CancelOnDrop::disarm`]ed: an
    /// async caller whose future is dropped (a closed API connection) stops its build.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            token: Some(self.clone()),
        }
    }
}

/// Cancels its token when dropped; see [`CancelToken::cancel_on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop {
    token: Option<CancelToken>,
}

impl CancelOnDrop {
    /// The work finished: dropping the guard no longer cancels anything.
    pub fn disarm(mut self) {
        self.token = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            token.cancel();
        }
    }
}

/// Runs `future` on `rt` from a blocking thread (never a runtime worker: see
/// [`crate::Engine::build`]) until it completes or `cancel` is cancelled; then the future is
/// dropped, which stops its transfers.
pub(crate) fn block_on<F: std::future::Future>(
    rt: &tokio::runtime::Handle,
    cancel: &CancelToken,
    future: F,
) -> Result<F::Output, SolveError> {
    if cancel.is_cancelled() {
        return Err(SolveError::Cancelled);
    }
    rt.block_on(async {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(SolveError::Cancelled),
            output = future => Ok(output),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn clones_share_the_flag_and_cancelling_twice_is_harmless() {
        let token = CancelToken::new();
        let other = token.clone();
        assert!(!other.is_cancelled());
        token.cancel();
        token.cancel();
        assert!(other.is_cancelled());
    }

    #[test]
    fn a_blocking_waiter_wakes_on_cancel_not_on_its_timeout() {
        let token = CancelToken::new();
        let waiter = token.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || waiter.wait_timeout(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(50));
        token.cancel();
        assert!(handle.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!CancelToken::new().wait_timeout(Duration::from_millis(10)));
    }

    #[test]
    fn an_async_waiter_wakes_on_cancel() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let token = CancelToken::new();
        let canceller = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            canceller.cancel();
        });
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), token.cancelled())
                .await
                .expect("woken by the cancel");
            // Already cancelled: returns at once.
            token.cancelled().await;
        });
    }

    #[test]
    fn dropping_an_armed_guard_cancels_and_a_disarmed_one_does_not() {
        let token = CancelToken::new();
        token.cancel_on_drop().disarm();
        assert!(!token.is_cancelled());
        drop(token.cancel_on_drop());
        assert!(token.is_cancelled());
    }
}
