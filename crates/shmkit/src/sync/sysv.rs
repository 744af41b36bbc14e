//! System V semaphore sets (`semget`/`semop`/`semctl`), for cooperating
//! with C programs that use them.
//!
//! [`SemSet::acquire`] and [`SemSet::release`] use `SEM_UNDO`: if a process
//! dies between them, the kernel undoes its hold, so a crashed holder cannot
//! block the others. [`SemSet::wait`] and [`SemSet::post`] do not, which is
//! what producer/consumer counting needs (a posted unit must survive its
//! poster).

use std::time::Duration;

use crate::error::{Error, ErrorKind, Op, Result};
use crate::segment::SysvKey;
use crate::sys;
use crate::sys::fs::OpenHow;

/// A System V semaphore set.
///
/// # Examples
///
/// ```
/// use shmkit::SysvKey;
/// use shmkit::sync::SemSet;
///
/// let set = SemSet::create(SysvKey::PRIVATE, 1, 1, 0o600)?; // one semaphore, value 1
/// set.acquire(0)?;  // value 0; undone by the kernel if we die now
/// assert_eq!(set.value(0)?, 0);
/// set.release(0)?;
/// // `set` was created here, so dropping it removes it (IPC_RMID).
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct SemSet {
    id: i32,
    nsems: u16,
    label: String,
    remove_on_drop: bool,
}

impl SemSet {
    /// Creates a set of `nsems` semaphores, each with `value`, exclusively
    /// (`IPC_CREAT | IPC_EXCL`), with exactly `mode`. The set is removed
    /// when dropped unless [`persist`](Self::persist) is called.
    ///
    /// All values are set by one atomic `semop`, which records `sem_otime`;
    /// [`open`](Self::open) waits (briefly) for that, so an opener never sees
    /// values before they are set. (A set created with value 0 is ready at
    /// once.)
    ///
    /// # Errors
    ///
    /// The key is taken, `nsems` is 0, a value does not fit, or a limit
    /// (`kernel.sem`) is reached.
    pub fn create(key: SysvKey, nsems: u16, value: u16, mode: u32) -> Result<SemSet> {
        let label = format!("sysv-sem:{key}");
        if nsems == 0 {
            return Err(Error::invalid(Op::Create, label, "a set needs at least one semaphore"));
        }
        if value > 32767 {
            return Err(Error::invalid(Op::Create, label, "a System V semaphore holds at most 32767 (SEMVMX)"));
        }
        let id = sys::sem::get(key.raw(), i32::from(nsems), OpenHow::CreateExclusive, mode)
            .map_err(|e| Error::os(Op::Create, &label, e))?;
        let label = if key == SysvKey::PRIVATE { format!("sysv-semid:{id}") } else { label };
        let set = SemSet { id, nsems, label, remove_on_drop: true };
        // A new set is all zeros. Raising every value in one atomic semop
        // (not SETVAL) sets sem_otime, the sign openers wait for, only once
        // all values are in place.
        if value > 0 {
            let mut bufs: Vec<libc::sembuf> =
                (0..nsems).map(|num| libc::sembuf { sem_num: num, sem_op: value as i16, sem_flg: 0 }).collect();
            sys::sem::ops(id, &mut bufs, None).map_err(|e| Error::os(Op::Init, &set.label, e))?;
        }
        Ok(set)
    }

    /// Opens an existing set by key, waiting up to 200 ms for its creator
    /// to finish setting its values (`sem_otime != 0`). Sets created by C
    /// programs that never ran `semop` are opened after that wait.
    ///
    /// # Errors
    ///
    /// No set has this key, or no permission.
    pub fn open(key: SysvKey) -> Result<SemSet> {
        let label = format!("sysv-sem:{key}");
        let id = sys::sem::get(key.raw(), 0, OpenHow::Existing, 0).map_err(|e| Error::os(Op::Open, &label, e))?;
        let mut st = sys::sem::stat(id).map_err(|e| Error::os(Op::Open, &label, e))?;
        let start = std::time::Instant::now();
        while st.otime == 0 && start.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(1));
            st = sys::sem::stat(id).map_err(|e| Error::os(Op::Open, &label, e))?;
        }
        let nsems = u16::try_from(st.nsems).unwrap_or(u16::MAX);
        Ok(SemSet { id, nsems, label, remove_on_drop: false })
    }

    /// The semid.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// How many semaphores the set has.
    pub fn len(&self) -> u16 {
        self.nsems
    }

    /// Always `false`: a set has at least one semaphore.
    pub fn is_empty(&self) -> bool {
        self.nsems == 0
    }

    /// Keeps the set after this handle is dropped.
    pub fn persist(&mut self) {
        self.remove_on_drop = false;
    }

    /// Removes the set now (`IPC_RMID`); processes blocked on it wake with
    /// an error.
    ///
    /// # Errors
    ///
    /// Already removed, or no permission.
    pub fn remove(&mut self) -> Result<()> {
        self.remove_on_drop = false;
        sys::sem::remove(self.id).map_err(|e| Error::os(Op::Remove, &self.label, e))
    }

    fn op(&self, num: u16, delta: i16, undo: bool, timeout: Option<Duration>) -> Result<()> {
        if num >= self.nsems {
            return Err(Error::invalid(Op::Wait, &self.label, format!("semaphore {num} of a set of {}", self.nsems)));
        }
        let nowait = timeout == Some(Duration::ZERO);
        let timeout = timeout.filter(|d| !d.is_zero());
        let op = if delta > 0 { Op::Post } else { Op::Wait };
        sys::sem::op(self.id, num, delta, undo, nowait, timeout).map_err(|e| {
            let err = Error::os(op, &self.label, e);
            match err.raw_os_error() {
                Some(libc::EAGAIN) if timeout.is_some() => err.with_kind(ErrorKind::Timeout),
                Some(libc::EAGAIN) => err.with_kind(ErrorKind::WouldBlock),
                Some(libc::EIDRM) | Some(libc::EINVAL) => err.with_kind(ErrorKind::NotFound),
                _ => err,
            }
        })
    }

    /// Takes one unit of semaphore `num` with `SEM_UNDO` (a lock): if this
    /// process dies before [`release`](Self::release), the kernel gives the
    /// unit back.
    ///
    /// # Errors
    ///
    /// The set was removed, or `num` is out of range.
    pub fn acquire(&self, num: u16) -> Result<()> {
        self.op(num, -1, true, None)
    }

    /// [`acquire`](Self::acquire) with a timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if no unit came in time.
    pub fn acquire_timeout(&self, num: u16, timeout: Duration) -> Result<()> {
        self.op(num, -1, true, Some(timeout.max(Duration::from_nanos(1))))
    }

    /// Gives back a unit taken by [`acquire`](Self::acquire) (`SEM_UNDO`).
    ///
    /// # Errors
    ///
    /// The set was removed, or the value would exceed 32767.
    pub fn release(&self, num: u16) -> Result<()> {
        self.op(num, 1, true, None)
    }

    /// Takes one unit of semaphore `num`, without undo (a consumer).
    ///
    /// # Errors
    ///
    /// The set was removed, or `num` is out of range.
    pub fn wait(&self, num: u16) -> Result<()> {
        self.op(num, -1, false, None)
    }

    /// Takes a unit if one is available now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if the value is zero.
    pub fn try_wait(&self, num: u16) -> Result<()> {
        self.op(num, -1, false, Some(Duration::ZERO))
    }

    /// [`wait`](Self::wait) with a timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if no unit came in time.
    pub fn wait_timeout(&self, num: u16, timeout: Duration) -> Result<()> {
        self.op(num, -1, false, Some(timeout.max(Duration::from_nanos(1))))
    }

    /// Adds a unit to semaphore `num`, without undo (a producer).
    ///
    /// # Errors
    ///
    /// The set was removed, or the value would exceed 32767.
    pub fn post(&self, num: u16) -> Result<()> {
        self.op(num, 1, false, None)
    }

    /// The value of semaphore `num` (`GETVAL`).
    ///
    /// # Errors
    ///
    /// The set was removed, or `num` is out of range.
    pub fn value(&self, num: u16) -> Result<u16> {
        let v = sys::sem::get_value(self.id, num).map_err(|e| Error::os(Op::Stat, &self.label, e))?;
        Ok(v.clamp(0, i32::from(u16::MAX)) as u16)
    }
}

impl Drop for SemSet {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Ignored: fails only if someone removed the set already.
            let _ = sys::sem::remove(self.id);
        }
    }
}
