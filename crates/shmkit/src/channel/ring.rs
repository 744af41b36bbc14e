//! A single-producer, single-consumer ring of variable-length messages in a
//! named shared-memory object, for two unrelated processes.
//!
//! # Layout
//!
//! | offset | what | written by |
//! |---|---|---|
//! | 0 | object header ([`crate::registry`]); `params[0]` capacity, `params[1]` largest message | creator |
//! | 192 | `tail` (u64): where the producer writes next | producer, every message |
//! | 256 | `head` (u64): where the consumer reads next | consumer, every message |
//! | 320 | `consumer_sleeping` (u32 futex word) | consumer going to sleep, producer waking it |
//! | 384 | `producer_sleeping` (u32 futex word) | producer going to sleep, consumer waking it |
//! | 448 | producer end: `state`, `pid` (u32), `start` (u64) | producer, on open and close |
//! | 512 | consumer end: `state`, `pid` (u32), `start` (u64) | consumer, on open and close |
//! | 1024 | data: `capacity` bytes, a power of two | producer |
//!
//! Each line has one writer, and the lines each side reads on every message
//! (the other side's sleeping flag and end state) are written only rarely, so
//! those reads are cache hits: the only lines that travel between the cores
//! in steady state are the data (and the consumer's `head`, which the producer
//! reads only when its cached copy says the ring is full).
//!
//! Positions (`head`, `tail`) count bytes from the start and never wrap; the
//! byte at position `p` is `data[p % capacity]`.
//!
//! # Messages
//!
//! A message is an 8-byte header, then the payload, padded to 8 bytes. The
//! header is one `u64`: the low 32 bits are the length, the high 32 bits a
//! *stamp* derived from the message's position (`(p >> 3) | 1 << 31`, never
//! zero). A header of 0 means "nothing here yet". When a message would cross
//! the end of the data area, the producer writes a padding header (length
//! `u32::MAX`) and puts the message at the start of the next lap.
//!
//! The producer writes the payload, then writes 0 where the *next* header
//! will go, then stores this message's header with release ordering. So the
//! consumer, polling the header at its `head`, always finds either 0 or a
//! complete message: it needs no index from the producer, and a small message
//! costs it one cache-line transfer (header and payload share the line).
//! The producer reads the consumer's `head` only when its cached copy says the
//! ring is full.
//!
//! # Ends and lifetime
//!
//! Each end is claimed by one process (its `pid` and start time are
//! recorded); a second live claimant gets [`ErrorKind::Busy`], and a claim by
//! a dead process can be taken over, which is how a channel is reopened after
//! a crash (`tail` and `head` in shared memory tell where to resume). When an
//! end closes or dies, the other end gets [`ErrorKind::Disconnected`] once it
//! has received everything that was sent. The object is removed when the
//! consumer closes with the producer closed or gone, or the producer closes
//! after the consumer.
//!
//! # One protocol, three memories
//!
//! The lock-free protocol is written once, over the crate's one door to
//! shared words (`sync::primitive::Memory`): the ends' shared state and
//! methods (`Core`, with the producer's `Producer` and the consumer's
//! `Consumer`) are generic, and [`Sender`] and [`Receiver`] wrap them over a
//! real mapping, with the segment, the claims and liveness. The unit tests
//! run the same code over private heap memory (single-threaded and with two
//! threads, without system calls, so Miri can check them) and, under
//! `cfg(loom)`, over loom's model memory, whose futex makes a lost wake-up a
//! deadlock the model checker reports:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmkit --lib --release loom
//! MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test -p shmkit --lib ring
//! ```

use std::cell::Cell;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::{LIVENESS_INTERVAL, SPIN, SPIN_PREFETCH, holder_alive, membarrier_ready, spin_prefetching, spin_until_for};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::registry::{self, ObjectKind, ProcessId};
use crate::segment::{Lifetime, Segment, Target};
use crate::sync::primitive::{AtomicU32, AtomicU64, Mapped, Memory, Ordering, Word};

const VERSION: u32 = 1;
const TAIL: usize = 192;
const HEAD: usize = 256;
const CONSUMER_SLEEPING: usize = 320;
const PRODUCER_SLEEPING: usize = 384;
const PRODUCER: usize = 448;
const CONSUMER: usize = 512;
const DATA: usize = 1024;

/// Offsets inside an end's line.
const STATE: usize = 0;
const PID: usize = 4;
const START: usize = 8;

/// End states.
const NEVER: u32 = 0;
const ACTIVE: u32 = 1;
const CLOSED: u32 = 2;

const HEADER: u64 = 8;
/// A cache line.
const LINE: u64 = 64;
const PAD: u32 = u32::MAX;

/// How far ahead of its position the producer asks for the lines it will
/// write (see `Producer::publish`).
const PREFETCH_AHEAD: u64 = 512;

/// The smallest and largest data areas.
const MIN_CAPACITY: usize = 4096;
const MAX_CAPACITY: usize = 1 << 40;

/// The furthest position a ring is taken to reach (2^62 bytes: centuries
/// at memory speed); a larger `head` or `tail` in shared memory is
/// corrupt, and the arithmetic on positions cannot overflow below it.
const MAX_POSITION: u64 = 1 << 62;

fn stamp(pos: u64) -> u64 {
    ((pos >> 3) as u32 | 1 << 31) as u64
}

fn header(pos: u64, len: u32) -> u64 {
    stamp(pos) << 32 | u64::from(len)
}

fn padded(len: u64) -> u64 {
    len.div_ceil(8) * 8
}
/// How to create a ring.
#[derive(Debug, Clone)]
pub struct RingOptions {
    capacity: usize,
    mode: u32,
    allow_untrusted: bool,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { capacity: 1 << 20, mode: 0o600, allow_untrusted: false }
    }
}

impl RingOptions {
    /// 1 MiB of data, mode 0600.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the data area: a power of two, at least 4096. The largest
    /// message is half of it, less 16 bytes.
    pub fn capacity(&mut self, bytes: usize) -> &mut Self {
        self.capacity = bytes;
        self
    }

    /// Permission bits of the shared-memory object (default 0600).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Accept an existing ring that another user owns or that group or
    /// others may write (see
    /// [`SegmentOptions::allow_untrusted`](crate::SegmentOptions::allow_untrusted));
    /// default `false`. A ring shared between users (mode 0660, say) needs
    /// it on the side that opens what the other created.
    pub fn allow_untrusted(&mut self, allow: bool) -> &mut Self {
        self.allow_untrusted = allow;
        self
    }
}

/// The POSIX name of the ring called `name`.
pub fn object_name(name: &str) -> String {
    format!("/{}ring.{name}", registry::PREFIX)
}

/// Fills in what `shmkit info` and `ls` show about a ring: its ends and
/// their liveness, capacity and fill. Reads only, by copy; the values are
/// reported as found (a hostile peer can make them lie, not crash us).
pub(crate) fn inspect(seg: &Segment, header: &registry::ObjectHeader, info: &mut registry::ObjectInfo) -> Result<()> {
    if seg.len() < DATA {
        return Err(Error::new(Op::Stat, seg.name(), ErrorKind::Corrupt("too small for a ring".into())));
    }
    for (role, line) in [("producer", PRODUCER), ("consumer", CONSUMER)] {
        let state = seg.read::<u32>(line + STATE)?;
        let pid = seg.read::<u32>(line + PID)?;
        let start = seg.read::<u64>(line + START)?;
        if state == ACTIVE && pid != 0 {
            let process = ProcessId { pid, start };
            info.holders.push(registry::Holder { role, process, alive: process.is_alive() });
        }
        let text = match state {
            NEVER => "never opened",
            ACTIVE => "open",
            CLOSED => "closed",
            _ => "corrupt",
        };
        info.details.push((if role == "producer" { "producer end" } else { "consumer end" }, text.to_string()));
    }
    let (tail, head) = (seg.read::<u64>(TAIL)?, seg.read::<u64>(HEAD)?);
    info.details.push(("capacity", header.params[0].to_string()));
    info.details.push(("largest message", header.params[1].to_string()));
    info.details.push(("fill", format!("{} bytes", tail.saturating_sub(head))));
    info.details.push(("sent", format!("{tail} bytes (with headers)")));
    Ok(())
}

/// Which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Producer,
    Consumer,
}

impl Side {
    fn line(self) -> usize {
        match self {
            Side::Producer => PRODUCER,
            Side::Consumer => CONSUMER,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }
}

/// Where the other end of a ring stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// No process has opened it yet.
    Never,
    /// A live process holds it.
    Active,
    /// It was closed (dropped).
    Closed,
    /// Its process died without closing it.
    Died,
}

/// The accesses on the ring's paths that run for every message: `Memory`'s
/// own (checked) by default, as for loom's model memory; for a real mapping
/// the words are reached without a bounds check, because `Core` derives
/// their offsets from constants and a validated capacity (a check there
/// costs more than a tenth of the time of a message sent and received in
/// one thread). Byte copies use `Memory`'s own, whose check panics out of
/// line.
trait RingMemory: Memory {
    /// The 64-bit word at `offset`, as [`Memory::u64_at`].
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 8 and `offset + 8 <= self.len()`.
    #[inline(always)]
    unsafe fn word64(&self, offset: usize) -> &Self::W64 {
        self.u64_at(offset)
    }

    /// The 32-bit word at `offset`, as [`Memory::u32_at`].
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 4 and `offset + 4 <= self.len()`.
    #[inline(always)]
    unsafe fn word32(&self, offset: usize) -> &Self::W32 {
        self.u32_at(offset)
    }
}

impl RingMemory for Mapped {
    #[inline(always)]
    unsafe fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= self.len());
        // SAFETY: inside the region and 8-aligned (the caller's promise;
        // the base is 8-aligned), valid as long as `self` (`Mapped::new`'s
        // contract), and only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base().as_ptr().add(offset).cast()) }
    }

    #[inline(always)]
    unsafe fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= self.len());
        // SAFETY: as in `word64`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.base().as_ptr().add(offset).cast()) }
    }
}

/// What both ends share, over any [`Memory`]: the region, the ring's
/// geometry, and one end's view of the other.
#[derive(Debug)]
struct Core<M: RingMemory> {
    mem: M,
    /// Bytes of the data area: a power of two, validated before use.
    capacity: u64,
    /// `capacity - 1` without the low three bits: a header's index.
    mask: u64,
    max_message: u64,
    /// The consumer publishes its position after this many bytes (and
    /// whenever it runs out of messages): `capacity / 16`.
    batch: u64,
    side: Side,
    /// The object's name, for errors.
    label: Box<str>,
    /// When the peer's liveness was last read from `/proc` (a file read, far
    /// too slow for every poll), and what it said.
    checked: Cell<Option<(Instant, ProcessId, bool)>>,
    /// How long a wait spins before it sleeps.
    spin: Duration,
    /// Raised by the `SIGBUS` guard when a peer truncated the object under
    /// us (the lost pages now read as zeros); checked where waits look at
    /// the peer's liveness. `None` in models and unguarded mappings.
    truncated: Option<&'static std::sync::atomic::AtomicBool>,
}

impl<M: RingMemory> Core<M> {
    /// The ring of `capacity` data bytes in `mem`, seen from `side`.
    ///
    /// # Panics
    ///
    /// If `capacity` is not a power of two of at least 64, or `mem` is
    /// smaller than the layout: callers validate both first.
    fn new(mem: M, capacity: u64, side: Side, label: &str) -> Core<M> {
        assert!(
            capacity.is_power_of_two() && capacity >= 64 && DATA as u64 + capacity <= mem.len() as u64,
            "a ring of {capacity} bytes in a region of {} bytes",
            mem.len()
        );
        Core {
            mem,
            capacity,
            mask: (capacity - 1) & !7,
            max_message: capacity / 2 - 16,
            batch: capacity / 16,
            side,
            label: label.into(),
            checked: Cell::new(None),
            spin: SPIN,
            truncated: None,
        }
    }

    /// [`ErrorKind::Truncated`] once a peer truncated the object under us:
    /// the lost pages read as zeros, which would look like an empty ring
    /// for ever.
    fn check_truncated(&self, op: Op) -> Result<()> {
        match self.truncated {
            Some(flag) if flag.load(Ordering::Relaxed) => {
                Err(self.err(op, ErrorKind::Truncated { size: (DATA as u64 + self.capacity) }))
            }
            _ => Ok(()),
        }
    }

    /// A 64-bit word of the fixed lines below the data area (the offsets
    /// are constants, so the check folds away).
    #[inline(always)]
    fn u64_at(&self, offset: usize) -> &M::W64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= DATA);
        // SAFETY: below DATA (asserted), and the region holds at least
        // DATA + capacity bytes (`Core::new`).
        unsafe { self.mem.word64(offset) }
    }

    /// A 32-bit word of the fixed lines below the data area.
    #[inline(always)]
    fn u32_at(&self, offset: usize) -> &M::W32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= DATA);
        // SAFETY: as in `u64_at`.
        unsafe { self.mem.word32(offset) }
    }

    /// Where in the region the byte at position `pos` is.
    #[inline(always)]
    fn offset(&self, pos: u64) -> usize {
        DATA + (pos & (self.capacity - 1)) as usize
    }

    /// The header word for position `pos` (a multiple of 8).
    #[inline(always)]
    fn header_at(&self, pos: u64) -> &M::W64 {
        // SAFETY: `mask` keeps the offset 8-aligned and at most
        // `capacity - 8` bytes into the data area, and the region holds at
        // least DATA + capacity bytes (`Core::new`). For a position that is
        // a multiple of 8 (all of them) this is `offset(pos)`.
        unsafe { self.mem.word64(DATA + (pos & self.mask) as usize) }
    }

    #[inline(always)]
    fn end_state(&self, side: Side) -> &M::W32 {
        self.u32_at(side.line() + STATE)
    }

    #[cold]
    #[inline(never)]
    fn err(&self, op: Op, kind: ErrorKind) -> Error {
        Error::new(op, &*self.label, kind)
    }

    #[cold]
    #[inline(never)]
    fn corrupt(&self, op: Op, what: String) -> Error {
        self.err(op, ErrorKind::Corrupt(what))
    }

    /// Whether the other end is gone: closed, or its holder died. The
    /// holder's liveness is read from `/proc` at most every 10 ms; an end
    /// marked active by no process (pid 0) is taken as alive.
    fn peer_gone(&self) -> bool {
        let other = self.side.other().line();
        match self.end_state(self.side.other()).load(Ordering::Acquire) {
            CLOSED => true,
            ACTIVE => {
                let pid = self.u32_at(other + PID).load(Ordering::Acquire);
                if pid == 0 {
                    return false;
                }
                let start = self.u64_at(other + START).load(Ordering::Acquire);
                let holder = ProcessId { pid, start };
                // The cached answer is about one holder: a new process that
                // took the end over since is asked about afresh.
                if let Some((_, _, gone)) =
                    self.checked.get().filter(|&(at, who, _)| who == holder && at.elapsed() < Duration::from_millis(10))
                {
                    return gone;
                }
                let gone = !holder_alive(pid, start);
                self.checked.set(Some((Instant::now(), holder, gone)));
                gone
            }
            _ => false,
        }
    }

    fn peer_state(&self) -> PeerState {
        match self.end_state(self.side.other()).load(Ordering::Acquire) {
            NEVER => PeerState::Never,
            CLOSED => PeerState::Closed,
            _ if self.peer_gone() => PeerState::Died,
            _ => PeerState::Active,
        }
    }

    /// Whether the other end has closed (one atomic load; no `/proc`).
    #[inline(always)]
    fn peer_closed(&self) -> bool {
        self.end_state(self.side.other()).load(Ordering::Acquire) == CLOSED
    }

    /// Claims this end for this process.
    fn claim(&self) -> Result<()> {
        let line = self.side.line();
        let pid_word = self.u32_at(line + PID);
        let me = ProcessId::current();
        let mut current = pid_word.load(Ordering::Acquire);
        loop {
            if current != 0 {
                let start = self.u64_at(line + START).load(Ordering::Acquire);
                let state = self.end_state(self.side).load(Ordering::Acquire);
                if state == ACTIVE && holder_alive(current, start) {
                    return Err(self.err(Op::Open, ErrorKind::Busy { pid: current }));
                }
            }
            match pid_word.compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.u64_at(line + START).store(me.start, Ordering::Release);
        self.end_state(self.side).store(ACTIVE, Ordering::SeqCst);
        Ok(())
    }

    /// Closes this end and wakes the peer if it sleeps waiting for us;
    /// returns whether the object should be removed (the other end is done
    /// too).
    fn close(&self) -> bool {
        let line = self.side.line();
        // SYNC POINT: release: a peer that sees the close sees everything
        // this end published before it (the consumer drains, then reports
        // `Disconnected`).
        self.end_state(self.side).store(CLOSED, Ordering::SeqCst);
        self.u32_at(line + PID).store(0, Ordering::Release);
        // SYNC POINT: the close, then the peer's sleeping flag; the peer
        // stores its flag, then (after its heavy fence) checks our state.
        // With a full fence on both sides, either it sees the close or we
        // see its flag and wake it.
        self.mem.fence(Ordering::SeqCst);
        let sleeping = match self.side {
            Side::Producer => CONSUMER_SLEEPING,
            Side::Consumer => PRODUCER_SLEEPING,
        };
        let flag = self.u32_at(sleeping);
        if flag.swap(0, Ordering::SeqCst) != 0 {
            self.mem.wake(flag, i32::MAX as u32);
        }
        let other = self.end_state(self.side.other()).load(Ordering::SeqCst);
        match self.side {
            // Nobody will read what is left: remove unless a live producer
            // is still writing.
            Side::Consumer => matches!(other, NEVER | CLOSED) || self.peer_gone(),
            // Keep unread messages for a consumer that has not come yet;
            // remove them if the consumer closed or died.
            Side::Producer => other == CLOSED || (other == ACTIVE && self.peer_gone()),
        }
    }

    /// Sleeps on `flag` (set to 1 first) unless `ready()` holds after the
    /// heavy fence; at most `timeout` and [`LIVENESS_INTERVAL`].
    fn park(&self, flag: usize, timeout: Option<Duration>, ready: impl Fn() -> bool) {
        let word = self.u32_at(flag);
        word.store(1, Ordering::Relaxed);
        // SYNC POINT: the flag, then the condition; the other side makes
        // the condition true, then (after its light fence) reads the flag.
        self.mem.heavy_fence();
        if !ready() {
            let limit = timeout.map_or(LIVENESS_INTERVAL, |t| t.min(LIVENESS_INTERVAL));
            self.mem.wait(word, 1, Some(limit));
        }
        word.store(0, Ordering::Relaxed);
    }

    /// Wakes the other side if it announced that it sleeps on `flag`.
    #[inline(always)]
    fn unpark(&self, flag: usize) {
        // SYNC POINT: pairs with the heavy fence in `park`.
        self.mem.light_fence();
        let word = self.u32_at(flag);
        if word.load(Ordering::Relaxed) != 0 {
            self.wake(word);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake(&self, word: &M::W32) {
        word.store(0, Ordering::Relaxed);
        self.mem.wake(word, 1);
    }
}

/// The producer's protocol.
#[derive(Debug)]
struct Producer<M: RingMemory> {
    core: Core<M>,
    /// Where the next message goes (private copy of the shared `tail`).
    tail: u64,
    /// The consumer's `head` as last read; refreshed only when full.
    cached_head: u64,
}

impl<M: RingMemory> Producer<M> {
    /// Takes over the producer's position from shared memory.
    fn new(core: Core<M>) -> Result<Producer<M>> {
        let (tail, head) = Self::positions(&core)?;
        Ok(Producer { core, tail, cached_head: head })
    }

    /// The producer's and the consumer's positions in shared memory,
    /// validated.
    fn positions(core: &Core<M>) -> Result<(u64, u64)> {
        let tail = core.u64_at(TAIL).load(Ordering::Acquire);
        let head = core.u64_at(HEAD).load(Ordering::Acquire);
        if !tail.is_multiple_of(8) || tail > MAX_POSITION {
            return Err(core.corrupt(Op::Open, format!("producer position {tail}")));
        }
        let tail = Self::published_end(core, tail);
        if tail != core.u64_at(TAIL).load(Ordering::Relaxed) {
            core.u64_at(TAIL).store(tail, Ordering::Release);
        }
        Self::check_head(core, tail, head)?;
        Ok((tail, head))
    }

    /// Where the last published message ends, starting from the shared
    /// `tail`. A producer killed between storing a message's header and
    /// storing `tail` leaves one message (after at most one padding header)
    /// past `tail`, which the consumer may already have read: skip over
    /// headers that carry their position's stamp and a valid length.
    fn published_end(core: &Core<M>, tail: u64) -> u64 {
        let mut p = tail;
        for _ in 0..2 {
            let h = core.header_at(p).load(Ordering::Acquire);
            if h >> 32 != stamp(p) {
                break;
            }
            let len = h & 0xffff_ffff;
            let index = p & (core.capacity - 1);
            if len == u64::from(PAD) {
                if index == 0 {
                    break;
                }
                p += core.capacity - index;
                continue;
            }
            if len <= core.max_message && index + HEADER + padded(len) <= core.capacity {
                p += HEADER + padded(len);
            }
            break;
        }
        if p > MAX_POSITION { tail } else { p }
    }

    fn check_head(core: &Core<M>, tail: u64, head: u64) -> Result<()> {
        if head > tail || tail - head > core.capacity || !head.is_multiple_of(8) {
            return Err(core.corrupt(Op::Send, format!("consumer position {head} against producer position {tail}")));
        }
        Ok(())
    }

    /// Bytes needed at `tail` for a message of `len` (with padding to the
    /// next lap if it would cross the end), plus the next header's 8 bytes.
    #[inline(always)]
    fn reservation(&self, len: u64) -> (u64, u64) {
        let need = HEADER + padded(len);
        let to_end = self.core.capacity - (self.tail & (self.core.capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        (pad, pad + need + HEADER)
    }

    /// Whether `total` bytes are free, reading the consumer's head if the
    /// cached one says no.
    fn has_room(&mut self, total: u64) -> Result<bool> {
        if self.tail + total - self.cached_head <= self.core.capacity {
            return Ok(true);
        }
        // SYNC POINT: acquire pairs with the consumer's release of `head`
        // after it finished reading the bytes we will overwrite.
        let head = self.core.u64_at(HEAD).load(Ordering::Acquire);
        Self::check_head(&self.core, self.tail, head)?;
        self.cached_head = head;
        Ok(self.tail + total - head <= self.core.capacity)
    }

    /// Reserves room for `len` bytes, waiting up to the deadline. The
    /// common case (room known from the cached head, consumer not closed)
    /// is inline; everything else is in the cold [`reserve_slow`](Self::reserve_slow).
    #[inline(always)]
    fn reserve(&mut self, len: usize, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        let l = len as u64;
        if l <= self.core.max_message {
            let (pad, total) = self.reservation(l);
            if self.tail + total - self.cached_head <= self.core.capacity
                && self.core.end_state(Side::Consumer).load(Ordering::Relaxed) != CLOSED
            {
                return Ok((pad, l));
            }
        }
        self.reserve_slow(len, deadline)
    }

    #[cold]
    #[inline(never)]
    fn reserve_slow(&mut self, len: usize, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        let len = len as u64;
        if len > self.core.max_message {
            return Err(self.core.err(Op::Send, ErrorKind::MessageTooLarge { len, max: self.core.max_message }));
        }
        let (pad, total) = self.reservation(len);
        loop {
            if self.core.end_state(Side::Consumer).load(Ordering::Relaxed) == CLOSED {
                return Err(self.core.err(Op::Send, ErrorKind::Disconnected));
            }
            if self.has_room(total)? {
                return Ok((pad, len));
            }
            let Some(deadline) = deadline else {
                return Err(self.core.err(Op::Send, ErrorKind::WouldBlock));
            };
            let (core, tail) = (&self.core, self.tail);
            // Room, or a `head` that does not make sense: either way the
            // loop goes round and `has_room` validates it. (The peer writes
            // `head`: `tail + total - head` must not be computed unchecked.)
            let room = || {
                let head = core.u64_at(HEAD).load(Ordering::Acquire);
                (tail + total).checked_sub(head).is_none_or(|used| used <= core.capacity)
            };
            if spin_until_for(core.spin, room) {
                continue;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.core.err(Op::Send, ErrorKind::Timeout));
            }
            self.core.check_truncated(Op::Send)?;
            if self.core.peer_gone() {
                return Err(self.core.err(Op::Send, ErrorKind::Disconnected));
            }
            core.park(PRODUCER_SLEEPING, left, || {
                room() || core.end_state(Side::Consumer).load(Ordering::Relaxed) == CLOSED
            });
        }
    }

    /// Publishes a message whose payload is already in place at the
    /// reserved position.
    #[inline(always)]
    fn publish(&mut self, pad: u64, len: u64) {
        let core = &self.core;
        let start = self.tail + pad;
        let next = start + HEADER + padded(len);
        // The next header is "nothing yet" before this one becomes visible.
        core.header_at(next).store(0, Ordering::Relaxed);
        // SYNC POINT: release publishes the payload (and the zero above) to a
        // consumer that acquires this header.
        core.header_at(start).store(header(start, len as u32), Ordering::Release);
        if pad > 0 {
            core.header_at(self.tail).store(header(self.tail, PAD), Ordering::Release);
        }
        self.tail = next;
        // The lines ahead were last read by the consumer, a lap ago; asking
        // for them now, not at the store, keeps a streaming producer from
        // stalling on each (8-byte stream about 75 -> 130 M messages/s on a
        // 2-vCPU VM; plain prefetch for reading gained a third of that).
        core.mem.prefetch_write(core.offset(next + PREFETCH_AHEAD));
        core.u64_at(TAIL).store(next, Ordering::Release);
        core.unpark(CONSUMER_SLEEPING);
    }

    /// Where the payload of a message reserved with padding `pad` goes.
    #[inline(always)]
    fn payload_offset(&self, pad: u64) -> usize {
        self.core.offset(self.tail + pad + HEADER)
    }

    #[inline(always)]
    fn send_with(&mut self, data: &[u8], deadline: Option<Option<Instant>>) -> Result<()> {
        let (pad, len) = self.reserve(data.len(), deadline)?;
        // The reservation guarantees `len` free bytes after the header at
        // `tail + pad`, inside one lap (no wrap).
        self.core.mem.write(self.payload_offset(pad), data);
        self.publish(pad, len);
        Ok(())
    }
}

/// The consumer's protocol.
#[derive(Debug)]
struct Consumer<M: RingMemory> {
    core: Core<M>,
    /// Where the next message's header is (private copy of `head`).
    head: u64,
    /// The `head` last stored in shared memory. The consumer publishes its
    /// position only every `batch` bytes, or when it runs out of messages,
    /// so that the line holding `head` does not travel to the producer's
    /// core for every message.
    published: u64,
    /// Set after the consumer found corrupt shared memory: every later call
    /// reports it again instead of guessing.
    broken: bool,
    /// Bytes of the last message received, at most [`SPIN_PREFETCH`]: a
    /// waiting consumer asks for the lines the next message will take,
    /// guessing it is as long (see [`spin_prefetching`]; on the development
    /// VM: 64 B round trip ~510 -> ~380 ns, 4 KiB 2.5 -> 1.8 us, 64 KiB
    /// 17.5 -> 11.6 us, streams unchanged as a streaming consumer seldom
    /// waits).
    expect: u64,
}

impl<M: RingMemory> Consumer<M> {
    /// Takes over the consumer's position from shared memory.
    fn new(core: Core<M>) -> Result<Consumer<M>> {
        let head = Self::position(&core)?;
        Ok(Consumer { core, head, published: head, broken: false, expect: 0 })
    }

    /// The consumer's position in shared memory, validated.
    fn position(core: &Core<M>) -> Result<u64> {
        let head = core.u64_at(HEAD).load(Ordering::Acquire);
        if !head.is_multiple_of(8) || head > MAX_POSITION {
            return Err(core.corrupt(Op::Open, format!("consumer position {head}")));
        }
        Ok(head)
    }

    /// Looks at the header at `head`: `Ok(Some((pos, len)))` for a ready
    /// message (after skipping padding), `Ok(None)` for nothing yet.
    #[inline]
    fn poll(&mut self) -> Result<Option<(u64, u64)>> {
        if self.broken {
            return Err(self.core.corrupt(Op::Recv, "an earlier message was corrupt".into()));
        }
        // Two rounds at most: a padding header, then the message after it.
        for _ in 0..2 {
            // SYNC POINT: acquire pairs with the producer's release of this
            // header; the payload and the next zero header are visible.
            let h = self.core.header_at(self.head).load(Ordering::Acquire);
            if h == 0 {
                return Ok(None);
            }
            if h >> 32 != stamp(self.head) {
                return Err(self.fail(format!("header {h:#018x} at position {}", self.head)));
            }
            let len = h & 0xffff_ffff;
            let index = self.head & (self.core.capacity - 1);
            if len == u64::from(PAD) {
                if index == 0 {
                    return Err(self.fail(format!("padding at the start of a lap, position {}", self.head)));
                }
                self.head += self.core.capacity - index;
                continue;
            }
            if len > self.core.max_message || index + HEADER + padded(len) > self.core.capacity {
                return Err(self.fail(format!("length {len} at position {}", self.head)));
            }
            return Ok(Some((self.head, len)));
        }
        Err(self.fail(format!("padding after padding at position {}", self.head)))
    }

    fn fail(&mut self, what: String) -> Error {
        self.broken = true;
        self.core.corrupt(Op::Recv, what)
    }

    /// Frees the message at `pos` of `len` bytes for the producer.
    #[inline(always)]
    fn release(&mut self, pos: u64, len: u64) {
        self.head = pos + HEADER + padded(len);
        self.expect = len.min(SPIN_PREFETCH);
        if self.head - self.published >= self.core.batch {
            self.publish();
        }
    }

    /// The positions of the lines after the next header's that the next
    /// message takes if it is as long as the last one; `None` if it fits
    /// the header's line.
    fn expected_lines(&self) -> Option<std::ops::Range<u64>> {
        let (first, end) = ((self.head | (LINE - 1)) + 1, self.head + HEADER + self.expect);
        (first < end).then_some(first..end)
    }

    /// How long to spin for a message expected to be as long as the last
    /// (see [`Receiver::set_spin`]; 1 MiB round trip ~330 -> ~230 us on the
    /// development VM, where a wake-up costs tens of µs).
    fn spin_budget(&self) -> Duration {
        self.core.spin + Duration::from_nanos(self.expect / 2)
    }

    /// Tells the producer how far we have read, and wakes it if it sleeps
    /// waiting for room.
    #[inline]
    fn publish(&mut self) {
        if self.published != self.head {
            self.published = self.head;
            // SYNC POINT: release: we are done reading the bytes before it.
            self.core.u64_at(HEAD).store(self.head, Ordering::Release);
            self.core.unpark(PRODUCER_SLEEPING);
        }
    }

    /// Waits until a message is ready; `None` deadline: don't wait. A
    /// ready, ordinary message is found inline; padding, corruption, empty
    /// rings and waiting are in the cold [`wait_slow`](Self::wait_slow).
    #[inline(always)]
    fn wait(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        if !self.broken {
            // SYNC POINT: acquire pairs with the producer's release of this
            // header (as in `poll`).
            let h = self.core.header_at(self.head).load(Ordering::Acquire);
            let len = h & 0xffff_ffff;
            let index = self.head & (self.core.capacity - 1);
            if h >> 32 == stamp(self.head)
                && len <= self.core.max_message
                && index + HEADER + padded(len) <= self.core.capacity
            {
                return Ok((self.head, len));
            }
        }
        self.wait_slow(deadline)
    }

    #[cold]
    #[inline(never)]
    fn wait_slow(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        loop {
            if let Some(ready) = self.poll()? {
                return Ok(ready);
            }
            // Out of messages: give all the room back before waiting.
            self.publish();
            let (core, head) = (&self.core, self.head);
            let ready = || core.header_at(head).load(Ordering::Relaxed) != 0 || core.peer_closed();
            let spun = deadline.is_some()
                && match self.expected_lines() {
                    Some(lines) if !core.spin.is_zero() => {
                        spin_prefetching(&core.mem, self.spin_budget(), lines, |at| core.offset(at), ready)
                    }
                    _ => spin_until_for(core.spin, ready),
                };
            if spun && !core.peer_closed() {
                continue;
            }
            core.check_truncated(Op::Recv)?;
            // The producer publishes before it closes: look once more.
            if core.peer_gone() {
                return match self.poll()? {
                    Some(ready) => Ok(ready),
                    None => Err(self.core.err(Op::Recv, ErrorKind::Disconnected)),
                };
            }
            let Some(deadline) = deadline else {
                return Err(core.err(Op::Recv, ErrorKind::WouldBlock));
            };
            if spun {
                continue;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(core.err(Op::Recv, ErrorKind::Timeout));
            }
            core.park(CONSUMER_SLEEPING, left, || {
                core.header_at(head).load(Ordering::Relaxed) != 0 || core.peer_closed()
            });
        }
    }

    /// Receives a message into `buf` (replacing its contents).
    #[inline(always)]
    fn recv_with(&mut self, buf: &mut Vec<u8>, deadline: Option<Option<Instant>>) -> Result<usize> {
        let (pos, len) = self.wait(deadline)?;
        let n = len as usize;
        // Only growth is filled with zeros first; a reused buffer is not.
        if buf.len() < n {
            buf.resize(n, 0);
        } else {
            buf.truncate(n);
        }
        // `wait` checked that the message lies inside the data area.
        self.core.mem.read(self.core.offset(pos + HEADER), buf);
        self.release(pos, len);
        Ok(n)
    }

    /// Gives back all room read, then closes the end; returns whether to
    /// remove the object.
    fn close(&mut self) -> bool {
        self.publish();
        self.core.close()
    }
}
/// Opens (or creates) the ring and claims `side` for this process.
fn open_shared(name: &str, options: Option<&RingOptions>, side: Side) -> Result<(Segment, Core<Mapped>)> {
    let target = Target::posix(&object_name(name))?;
    let seg = match options {
        Some(opts) => {
            let cap = opts.capacity;
            if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) || !cap.is_power_of_two() {
                return Err(Error::invalid(
                    Op::Create,
                    target.to_string(),
                    format!("a ring's capacity is a power of two from {MIN_CAPACITY} to 2^40 bytes, not {cap}"),
                ));
            }
            // Create, or else open whatever exists (its capacity is checked
            // below against the one asked for).
            let created =
                Segment::options().size(DATA + cap).mode(opts.mode).lifetime(Lifetime::Persistent).create(&target);
            let mut seg = match created {
                Err(e) if *e.kind() == ErrorKind::AlreadyExists => Segment::options()
                    .lifetime(Lifetime::Persistent)
                    .allow_untrusted(opts.allow_untrusted)
                    .open(&target)?,
                other => other?,
            };
            if seg.created() {
                let params = [cap as u64, (cap / 2 - 16) as u64, 0, 0, 0, 0, 0, 0];
                registry::init(&mut seg, ObjectKind::Ring, VERSION, params, |seg| {
                    // Fault the pages in now, not on the first messages.
                    let zeros = vec![0u8; 1 << 16];
                    let mut at = DATA;
                    while at < seg.len() {
                        let n = zeros.len().min(seg.len() - at);
                        seg.write_at(at, &zeros[..n])?;
                        at += n;
                    }
                    Ok(())
                })?;
            }
            seg
        }
        None => Segment::options().lifetime(Lifetime::Persistent).open(&target)?,
    };
    let header = registry::open(&seg, ObjectKind::Ring, VERSION)?;
    let (capacity, max_message) = (header.params[0], header.params[1]);
    let bad = |what: String| Error::new(Op::Open, seg.name(), ErrorKind::Corrupt(what));
    if !capacity.is_power_of_two() || capacity < MIN_CAPACITY as u64 || DATA as u64 + capacity != seg.len() as u64 {
        return Err(bad(format!("capacity {capacity} does not fit the object of {} bytes", seg.len())));
    }
    if max_message != capacity / 2 - 16 {
        return Err(bad(format!("largest message {max_message} for a capacity of {capacity}")));
    }
    if let Some(opts) = options.filter(|o| o.capacity as u64 != capacity) {
        return Err(Error::invalid(
            Op::Open,
            seg.name(),
            format!("the ring exists with a capacity of {capacity} bytes, not {}", opts.capacity),
        ));
    }
    // SAFETY: the mapping starts on a page boundary (8-aligned), is
    // `seg.len()` bytes long and stays mapped as long as `seg`, which the
    // end holds beside its `Core` (and every `Loan` or `Message` borrows the
    // end); the ring accesses it only atomically or by byte copies.
    let mem = unsafe { Mapped::new(seg.as_ptr(), seg.len(), membarrier_ready()) };
    let mut core = Core::new(mem, capacity, side, seg.name());
    core.truncated = seg.truncation_flag();
    core.claim()?;
    Ok((seg, core))
}

/// The producing end of a ring.
#[derive(Debug)]
pub struct Sender {
    inner: Producer<Mapped>,
    seg: Segment,
}

impl Sender {
    /// Creates the ring `name` (or opens it, if it exists with the same
    /// capacity) and becomes its producer.
    ///
    /// # Errors
    ///
    /// A bad capacity, a ring with another capacity, another live producer
    /// ([`ErrorKind::Busy`]), or the OS refuses.
    pub fn open_or_create(name: &str, options: &RingOptions) -> Result<Sender> {
        Self::from_parts(open_shared(name, Some(options), Side::Producer)?)
    }

    /// Opens the existing ring `name` as its producer.
    ///
    /// # Errors
    ///
    /// No such ring, another live producer, or a corrupt header.
    pub fn open(name: &str) -> Result<Sender> {
        Self::from_parts(open_shared(name, None, Side::Producer)?)
    }

    fn from_parts((mut seg, core): (Segment, Core<Mapped>)) -> Result<Sender> {
        match Producer::positions(&core) {
            Ok(_) => Ok(Sender { inner: Producer::new(core)?, seg }),
            Err(e) => {
                // Give the claim back, as if opened and dropped at once.
                if core.close() {
                    let _ = seg.remove();
                }
                Err(e)
            }
        }
    }

    /// The largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.inner.core.max_message as usize
    }

    /// Where the consumer stands: after [`ErrorKind::Disconnected`], this
    /// tells a consumer that closed ([`PeerState::Closed`]) from one that
    /// died ([`PeerState::Died`]).
    pub fn peer_state(&self) -> PeerState {
        self.inner.core.peer_state()
    }

    /// How long a wait for room spins (checking with the pause
    /// instruction) before it sleeps; default 20 µs. Zero sleeps at once,
    /// which saves CPU time and costs a wake-up (tens of µs) per wait.
    pub fn set_spin(&mut self, spin: Duration) {
        self.inner.core.spin = spin;
    }

    /// The ring's name in `/dev/shm`.
    pub fn object_name(&self) -> &str {
        self.seg.name()
    }

    /// Sends `data` if there is room now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] when full, [`ErrorKind::Disconnected`]
    /// when the consumer closed, [`ErrorKind::MessageTooLarge`].
    #[inline]
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        self.inner.send_with(data, None)
    }

    /// Sends `data`, waiting for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] when the consumer closed or died,
    /// [`ErrorKind::MessageTooLarge`].
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.inner.send_with(data, Some(None))
    }

    /// Sends `data`, waiting for room at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), plus [`ErrorKind::Timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.inner.send_with(data, Some(Instant::now().checked_add(timeout)))
    }

    /// Sends a plain-data value.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_value<T: Pod>(&mut self, value: &T) -> Result<()> {
        self.send(bytemuck::bytes_of(value))
    }

    /// Reserves `len` bytes in the ring for a message written in place
    /// (zero-copy), waiting for room. Write it through the [`Loan`], then
    /// [`Loan::commit`]; a loan dropped without commit sends nothing.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    #[inline]
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let (pad, len) = self.inner.reserve(len, Some(None))?;
        Ok(Loan { offset: self.inner.payload_offset(pad), len: len as usize, pad, sender: self })
    }

    /// [`loan`](Self::loan) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    #[inline]
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let (pad, len) = self.inner.reserve(len, None)?;
        Ok(Loan { offset: self.inner.payload_offset(pad), len: len as usize, pad, sender: self })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.inner.core.close() {
            // Fails only if the other end removed it at the same moment.
            let _ = self.seg.remove();
        }
    }
}

/// Room for one message inside the ring, written in place.
#[derive(Debug)]
pub struct Loan<'s> {
    /// Where the payload starts in the mapping.
    offset: usize,
    len: usize,
    pad: u64,
    sender: &'s mut Sender,
}

impl Loan<'_> {
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` into the message at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit.
    #[inline]
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        match offset.checked_add(data.len()) {
            // Inside the reserved, contiguous message area.
            Some(end) if end <= self.len => self.sender.inner.core.mem.write(self.offset + offset, data),
            _ => {
                return Err(self.sender.inner.core.err(
                    Op::Send,
                    ErrorKind::OutOfBounds { offset: offset as u64, len: data.len() as u64, size: self.len as u64 },
                ));
            }
        }
        Ok(())
    }

    /// Writes a plain-data value at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit.
    pub fn write<T: Pod>(&mut self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    /// The start of the message, 8-aligned, valid for [`len`](Self::len)
    /// bytes until commit. The consumer does not read it before commit.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // In bounds: the reservation lies inside the mapping.
        self.sender.inner.core.mem.base().as_ptr().wrapping_add(self.offset)
    }

    /// Publishes the message.
    #[inline]
    pub fn commit(self) {
        let (pad, len) = (self.pad, self.len as u64);
        self.sender.inner.publish(pad, len);
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct Receiver {
    inner: Consumer<Mapped>,
    seg: Segment,
}

impl Receiver {
    /// Creates the ring `name` (or opens it, if it exists with the same
    /// capacity) and becomes its consumer.
    ///
    /// # Errors
    ///
    /// As [`Sender::open_or_create`].
    pub fn open_or_create(name: &str, options: &RingOptions) -> Result<Receiver> {
        Self::from_parts(open_shared(name, Some(options), Side::Consumer)?)
    }

    /// Opens the existing ring `name` as its consumer.
    ///
    /// # Errors
    ///
    /// As [`Sender::open`].
    pub fn open(name: &str) -> Result<Receiver> {
        Self::from_parts(open_shared(name, None, Side::Consumer)?)
    }

    fn from_parts((mut seg, core): (Segment, Core<Mapped>)) -> Result<Receiver> {
        match Consumer::position(&core) {
            Ok(_) => Ok(Receiver { inner: Consumer::new(core)?, seg }),
            Err(e) => {
                // Give the claim back, as if opened and dropped at once.
                if core.close() {
                    let _ = seg.remove();
                }
                Err(e)
            }
        }
    }

    /// The largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.inner.core.max_message as usize
    }

    /// Where the producer stands: after [`ErrorKind::Disconnected`], this
    /// tells a producer that closed from one that died.
    pub fn peer_state(&self) -> PeerState {
        self.inner.core.peer_state()
    }

    /// How long a wait for a message spins before it sleeps; default 20 µs.
    /// Zero sleeps at once (see [`Sender::set_spin`]). A non-zero spin
    /// grows by 0.5 ns a byte of the last message received (up to 1 MiB:
    /// ~0.5 ms): the next one may be as long, and a producer writing it at
    /// 2 GB/s or more is done within that, so a round trip of large
    /// messages does not pay a wake-up on each side.
    pub fn set_spin(&mut self, spin: Duration) {
        self.inner.core.spin = spin;
    }

    /// Receives a message into `buf` (replacing its contents) if one is
    /// ready; returns its length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if none is ready, [`ErrorKind::Disconnected`]
    /// if the producer closed or died and everything was received,
    /// [`ErrorKind::Corrupt`] if shared memory does not hold a valid message.
    #[inline]
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.inner.recv_with(buf, None)
    }

    /// Receives a message into `buf`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), without `WouldBlock`.
    #[inline]
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.inner.recv_with(buf, Some(None))
    }

    /// Receives a message into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`ErrorKind::Timeout`].
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.inner.recv_with(buf, Some(Instant::now().checked_add(timeout)))
    }

    /// Receives a plain-data value; the message must have exactly its size.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`ErrorKind::Corrupt`] for a message of
    /// another size (the message is consumed).
    pub fn recv_value<T: Pod>(&mut self) -> Result<T> {
        let message = self.recv_ref()?;
        let value = message.read::<T>(0);
        let len = message.len();
        drop(message);
        match value {
            Ok(v) if len == std::mem::size_of::<T>() => Ok(v),
            _ => Err(self.inner.core.corrupt(
                Op::Recv,
                format!("a message of {len} bytes where a value of {} was expected", std::mem::size_of::<T>()),
            )),
        }
    }

    /// Waits for a message and gives access to it in place (zero-copy); the
    /// producer may reuse its room once the [`Message`] is dropped.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    #[inline]
    pub fn recv_ref(&mut self) -> Result<Message<'_>> {
        let (pos, len) = self.inner.wait(Some(None))?;
        Ok(Message { offset: self.inner.core.offset(pos + HEADER), pos, len, receiver: self })
    }

    /// [`recv_ref`](Self::recv_ref) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    #[inline]
    pub fn try_recv_ref(&mut self) -> Result<Message<'_>> {
        let (pos, len) = self.inner.wait(None)?;
        Ok(Message { offset: self.inner.core.offset(pos + HEADER), pos, len, receiver: self })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.inner.close() {
            // Fails only if the other end removed it at the same moment.
            let _ = self.seg.remove();
        }
    }
}

/// A received message, read in place in the ring. Its room is given back to
/// the producer when it is dropped.
///
/// The bytes are in shared memory, so they are read by copy
/// ([`read_at`](Self::read_at), [`read`](Self::read)) or through
/// [`as_ptr`](Self::as_ptr); a well-behaved producer does not touch them
/// until the message is dropped.
#[derive(Debug)]
pub struct Message<'r> {
    /// Where the payload starts in the mapping.
    offset: usize,
    pos: u64,
    len: u64,
    receiver: &'r mut Receiver,
}

impl Message<'_> {
    /// Bytes in the message.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes of the message, starting at `offset`, into `buf`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if the range is outside the message.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        match offset.checked_add(buf.len()) {
            // Inside the message, which `wait` checked lies inside the data
            // area.
            Some(end) if end as u64 <= self.len => self.receiver.inner.core.mem.read(self.offset + offset, buf),
            _ => {
                return Err(self.receiver.inner.core.err(
                    Op::Recv,
                    ErrorKind::OutOfBounds { offset: offset as u64, len: buf.len() as u64, size: self.len },
                ));
            }
        }
        Ok(())
    }

    /// Reads a plain-data value at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit.
    pub fn read<T: Pod>(&self, offset: usize) -> Result<T> {
        let mut value = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Copies the whole message into `buf`.
    pub fn copy_to(&self, buf: &mut Vec<u8>) {
        buf.resize(self.len as usize, 0);
        // Cannot fail: the range is exactly the message.
        let _ = self.read_at(0, buf);
    }

    /// The start of the message, 8-aligned, valid for [`len`](Self::len)
    /// bytes while the message lives. Read through it with raw pointers or
    /// atomics, never a reference: the memory is shared.
    pub fn as_ptr(&self) -> *const u8 {
        // In bounds: the message lies inside the mapping.
        self.receiver.inner.core.mem.base().as_ptr().wrapping_add(self.offset).cast_const()
    }
}

impl Drop for Message<'_> {
    #[inline]
    fn drop(&mut self) {
        self.receiver.inner.release(self.pos, self.len);
    }
}

/// The protocol over private heap memory: no system calls (no claims, no
/// `/proc`, no futex: nothing sleeps, spin 0, `membarrier` off), so Miri can
/// run every test here.
#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::sync::primitive::heap::Heap;

    /// A ring's worth of heap memory.
    fn ring_heap(capacity: u64) -> Heap {
        Heap::new(DATA + capacity as usize)
    }

    /// Aborts the test binary if a test runs past its time (a hang must not
    /// stall CI); disarmed on drop. Not under Miri, which has no clock to
    /// spare and whose loops here are all bounded.
    struct Watchdog(#[allow(dead_code)] mpsc::Sender<()>);

    fn watchdog(test: &'static str) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        if !cfg!(miri) {
            std::thread::spawn(move || {
                if rx.recv_timeout(Duration::from_secs(60)) == Err(mpsc::RecvTimeoutError::Timeout) {
                    eprintln!("watchdog: {test} still running after 60 s");
                    std::process::abort();
                }
            });
        }
        Watchdog(tx)
    }

    fn ends(heap: &Heap, capacity: u64) -> (Producer<Mapped>, Consumer<Mapped>) {
        let mut p = Producer::new(Core::new(heap.mem(), capacity, Side::Producer, "heap")).unwrap();
        let mut c = Consumer::new(Core::new(heap.mem(), capacity, Side::Consumer, "heap")).unwrap();
        p.core.spin = Duration::ZERO;
        c.core.spin = Duration::ZERO;
        (p, c)
    }

    fn mix(i: u64) -> u64 {
        let mut x = i.wrapping_add(0x2545_f491_4f6c_dd1d).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 29)
    }

    /// Message `i`: 0 to `max` bytes, each depending on `i` and its place.
    ///
    /// Under Miri the length is a multiple of 8: Miri's weak-memory
    /// emulation crashes (an internal compiler error, "cannot have empty
    /// store buffer when previous write was atomic") on an atomic store to
    /// a word that an earlier, properly ordered non-atomic write covered
    /// only in part, which is what copying a message of another length
    /// does to the word that later holds a header. A five-line program
    /// with one thread, one partial byte write and two atomic stores shows
    /// the same crash.
    fn message(i: u64, max: usize) -> Vec<u8> {
        let mut len = (mix(i) % (max as u64 + 1)) as usize;
        if cfg!(miri) {
            len &= !7;
        }
        (0..len).map(|j| (mix(i) >> (j % 7 * 8)) as u8 ^ j as u8).collect()
    }

    fn kind<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
        r.unwrap_err().kind().clone()
    }

    #[test]
    fn a_waiting_consumer_expects_lines_as_long_as_the_last_message() {
        let heap = ring_heap(4096);
        let (mut p, mut c) = ends(&heap, 4096);
        let mut buf = Vec::new();
        assert_eq!(c.expected_lines(), None, "nothing received yet");
        // 8 bytes at 0: the next header is at 16, and 8 more bytes fit its line.
        p.send_with(&[1; 8], None).unwrap();
        c.recv_with(&mut buf, None).unwrap();
        assert_eq!(c.expected_lines(), None);
        // 100 bytes at 16: the next header is at 128 and its message would
        // end at 128 + 8 + 100, past the header's line.
        p.send_with(&[2; 100], None).unwrap();
        c.recv_with(&mut buf, None).unwrap();
        assert_eq!(c.expected_lines(), Some(192..236));
        // And spins 0.5 ns a byte longer for it.
        assert_eq!(c.spin_budget(), c.core.spin + Duration::from_nanos(50));
    }

    #[test]
    fn heap_ring_wraps_pads_fills_and_drains_in_order() {
        let _dog = watchdog("heap_ring_wraps_pads_fills_and_drains_in_order");
        let capacity = 256;
        let heap = ring_heap(capacity);
        let (mut p, mut c) = ends(&heap, capacity);
        let max = p.core.max_message as usize;
        let total = if cfg!(miri) { 300 } else { 50_000 };
        let (mut sent, mut received, mut pads, mut fulls) = (0u64, 0u64, 0u32, 0u32);
        let mut buf = Vec::new();
        while received < total {
            // A burst until full (or a random count), then a random drain.
            for _ in 0..1 + mix(sent ^ 0xabc) % 12 {
                if sent == total {
                    break;
                }
                let m = message(sent, max);
                let (pad, _) = p.reservation(m.len() as u64);
                match p.send_with(&m, None) {
                    Ok(()) => {
                        pads += u32::from(pad > 0);
                        sent += 1;
                    }
                    Err(e) if *e.kind() == ErrorKind::WouldBlock => {
                        fulls += 1;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            for _ in 0..1 + mix(received ^ 0xdef) % 12 {
                match c.recv_with(&mut buf, None) {
                    Ok(n) => {
                        assert_eq!(n, buf.len());
                        assert_eq!(buf, message(received, max), "message {received}");
                        received += 1;
                    }
                    Err(e) if *e.kind() == ErrorKind::WouldBlock => {
                        assert_eq!(received, sent, "WouldBlock with messages waiting");
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(kind(c.recv_with(&mut buf, None)), ErrorKind::WouldBlock);
        assert!(pads > 0 && fulls > 0, "{pads} paddings, {fulls} full rings");
        assert!(p.tail > 10 * capacity, "only {} bytes went round", p.tail);
    }

    #[test]
    fn heap_ring_publishes_head_in_batches_and_when_dry() {
        let _dog = watchdog("heap_ring_publishes_head_in_batches_and_when_dry");
        let capacity = 4096;
        let heap = ring_heap(capacity);
        let (mut p, mut c) = ends(&heap, capacity);
        assert_eq!(c.core.batch, 256);
        let head = || heap.mem().u64_at(HEAD).load(Ordering::Relaxed);
        let mut buf = Vec::new();
        for i in 0..3u64 {
            p.send_with(&i.to_le_bytes(), None).unwrap();
        }
        for _ in 0..3 {
            c.recv_with(&mut buf, None).unwrap();
            assert_eq!(head(), 0, "published before a batch");
        }
        // Running dry gives everything back.
        assert_eq!(kind(c.recv_with(&mut buf, None)), ErrorKind::WouldBlock);
        assert_eq!(head(), 48);
        for i in 0..20u64 {
            p.send_with(&i.to_le_bytes(), None).unwrap();
        }
        for i in 0..16u64 {
            c.recv_with(&mut buf, None).unwrap();
            assert_eq!(buf, i.to_le_bytes());
            assert_eq!(head(), if i < 15 { 48 } else { 48 + 256 });
        }
        // A zero-copy style release publishes the same way.
        let (pos, len) = c.wait(None).unwrap();
        c.release(pos, len);
        assert_eq!(head(), 48 + 256);
    }

    #[test]
    fn heap_ring_close_drains_then_disconnects_and_refuses_oversized() {
        let _dog = watchdog("heap_ring_close_drains_then_disconnects_and_refuses_oversized");
        let capacity = 256;
        let heap = ring_heap(capacity);
        let (mut p, mut c) = ends(&heap, capacity);
        let mut buf = Vec::new();
        let too_big = vec![0u8; p.core.max_message as usize + 1];
        assert!(matches!(kind(p.send_with(&too_big, None)), ErrorKind::MessageTooLarge { len: 113, max: 112 }));
        for i in 0..3u64 {
            p.send_with(&message(i, 40), None).unwrap();
        }
        assert_eq!(c.core.peer_state(), PeerState::Never);
        // The consumer never claimed its end, so the producer keeps the
        // object for it.
        assert!(!p.core.close());
        assert_eq!(c.core.peer_state(), PeerState::Closed);
        for i in 0..3u64 {
            c.recv_with(&mut buf, Some(None)).unwrap();
            assert_eq!(buf, message(i, 40));
        }
        assert_eq!(kind(c.recv_with(&mut buf, None)), ErrorKind::Disconnected);
        assert_eq!(kind(c.recv_with(&mut buf, Some(None))), ErrorKind::Disconnected);
        // Both ends closed: the last one out removes the object.
        assert!(c.close());

        let heap = ring_heap(capacity);
        let (mut p, mut c) = ends(&heap, capacity);
        // An active producer held by no process (pid 0: never checked in
        // `/proc`).
        heap.mem().u32_at(PRODUCER + STATE).store(ACTIVE, Ordering::Relaxed);
        p.send_with(b"unread!!", None).unwrap();
        assert_eq!(c.core.peer_state(), PeerState::Active);
        assert!(!c.close(), "the producer is still active");
        assert_eq!(kind(p.send_with(b"more", None)), ErrorKind::Disconnected);
        assert_eq!(kind(p.send_with(b"more", Some(None))), ErrorKind::Disconnected);
        assert_eq!(p.core.peer_state(), PeerState::Closed);
        assert!(p.core.close());
    }

    #[test]
    fn heap_ring_two_threads_in_order() {
        let _dog = watchdog("heap_ring_two_threads_in_order");
        let capacity = 256;
        let heap = ring_heap(capacity);
        let (mut p, mut c) = ends(&heap, capacity);
        let max = p.core.max_message as usize;
        let total = if cfg!(miri) { 200 } else { 200_000 };
        // Retries without progress before the test gives up (a hang).
        let patience = if cfg!(miri) { 100_000 } else { 50_000_000 };
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..total {
                    let m = message(i, max);
                    let mut tries = 0;
                    loop {
                        match p.send_with(&m, None) {
                            Ok(()) => break,
                            Err(e) if *e.kind() == ErrorKind::WouldBlock => {
                                tries += 1;
                                assert!(tries < patience, "no room for message {i}");
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
            let mut buf = Vec::new();
            for i in 0..total {
                let mut tries = 0;
                loop {
                    match c.recv_with(&mut buf, None) {
                        Ok(_) => break,
                        Err(e) if *e.kind() == ErrorKind::WouldBlock => {
                            tries += 1;
                            assert!(tries < patience, "no message {i}");
                            std::thread::yield_now();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(buf, message(i, max), "message {i}");
            }
            assert_eq!(kind(c.recv_with(&mut buf, None)), ErrorKind::WouldBlock);
        });
    }

    #[test]
    fn heap_ring_scribbled_words_give_data_or_corrupt_never_out_of_bounds() {
        let _dog = watchdog("heap_ring_scribbled_words_give_data_or_corrupt_never_out_of_bounds");
        let capacity = 256u64;
        let heap = ring_heap(capacity);
        let mem = heap.mem();
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let cases = if cfg!(miri) { 150 } else { 20_000 };
        let (mut data, mut corrupt, mut empty, mut send_corrupt) = (0u32, 0u32, 0u32, 0u32);
        let mut buf = Vec::new();
        for _ in 0..cases {
            for offset in (0..mem.len()).step_by(8) {
                mem.u64_at(offset).store(0, Ordering::Relaxed);
            }
            // Start anywhere, so that stamps and laps vary.
            let start = rand() % 4096 * 8;
            mem.u64_at(TAIL).store(start, Ordering::Relaxed);
            mem.u64_at(HEAD).store(start, Ordering::Relaxed);
            let (mut p, mut c) = ends(&heap, capacity);
            let max = p.core.max_message;
            for i in 0..rand() % 6 {
                let _ = p.send_with(&message(i, (rand() % (max + 1)) as usize), None);
            }
            for _ in 0..1 + rand() % 3 {
                // Mostly where the consumer will look, sometimes anywhere.
                let pos = match rand() % 3 {
                    0 => rand() % (capacity / 8) * 8,
                    _ => c.head + rand() % 16 * 8,
                };
                let len = match rand() % 8 {
                    0 => 0,
                    1 => max as u32,
                    2 => max as u32 + 1,
                    3 => PAD,
                    4 => (capacity - (pos & (capacity - 1)) - HEADER) as u32,
                    5 => PAD - 1,
                    _ => rand() as u32 % (2 * capacity as u32),
                };
                let value = match rand() % 5 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => rand(),
                    _ => header(pos, len),
                };
                c.core.header_at(pos).store(value, Ordering::Relaxed);
            }
            if rand() % 4 == 0 {
                // The producer reads the consumer's position: scribble it.
                let value = if rand() % 2 == 0 { rand() } else { (c.head + rand() % 64 * 8).wrapping_sub(256) };
                mem.u64_at(HEAD).store(value, Ordering::Relaxed);
                // Fill the ring, so that the producer reads it.
                for _ in 0..8 {
                    match p.send_with(&message(rand(), max as usize), None) {
                        Ok(()) => {}
                        Err(e) => {
                            match e.kind() {
                                ErrorKind::WouldBlock => {}
                                ErrorKind::Corrupt(_) => send_corrupt += 1,
                                other => panic!("{other:?}"),
                            }
                            break;
                        }
                    }
                }
            }
            for _ in 0..8 {
                match c.recv_with(&mut buf, None) {
                    Ok(n) => {
                        assert!(n as u64 <= max && n == buf.len());
                        data += 1;
                    }
                    Err(e) => match e.kind() {
                        ErrorKind::WouldBlock => {
                            empty += 1;
                            break;
                        }
                        ErrorKind::Corrupt(_) => {
                            corrupt += 1;
                            // Reported again, never guessed past.
                            assert!(matches!(kind(c.recv_with(&mut buf, None)), ErrorKind::Corrupt(_)));
                            break;
                        }
                        other => panic!("{other:?}"),
                    },
                }
                match p.send_with(&message(rand(), (rand() % (max + 1)) as usize), None) {
                    Ok(()) => {}
                    Err(e) => match e.kind() {
                        ErrorKind::WouldBlock => {}
                        ErrorKind::Corrupt(_) => send_corrupt += 1,
                        other => panic!("{other:?}"),
                    },
                }
            }
        }
        eprintln!(
            "scribbled ring: {cases} cases, {data} messages, {corrupt} corrupt, {empty} empty, {send_corrupt} corrupt positions seen by the producer"
        );
        assert!(data > 0 && corrupt > 0 && empty > 0 && send_corrupt > 0);
    }
}

/// Loom models of the protocol: the same `Producer` and `Consumer` code over
/// loom's model memory, whose futex ignores timeouts, so a lost wake-up is
/// a deadlock loom reports. The ends claim nothing (pid 0), so no model
/// reads `/proc`; a capacity of 64 bytes keeps the state space small.
///
/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmkit --lib --release loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use loom::cell::UnsafeCell;
    use loom::thread;

    use super::*;
    use crate::sync::primitive::model::LoomMemory;

    /// Model memory shared by the model's threads, with a shadow cell per
    /// 64-bit word that every byte copy (payload) touches: loom checks
    /// that each copy into a word happens after every earlier copy out of
    /// it and each copy out after every copy in, so a producer that reuses
    /// room before the consumer's release of `head` is seen to have done so
    /// (a race the model's atomics alone would not show: loom does not
    /// explore loads that read later stores).
    #[derive(Debug, Clone)]
    struct Shared {
        mem: Arc<LoomMemory>,
        shadow: Arc<Shadow>,
    }

    /// One access-tracking cell per word.
    #[derive(Debug)]
    struct Shadow(Vec<UnsafeCell<()>>);

    // SAFETY: the cells hold nothing; they only let loom record which
    // thread accessed which word when, and report unordered accesses.
    unsafe impl Sync for Shadow {}

    impl Shared {
        fn new(len: usize) -> Shared {
            Shared {
                mem: Arc::new(LoomMemory::new(len)),
                shadow: Arc::new(Shadow((0..len / 8).map(|_| UnsafeCell::new(())).collect())),
            }
        }

        fn words(&self, offset: usize, len: usize) -> &[UnsafeCell<()>] {
            if len == 0 { &[] } else { &self.shadow.0[offset / 8..(offset + len).div_ceil(8)] }
        }
    }

    impl RingMemory for Shared {}

    impl Memory for Shared {
        type W32 = <LoomMemory as Memory>::W32;
        type W64 = <LoomMemory as Memory>::W64;

        fn len(&self) -> usize {
            self.mem.len()
        }
        fn u32_at(&self, offset: usize) -> &Self::W32 {
            self.mem.u32_at(offset)
        }
        fn u64_at(&self, offset: usize) -> &Self::W64 {
            self.mem.u64_at(offset)
        }
        fn write(&self, offset: usize, src: &[u8]) {
            for word in self.words(offset, src.len()) {
                word.with_mut(|_| ());
            }
            self.mem.write(offset, src)
        }
        fn read(&self, offset: usize, dst: &mut [u8]) {
            for word in self.words(offset, dst.len()) {
                word.with(|_| ());
            }
            self.mem.read(offset, dst)
        }
        fn fence(&self, order: Ordering) {
            self.mem.fence(order)
        }
        fn light_fence(&self) {
            self.mem.light_fence()
        }
        fn heavy_fence(&self) {
            self.mem.heavy_fence()
        }
        fn wait(&self, word: &Self::W32, expected: u32, timeout: Option<Duration>) {
            self.mem.wait(word, expected, timeout)
        }
        fn wake(&self, word: &Self::W32, count: u32) -> usize {
            self.mem.wake(word, count)
        }
        fn pause(&self) {
            self.mem.pause()
        }
    }

    const CAPACITY: u64 = 64;

    /// Both ends of a fresh model ring; waits sleep at once (spin 0).
    fn ends(batch: u64) -> (Producer<Shared>, Consumer<Shared>) {
        let mem = Shared::new(DATA + CAPACITY as usize);
        let mut p = Producer::new(Core::new(mem.clone(), CAPACITY, Side::Producer, "model")).unwrap();
        let mut c = Consumer::new(Core::new(mem, CAPACITY, Side::Consumer, "model")).unwrap();
        for core in [&mut p.core, &mut c.core] {
            core.spin = Duration::ZERO;
            core.batch = batch;
        }
        (p, c)
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 32 + j + 1) as u8).collect()
    }

    /// Runs `model` under loom (the preemption bound from
    /// `LOOM_MAX_PREEMPTIONS`, 2 if unset) and reports how many executions
    /// it explored.
    fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(2);
        }
        let bound = builder.preemption_bound;
        let start = std::time::Instant::now();
        let before = RUNS.load(Ordering::Relaxed);
        builder.check(move || {
            RUNS.fetch_add(1, Ordering::Relaxed);
            model();
        });
        eprintln!(
            "loom model {name}: {} executions, preemption bound {bound:?}, {:.1?}",
            RUNS.load(Ordering::Relaxed) - before,
            start.elapsed()
        );
    }

    /// (a) Messages of varying lengths through a 64-byte ring, so that it
    /// fills, wraps and pads (the fourth message does not fit before the
    /// end of the lap, the sixth ends exactly at the end of the next, an
    /// empty one follows); try_send and try_recv retry after a pause. The
    /// consumer gets every message, whole and in order: this checks the
    /// release of each header against the acquire of its reader (payload
    /// bytes and the next zero header), and the consumer's release of
    /// `head` against the producer's acquire before reusing room.
    #[test]
    fn loom_messages_arrive_whole_and_in_order_through_wrap_and_padding() {
        const LENGTHS: [usize; 8] = [5, 12, 1, 9, 3, 16, 0, 7];
        check("messages in order", || {
            let (mut p, mut c) = ends(CAPACITY / 16);
            let producer = thread::spawn(move || {
                for (i, &len) in LENGTHS.iter().enumerate() {
                    let message = payload(i, len);
                    loop {
                        match p.send_with(&message, None) {
                            Ok(()) => break,
                            Err(e) if *e.kind() == ErrorKind::WouldBlock => p.core.mem.pause(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                p.tail
            });
            let mut buf = Vec::new();
            for (i, &len) in LENGTHS.iter().enumerate() {
                loop {
                    match c.recv_with(&mut buf, None) {
                        Ok(_) => break,
                        Err(e) if *e.kind() == ErrorKind::WouldBlock => c.core.mem.pause(),
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(buf, payload(i, len), "message {i}");
            }
            // Eight messages and one padding: the fourth message starts the
            // second lap after padding, the sixth ends it exactly.
            assert_eq!(producer.join().unwrap(), 152);
        });
    }

    /// (b) A consumer that sleeps at once (spin 0) waiting for messages;
    /// the producer sends three. A lost wake-up would leave it asleep: the
    /// model's futex has no timeout, so loom reports a deadlock.
    #[test]
    fn loom_a_sleeping_consumer_is_woken_by_each_message() {
        check("sleeping consumer", || {
            let (mut p, mut c) = ends(CAPACITY / 16);
            let producer = thread::spawn(move || {
                for (i, len) in [(0, 3), (1, 7), (2, 1)] {
                    p.send_with(&payload(i, len), Some(None)).unwrap();
                }
            });
            let mut buf = Vec::new();
            for (i, len) in [(0, 3), (1, 7), (2, 1)] {
                c.recv_with(&mut buf, Some(None)).unwrap();
                assert_eq!(buf, payload(i, len));
            }
            producer.join().unwrap();
        });
    }

    /// (b) A producer that sleeps waiting for room. The consumer publishes
    /// its position only when it runs dry (the batch is the whole ring), so
    /// the producer, blocked on the third message until the first two are
    /// read (and on the fourth until the third is), must be woken by that
    /// publication.
    #[test]
    fn loom_a_producer_sleeping_for_room_is_woken_when_the_consumer_runs_dry() {
        check("producer sleeping for room", || {
            let (mut p, mut c) = ends(CAPACITY);
            let producer = thread::spawn(move || {
                for i in 0..4 {
                    p.send_with(&payload(i, 12), Some(None)).unwrap();
                }
            });
            let mut buf = Vec::new();
            for i in 0..4 {
                c.recv_with(&mut buf, Some(None)).unwrap();
                assert_eq!(buf, payload(i, 12));
            }
            producer.join().unwrap();
        });
    }

    /// (c) The producer sends three messages and closes; the consumer, asleep
    /// or not, drains both and then gets `Disconnected`, never before.
    #[test]
    fn loom_close_after_sending_is_seen_after_the_last_message() {
        check("close", || {
            let (mut p, mut c) = ends(CAPACITY / 16);
            let producer = thread::spawn(move || {
                p.send_with(&payload(0, 4), Some(None)).unwrap();
                p.send_with(&payload(1, 9), Some(None)).unwrap();
                p.send_with(&payload(2, 16), Some(None)).unwrap();
                p.core.close();
            });
            let mut buf = Vec::new();
            let mut got = Vec::new();
            loop {
                match c.recv_with(&mut buf, Some(None)) {
                    Ok(_) => got.push(buf.clone()),
                    Err(e) if *e.kind() == ErrorKind::Disconnected => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, [payload(0, 4), payload(1, 9), payload(2, 16)]);
            assert_eq!(c.core.peer_state(), PeerState::Closed);
            producer.join().unwrap();
        });
    }
}
