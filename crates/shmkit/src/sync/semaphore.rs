//! A counting semaphore in shared memory, on a futex.
//!
//! Layout (64 bytes, after the 16-byte header):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 16 | `count` | units available; waiters sleep on this word |
//! | 20 | `sleepers` | processes asleep (or about to sleep) in `wait` |
//!
//! `post` adds a unit, then wakes one sleeper only if `sleepers` is
//! non-zero, so posting to a semaphore nobody waits on makes no system call.
//! A waiter increments `sleepers` *before* its last check of `count` and the
//! poster reads `sleepers` *after* its increment of `count`, each with a
//! `SeqCst` fence between its write and its read, so at least one of them
//! sees the other (a lost wake-up would need each to miss the other's write). A waiter killed while asleep leaves
//! `sleepers` too high, which costs spare wake-up calls on every post from
//! then on. A poster killed between adding its unit and waking a sleeper
//! leaves the sleeper asleep with a unit available; sleepers wake at least
//! once a second to cover that case.

use std::time::{Duration, Instant};

use super::primitive::{Mapped, Memory, Ordering, Word};
use super::{HEADER_SIZE, Place, SPIN_LIMIT, Sleeper, deadline_after, error, expired, remaining, spin_then};
use crate::error::{ErrorKind, Op, Result};
use crate::segment::Segment;

const MAGIC: u32 = u32::from_le_bytes(*b"SKsm");
const VERSION: u32 = 1;

/// A counting semaphore placed in a [`Segment`], usable from any process
/// that maps it.
#[derive(Debug)]
pub struct Semaphore<'a> {
    place: Place<'a>,
}

impl<'a> Semaphore<'a> {
    /// Bytes a semaphore occupies; its offset must be a multiple of 64.
    pub const SIZE: usize = 64;

    /// Initialises a semaphore with `value` units at `offset` of `segment`
    /// (which must be zero there, as fresh segments are).
    ///
    /// # Errors
    ///
    /// The place is outside the segment, misaligned or read-only, or a
    /// primitive already lives there ([`ErrorKind::AlreadyExists`]).
    pub fn create(segment: &'a Segment, offset: usize, value: u32) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "semaphore")?;
        place.init(MAGIC, VERSION, 0, || {
            place.word(HEADER_SIZE).store(value, Ordering::Relaxed);
            place.word(HEADER_SIZE + 4).store(0, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Semaphore { place })
    }

    /// Opens a semaphore another process created.
    ///
    /// # Errors
    ///
    /// Nothing (or something else) was initialised there.
    pub fn open(segment: &'a Segment, offset: usize) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "semaphore")?;
        place.open(MAGIC, VERSION, 0, "semaphore")?;
        Ok(Semaphore { place })
    }

    /// Creates the semaphore with `value`, or opens it if another process
    /// was first; either side may start first.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(segment: &'a Segment, offset: usize, value: u32) -> Result<Self> {
        let place = Place::new(segment, offset, Self::SIZE, "semaphore")?;
        place.init_or_open(MAGIC, VERSION, 0, "semaphore", || {
            place.word(HEADER_SIZE).store(value, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Semaphore { place })
    }

    fn protocol(&self) -> Protocol<Mapped> {
        Protocol { mem: self.place.mem(), at: HEADER_SIZE, spin: SPIN_LIMIT }
    }

    /// Units available now.
    pub fn value(&self) -> u32 {
        self.protocol().count().load(Ordering::Relaxed)
    }

    /// Adds a unit and wakes one waiter, if any sleeps.
    ///
    /// # Errors
    ///
    /// The count would overflow `u32::MAX`.
    pub fn post(&self) -> Result<()> {
        if self.protocol().post() {
            Ok(())
        } else {
            Err(error(Op::Post, &self.place, ErrorKind::InvalidArgument("the count is at its maximum".into())))
        }
    }

    /// Takes a unit if one is available, without waiting.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if the count is zero.
    pub fn try_wait(&self) -> Result<()> {
        if self.protocol().try_take() { Ok(()) } else { Err(error(Op::Wait, &self.place, ErrorKind::WouldBlock)) }
    }

    /// Takes a unit, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// None in practice; the signature matches [`wait_timeout`](Self::wait_timeout).
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None)
    }

    /// Takes a unit, waiting at most `timeout` (monotonic clock).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if no unit came in time.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        if self.protocol().wait(deadline) { Ok(()) } else { Err(error(Op::Wait, &self.place, ErrorKind::Timeout)) }
    }
}

/// The semaphore's algorithm over any [`Memory`]: `count` at `at`,
/// `sleepers` at `at + 4`. The same code runs on a mapping and in the loom
/// model.
pub(crate) struct Protocol<M: Memory> {
    pub(crate) mem: M,
    pub(crate) at: usize,
    /// Checks before sleeping.
    pub(crate) spin: u32,
}

impl<M: Memory> Protocol<M> {
    fn count(&self) -> &M::W32 {
        self.mem.u32_at(self.at)
    }

    fn sleepers(&self) -> &M::W32 {
        self.mem.u32_at(self.at + 4)
    }

    /// Units available now.
    #[cfg(all(test, loom))]
    pub(crate) fn count_now(&self) -> u32 {
        self.count().load(Ordering::SeqCst)
    }

    /// Adds a unit and wakes a sleeper if there is one; false if the count
    /// is at its maximum.
    pub(crate) fn post(&self) -> bool {
        let count = self.count();
        let mut c = count.load(Ordering::Relaxed);
        loop {
            if c == u32::MAX {
                return false;
            }
            // SYNC POINT: SeqCst pairs with the waiter's SeqCst `sleepers`
            // increment and `count` check (see the module docs).
            match count.compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        self.mem.fence(Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) > 0 {
            self.mem.wake(count, 1);
        }
        true
    }

    /// Takes a unit if one is available.
    pub(crate) fn try_take(&self) -> bool {
        let count = self.count();
        let mut c = count.load(Ordering::Relaxed);
        while c > 0 {
            // SYNC POINT: acquire pairs with the poster's release (SeqCst),
            // so what the poster wrote before posting is visible.
            match count.compare_exchange_weak(c, c - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
            self.mem.pause();
        }
        false
    }

    /// Takes a unit, waiting until `deadline`; false if it passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        loop {
            if spin_then(&self.mem, self.spin, || self.try_take()) {
                return true;
            }
            if expired(deadline) {
                return false;
            }
            let sleeper = Sleeper::register(self.sleepers());
            self.mem.fence(Ordering::SeqCst);
            // Sleep only while the count is still zero; a post in between
            // changes it and the futex returns at once.
            if self.count().load(Ordering::SeqCst) == 0 {
                self.mem.wait(self.count(), 0, Some(remaining(deadline)));
            }
            drop(sleeper);
        }
    }
}
