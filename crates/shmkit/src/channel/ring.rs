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

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::{
    LIVENESS_INTERVAL, SPIN, copy_bytes, heavy_fence, holder_alive, light_fence, membarrier_ready, spin_until_for,
};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::registry::{self, ObjectKind, ProcessId};
use crate::segment::{Lifetime, Segment, Target};
use crate::sys::futex;

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
const PAD: u32 = u32::MAX;

/// The smallest and largest data areas.
const MIN_CAPACITY: usize = 4096;
const MAX_CAPACITY: usize = 1 << 40;

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
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { capacity: 1 << 20, mode: 0o600 }
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

/// What both ends share: the mapping and the addresses in it.
#[derive(Debug)]
struct Shared {
    seg: Segment,
    base: NonNull<u8>,
    capacity: u64,
    max_message: u64,
    membarrier: bool,
    side: Side,
    /// When the peer's liveness was last read from `/proc` (a file read, far
    /// too slow for every poll), and what it said.
    checked: std::cell::Cell<Option<(Instant, bool)>>,
    /// How long a wait spins before it sleeps.
    spin: Duration,
}

// SAFETY: `base` points into `seg`'s mapping, which lives as long as the
// struct; all shared accesses are atomics or byte copies.
unsafe impl Send for Shared {}

impl Shared {
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset < DATA + self.capacity as usize);
        // SAFETY: every offset used is inside the mapping (the fixed lines
        // below DATA, or a header inside the data area whose position was
        // reduced modulo the capacity), 8-aligned (the mapping is page
        // aligned, headers are at multiples of 8), and lives as long as
        // `self`. Shared words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset < DATA);
        // SAFETY: as in `u64_at`, for the fixed words below DATA.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// The header word for position `pos`.
    fn header_at(&self, pos: u64) -> &AtomicU64 {
        self.u64_at(DATA + (pos & (self.capacity - 1)) as usize)
    }

    /// Address of the payload byte at position `pos`.
    fn data_ptr(&self, pos: u64) -> *mut u8 {
        // SAFETY: the index is reduced modulo the capacity, so it is inside
        // the data area.
        unsafe { self.base.as_ptr().add(DATA + (pos & (self.capacity - 1)) as usize) }
    }

    fn end_state(&self, side: Side) -> &AtomicU32 {
        self.u32_at(side.line() + STATE)
    }

    fn label(&self) -> &str {
        self.seg.name()
    }

    fn err(&self, op: Op, kind: ErrorKind) -> Error {
        Error::new(op, self.label(), kind)
    }

    fn corrupt(&self, op: Op, what: String) -> Error {
        self.err(op, ErrorKind::Corrupt(what))
    }

    /// Whether the other end is gone: closed, or its holder died. The
    /// holder's liveness is read from `/proc` at most every 10 ms.
    fn peer_gone(&self) -> bool {
        let other = self.side.other().line();
        match self.end_state(self.side.other()).load(Ordering::Acquire) {
            CLOSED => true,
            ACTIVE => {
                if let Some((_, gone)) = self.checked.get().filter(|(at, _)| at.elapsed() < Duration::from_millis(10)) {
                    return gone;
                }
                let pid = self.u32_at(other + PID).load(Ordering::Acquire);
                let start = self.u64_at(other + START).load(Ordering::Acquire);
                let gone = pid != 0 && !holder_alive(pid, start);
                self.checked.set(Some((Instant::now(), gone)));
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

    /// Closes this end, and removes the object if the other end is done too.
    fn close(&mut self) {
        let line = self.side.line();
        self.end_state(self.side).swap(CLOSED, Ordering::SeqCst);
        self.u32_at(line + PID).store(0, Ordering::Release);
        // Wake a peer asleep waiting for us, so it sees the close.
        let sleeping = match self.side {
            Side::Producer => CONSUMER_SLEEPING,
            Side::Consumer => PRODUCER_SLEEPING,
        };
        self.u32_at(sleeping).store(0, Ordering::SeqCst);
        futex::wake(self.u32_at(sleeping), i32::MAX as u32);
        let other = self.end_state(self.side.other()).load(Ordering::SeqCst);
        let remove = match self.side {
            // Nobody will read what is left: remove unless a live producer
            // is still writing.
            Side::Consumer => matches!(other, NEVER | CLOSED) || self.peer_gone(),
            // Keep unread messages for a consumer that has not come yet;
            // remove them if the consumer closed or died.
            Side::Producer => other == CLOSED || (other == ACTIVE && self.peer_gone()),
        };
        if remove {
            // Fails only if the other end removed it at the same moment.
            let _ = self.seg.remove();
        }
    }

    /// Sleeps on `flag` (set to 1 first) unless `ready()` holds after the
    /// heavy fence; at most `timeout` and [`LIVENESS_INTERVAL`].
    fn park(&self, flag: usize, timeout: Option<Duration>, ready: impl Fn() -> bool) {
        let word = self.u32_at(flag);
        word.store(1, Ordering::Relaxed);
        heavy_fence(self.membarrier);
        if !ready() {
            let limit = timeout.map_or(LIVENESS_INTERVAL, |t| t.min(LIVENESS_INTERVAL));
            futex::wait(word, 1, Some(limit));
        }
        word.store(0, Ordering::Relaxed);
    }

    /// Wakes the other side if it announced that it sleeps on `flag`.
    #[inline]
    fn unpark(&self, flag: usize) {
        light_fence(self.membarrier);
        let word = self.u32_at(flag);
        if word.load(Ordering::Relaxed) != 0 {
            word.store(0, Ordering::Relaxed);
            futex::wake(word, 1);
        }
    }
}

fn open_shared(name: &str, options: Option<&RingOptions>, side: Side) -> Result<Shared> {
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
                Err(e) if *e.kind() == ErrorKind::AlreadyExists => {
                    Segment::options().lifetime(Lifetime::Persistent).open(&target)?
                }
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
        {
            return Err(Error::invalid(
                Op::Open,
                seg.name(),
                format!("the ring exists with a capacity of {capacity} bytes, not {}", opts.capacity),
            ));
        }
    }
    let base = seg.as_ptr();
    let shared = Shared {
        seg,
        base,
        capacity,
        max_message,
        membarrier: membarrier_ready(),
        side,
        checked: Default::default(),
        spin: SPIN,
    };
    shared.claim()?;
    Ok(shared)
}

/// The producing end of a ring.
#[derive(Debug)]
pub struct Sender {
    shared: Shared,
    /// Where the next message goes (private copy of the shared `tail`).
    tail: u64,
    /// The consumer's `head` as last read; refreshed only when full.
    cached_head: u64,
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
        Self::from_shared(open_shared(name, Some(options), Side::Producer)?)
    }

    /// Opens the existing ring `name` as its producer.
    ///
    /// # Errors
    ///
    /// No such ring, another live producer, or a corrupt header.
    pub fn open(name: &str) -> Result<Sender> {
        Self::from_shared(open_shared(name, None, Side::Producer)?)
    }

    fn from_shared(shared: Shared) -> Result<Sender> {
        let tail = shared.u64_at(TAIL).load(Ordering::Acquire);
        let head = shared.u64_at(HEAD).load(Ordering::Acquire);
        let mut sender = Sender { shared, tail, cached_head: head };
        sender.validate_head(head)?;
        Ok(sender)
    }

    fn validate_head(&mut self, head: u64) -> Result<()> {
        if head > self.tail || self.tail - head > self.shared.capacity || !head.is_multiple_of(8) {
            return Err(self
                .shared
                .corrupt(Op::Send, format!("consumer position {head} against producer position {}", self.tail)));
        }
        Ok(())
    }

    /// The largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.shared.max_message as usize
    }

    /// Where the consumer stands: after [`ErrorKind::Disconnected`], this
    /// tells a consumer that closed ([`PeerState::Closed`]) from one that
    /// died ([`PeerState::Died`]).
    pub fn peer_state(&self) -> PeerState {
        self.shared.peer_state()
    }

    /// How long a wait for room spins (checking with the pause
    /// instruction) before it sleeps; default 20 µs. Zero sleeps at once,
    /// which saves CPU time and costs a wake-up (tens of µs) per wait.
    pub fn set_spin(&mut self, spin: Duration) {
        self.shared.spin = spin;
    }

    /// The ring's name in `/dev/shm`.
    pub fn object_name(&self) -> &str {
        self.shared.label()
    }

    /// Bytes needed at `tail` for a message of `len` (with padding to the
    /// next lap if it would cross the end), plus the next header's 8 bytes.
    fn reservation(&self, len: u64) -> (u64, u64) {
        let need = HEADER + padded(len);
        let to_end = self.shared.capacity - (self.tail & (self.shared.capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        (pad, pad + need + HEADER)
    }

    /// Whether `total` bytes are free, reading the consumer's head if the
    /// cached one says no.
    fn has_room(&mut self, total: u64) -> Result<bool> {
        if self.tail + total - self.cached_head <= self.shared.capacity {
            return Ok(true);
        }
        // SYNC POINT: acquire pairs with the consumer's release of `head`
        // after it finished reading the bytes we will overwrite.
        let head = self.shared.u64_at(HEAD).load(Ordering::Acquire);
        self.validate_head(head)?;
        self.cached_head = head;
        Ok(self.tail + total - head <= self.shared.capacity)
    }

    /// Reserves room for `len` bytes, waiting up to the deadline. The
    /// common case (room known from the cached head, consumer not closed)
    /// is inline; everything else is in the cold [`reserve_slow`](Self::reserve_slow).
    #[inline]
    fn reserve(&mut self, len: usize, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        let l = len as u64;
        if l <= self.shared.max_message {
            let (pad, total) = self.reservation(l);
            if self.tail + total - self.cached_head <= self.shared.capacity
                && self.shared.end_state(Side::Consumer).load(Ordering::Relaxed) != CLOSED
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
        if len > self.shared.max_message {
            return Err(self.shared.err(Op::Send, ErrorKind::MessageTooLarge { len, max: self.shared.max_message }));
        }
        let (pad, total) = self.reservation(len);
        loop {
            if self.shared.end_state(Side::Consumer).load(Ordering::Relaxed) == CLOSED {
                return Err(self.shared.err(Op::Send, ErrorKind::Disconnected));
            }
            if self.has_room(total)? {
                return Ok((pad, len));
            }
            let Some(deadline) = deadline else {
                return Err(self.shared.err(Op::Send, ErrorKind::WouldBlock));
            };
            if spin_until_for(self.shared.spin, || {
                let head = self.shared.u64_at(HEAD).load(Ordering::Acquire);
                self.tail + total - head <= self.shared.capacity
            }) {
                continue;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.shared.err(Op::Send, ErrorKind::Timeout));
            }
            if self.shared.peer_gone() {
                return Err(self.shared.err(Op::Send, ErrorKind::Disconnected));
            }
            let cap = self.shared.capacity;
            let tail = self.tail;
            let shared = &self.shared;
            shared.park(PRODUCER_SLEEPING, left, || {
                let head = shared.u64_at(HEAD).load(Ordering::Acquire);
                tail + total - head <= cap || shared.end_state(Side::Consumer).load(Ordering::Relaxed) == CLOSED
            });
        }
    }

    /// Publishes a message whose payload is already in place at the
    /// reserved position.
    #[inline]
    fn publish(&mut self, pad: u64, len: u64) {
        let shared = &self.shared;
        let start = self.tail + pad;
        let next = start + HEADER + padded(len);
        // The next header is "nothing yet" before this one becomes visible.
        shared.header_at(next).store(0, Ordering::Relaxed);
        // SYNC POINT: release publishes the payload (and the zero above) to a
        // consumer that acquires this header.
        shared.header_at(start).store(header(start, len as u32), Ordering::Release);
        if pad > 0 {
            shared.header_at(self.tail).store(header(self.tail, PAD), Ordering::Release);
        }
        self.tail = next;
        shared.u64_at(TAIL).store(next, Ordering::Release);
        shared.unpark(CONSUMER_SLEEPING);
    }

    fn send_with(&mut self, data: &[u8], deadline: Option<Option<Instant>>) -> Result<()> {
        let (pad, len) = self.reserve(data.len(), deadline)?;
        let at = self.shared.data_ptr(self.tail + pad + HEADER);
        // SAFETY: the reservation guarantees `len` free bytes after the
        // header at `tail + pad`, inside one lap (no wrap), and `data` is
        // private memory.
        unsafe { copy_bytes(data.as_ptr(), at, data.len()) };
        self.publish(pad, len);
        Ok(())
    }

    /// Sends `data` if there is room now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] when full, [`ErrorKind::Disconnected`]
    /// when the consumer closed, [`ErrorKind::MessageTooLarge`].
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, None)
    }

    /// Sends `data`, waiting for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] when the consumer closed or died,
    /// [`ErrorKind::MessageTooLarge`].
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Some(None))
    }

    /// Sends `data`, waiting for room at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), plus [`ErrorKind::Timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(data, Some(Instant::now().checked_add(timeout)))
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
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let (pad, len) = self.reserve(len, Some(None))?;
        Ok(Loan { ptr: self.shared.data_ptr(self.tail + pad + HEADER), len: len as usize, pad, sender: self })
    }

    /// [`loan`](Self::loan) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let (pad, len) = self.reserve(len, None)?;
        Ok(Loan { ptr: self.shared.data_ptr(self.tail + pad + HEADER), len: len as usize, pad, sender: self })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Room for one message inside the ring, written in place.
#[derive(Debug)]
pub struct Loan<'s> {
    ptr: *mut u8,
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
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        match offset.checked_add(data.len()) {
            // SAFETY: inside the reserved, contiguous message area.
            Some(end) if end <= self.len => unsafe {
                copy_bytes(data.as_ptr(), self.ptr.add(offset), data.len());
            },
            _ => {
                return Err(self.sender.shared.err(
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
        self.ptr
    }

    /// Publishes the message.
    pub fn commit(self) {
        let (pad, len) = (self.pad, self.len as u64);
        self.sender.publish(pad, len);
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct Receiver {
    shared: Shared,
    /// Where the next message's header is (private copy of `head`).
    head: u64,
    /// The `head` last stored in shared memory. The consumer publishes its
    /// position only every `capacity / 16` bytes, or when it runs out of
    /// messages, so that the line holding `head` does not travel to the
    /// producer's core for every message.
    published: u64,
    /// Set after the consumer found corrupt shared memory: every later call
    /// reports it again instead of guessing.
    broken: bool,
}

impl Receiver {
    /// Creates the ring `name` (or opens it, if it exists with the same
    /// capacity) and becomes its consumer.
    ///
    /// # Errors
    ///
    /// As [`Sender::open_or_create`].
    pub fn open_or_create(name: &str, options: &RingOptions) -> Result<Receiver> {
        Self::from_shared(open_shared(name, Some(options), Side::Consumer)?)
    }

    /// Opens the existing ring `name` as its consumer.
    ///
    /// # Errors
    ///
    /// As [`Sender::open`].
    pub fn open(name: &str) -> Result<Receiver> {
        Self::from_shared(open_shared(name, None, Side::Consumer)?)
    }

    fn from_shared(shared: Shared) -> Result<Receiver> {
        let head = shared.u64_at(HEAD).load(Ordering::Acquire);
        if !head.is_multiple_of(8) {
            return Err(shared.corrupt(Op::Open, format!("consumer position {head}")));
        }
        Ok(Receiver { shared, head, published: head, broken: false })
    }

    /// The largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.shared.max_message as usize
    }

    /// Where the producer stands: after [`ErrorKind::Disconnected`], this
    /// tells a producer that closed from one that died.
    pub fn peer_state(&self) -> PeerState {
        self.shared.peer_state()
    }

    /// How long a wait for a message spins before it sleeps; default 20 µs.
    /// Zero sleeps at once (see [`Sender::set_spin`]).
    pub fn set_spin(&mut self, spin: Duration) {
        self.shared.spin = spin;
    }

    /// Looks at the header at `head`: `Ok(Some((pos, len)))` for a ready
    /// message (after skipping padding), `Ok(None)` for nothing yet.
    #[inline]
    fn poll(&mut self) -> Result<Option<(u64, u64)>> {
        if self.broken {
            return Err(self.shared.corrupt(Op::Recv, "an earlier message was corrupt".into()));
        }
        // Two rounds at most: a padding header, then the message after it.
        for _ in 0..2 {
            // SYNC POINT: acquire pairs with the producer's release of this
            // header; the payload and the next zero header are visible.
            let h = self.shared.header_at(self.head).load(Ordering::Acquire);
            if h == 0 {
                return Ok(None);
            }
            if h >> 32 != stamp(self.head) {
                return Err(self.fail(format!("header {h:#018x} at position {}", self.head)));
            }
            let len = h & 0xffff_ffff;
            let index = self.head & (self.shared.capacity - 1);
            if len == u64::from(PAD) {
                if index == 0 {
                    return Err(self.fail(format!("padding at the start of a lap, position {}", self.head)));
                }
                self.head += self.shared.capacity - index;
                continue;
            }
            if len > self.shared.max_message || index + HEADER + padded(len) > self.shared.capacity {
                return Err(self.fail(format!("length {len} at position {}", self.head)));
            }
            return Ok(Some((self.head, len)));
        }
        Err(self.fail(format!("padding after padding at position {}", self.head)))
    }

    fn fail(&mut self, what: String) -> Error {
        self.broken = true;
        self.shared.corrupt(Op::Recv, what)
    }

    /// Frees the message at `pos` of `len` bytes for the producer.
    #[inline]
    fn release(&mut self, pos: u64, len: u64) {
        self.head = pos + HEADER + padded(len);
        if self.head - self.published >= self.shared.capacity / 16 {
            self.publish();
        }
    }

    /// Tells the producer how far we have read, and wakes it if it sleeps
    /// waiting for room.
    #[inline]
    fn publish(&mut self) {
        if self.published != self.head {
            self.published = self.head;
            // SYNC POINT: release: we are done reading the bytes before it.
            self.shared.u64_at(HEAD).store(self.head, Ordering::Release);
            self.shared.unpark(PRODUCER_SLEEPING);
        }
    }

    /// Waits until a message is ready; `None` deadline: don't wait. A
    /// ready, ordinary message is found inline; padding, corruption, empty
    /// rings and waiting are in the cold [`wait_slow`](Self::wait_slow).
    #[inline]
    fn wait(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, u64)> {
        if !self.broken {
            // SYNC POINT: acquire pairs with the producer's release of this
            // header (as in `poll`).
            let h = self.shared.header_at(self.head).load(Ordering::Acquire);
            let len = h & 0xffff_ffff;
            let index = self.head & (self.shared.capacity - 1);
            if h >> 32 == stamp(self.head)
                && len <= self.shared.max_message
                && index + HEADER + padded(len) <= self.shared.capacity
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
            let head = self.head;
            let shared = &self.shared;
            let spun = deadline.is_some()
                && spin_until_for(shared.spin, || {
                    shared.header_at(head).load(Ordering::Relaxed) != 0 || shared.peer_closed()
                });
            if spun && !self.shared.peer_closed() {
                continue;
            }
            // The producer publishes before it closes: look once more.
            if self.shared.peer_gone() {
                return match self.poll()? {
                    Some(ready) => Ok(ready),
                    None => Err(self.shared.err(Op::Recv, ErrorKind::Disconnected)),
                };
            }
            let Some(deadline) = deadline else {
                return Err(self.shared.err(Op::Recv, ErrorKind::WouldBlock));
            };
            if spun {
                continue;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.shared.err(Op::Recv, ErrorKind::Timeout));
            }
            let shared = &self.shared;
            shared.park(CONSUMER_SLEEPING, left, || {
                shared.header_at(head).load(Ordering::Relaxed) != 0 || shared.peer_closed()
            });
        }
    }

    fn recv_with(&mut self, buf: &mut Vec<u8>, deadline: Option<Option<Instant>>) -> Result<usize> {
        let (pos, len) = self.wait(deadline)?;
        buf.clear();
        buf.reserve(len as usize);
        // SAFETY: `poll` checked that the `len` bytes after the header lie
        // inside the data area; `buf` has room for them and is private. The
        // bytes are copied, never referenced.
        unsafe {
            copy_bytes(self.shared.data_ptr(pos + HEADER), buf.as_mut_ptr(), len as usize);
            buf.set_len(len as usize);
        }
        self.release(pos, len);
        Ok(len as usize)
    }

    /// Receives a message into `buf` (replacing its contents) if one is
    /// ready; returns its length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if none is ready, [`ErrorKind::Disconnected`]
    /// if the producer closed or died and everything was received,
    /// [`ErrorKind::Corrupt`] if shared memory does not hold a valid message.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_with(buf, None)
    }

    /// Receives a message into `buf`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), without `WouldBlock`.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_with(buf, Some(None))
    }

    /// Receives a message into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`ErrorKind::Timeout`].
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.recv_with(buf, Some(Instant::now().checked_add(timeout)))
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
            _ => Err(self.shared.corrupt(
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
    pub fn recv_ref(&mut self) -> Result<Message<'_>> {
        let (pos, len) = self.wait(Some(None))?;
        Ok(Message { ptr: self.shared.data_ptr(pos + HEADER), pos, len, receiver: self, _bytes: PhantomData })
    }

    /// [`recv_ref`](Self::recv_ref) without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_ref(&mut self) -> Result<Message<'_>> {
        let (pos, len) = self.wait(None)?;
        Ok(Message { ptr: self.shared.data_ptr(pos + HEADER), pos, len, receiver: self, _bytes: PhantomData })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.publish();
        self.shared.close();
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
    ptr: *const u8,
    pos: u64,
    len: u64,
    receiver: &'r mut Receiver,
    _bytes: PhantomData<&'r [u8]>,
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
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        match offset.checked_add(buf.len()) {
            // SAFETY: inside the message, which `poll` checked lies inside
            // the data area; `buf` is private.
            Some(end) if end as u64 <= self.len => unsafe {
                copy_bytes(self.ptr.add(offset), buf.as_mut_ptr(), buf.len());
            },
            _ => {
                return Err(self.receiver.shared.err(
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
        self.ptr
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        self.receiver.release(self.pos, self.len);
    }
}
