//! An event (an "eventcount"): wait until a condition on shared memory
//! holds, woken by `notify_one`/`notify_all` from any process.
//!
//! Layout (64 bytes, after the 16-byte header):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 16 | `epoch` | bumped by every notify; sleepers wait on this word |
//! | 20 | `sleepers` | processes asleep (or about to sleep) in a wait |
//!
//! The waiter registers in `sleepers`, reads `epoch`, checks its condition,
//! and sleeps only while `epoch` is unchanged. The notifier changes the
//! condition, bumps `epoch`, and reads `sleepers`: zero means no process can
//! be asleep with a stale view, so no system call is made. Each side puts a
//! `SeqCst` fence between its write and its read (the Dekker pattern), so the
//! notifier sees the registration or the waiter sees the new epoch (and then
//! the condition): a wake-up cannot be lost. (`SeqCst` accesses alone would
//! do in the C++ model; the fences make the argument one that the loom model
//! checker, which treats `SeqCst` accesses as acquire/release, can verify,
//! and cost one `mfence` on the notify path.)
//!
//! Known limits: a notifier killed between changing the condition and
//! waking, or 2^32 notifies while a waiter stalls between reading `epoch` and
//! sleeping, leave a sleeper asleep with its condition true; sleepers wake at
//! least once a second to cover both. A waiter killed while asleep leaves
//! `sleepers` too high, which costs spare wake-up calls from then on.

use std::time::{Duration, Instant};

use super::primitive::{Mapped, Memory, Ordering, Word};
use super::{HEADER_SIZE, Place, SPIN_LIMIT, Sleeper, deadline_after, error, expired, remaining, spin_then};
use crate::error::{ErrorKind, Op, Result};
use crate::segment::Segment;

const MAGIC: u32 = u32::from_le_bytes(*b"SKev");
const VERSION: u32 = 1;

/// A notification placed in a [`Segment`]: processes wait for a condition
/// (any closure over shared state) and others wake them after changing it.
///
/// # Examples
///
/// ```
/// use shmkit::Segment;
/// use shmkit::sync::Event;
/// use std::time::Duration;
///
/// let seg = Segment::options().size(4096).anonymous()?;
/// let event = Event::create(&seg, 0)?;
/// event.notify_all(); // nobody waits: no system call
/// let err = event.wait_until(|| false, Some(Duration::from_millis(1))).unwrap_err();
/// assert_eq!(*err.kind(), shmkit::ErrorKind::Timeout);
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Event<'a> {
    place: Place<'a>,
}

impl<'a> Event<'a> {
    /// Bytes an event occupies; its offset must be a multiple of 64.
    pub const SIZE: usize = 64;

    /// Initialises an event at `offset` of `segment`.
    ///
    /// # Errors
    ///
    /// The place is outside, misaligned or read-only, or taken.
    pub fn create(segment: &'a Segment, offset: usize) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "event")?;
        place.init(MAGIC, VERSION, 0, || Ok(()))?;
        Ok(Event { place })
    }

    /// Opens an event another process created.
    ///
    /// # Errors
    ///
    /// Nothing (or something else) was initialised there.
    pub fn open(segment: &'a Segment, offset: usize) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "event")?;
        place.open(MAGIC, VERSION, 0, "event")?;
        Ok(Event { place })
    }

    /// Creates the event, or opens it if another process was first.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(segment: &'a Segment, offset: usize) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "event")?;
        place.init_or_open(MAGIC, VERSION, 0, "event", || Ok(()))?;
        Ok(Event { place })
    }

    fn protocol(&self) -> Protocol<Mapped> {
        Protocol { mem: self.place.mem(), at: HEADER_SIZE, spin: SPIN_LIMIT }
    }

    /// Wakes one waiter. Call it after making the condition true.
    pub fn notify_one(&self) {
        self.protocol().notify(1);
    }

    /// Wakes every waiter. Call it after making the condition true.
    pub fn notify_all(&self) {
        self.protocol().notify(i32::MAX as u32);
    }

    /// Waits until `condition()` returns true, at most `timeout`
    /// (`None`: no limit). The condition is checked at once, then while
    /// spinning briefly, then after every wake-up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if the condition did not hold in time.
    pub fn wait_until(&self, condition: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<()> {
        // A timeout too long to represent is no timeout.
        let deadline = timeout.and_then(deadline_after);
        if self.protocol().wait_until(condition, deadline) {
            Ok(())
        } else {
            Err(error(Op::Wait, &self.place, ErrorKind::Timeout))
        }
    }

    /// Waits for the next notify, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if no notify came in time.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        let protocol = self.protocol();
        let start = protocol.epoch().load(Ordering::SeqCst);
        self.wait_until(|| protocol.epoch().load(Ordering::SeqCst) != start, timeout)
    }
}

/// The eventcount's algorithm over any [`Memory`]: `epoch` at `at`,
/// `sleepers` at `at + 4`. The same code runs on a mapping and in the loom
/// model.
pub(crate) struct Protocol<M: Memory> {
    pub(crate) mem: M,
    pub(crate) at: usize,
    /// Checks of the condition before sleeping.
    pub(crate) spin: u32,
}

impl<M: Memory> Protocol<M> {
    fn epoch(&self) -> &M::W32 {
        self.mem.u32_at(self.at)
    }

    fn sleepers(&self) -> &M::W32 {
        self.mem.u32_at(self.at + 4)
    }

    /// Wakes up to `count` waiters; no system call when nobody sleeps.
    pub(crate) fn notify(&self, count: u32) {
        // SYNC POINT: SeqCst bump, then SeqCst read of `sleepers` (see the
        // module docs for why a wake-up cannot be lost).
        self.epoch().fetch_add(1, Ordering::SeqCst);
        self.mem.fence(Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) > 0 {
            self.mem.wake(self.epoch(), count);
        }
    }

    /// Waits until `condition()` holds; false if `deadline` passed first.
    pub(crate) fn wait_until(&self, mut condition: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let unbounded = deadline.is_none();
        if spin_then(&self.mem, self.spin, &mut condition) {
            return true;
        }
        loop {
            if !unbounded && expired(deadline) {
                return false;
            }
            let sleeper = Sleeper::register(self.sleepers());
            self.mem.fence(Ordering::SeqCst);
            let epoch = self.epoch().load(Ordering::SeqCst);
            if condition() {
                return true;
            }
            self.mem.wait(self.epoch(), epoch, Some(remaining(deadline)));
            drop(sleeper);
            if condition() {
                return true;
            }
        }
    }
}
