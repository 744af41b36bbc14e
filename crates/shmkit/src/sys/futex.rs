//! Futexes on shared mappings: `futex(2)` `FUTEX_WAIT` and `FUTEX_WAKE`.
//!
//! Always the shared form (no `FUTEX_PRIVATE_FLAG`): the word lives in memory
//! other processes map, possibly at other addresses, and the kernel must key
//! the wait queue on the page, not on this process's address.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a [`wake`], a signal, or spuriously: re-check the condition.
    Woken,
    /// The word did not hold the expected value: re-check the condition.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout` (measured by the
/// kernel on the monotonic clock; `None` waits without limit).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::fs::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(rustix::io::Errno::AGAIN) => Wake::Changed,
        Err(rustix::io::Errno::TIMEDOUT) => Wake::TimedOut,
        // EINTR: a signal; the caller re-checks and waits again.
        Err(_) => Wake::Woken,
    }
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, count: u32) -> usize {
    // The only errors are EFAULT/EINVAL for a bad address, which a
    // reference rules out.
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}
