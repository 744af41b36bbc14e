//! A robust, process-shared mutex protecting a plain-data value, built on
//! glibc's robust `pthread_mutex_t`.
//!
//! Layout:
//!
//! | offset | field |
//! |---|---|
//! | 0 | header (16 bytes; the layout version records `sizeof(pthread_mutex_t)`) |
//! | 16 | `pthread_mutex_t` (robust, process-shared, error-checking) |
//! | 64 | the value `T` |
//!
//! When a holder dies (even by `SIGKILL`), the kernel walks its robust list,
//! marks the mutex owner-dead and wakes one waiter; that locker gets
//! [`LockError::OwnerDied`] with the lock held, exactly once per death. It
//! repairs the value and calls [`MutexGuard::mark_consistent`]; if it unlocks
//! without doing so, the mutex becomes unrecoverable and every later lock
//! fails with [`ErrorKind::Unrecoverable`]: no silent corruption, no hang.
//!
//! **Trusted peers only.** glibc keeps each held robust mutex on a list
//! whose links live inside the mutex, i.e. in shared memory, and follows and
//! writes those links on lock and unlock. A peer that scribbles over the
//! `pthread_mutex_t` can therefore make glibc abort this process (an
//! assertion) or write peer-chosen values to peer-chosen addresses in it, and
//! the links reveal addresses of this process to peers. Use [`Mutex`] only
//! between processes that trust each other; with untrusted peers use a
//! [`Semaphore`](super::Semaphore) of one unit as the lock (it validates
//! nothing it could misuse, but it cannot report an owner's death).
//!
//! The mapping is kept alive while a guard is held, even a leaked one: if a
//! segment with a held (or `mem::forget`-ed) guard is dropped, its mapping is
//! deliberately left in place, because glibc's list still points into it.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::time::Duration;

use bytemuck::Pod;

use super::{HEADER_SIZE, Place, error};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::segment::Segment;
use crate::sys;

const MAGIC: u32 = u32::from_le_bytes(*b"SKmx");
/// Layout version 1, with the size of glibc's mutex in the high half so a
/// process built for another ABI refuses the layout.
const VERSION: u32 = 1 | ((size_of::<libc::pthread_mutex_t>() as u32) << 16);
const DATA_OFFSET: usize = 64;

const _: () = assert!(HEADER_SIZE + size_of::<libc::pthread_mutex_t>() <= DATA_OFFSET);

/// A mutex and the value it protects, placed in a [`Segment`] and lockable
/// from every process that maps it.
///
/// `T` is plain data ([`Pod`]): it is read and written by copy, because
/// another process may hold the memory.
///
/// # Examples
///
/// ```
/// use shmkit::Segment;
/// use shmkit::sync::{LockError, Mutex};
///
/// let seg = Segment::options().size(4096).anonymous()?;
/// let counter = Mutex::create(&seg, 0, 0u64)?;
/// match counter.lock() {
///     Ok(mut guard) => guard.set(guard.get() + 1), // unlocked at the end of the arm
///     Err(LockError::OwnerDied(mut guard)) => {
///         // A holder died mid-update: repair, then say so.
///         guard.set(0);
///         guard.mark_consistent()?;
///     }
///     Err(LockError::Failed(e)) => return Err(e),
/// }
/// # Ok::<(), shmkit::Error>(())
/// ```
pub struct Mutex<'a, T> {
    place: Place<'a>,
    _value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Mutex<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex").field("place", &self.place.label()).finish()
    }
}

impl<'a, T: Pod> Mutex<'a, T> {
    /// Bytes the mutex and its value occupy; the offset must be a multiple
    /// of 64.
    pub const SIZE: usize = DATA_OFFSET + size_of::<T>();

    fn param() -> Result<u32> {
        u32::try_from(size_of::<T>())
            .map_err(|_| Error::invalid(Op::Init, "mutex", "the protected value is larger than 4 GiB"))
    }

    /// Initialises a mutex holding `value` at `offset` of `segment`.
    ///
    /// # Errors
    ///
    /// The place is outside, misaligned or read-only, `T` needs an alignment
    /// above 64, or a primitive already lives there.
    pub fn create(segment: &'a Segment, offset: usize, value: T) -> Result<Self> {
        let mutex = Self::place(segment, offset)?;
        mutex.place.init(MAGIC, VERSION, Self::param()?, || mutex.setup(value))?;
        Ok(mutex)
    }

    /// Opens a mutex another process created.
    ///
    /// # Errors
    ///
    /// Nothing was initialised there, or it is not a mutex holding a `T`
    /// of this size ([`ErrorKind::Corrupt`]).
    pub fn open(segment: &'a Segment, offset: usize) -> Result<Self> {
        let mutex = Self::place(segment, offset)?;
        mutex.place.open(MAGIC, VERSION, Self::param()?, "mutex")?;
        Ok(mutex)
    }

    /// Creates the mutex holding `value`, or opens it if another process
    /// was first.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(segment: &'a Segment, offset: usize, value: T) -> Result<Self> {
        let mutex = Self::place(segment, offset)?;
        mutex.place.init_or_open(MAGIC, VERSION, Self::param()?, "mutex", || mutex.setup(value))?;
        Ok(mutex)
    }

    fn place(segment: &'a Segment, offset: usize) -> Result<Self> {
        if align_of::<T>() > DATA_OFFSET {
            return Err(Error::invalid(Op::Init, segment.name(), "the protected value needs an alignment above 64"));
        }
        let place = Place::new(segment, offset, Self::SIZE, "mutex")?;
        Ok(Mutex { place, _value: PhantomData })
    }

    fn setup(&self, value: T) -> Result<()> {
        // SAFETY: the region is ours while the header says INITIALIZING
        // (nobody opens it yet); it is in bounds and 64-aligned, so the
        // pthread_mutex_t at 16 and the T at 64 are suitably aligned.
        unsafe {
            sys::pthread::init(self.raw()).map_err(|e| Error::os(Op::Init, self.place.label(), e))?;
            self.value_ptr().write_volatile(value);
        }
        Ok(())
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.place.at(HEADER_SIZE).cast()
    }

    fn value_ptr(&self) -> *mut T {
        self.place.at(DATA_OFFSET).cast()
    }

    /// Locks, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (with the lock held) if the previous holder
    /// died; [`ErrorKind::Unrecoverable`] or [`ErrorKind::Deadlock`] (this
    /// thread holds it already) inside [`LockError::Failed`].
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.lock_with(None)
    }

    /// Locks if the mutex is free now.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`ErrorKind::WouldBlock`].
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        match self.lock_with(Some(Duration::ZERO)) {
            Err(LockError::Failed(e)) if *e.kind() == ErrorKind::Timeout => {
                Err(LockError::Failed(e.with_kind(ErrorKind::WouldBlock)))
            }
            other => other,
        }
    }

    /// Locks, waiting at most `timeout` (monotonic clock).
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`ErrorKind::Timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        // A zero timeout would be a try-lock; keep it a (very short) wait.
        self.lock_with(Some(timeout.max(Duration::from_nanos(1))))
    }

    fn lock_with(&self, timeout: Option<Duration>) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        // SAFETY: the header check in create/open guarantees an initialised
        // robust mutex at this address, inside a mapping that outlives `self`.
        let code = unsafe { sys::pthread::lock(self.raw(), timeout) };
        let guard = |owner_died| {
            self.place.segment().pin();
            MutexGuard { mutex: self, owner_died, _not_send: PhantomData }
        };
        let fail = |kind| Err(LockError::Failed(error(Op::Lock, &self.place, kind)));
        match code {
            0 => Ok(guard(false)),
            libc::EOWNERDEAD => Err(LockError::OwnerDied(guard(true))),
            libc::ENOTRECOVERABLE => fail(ErrorKind::Unrecoverable),
            libc::ETIMEDOUT => fail(ErrorKind::Timeout),
            libc::EBUSY => fail(ErrorKind::WouldBlock),
            libc::EDEADLK => fail(ErrorKind::Deadlock),
            libc::EINVAL => fail(ErrorKind::Corrupt("glibc rejected the mutex (EINVAL)".into())),
            other => fail(ErrorKind::Os(other)),
        }
    }
}

/// Holds a [`Mutex`] locked; unlocks when dropped.
///
/// The guard cannot move to another thread: a pthread mutex must be unlocked
/// by the thread that locked it.
#[must_use = "the mutex unlocks as soon as the guard is dropped"]
pub struct MutexGuard<'m, T: Pod> {
    mutex: &'m Mutex<'m, T>,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> MutexGuard<'_, T> {
    /// A copy of the protected value.
    pub fn get(&self) -> T {
        // SAFETY: in bounds and aligned (see `Mutex::setup`); T is Pod, so
        // any bytes are a valid T; a volatile read makes no reference.
        unsafe { self.mutex.value_ptr().read_volatile() }
    }

    /// Replaces the protected value.
    pub fn set(&mut self, value: T) {
        // SAFETY: as in `get`; we hold the lock.
        unsafe { self.mutex.value_ptr().write_volatile(value) }
    }

    /// Whether this lock was taken from a holder that died: the value may be
    /// half-updated. Repair it, then call [`mark_consistent`](Self::mark_consistent).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Declares the value repaired after an owner's death, so the mutex
    /// stays usable. Without this, unlocking makes it unrecoverable.
    ///
    /// # Errors
    ///
    /// glibc refuses (the lock was not taken from a dead owner).
    pub fn mark_consistent(&mut self) -> Result<()> {
        if !self.owner_died {
            return Ok(());
        }
        // SAFETY: we hold the lock, taken with EOWNERDEAD.
        match unsafe { sys::pthread::consistent(self.mutex.raw()) } {
            0 => {
                self.owner_died = false;
                Ok(())
            }
            code => Err(error(Op::Lock, &self.mutex.place, ErrorKind::Os(code))),
        }
    }

    /// The address of the protected value, for atomics inside it.
    pub fn as_ptr(&self) -> *mut T {
        self.mutex.value_ptr()
    }
}

impl<T: Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the lock (the guard is not Send). The
        // result is ignored: unlocking a mutex we hold cannot fail, and a
        // guard dropped after an owner death makes the mutex unrecoverable
        // on purpose.
        let _ = unsafe { sys::pthread::unlock(self.mutex.raw()) };
        self.mutex.place.segment().unpin();
    }
}

impl<T: Pod> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").field("owner_died", &self.owner_died).finish()
    }
}

/// Why a lock did not simply succeed.
///
/// There is deliberately no `From<LockError> for Error`: converting with `?`
/// would drop the guard of an [`OwnerDied`](LockError::OwnerDied) lock
/// without repairing the data, which makes the mutex unrecoverable for every
/// process, for good. Match on it instead.
pub enum LockError<'m, T: Pod> {
    /// The previous holder died holding the lock. The lock is now held by
    /// this guard; repair the value and call
    /// [`MutexGuard::mark_consistent`].
    OwnerDied(MutexGuard<'m, T>),
    /// The lock was not taken: timeout, would block, unrecoverable, …
    Failed(Error),
}

impl<T: Pod> LockError<'_, T> {
    /// The error kind: [`ErrorKind::OwnerDied`] for an owner death.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockError::OwnerDied(_) => ErrorKind::OwnerDied,
            LockError::Failed(e) => e.kind().clone(),
        }
    }
}

impl<T: Pod> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T: Pod> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(g) => write!(
                f,
                "cannot lock {} cleanly: its previous holder died; the lock is held, repair the data and mark it consistent",
                g.mutex.place.label()
            ),
            LockError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T: Pod> std::error::Error for LockError<'_, T> {}
