//! Process-shared synchronization placed inside any [`Segment`]: a robust
//! [`Mutex`], a counting [`Semaphore`], and an [`Event`] to wait for a
//! condition; plus the classic semaphores C programs use, System V
//! [`SemSet`] and POSIX [`NamedSemaphore`].
//!
//! Shared memory has no synchronization of its own: the tutorials poll a
//! `written` flag with `sleep(1)`. These primitives wait without polling:
//! they spin briefly (with the CPU's pause instruction), then sleep on a
//! shared futex, and a notify makes a system call only when someone sleeps.
//! Every wait has a timeout variant, measured on the monotonic clock.
//!
//! Each primitive placed in a segment starts with a 16-byte header (init
//! state, magic, layout version, a layout parameter): `create` writes it
//! last, after the primitive is ready, and `open` checks it, so a process
//! never uses a half-initialised or foreign primitive.
//!
//! # Examples
//!
//! ```
//! use shmkit::Segment;
//! use shmkit::sync::Semaphore;
//!
//! let seg = Segment::options().size(4096).anonymous()?;
//! let sem = Semaphore::create(&seg, 0, 1)?;
//! sem.wait()?;                 // takes the one unit
//! assert!(sem.try_wait().is_err());
//! sem.post()?;
//! assert_eq!(sem.value(), 1);
//! # Ok::<(), shmkit::Error>(())
//! ```

#![allow(unsafe_code)]

mod event;
#[cfg(all(test, loom))]
mod loom_tests;
mod mutex;
mod named;
pub(crate) mod primitive;
mod semaphore;
mod sysv;

use std::ptr::NonNull;
use std::time::{Duration, Instant};

pub use self::event::Event;
pub use self::mutex::{LockError, Mutex, MutexGuard};
pub use self::named::NamedSemaphore;
use self::primitive::{AtomicU32, Memory, Ordering, Word};
pub use self::semaphore::Semaphore;
pub use self::sysv::SemSet;
use crate::error::{Error, ErrorKind, Op, Result};
use crate::segment::Segment;

/// How many times a waiter checks its condition, with a pause between
/// checks, before it sleeps in the kernel. About a microsecond or two: long
/// enough to catch a peer that answers at once on another core, short enough
/// not to waste a core.
pub(crate) const SPIN_LIMIT: u32 = 200;

const UNINIT: u32 = 0;
const INITIALIZING: u32 = 1;
const READY: u32 = 2;

/// Size of the header every primitive starts with.
pub(crate) const HEADER_SIZE: usize = 16;

/// The place of one primitive in a segment: a checked address, tied to the
/// segment's borrow so it cannot outlive the mapping.
#[derive(Debug, Clone)]
pub(crate) struct Place<'a> {
    ptr: NonNull<u8>,
    size: usize,
    label: String,
    segment: &'a Segment,
}

// SAFETY: a Place is an address in a process-wide mapping that lives as long
// as `'a`; everything done through it is atomic or synchronized by the
// primitive that owns it.
unsafe impl Send for Place<'_> {}
// SAFETY: see `Send`.
unsafe impl Sync for Place<'_> {}

impl<'a> Place<'a> {
    /// Checks that `size` bytes at `offset` fit, are aligned to 64 (a cache
    /// line, which also suits every type inside) and are writable.
    pub(crate) fn new(segment: &'a Segment, offset: usize, size: usize, what: &str) -> Result<Place<'a>> {
        let label = format!("{} at offset {offset} ({what})", segment.name());
        let ptr =
            segment.region(Op::Init, offset, size, 64).map_err(|e| Error::new(e.op(), &label, e.kind().clone()))?;
        Ok(Place { ptr, size, label, segment })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn segment(&self) -> &'a Segment {
        self.segment
    }

    /// The primitive's bytes as [`Memory`](primitive::Memory), for the
    /// algorithms that run on a mapping and in the loom model alike.
    pub(crate) fn mem(&self) -> primitive::Mapped {
        // SAFETY: the region was checked by `new` (inside the mapping,
        // 64-aligned, `size` bytes) and the mapping outlives `'a`, which
        // bounds every use of the returned value through `&self`'s borrows
        // in the primitives. Its bytes are only accessed atomically.
        unsafe { primitive::Mapped::new(self.ptr, self.size, false) }
    }

    /// The byte address at `offset` inside the primitive.
    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        // SAFETY: callers pass offsets inside the size checked by `new`
        // (constants of each primitive's layout).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// The 32-bit word at `offset` (a multiple of 4) as an atomic.
    ///
    /// An `&AtomicU32` into shared memory is sound even though other
    /// processes write it: atomics are made for concurrent modification.
    pub(crate) fn word(&self, offset: usize) -> &'a AtomicU32 {
        debug_assert!(offset.is_multiple_of(4));
        // SAFETY: the address is inside the checked region, 4-aligned (the
        // region is 64-aligned and `offset` a multiple of 4), and the mapping
        // lives for `'a`. Every access to it is atomic.
        unsafe { AtomicU32::from_ptr(self.at(offset).cast::<u32>()) }
    }

    /// Claims the place for a new primitive: `UNINIT` → `INITIALIZING`, runs
    /// `setup`, then publishes the header with `READY` (release), so that an
    /// opener that sees `READY` (acquire) sees everything `setup` wrote.
    pub(crate) fn init(&self, magic: u32, version: u32, param: u32, setup: impl FnOnce() -> Result<()>) -> Result<()> {
        let state = self.word(0);
        match state.compare_exchange(UNINIT, INITIALIZING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {}
            Err(INITIALIZING | READY) => {
                return Err(Error::new(Op::Init, &self.label, ErrorKind::AlreadyExists));
            }
            Err(other) => {
                return Err(Error::new(Op::Init, &self.label, ErrorKind::Corrupt(format!("init state {other}"))));
            }
        }
        if let Err(e) = setup() {
            state.store(UNINIT, Ordering::Release);
            return Err(e);
        }
        self.word(4).store(magic, Ordering::Relaxed);
        self.word(8).store(version, Ordering::Relaxed);
        self.word(12).store(param, Ordering::Relaxed);
        // SYNC POINT: publishes the primitive to openers (acquire in `open`).
        state.store(READY, Ordering::Release);
        Ok(())
    }

    /// Checks the header of an existing primitive. A creator that is still
    /// initialising is waited for, at most `INIT_WAIT`.
    pub(crate) fn open(&self, magic: u32, version: u32, param: u32, what: &str) -> Result<()> {
        const INIT_WAIT: Duration = Duration::from_millis(200);
        let start = Instant::now();
        let state = loop {
            // SYNC POINT: pairs with the release store in `init`.
            match self.word(0).load(Ordering::Acquire) {
                INITIALIZING if start.elapsed() < INIT_WAIT => std::thread::sleep(Duration::from_micros(100)),
                s => break s,
            }
        };
        let corrupt = |what: String| Err(Error::new(Op::Open, &self.label, ErrorKind::Corrupt(what)));
        match state {
            READY => {}
            UNINIT | INITIALIZING => return Err(Error::new(Op::Open, &self.label, ErrorKind::NotInitialized)),
            other => return corrupt(format!("init state {other}")),
        }
        let (m, v, p) = (
            self.word(4).load(Ordering::Relaxed),
            self.word(8).load(Ordering::Relaxed),
            self.word(12).load(Ordering::Relaxed),
        );
        if m != magic {
            return corrupt(format!("magic {m:#010x}: this is not a {what}"));
        }
        if v != version {
            return corrupt(format!("layout version {v:#x}, this build uses {version:#x}"));
        }
        if p != param {
            return corrupt(format!("layout parameter {p} (payload size), expected {param}"));
        }
        Ok(())
    }

    /// `init`, or `open` if another process initialised it first.
    pub(crate) fn init_or_open(
        &self,
        magic: u32,
        version: u32,
        param: u32,
        what: &str,
        setup: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        match self.init(magic, version, param, setup) {
            Ok(()) => Ok(true),
            Err(e) if *e.kind() == ErrorKind::AlreadyExists => self.open(magic, version, param, what).map(|()| false),
            Err(e) => Err(e),
        }
    }
}

/// The error for a primitive operation.
pub(crate) fn error(op: Op, place: &Place<'_>, kind: ErrorKind) -> Error {
    Error::new(op, place.label(), kind)
}

/// Checks `ready()` up to `limit` times with a pause between checks; true
/// as soon as it holds. The first half of spin-then-park: callers sleep on a
/// futex when this returns false.
pub(crate) fn spin_then<M: Memory>(mem: &M, limit: u32, mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..limit {
        if ready() {
            return true;
        }
        mem.pause();
    }
    ready()
}

/// The deadline `timeout` from now; `None` (no deadline) if it is too far
/// to represent.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The longest single sleep of an untimed or long wait. A poster killed
/// between publishing a unit and waking a sleeper would otherwise leave the
/// sleeper asleep with the unit available; waking at least this often bounds
/// that delay. It is a safety net, not polling: a live poster always wakes.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Counts this process among a primitive's sleepers while alive, so that a
/// panicking condition closure cannot leave the count raised.
pub(crate) struct Sleeper<'a, W: Word<u32>>(pub(crate) &'a W);

impl<'a, W: Word<u32>> Sleeper<'a, W> {
    pub(crate) fn register(word: &'a W) -> Sleeper<'a, W> {
        word.fetch_add(1, Ordering::SeqCst);
        Sleeper(word)
    }
}

impl<W: Word<u32>> Drop for Sleeper<'_, W> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Time left until `deadline` (`None`: no deadline), capped at
/// [`MAX_SLEEP`]; `Some(ZERO)` once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Duration {
    deadline.map_or(MAX_SLEEP, |d| d.saturating_duration_since(Instant::now()).min(MAX_SLEEP))
}

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}
