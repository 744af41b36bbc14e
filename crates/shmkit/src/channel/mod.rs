//! Channels between processes: a lock-free single-producer single-consumer
//! [`ring`] of variable-length messages (more to come: publish/subscribe and
//! request/response).
//!
//! Every channel lives in a POSIX shared-memory object named
//! `shmkit.<kind>.<name>` that starts with the shmkit object header
//! ([`crate::registry`]), so `shmkit ls` can list it and tell live from
//! stale. Everything read from the shared memory is validated: a peer that
//! scribbles over indices, lengths or headers makes calls return
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt), never panic, read out
//! of bounds or loop forever.
//!
//! # Waiting
//!
//! Waiting is spin-then-park: a waiter checks its condition for up to 20 µs
//! (a ring end's `set_spin` changes it) with the CPU's pause instruction,
//! then sleeps on a futex. A waiter announces that it sleeps in a flag on a
//! cache line of its own, written only when it goes to sleep, so the other
//! side's check of that flag on every message is a cache hit and a notify
//! makes a system call only when someone sleeps.
//!
//! While it spins, a receiver whose last message was longer than a cache line
//! asks for the lines the next one will take, so that they cross between
//! cores as the sender writes them rather than one by one after the message
//! is announced; senders ask ahead, in exclusive state, for the lines they
//! will write next.
//!
//! Announcing sleep and checking the flag form a store-load pair on each side
//! (the classic Dekker pattern), which needs a full fence on both sides. A
//! fence on every message would stall the sender on its stores, so shmkit
//! makes the fence asymmetric: the sender uses only a compiler fence, and the
//! side going to sleep calls `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`,
//! which makes every running thread of every registered process execute a
//! full barrier. Where the kernel lacks it (before Linux 4.16), both sides
//! fall back to a `SeqCst` fence.

#![allow(unsafe_code)]

pub mod pubsub;
pub mod reqrep;
pub mod ring;

use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{Ordering, compiler_fence, fence};
use std::time::{Duration, Instant};

use crate::registry::ProcessId;
use crate::sync::primitive::Memory;
use crate::sys;

/// How long a sleeping waiter sleeps at most before it checks again that its
/// peer is alive: a peer killed with `SIGKILL` cannot say goodbye.
pub(crate) const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);

/// How long a waiter spins before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(20);

/// Whether this process may rely on the asymmetric fence (registered for
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`). Registration happens once, on the
/// first channel opened.
pub(crate) fn membarrier_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(sys::proc::register_membarrier)
}

/// The light half of the asymmetric fence, on every message.
#[inline]
pub(crate) fn light_fence(membarrier: bool) {
    if membarrier {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The heavy half, before going to sleep.
pub(crate) fn heavy_fence(membarrier: bool) {
    fence(Ordering::SeqCst);
    if membarrier && sys::proc::global_barrier().is_err() {
        // Registered but refused: cannot happen on a kernel that accepted
        // the registration. The SeqCst fence above is all we can do.
    }
}

/// Spins until `ready()` holds or `limit` has passed (zero: checks once;
/// [`SPIN`] by default). The first checks come one pause apart, so a reply
/// that arrives at once is seen at once; after that the gaps grow to 16
/// pauses, because checking a line the other core is writing takes the line
/// away from it, and a waiter that checks less often lets a streaming writer
/// fill whole lines.
#[inline]
pub(crate) fn spin_until_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if limit.is_zero() {
        return ready();
    }
    let start = Instant::now();
    let mut pauses = 1;
    let mut checks = 0u32;
    loop {
        for _ in 0..8 {
            if ready() {
                return true;
            }
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
        }
        checks += 8;
        if checks >= 64 {
            pauses = 16;
        }
        if start.elapsed() >= limit {
            return ready();
        }
    }
}

/// How much of the next message a waiting receiver asks for (see
/// [`spin_prefetching`]): the largest message `shmkit bench` sends; a pass
/// over it is bounded by the spin budget.
pub(crate) const SPIN_PREFETCH: u64 = 1 << 20;

/// Spins as [`spin_until_for`] (`limit`, not zero), asking all the while for
/// the lines at positions `lines` (`offset` maps a position into `mem`): the
/// lines of the message the receiver waits for, if it is as long as the last
/// one.
///
/// A message longer than a line would otherwise cross between cores line by
/// line after the word announcing it is seen, each line a request to the
/// sender's core; asked for while the sender writes, the lines come over as
/// they are written (one asked for before the sender writes it is only
/// taken back by the sender's store). A message that takes longer to write
/// than the budget is not waited for so long: the receiver sleeps as usual
/// (the ring gives a larger budget to larger messages).
pub(crate) fn spin_prefetching<M: Memory>(
    mem: &M,
    limit: Duration,
    lines: Range<u64>,
    offset: impl Fn(u64) -> usize,
    mut ready: impl FnMut() -> bool,
) -> bool {
    // Lines asked for between looks at the word, and looks between looks at
    // the clock: a reply is seen within ~64 prefetches, and the budget is
    // overrun by at most ~1,000.
    const BATCH: u64 = 64 * 64;
    const LOOKS: u32 = 16;
    let start = Instant::now();
    let mut at = lines.start;
    loop {
        for _ in 0..LOOKS {
            let batch_end = (at + BATCH).min(lines.end);
            while at < batch_end {
                mem.prefetch_read(offset(at));
                at += 64;
            }
            if at >= lines.end {
                at = lines.start;
            }
            if ready() {
                return true;
            }
            mem.pause();
        }
        if start.elapsed() >= limit {
            return ready();
        }
    }
}

/// Copies `len` bytes from `src` to `dst`, with inline moves for the small
/// messages that dominate streams (a call to `memcpy` costs more than the
/// copy itself at 8 bytes).
///
/// # Safety
///
/// Both ranges must be valid for `len` bytes and must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: every access is inside `src..src+len` or `dst..dst+len`, as
    // the caller promises; unaligned accesses are used because either side
    // may be a private buffer at any address. For 8..=16 and 4..8 bytes the
    // two moves overlap in the middle, which is fine.
    unsafe {
        match len {
            8..=16 => {
                let a = src.cast::<u64>().read_unaligned();
                let b = src.add(len - 8).cast::<u64>().read_unaligned();
                dst.cast::<u64>().write_unaligned(a);
                dst.add(len - 8).cast::<u64>().write_unaligned(b);
            }
            4..8 => {
                let a = src.cast::<u32>().read_unaligned();
                let b = src.add(len - 4).cast::<u32>().read_unaligned();
                dst.cast::<u32>().write_unaligned(a);
                dst.add(len - 4).cast::<u32>().write_unaligned(b);
            }
            0..4 => {
                for i in 0..len {
                    *dst.add(i) = *src.add(i);
                }
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// The identity of an end's holder, as stored in shared memory.
pub(crate) fn holder_alive(pid: u32, start: u64) -> bool {
    ProcessId { pid, start }.is_alive()
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::sync::primitive::heap::Heap;

    /// Runs `spin_prefetching` over `lines` until `ready` has been asked
    /// `looks` times (never, if zero); what it returned and the positions
    /// it asked for, in order.
    fn prefetched(lines: Range<u64>, looks: u32, limit: Duration) -> (bool, Vec<u64>) {
        let heap = Heap::new(4096);
        let mem = heap.mem();
        let asked = RefCell::new(Vec::new());
        let seen = Cell::new(0);
        let offset = |at: u64| {
            asked.borrow_mut().push(at);
            (at % 4096) as usize
        };
        let ready = || {
            seen.set(seen.get() + 1);
            seen.get() == looks
        };
        let got = spin_prefetching(&mem, limit, lines, offset, ready);
        (got, asked.into_inner())
    }

    #[test]
    fn a_short_message_is_asked_for_whole_between_looks() {
        let (got, asked) = prefetched(128..128 + 5 * 64, 3, Duration::from_secs(60));
        assert!(got);
        let pass: Vec<u64> = (0..5).map(|i| 128 + i * 64).collect();
        assert_eq!(asked, pass.repeat(3));
    }

    #[test]
    fn a_long_message_is_asked_for_64_lines_a_look_round_and_round() {
        let (got, asked) = prefetched(0..200 * 64, 5, Duration::from_secs(60));
        assert!(got);
        // Looks 1-4 cover the 200 lines (64, 64, 64, 8), look 5 starts over.
        let expected: Vec<u64> = (0..200).chain(0..64).map(|i| i * 64).collect();
        assert_eq!(asked, expected);
    }

    #[test]
    fn a_message_that_never_comes_ends_the_spin_with_the_last_look() {
        let (got, asked) = prefetched(0..2 * 64, 0, Duration::from_millis(1));
        assert!(!got);
        assert!(!asked.is_empty() && asked.chunks(2).all(|pair| pair == [0, 64]));
    }
}
