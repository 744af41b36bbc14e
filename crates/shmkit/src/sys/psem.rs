//! POSIX named semaphores: `sem_open(3)`, `sem_post(3)`, `sem_wait(3)`,
//! `sem_trywait(3)`, `sem_clockwait(3)`, `sem_getvalue(3)`, `sem_close(3)`,
//! `sem_unlink(3)`. glibc keeps them as `/dev/shm/sem.NAME`.

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;
use std::time::Duration;

use super::fs::OpenHow;

unsafe extern "C" {
    // glibc >= 2.30; not declared by the `libc` crate.
    fn sem_clockwait(sem: *mut libc::sem_t, clock: libc::clockid_t, abstime: *const libc::timespec) -> libc::c_int;
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A semaphore mapped by `sem_open`; valid until [`close`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sem(NonNull<libc::sem_t>);

/// `sem_open(name, flags, mode, value)`. `name` has its leading slash.
pub(crate) fn open(name: &str, how: OpenHow, mode: u32, value: u32) -> io::Result<Sem> {
    let c = c_name(name)?;
    let flags = match how {
        OpenHow::CreateExclusive => libc::O_CREAT | libc::O_EXCL,
        OpenHow::Existing => 0,
    };
    // SAFETY: `c` is NUL-terminated and outlives the call; with O_CREAT the
    // variadic arguments are the mode_t and the unsigned initial value.
    let sem = unsafe { libc::sem_open(c.as_ptr(), flags, mode as libc::mode_t, value as libc::c_uint) };
    if sem == libc::SEM_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(sem).map(Sem).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `sem_post`.
pub(crate) fn post(sem: Sem) -> io::Result<()> {
    // SAFETY: `sem` came from sem_open and is not closed (the owner closes
    // it only on drop).
    cvt(unsafe { libc::sem_post(sem.0.as_ptr()) })
}

/// `sem_wait` (`None`), `sem_trywait` (`Some(ZERO)`), or `sem_clockwait`
/// on the monotonic clock. `EINTR` is retried.
pub(crate) fn wait(handle: Sem, timeout: Option<Duration>) -> io::Result<()> {
    let deadline = timeout.map(|d| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let t = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(d);
        libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        }
    });
    loop {
        let sem = handle.0.as_ptr();
        let ret = match (timeout, &deadline) {
            // SAFETY: `sem` is open (see `post`).
            (None, _) => unsafe { libc::sem_wait(sem) },
            // SAFETY: as above.
            (Some(Duration::ZERO), _) => unsafe { libc::sem_trywait(sem) },
            // SAFETY: as above; `abs` lives across the call.
            (Some(_), Some(abs)) => unsafe { sem_clockwait(sem, libc::CLOCK_MONOTONIC, abs) },
            (Some(_), None) => unreachable!("a deadline exists for every timeout"),
        };
        match cvt(ret) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// `sem_getvalue`.
pub(crate) fn value(sem: Sem) -> io::Result<i32> {
    let mut v = 0;
    // SAFETY: `sem` is open; `v` is a valid int to write.
    cvt(unsafe { libc::sem_getvalue(sem.0.as_ptr(), &mut v) })?;
    Ok(v)
}

/// `sem_close`.
///
/// # Safety
///
/// `sem` must not be used again.
pub(crate) unsafe fn close(sem: Sem) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    cvt(unsafe { libc::sem_close(sem.0.as_ptr()) })
}

/// `sem_unlink`.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::sem_unlink(c.as_ptr()) })
}
