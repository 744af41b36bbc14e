//! System V semaphore sets: `semget(2)`, `semop(2)`/`semtimedop(2)`,
//! `semctl(2)`. Like System V shared memory, rustix does not wrap these.

use std::io;
use std::time::Duration;

use super::fs::OpenHow;

unsafe extern "C" {
    // In glibc since 2.3.3; not declared by the `libc` crate.
    fn semtimedop(
        semid: libc::c_int,
        sops: *mut libc::sembuf,
        nsops: libc::size_t,
        timeout: *const libc::timespec,
    ) -> libc::c_int;
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `semget(key, nsems, flags | mode)`; returns the semid.
pub(crate) fn get(key: i32, nsems: i32, how: OpenHow, mode: u32) -> io::Result<i32> {
    let flags = match how {
        OpenHow::CreateExclusive => libc::IPC_CREAT | libc::IPC_EXCL,
        OpenHow::Existing => 0,
    };
    // SAFETY: semget takes only integers.
    cvt(unsafe { libc::semget(key, nsems, flags | (mode & 0o777) as libc::c_int) })
}

/// One `semop` on semaphore `num`: add `delta` (negative: wait until it can
/// be subtracted; zero: wait until the value is zero). `undo` sets
/// `SEM_UNDO`, `nowait` sets `IPC_NOWAIT` (`EAGAIN` instead of blocking).
/// The kernel measures a timeout on the monotonic clock. Linux never
/// restarts `semtimedop` after a signal handler, so `EINTR` is retried here
/// with the time that is left.
pub(crate) fn op(id: i32, num: u16, delta: i16, undo: bool, nowait: bool, timeout: Option<Duration>) -> io::Result<()> {
    let mut flags = 0;
    if undo {
        flags |= libc::SEM_UNDO;
    }
    if nowait {
        flags |= libc::IPC_NOWAIT;
    }
    ops(id, &mut [libc::sembuf { sem_num: num, sem_op: delta, sem_flg: flags as libc::c_short }], timeout)
}

/// `semtimedop` with several operations, applied atomically (all or none).
pub(crate) fn ops(id: i32, bufs: &mut [libc::sembuf], timeout: Option<Duration>) -> io::Result<()> {
    let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let ts = left.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `bufs` and `ts` are valid for the duration of the call.
        match cvt(unsafe { semtimedop(id, bufs.as_mut_ptr(), bufs.len(), ts_ptr) }) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// `semctl(id, num, GETVAL)`.
pub(crate) fn get_value(id: i32, num: u16) -> io::Result<i32> {
    // SAFETY: GETVAL takes no fourth argument.
    cvt(unsafe { libc::semctl(id, libc::c_int::from(num), libc::GETVAL) })
}

/// What `semctl(IPC_STAT)` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) nsems: u64,
    pub(crate) otime: i64,
}

/// `semctl(id, 0, IPC_STAT, &buf)`.
pub(crate) fn stat(id: i32) -> io::Result<Stat> {
    let mut ds = std::mem::MaybeUninit::<libc::semid_ds>::zeroed();
    // SAFETY: IPC_STAT's fourth argument is `union semun` whose `buf`
    // member points to a semid_ds, which `ds` is.
    cvt(unsafe { libc::semctl(id, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: zeroed, then filled by the kernel; all fields are integers.
    let ds = unsafe { ds.assume_init() };
    Ok(Stat { nsems: ds.sem_nsems, otime: ds.sem_otime })
}

/// `semctl(id, 0, IPC_RMID)`: removes the set at once; blocked waiters get
/// `EIDRM`.
pub(crate) fn remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no fourth argument.
    cvt(unsafe { libc::semctl(id, 0, libc::IPC_RMID) }).map(drop)
}
