//! Robust, process-shared `pthread_mutex_t` from glibc.
//!
//! glibc registers every robust mutex a thread holds with the kernel
//! (`set_robust_list`); when the thread dies, the kernel marks the mutex
//! `FUTEX_OWNER_DIED` and wakes a waiter, whose lock call then returns
//! `EOWNERDEAD`. That is the crash-safety the `sync::Mutex` is built on.

use std::io;
use std::time::Duration;

unsafe extern "C" {
    // glibc >= 2.30; the `libc` crate does not declare it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The outcome of a lock call: 0, `EOWNERDEAD`, `ENOTRECOVERABLE`,
/// `ETIMEDOUT`, `EBUSY`, `EDEADLK` or `EINVAL`, as errno values.
pub(crate) type Code = libc::c_int;

/// Initialises a robust, process-shared, error-checking mutex at `m`.
///
/// # Safety
///
/// `m` must be valid for writes of a `pthread_mutex_t`, suitably aligned,
/// and not in use by any thread or process.
pub(crate) unsafe fn init(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is ours and initialised by the first call before use;
    // `m` is valid per the caller's promise.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let attr = attr.as_mut_ptr();
        let result = check(libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED))
            .and_then(|()| check(libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST)))
            .and_then(|()| check(libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK)))
            .and_then(|()| check(libc::pthread_mutex_init(m, attr)));
        libc::pthread_mutexattr_destroy(attr);
        result
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(code)) }
}

/// `pthread_mutex_lock` (`timeout == None`), or
/// `pthread_mutex_clocklock(CLOCK_MONOTONIC)`. A zero timeout is a try-lock
/// that reports `ETIMEDOUT` when the mutex is held.
///
/// The try-lock is not `pthread_mutex_trylock`: on a robust mutex that has
/// become unrecoverable, glibc's trylock returns `ENOTRECOVERABLE` but leaves
/// the lock word owned by the caller (it compares the word's old value with
/// the caller's tid instead of the new one), so the caller's next lock fails
/// with `EDEADLK` and nobody else can ever take it. `clocklock` with a
/// deadline in the past takes the same fast path without that flaw.
///
/// # Safety
///
/// `m` must point to a mutex initialised by [`init`] in a live mapping.
pub(crate) unsafe fn lock(m: *mut libc::pthread_mutex_t, timeout: Option<Duration>) -> Code {
    let Some(d) = timeout else {
        // SAFETY: forwarded from the caller.
        return unsafe { libc::pthread_mutex_lock(m) };
    };
    let abs = if d.is_zero() {
        libc::timespec { tv_sec: 0, tv_nsec: 0 }
    } else {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(d);
        libc::timespec {
            tv_sec: total.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(total.subsec_nanos() as i32),
        }
    };
    // SAFETY: forwarded from the caller; `abs` outlives the call.
    unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &abs) }
}

/// `pthread_mutex_unlock`.
///
/// # Safety
///
/// `m` must be an initialised mutex held by the calling thread.
pub(crate) unsafe fn unlock(m: *mut libc::pthread_mutex_t) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe { libc::pthread_mutex_unlock(m) }
}

/// `pthread_mutex_consistent`: the holder repaired the data after
/// `EOWNERDEAD`.
///
/// # Safety
///
/// `m` must be an initialised mutex held by the calling thread after an
/// `EOWNERDEAD` lock.
pub(crate) unsafe fn consistent(m: *mut libc::pthread_mutex_t) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe { libc::pthread_mutex_consistent(m) }
}
