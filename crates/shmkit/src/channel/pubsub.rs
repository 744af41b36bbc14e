//! Publish/subscribe: one publisher, many subscribers, zero-copy.
//!
//! A service lives in the POSIX object `/shmkit.pubsub.NAME`. The publisher
//! loans a slot, writes the sample in place and publishes it; every
//! subscriber reads the same slot in place (or copies it out). Subscribers
//! join and leave at any time; each keeps its own position.
//!
//! ```no_run
//! use shmkit::channel::pubsub::{PubSubOptions, Publisher, Subscriber};
//!
//! let mut publisher = Publisher::open_or_create("sensors", &PubSubOptions::new())?;
//! let mut subscriber = Subscriber::open("sensors")?;
//! let mut loan = publisher.loan()?;
//! loan.write_at(0, b"hello")?;
//! loan.set_len(5)?;
//! loan.publish();
//! let sample = subscriber.receive()?;
//! let mut text = [0u8; 5];
//! assert!(sample.read_at(0, &mut text)?); // false: overwritten while read
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Layout
//!
//! | offset | what | written by |
//! |---|---|---|
//! | 0 | object header ([`crate::registry`]); `params`: slots, largest sample, max subscribers, policy, type size, history, slot stride | creator |
//! | 128 | payload type name (`std::any::type_name`, its last 64 bytes, NUL-padded; empty for raw bytes) | creator |
//! | 192 | publisher: `owner` (u64: state in the low half, pid in the high half), `start` (u64) | publisher, on open and close |
//! | 256 | `published` (u64): samples published so far (the next sequence number) | publisher, every sample |
//! | 320 | `publisher_sleeping` (u32 futex word) | publisher going to sleep, subscribers waking it |
//! | 384 | `sleepers` (u32): subscribers asleep; `notify` (u32 futex word) at 388 | subscribers going to sleep, publisher waking them |
//! | 512 | subscriber table, one 64-byte line each: `owner` (u64), `start` (u64), `cursor` (u64), `sleeping` (u32) | that subscriber (the publisher or a joiner only to reclaim a dead one) |
//! | 512 + 64 × max | slots, `stride` bytes each: `seq` (u64), `len` (u64), payload from offset 16 | publisher |
//!
//! The stride is `16 + largest sample` rounded up to 64, so a sample of up
//! to 48 bytes shares one cache line with its sequence word: a subscriber
//! pays one cache-line transfer per small sample. Each subscriber's cursor
//! is on a line of its own; the lines read on every sample by the side that
//! does not write them (`sleepers` by the publisher, `publisher_sleeping`
//! by subscribers) are written only when someone goes to sleep, so those
//! reads are cache hits in steady state.
//!
//! # Protocol
//!
//! The protocol is written once, over the shared-memory door of
//! `sync::primitive` (`Memory`): the same code runs on the real mapping and,
//! under `cfg(loom)`, on loom's model memory, where the models at the end
//! of this file check back-pressure, overwrite-oldest, sleeping and
//! reclamation. Liveness (`/proc` for real ends) is given to it, so a model
//! can say which holder is dead.
//!
//! Samples are numbered from 0; sample `n` lives in slot `n % slots`. A
//! slot's `seq` word is `2n + 2` once sample `n` is published, `2n + 1`
//! while it is being written (overwrite-oldest only), and 0 before first
//! use. A subscriber's `cursor` is
//! the number of the next sample it needs: it has finished with every
//! sample before it.
//!
//! - **Loan** (publisher): under back-pressure, wait until the slot is free
//!   (below). Under overwrite-oldest, store `seq = 2n + 1` (release), so
//!   that a subscriber that reads the old sample in place sees the change
//!   when it re-checks. Then a release fence before the payload stores.
//!   Under back-pressure the slot is not marked: the subscriber polling
//!   that very line for the next sample would take it from the publisher
//!   once more between mark and publish (a second cache-line transfer on
//!   every sample, 20-30 % of a round trip). Only a joiner's history can
//!   be overwritten there (below), and it is checked against `published`
//!   instead.
//! - **Publish**: store `len`, then **SYNC POINT** `seq = 2n + 2` with
//!   release, which pairs with the subscriber's acquire load of `seq`; then
//!   `published = n + 1` (release, read by joiners and lapped subscribers
//!   with acquire); then the light fence and a load of `sleepers`: a futex
//!   wake only if some subscriber sleeps.
//! - **Receive** (subscriber at cursor `c`): **SYNC POINT** acquire load of
//!   `seq`. `2c + 2`: the sample is there (`len` is checked against the
//!   slot size). Less: not yet published. More: the publisher lapped us
//!   (overwrite-oldest, or history lost while joining): we skip ahead to
//!   `max(c + 1, published - slots + 1)` and count the skipped samples as
//!   missed. A value that is not a sample of that slot is
//!   [`ErrorKind::Corrupt`]. After reading the payload (copy or in place), an
//!   acquire fence and a second load of `seq` (seqlock): if it changed, the
//!   sample was overwritten while read and counts as missed, never as data.
//!   A history sample under back-pressure (below) is also checked against
//!   `published`: if sample `n + slots - 1` was published, it may have been
//!   overwritten (the publisher stored that count before the release fence
//!   that precedes the payload stores of sample `n + slots`).
//! - **Release**: **SYNC POINT** the subscriber stores `cursor = c + 1` with
//!   release, pairing with the publisher's acquire load of the cursors when
//!   it rescans: the publisher overwrites the slot only after we are done.
//!
//! Under back-pressure the publisher may write sample `n` when every active
//! subscriber's cursor is above `n - slots`. It keeps the minimum of the
//! cursors from its last scan and rescans the table (a SeqCst fence, then
//! acquire loads) only when that cached minimum says the slot is not free,
//! so it reads the subscribers' lines about once per `slots` samples.
//!
//! A joiner claims a free entry (`owner` CAS to "claiming" with its pid,
//! then its start time, then its cursor = `published - history`, then CAS
//! to "active", SeqCst), then, after a SeqCst fence, loads `published`
//! again: `p`. A
//! publisher whose cached minimum predates the join may still overwrite the
//! history samples; the joiner then finds them lapped (or torn: checked
//! against `published`) and counts them as missed. It cannot overwrite
//! sample `p` or later before it rescans: either its scan's SeqCst fence
//! comes after the joiner's in the single total order, and the scan sees
//! the entry, or it comes before, and the load of `p` sees at least
//! the `next` of that scan, and the publisher writes below its cached
//! minimum (at most that `next`) plus `slots`. From the join on,
//! back-pressure is lossless.
//!
//! # Waiting
//!
//! Both sides spin briefly (20 µs; a subscriber 0.5 ns a byte of its last
//! sample longer, as the publisher takes about that long to write the next),
//! then sleep on a futex (at most
//! `LIVENESS_INTERVAL` at a time, so a dead peer is noticed within a
//! second). A subscriber going to sleep sets its entry's `sleeping` flag,
//! increments `sleepers`, runs the heavy fence, loads `notify` (acquire),
//! re-checks its slot and waits on `notify`. The publisher, after storing
//! `seq`, runs the light fence and loads `sleepers`; if non-zero it
//! increments `notify` (release) and wakes all. This is a Dekker pair: the
//! heavy fence (`membarrier`) makes the subscriber's store of `sleepers`
//! and the publisher's store of `seq` ordered against each other's later
//! loads, so either the publisher sees the sleeper or the sleeper sees the
//! sample. A sleeper that read `notify` after the increment synchronizes
//! with it (release/acquire) and so sees the sample too. The publisher
//! sleeping under back-pressure is the mirror image: it sets
//! `publisher_sleeping`, heavy fence, rescans the cursors and waits;
//! subscribers, after storing their cursor, run the light fence and load the
//! flag (only under back-pressure).
//!
//! # Policies
//!
//! - [`Policy::BackPressure`]: the publisher waits for the slowest *live*
//!   subscriber. When blocked, it reads the blocking subscribers' liveness
//!   from `/proc` (pid and start time; at most every 10 ms) and reclaims
//!   dead entries, so a subscriber killed with `SIGKILL` holds it back for
//!   at most about `LIVENESS_INTERVAL`.
//! - [`Policy::OverwriteOldest`]: the publisher never waits and never reads
//!   the cursors; a subscriber learns how many samples it missed
//!   ([`Subscriber::missed`], and the gaps in [`Sample::sequence`]).
//!
//! # Read-only subscribers
//!
//! [`Subscriber::open_read_only`] maps the service without write permission
//! (`O_RDONLY`, `PROT_READ`): a bug that stores through the mapping kills
//! only that subscriber, with `SIGSEGV`, and a process that may only read
//! the object (mode 0644, say) can subscribe. Such a subscriber stores
//! nothing in shared memory, which shapes what it can do:
//!
//! - It holds no entry in the subscriber table, so the publisher does not
//!   know it exists. It is therefore offered for [`Policy::OverwriteOldest`]
//!   services only, where the publisher never reads cursors; a back-pressure
//!   service gives [`ErrorKind::InvalidArgument`]. (The alternative, moving
//!   the cursors into a second object that read-only subscribers map
//!   writable, would double the objects and their lifetimes, and a
//!   subscriber that writes a cursor the publisher waits for can stall it,
//!   which is what a read-only subscriber is meant to rule out.)
//! - It cannot announce that it sleeps: after its spin it waits on `notify`
//!   for at most 1 ms at a time (a wake for a writable sleeper ends the
//!   wait early). An idle read-only subscriber wakes up about 1000 times a
//!   second; its latency after a quiet spell is up to about a millisecond.
//! - It neither counts in [`Publisher::subscribers`] nor keeps the object
//!   alive: when the publisher closes and no live writable subscriber
//!   remains, the name is removed; the read-only subscriber keeps its
//!   mapping, receives what is left, then gets [`ErrorKind::Disconnected`].
//!
//! # Ends and lifetime
//!
//! One publisher at a time: its `owner` word is claimed with its pid and
//! start time; a second live claimant gets [`ErrorKind::Busy`], a dead
//! one's claim is taken over (after a crash, the new publisher resumes at
//! `published`). Subscribers waiting for a publisher that closed or died get
//! [`ErrorKind::Disconnected`] once they have received what is there; if a
//! new publisher comes, they go on receiving.
//!
//! The object is removed by the publisher when it closes and no live
//! subscriber remains, and by a subscriber that leaves when the publisher
//! has closed, died or never came and no other live subscriber remains.
//! Each closer marks itself gone (SeqCst) before it looks at the others
//! (SeqCst), so of two closers at the same moment at least one sees the
//! other gone and removes the object.
//!
//! # Limits
//!
//! Slots: a power of two from 2 to 2^20; a sample up to 1 GiB; 1 to 4096
//! subscribers (default 32); history below the slot count. A full table
//! (every entry held by a live subscriber) gives [`ErrorKind::Busy`].
//! Sequence numbers are 64-bit and do not wrap in practice.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::{
    LIVENESS_INTERVAL, SPIN, SPIN_PREFETCH, copy_bytes, holder_alive, membarrier_ready, spin_prefetching,
    spin_until_for,
};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::registry::{self, ObjectKind, ProcessId};
use crate::segment::{Lifetime, Segment, Target};
use crate::sync::primitive::{Mapped, Memory, Ordering, Word};

const VERSION: u32 = 1;
const TYPE_NAME: usize = 128;
const TYPE_NAME_LEN: usize = 64;
const PUBLISHER: usize = 192;
const PUBLISHED: usize = 256;
const PUBLISHER_SLEEPING: usize = 320;
const SLEEPERS: usize = 384;
const NOTIFY: usize = 388;
const TABLE: usize = 512;
const LINE: usize = 64;
/// How much of the next slot a publish asks for ahead of the next loan.
const PREFETCH_SPAN: usize = 8192;

/// Offsets inside an owner line (the publisher's and each subscriber's).
const OWNER: usize = 0;
const START: usize = 8;
const CURSOR: usize = 16;
const SLEEPING: usize = 24;

/// Offsets inside a slot.
const SEQ: usize = 0;
const LEN: usize = 8;
const PAYLOAD: usize = 16;

/// Owner states (low half of an `owner` word).
const FREE: u32 = 0;
const CLAIMING: u32 = 1;
const ACTIVE: u32 = 2;
const CLOSED: u32 = 3;

const MAX_SLOTS: usize = 1 << 20;
const MAX_SAMPLE: usize = 1 << 30;
const MAX_SUBSCRIBERS: usize = 4096;
const MAX_TOTAL: usize = 1 << 40;
/// Sequence numbers above this are corrupt (keeps `2n + 2` from overflowing).
const MAX_SEQ: u64 = 1 << 62;
/// How often liveness is read from `/proc` at most, per purpose.
const PROC_INTERVAL: Duration = Duration::from_millis(10);
/// Attempts of a bounded retry loop (claims, laps).
const RETRIES: usize = 64;
/// How many processes a futex wake may wake (`i32::MAX`: all).
const WAKE_ALL: u32 = i32::MAX as u32;

fn writing(n: u64) -> u64 {
    2 * n + 1
}

fn done(n: u64) -> u64 {
    2 * n + 2
}

/// Whether a deadline (`None`: none) has passed.
fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn pack(state: u32, pid: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(state)
}

fn state_of(word: u64) -> u32 {
    word as u32
}

fn pid_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// What the publisher does when the slowest subscriber is a full ring of
/// slots behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The publisher waits for the slowest live subscriber (lossless).
    BackPressure,
    /// The publisher overwrites the oldest sample; slow subscribers miss
    /// samples and are told how many.
    OverwriteOldest,
}

impl Policy {
    fn code(self) -> u64 {
        match self {
            Policy::BackPressure => 1,
            Policy::OverwriteOldest => 2,
        }
    }

    fn from_code(code: u64) -> Option<Policy> {
        match code {
            1 => Some(Policy::BackPressure),
            2 => Some(Policy::OverwriteOldest),
            _ => None,
        }
    }
}

/// How to create a service (and what an opener expects of an existing one).
#[derive(Debug, Clone)]
pub struct PubSubOptions {
    slots: usize,
    max_sample: usize,
    max_subscribers: usize,
    policy: Policy,
    history: usize,
    mode: u32,
    allow_untrusted: bool,
    type_name: [u8; TYPE_NAME_LEN],
    type_size: usize,
}

impl Default for PubSubOptions {
    fn default() -> Self {
        PubSubOptions {
            slots: 64,
            max_sample: 256,
            max_subscribers: 32,
            policy: Policy::BackPressure,
            history: 0,
            mode: 0o600,
            allow_untrusted: false,
            type_name: [0; TYPE_NAME_LEN],
            type_size: 0,
        }
    }
}

fn type_name_bytes<T>() -> [u8; TYPE_NAME_LEN] {
    // The end of a long path names the type best: keep the last bytes.
    let name = std::any::type_name::<T>().as_bytes();
    let name = &name[name.len().saturating_sub(TYPE_NAME_LEN)..];
    let mut bytes = [0u8; TYPE_NAME_LEN];
    bytes[..name.len()].copy_from_slice(name);
    bytes
}

fn show_type(name: &[u8; TYPE_NAME_LEN], size: u64) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(TYPE_NAME_LEN);
    if end == 0 && size == 0 {
        "raw bytes".into()
    } else {
        format!("`{}` ({size} bytes)", String::from_utf8_lossy(&name[..end]))
    }
}

impl PubSubOptions {
    /// Raw-bytes samples of up to 256 bytes, 64 slots, 32 subscribers,
    /// back-pressure, no history, mode 0600.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`new`](Self::new), for samples of type `T`: the largest sample is
    /// `size_of::<T>()` and the type's name and size are recorded, so that
    /// an opener expecting another type gets a clear error.
    pub fn for_type<T: Pod>() -> Self {
        let mut options = Self::default();
        options.set_type::<T>();
        options
    }

    fn set_type<T: Pod>(&mut self) {
        self.type_name = type_name_bytes::<T>();
        self.type_size = std::mem::size_of::<T>();
        self.max_sample = self.type_size;
    }

    /// Number of slots: a power of two from 2 to 2^20 (default 64). Under
    /// back-pressure, how far the publisher may run ahead of the slowest
    /// subscriber.
    pub fn slots(&mut self, slots: usize) -> &mut Self {
        self.slots = slots;
        self
    }

    /// Largest sample in bytes (default 256; set by
    /// [`for_type`](Self::for_type)).
    pub fn max_sample(&mut self, bytes: usize) -> &mut Self {
        self.max_sample = bytes;
        self
    }

    /// How many subscribers may be attached at once, 1 to 4096 (default 32).
    pub fn max_subscribers(&mut self, count: usize) -> &mut Self {
        self.max_subscribers = count;
        self
    }

    /// What the publisher does when a subscriber lags a full ring behind
    /// (default [`Policy::BackPressure`]).
    pub fn policy(&mut self, policy: Policy) -> &mut Self {
        self.policy = policy;
        self
    }

    /// How many already-published samples a joining subscriber receives
    /// first (default 0: only samples published after it joined). Below
    /// the slot count.
    pub fn history(&mut self, samples: usize) -> &mut Self {
        self.history = samples;
        self
    }

    /// Permission bits of the shared-memory object (default 0600).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Accept an existing service that another user owns or that group or
    /// others may write (see
    /// [`SegmentOptions::allow_untrusted`](crate::SegmentOptions::allow_untrusted));
    /// default `false`. A service shared between users (mode 0660, say)
    /// needs it on the side that opens what the other created.
    pub fn allow_untrusted(&mut self, allow: bool) -> &mut Self {
        self.allow_untrusted = allow;
        self
    }
}

/// The POSIX name of the service called `name`.
pub fn object_name(name: &str) -> String {
    format!("/{}pubsub.{name}", registry::PREFIX)
}

/// A service's shape, validated from the header once at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    slots: u64,
    max_sample: u64,
    max_subscribers: usize,
    policy: Policy,
    type_size: u64,
    history: u64,
    stride: usize,
    slots_at: usize,
    total: usize,
}

impl Layout {
    /// The layout of a raw-bytes service with these parameters, for tests
    /// (panics where `compute` refuses them).
    #[cfg(test)]
    fn for_test(slots: u64, max_sample: u64, max_subscribers: u64, policy: Policy, history: u64) -> Layout {
        let (stride, slots_at, total) = Layout::compute(slots, max_sample, max_subscribers, history).unwrap();
        let max_subscribers = max_subscribers as usize;
        Layout { slots, max_sample, max_subscribers, policy, type_size: 0, history, stride, slots_at, total }
    }

    /// The layout for these parameters, or why they are not allowed.
    fn compute(
        slots: u64,
        max_sample: u64,
        max_subscribers: u64,
        history: u64,
    ) -> Result<(usize, usize, usize), String> {
        if !slots.is_power_of_two() || !(2..=MAX_SLOTS as u64).contains(&slots) {
            return Err(format!("the slot count is a power of two from 2 to {MAX_SLOTS}, not {slots}"));
        }
        if max_sample > MAX_SAMPLE as u64 {
            return Err(format!("a sample has at most {MAX_SAMPLE} bytes, not {max_sample}"));
        }
        if !(1..=MAX_SUBSCRIBERS as u64).contains(&max_subscribers) {
            return Err(format!("up to 1 to {MAX_SUBSCRIBERS} subscribers, not {max_subscribers}"));
        }
        if history >= slots {
            return Err(format!("a history of {history} samples needs more than {slots} slots"));
        }
        let stride = (PAYLOAD + max_sample as usize).div_ceil(LINE) * LINE;
        let slots_at = TABLE + max_subscribers as usize * LINE;
        let total = (slots as usize).checked_mul(stride).and_then(|s| s.checked_add(slots_at));
        match total {
            Some(total) if total <= MAX_TOTAL => Ok((stride, slots_at, total)),
            _ => Err(format!("{slots} slots of {stride} bytes are too large")),
        }
    }
}

/// How long a read-only subscriber sleeps at most before it looks again: it
/// cannot tell the publisher that it sleeps, so nobody wakes it.
const READ_ONLY_POLL: Duration = Duration::from_millis(1);

/// How the protocol waits, beyond what [`Memory`] does. On a real mapping
/// it spins for a while and reads `/proc` at most every `PROC_INTERVAL`;
/// in the loom model it looks once and checks liveness every time (the
/// model's clock is not modelled, so no decision may depend on it).
trait Host: Memory {
    /// Checks `ready()` until it holds or the spin budget is spent; whether
    /// it holds.
    fn spin_until(&self, limit: Duration, ready: impl FnMut() -> bool) -> bool;
    /// [`spin_until`](Self::spin_until), asking all the while for the lines
    /// at offsets `lines` (see [`spin_prefetching`]).
    fn spin_prefetching(&self, limit: Duration, lines: std::ops::Range<u64>, ready: impl FnMut() -> bool) -> bool;
    /// Whether a slow check made at `at` is still fresh.
    fn fresh(&self, at: Instant) -> bool;
}

impl Host for Mapped {
    #[inline]
    fn spin_until(&self, limit: Duration, ready: impl FnMut() -> bool) -> bool {
        spin_until_for(limit, ready)
    }

    fn spin_prefetching(&self, limit: Duration, lines: std::ops::Range<u64>, ready: impl FnMut() -> bool) -> bool {
        spin_prefetching(self, limit, lines, |at| at as usize, ready)
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < PROC_INTERVAL
    }
}

/// Whether a slow check last made at `last` is due; if so, records now.
fn due<M: Host>(mem: &M, last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|at| mem.fresh(at)) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Liveness of a real end: the pid and start time, read from `/proc`.
type Live = fn(u32, u64) -> bool;

/// The protocol's view of a service: its memory, its validated shape, its
/// name (for errors) and how to tell whether a process holding a line
/// still runs (`live(pid, start)`, start 0 when unknown). The same code
/// runs on a real mapping with `/proc` and on loom's model memory with a
/// liveness the model decides.
struct Core<M, L> {
    mem: M,
    layout: Layout,
    label: String,
    live: L,
    /// Raised by the `SIGBUS` guard when a peer truncated the object under
    /// us (the lost pages read as zeros); checked where waits look at the
    /// peers. `None` in models and unguarded mappings.
    truncated: Option<&'static std::sync::atomic::AtomicBool>,
}

impl<M: std::fmt::Debug, L> std::fmt::Debug for Core<M, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("mem", &self.mem)
            .field("layout", &self.layout)
            .field("label", &self.label)
            .finish()
    }
}

impl<M: Host, L: Fn(u32, u64) -> bool> Core<M, L> {
    /// [`ErrorKind::Truncated`] once a peer truncated the object under us.
    #[inline(always)]
    fn check_truncated(&self, op: Op) -> Result<()> {
        match self.truncated {
            Some(flag) if flag.load(Ordering::Relaxed) => {
                Err(self.err(op, ErrorKind::Truncated { size: self.mem.len() as u64 }))
            }
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn u64_at(&self, offset: usize) -> &M::W64 {
        self.mem.u64_at(offset)
    }

    #[inline(always)]
    fn u32_at(&self, offset: usize) -> &M::W32 {
        self.mem.u32_at(offset)
    }

    /// The offset of subscriber entry `index` (below `max_subscribers`).
    #[inline(always)]
    fn entry(&self, index: usize) -> usize {
        debug_assert!(index < self.layout.max_subscribers);
        TABLE + index * LINE
    }

    /// The offset of the slot of sample `n`: its index is reduced modulo
    /// the slot count, so the slot lies inside the validated layout.
    #[inline(always)]
    fn slot(&self, n: u64) -> usize {
        self.layout.slots_at + (n & (self.layout.slots - 1)) as usize * self.layout.stride
    }

    #[inline(always)]
    fn seq(&self, n: u64) -> &M::W64 {
        self.u64_at(self.slot(n) + SEQ)
    }

    #[inline(always)]
    fn len_word(&self, n: u64) -> &M::W64 {
        self.u64_at(self.slot(n) + LEN)
    }

    /// The offset of sample `n`'s payload.
    #[inline(always)]
    fn payload(&self, n: u64) -> usize {
        self.slot(n) + PAYLOAD
    }

    #[cold]
    #[inline(never)]
    fn err(&self, op: Op, kind: ErrorKind) -> Error {
        Error::new(op, self.label.as_str(), kind)
    }

    #[cold]
    #[inline(never)]
    fn corrupt(&self, op: Op, what: String) -> Error {
        self.err(op, ErrorKind::Corrupt(what))
    }

    /// Whether the holder recorded in `owner` (of the line at `line`) runs.
    /// A claim in progress has no start time yet: only the pid is checked.
    fn owner_alive(&self, line: usize, owner: u64) -> bool {
        match state_of(owner) {
            CLAIMING => (self.live)(pid_of(owner), 0),
            ACTIVE => (self.live)(pid_of(owner), self.u64_at(line + START).load(Ordering::Acquire)),
            _ => false,
        }
    }

    /// Takes the line at `line` from `seen` (free, closed, or a dead
    /// holder's) to "claiming" by this process, and records its start time.
    fn try_claim(&self, line: usize, me: &ProcessId, seen: u64) -> bool {
        let owner = self.u64_at(line + OWNER);
        if owner.compare_exchange(seen, pack(CLAIMING, me.pid), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        self.u64_at(line + START).store(me.start, Ordering::Release);
        true
    }

    /// Finishes a claim: "claiming" to "active" (SeqCst, see the join).
    fn activate(&self, line: usize, me: &ProcessId) -> bool {
        self.u64_at(line + OWNER)
            .compare_exchange(pack(CLAIMING, me.pid), pack(ACTIVE, me.pid), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Clears a subscriber entry's `sleeping` flag and, if it was set, takes
    /// it off the `sleepers` count (never below zero).
    fn clear_sleeping(&self, line: usize) {
        if self.u32_at(line + SLEEPING).swap(0, Ordering::Relaxed) == 1 {
            let sleepers = self.u32_at(SLEEPERS);
            let mut n = sleepers.load(Ordering::Relaxed);
            while n > 0 {
                match sleepers.compare_exchange_weak(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => n = now,
                }
            }
        }
    }

    /// Frees the entry of a dead subscriber (if it still holds `owner`).
    fn reclaim(&self, index: usize, owner: u64) -> bool {
        let line = self.entry(index);
        let freed = self
            .u64_at(line + OWNER)
            .compare_exchange(owner, pack(FREE, 0), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if freed {
            self.clear_sleeping(line);
        }
        freed
    }

    /// Whether some subscriber entry is held by a live process (slow: reads
    /// liveness; for closing).
    fn any_live_subscriber(&self) -> bool {
        self.mem.fence(Ordering::SeqCst);
        (0..self.layout.max_subscribers).any(|i| {
            let line = self.entry(i);
            let owner = self.u64_at(line + OWNER).load(Ordering::SeqCst);
            matches!(state_of(owner), CLAIMING | ACTIVE) && self.owner_alive(line, owner)
        })
    }

    /// Active subscriber entries (no liveness check).
    fn active_subscribers(&self) -> usize {
        (0..self.layout.max_subscribers)
            .filter(|&i| state_of(self.u64_at(self.entry(i) + OWNER).load(Ordering::Acquire)) == ACTIVE)
            .count()
    }

    fn publisher_owner(&self) -> u64 {
        self.u64_at(PUBLISHER + OWNER).load(Ordering::Acquire)
    }

    /// Whether the publisher closed (one load; no liveness check).
    fn publisher_closed(&self) -> bool {
        state_of(self.publisher_owner()) == CLOSED
    }

    /// Wakes every sleeping subscriber.
    fn wake_subscribers(&self) {
        let notify = self.u32_at(NOTIFY);
        notify.fetch_add(1, Ordering::Release);
        self.mem.wake(notify, WAKE_ALL);
    }
}

/// Opens or creates the object and validates its header against what the
/// caller expects. `read_only`: map it without write permission (opening
/// only).
fn open_shared(
    name: &str,
    options: Option<&PubSubOptions>,
    expect_type: Option<([u8; 64], u64)>,
    read_only: bool,
) -> Result<(Segment, Core<Mapped, Live>)> {
    let target = Target::posix(&object_name(name))?;
    let seg = match options {
        Some(opts) => {
            let (stride, _, total) = Layout::compute(
                opts.slots as u64,
                opts.max_sample as u64,
                opts.max_subscribers as u64,
                opts.history as u64,
            )
            .map_err(|why| Error::invalid(Op::Create, target.to_string(), why))?;
            if opts.type_size > opts.max_sample {
                return Err(Error::invalid(
                    Op::Create,
                    target.to_string(),
                    format!("a sample of {} bytes cannot hold its type of {} bytes", opts.max_sample, opts.type_size),
                ));
            }
            let created = Segment::options().size(total).mode(opts.mode).lifetime(Lifetime::Persistent).create(&target);
            let mut seg = match created {
                Err(e) if *e.kind() == ErrorKind::AlreadyExists => Segment::options()
                    .lifetime(Lifetime::Persistent)
                    .allow_untrusted(opts.allow_untrusted)
                    .open(&target)?,
                other => other?,
            };
            if seg.created() {
                let params = [
                    opts.slots as u64,
                    opts.max_sample as u64,
                    opts.max_subscribers as u64,
                    opts.policy.code(),
                    opts.type_size as u64,
                    opts.history as u64,
                    stride as u64,
                    0,
                ];
                let type_name = opts.type_name;
                let init = registry::init(&mut seg, ObjectKind::PubSub, VERSION, params, |seg| {
                    // Fault every page in now, not on the first samples.
                    let zeros = vec![0u8; 1 << 16];
                    let mut at = registry::HEADER_SIZE;
                    while at < seg.len() {
                        let n = zeros.len().min(seg.len() - at);
                        seg.write_at(at, &zeros[..n])?;
                        at += n;
                    }
                    seg.write_at(TYPE_NAME, &type_name)
                });
                if let Err(e) = init {
                    let _ = seg.remove();
                    return Err(e);
                }
            }
            seg
        }
        None if read_only => Segment::options().lifetime(Lifetime::Persistent).read_only().open(&target)?,
        None => Segment::options().lifetime(Lifetime::Persistent).open(&target)?,
    };
    let header = registry::open(&seg, ObjectKind::PubSub, VERSION)?;
    let p = header.params;
    let bad = |what: String| Error::new(Op::Open, seg.name(), ErrorKind::Corrupt(what));
    let (stride, slots_at, total) = Layout::compute(p[0], p[1], p[2], p[5]).map_err(&bad)?;
    let policy = Policy::from_code(p[3]).ok_or_else(|| bad(format!("policy {}", p[3])))?;
    if total != seg.len() || stride as u64 != p[6] || p[4] > p[1] {
        return Err(bad(format!("parameters {p:?} do not fit the object of {} bytes", seg.len())));
    }
    let layout = Layout {
        slots: p[0],
        max_sample: p[1],
        max_subscribers: p[2] as usize,
        policy,
        type_size: p[4],
        history: p[5],
        stride,
        slots_at,
        total,
    };
    let mut type_name = [0u8; TYPE_NAME_LEN];
    seg.read_at(TYPE_NAME, &mut type_name)?;
    let mismatch = |what: String| Error::invalid(Op::Open, seg.name(), format!("the service exists with {what}"));
    if let Some(opts) = options {
        let wanted = [
            ("slots", layout.slots, opts.slots as u64),
            ("bytes per sample at most", layout.max_sample, opts.max_sample as u64),
            ("subscribers at most", layout.max_subscribers as u64, opts.max_subscribers as u64),
            ("samples of history", layout.history, opts.history as u64),
        ];
        for (what, have, want) in wanted {
            if have != want {
                return Err(mismatch(format!("{have} {what}, not {want}")));
            }
        }
        if layout.policy != opts.policy {
            return Err(mismatch(format!("policy {:?}, not {:?}", layout.policy, opts.policy)));
        }
    }
    let expect_type = expect_type.or(options.map(|o| (o.type_name, o.type_size as u64)));
    if let Some((name, size)) = expect_type
        && (name != type_name || size != layout.type_size)
    {
        return Err(Error::new(
            Op::Open,
            seg.name(),
            ErrorKind::WrongType(format!(
                "a service of {}, not of {}",
                show_type(&type_name, layout.type_size),
                show_type(&name, size)
            )),
        ));
    }
    if read_only && policy != Policy::OverwriteOldest {
        return Err(Error::invalid(
            Op::Open,
            seg.name(),
            "a read-only subscriber needs an overwrite-oldest service: under back-pressure the publisher waits \
             for every subscriber's cursor, which a read-only mapping cannot write",
        ));
    }
    // SAFETY: the mapping is page-aligned and `layout.total` (= its length,
    // checked above) bytes long, and it lives in `seg`, which every end
    // keeps next to its core and drops after it. Its bytes are only
    // accessed atomically or by byte copies. A read-only mapping is not
    // valid for writes: a read-only subscriber's code only loads, copies
    // out and futex-waits (see `SubEnd::line`), never stores.
    let mem = unsafe { Mapped::new(seg.as_ptr(), layout.total, membarrier_ready()) };
    let label = seg.name().to_string();
    let truncated = seg.truncation_flag();
    Ok((seg, Core { mem, layout, label, live: holder_alive, truncated }))
}

/// The publisher's side of the protocol, over any [`Memory`].
#[derive(Debug)]
struct PubEnd<M, L> {
    core: Core<M, L>,
    me: ProcessId,
    /// The next sample's number (private copy of `published`).
    next: u64,
    /// The subscribers' smallest cursor as last scanned (back-pressure).
    cached_min: u64,
    /// When the blocking subscribers' liveness was last read.
    reaped_at: Option<Instant>,
    /// Wakes that woke nobody in a row (a subscriber may have died asleep).
    idle_wakes: u32,
    broken: bool,
    /// How many slots ahead the publisher asks for the line it will write
    /// first (about 512 bytes ahead, at most half the slots).
    prefetch_ahead: u64,
}

impl<M: Host, L: Fn(u32, u64) -> bool> PubEnd<M, L> {
    /// Claims the publisher's line as `me` and resumes where a predecessor
    /// stopped.
    fn claim(core: Core<M, L>, me: ProcessId) -> Result<Self> {
        let mut claimed = false;
        for _ in 0..RETRIES {
            let owner = core.publisher_owner();
            match state_of(owner) {
                FREE | CLOSED => {}
                CLAIMING | ACTIVE if core.owner_alive(PUBLISHER, owner) => {
                    return Err(core.err(Op::Open, ErrorKind::Busy { pid: pid_of(owner) }));
                }
                CLAIMING | ACTIVE => {}
                other => return Err(core.corrupt(Op::Open, format!("publisher state {other}"))),
            }
            if core.try_claim(PUBLISHER, &me, owner) {
                claimed = core.activate(PUBLISHER, &me);
                break;
            }
        }
        if !claimed {
            return Err(core.corrupt(Op::Open, "the publisher's claim keeps changing".into()));
        }
        let prefetch_ahead = (512 / core.layout.stride as u64).clamp(1, core.layout.slots / 2);
        Ok(PubEnd { core, me, next: 0, cached_min: 0, reaped_at: None, idle_wakes: 0, broken: false, prefetch_ahead })
    }

    /// Resumes after a predecessor: at `published`, or one further if it
    /// died between publishing a sample and counting it; then scans the
    /// cursors (subscribers may be behind already).
    fn resume(&mut self) -> Result<()> {
        let published = self.core.u64_at(PUBLISHED).load(Ordering::Acquire);
        if published >= MAX_SEQ {
            return Err(self.core.corrupt(Op::Open, format!("{published} samples published")));
        }
        let mut next = published;
        if self.core.seq(next).load(Ordering::Acquire) == done(next) {
            next += 1;
            self.core.u64_at(PUBLISHED).store(next, Ordering::Release);
        }
        self.next = next;
        self.cached_min = self.scan()?.0;
        Ok(())
    }

    /// Scans the subscriber table: the smallest cursor of the active
    /// subscribers (`next` if none) and the entry that holds it.
    fn scan(&mut self) -> Result<(u64, Option<usize>)> {
        let core = &self.core;
        // Pairs with the joiner's SeqCst activation (see the module docs).
        core.mem.fence(Ordering::SeqCst);
        let (mut min, mut at) = (self.next, None);
        for i in 0..core.layout.max_subscribers {
            let line = core.entry(i);
            if state_of(core.u64_at(line + OWNER).load(Ordering::Acquire)) != ACTIVE {
                continue;
            }
            // SYNC POINT: acquire pairs with the subscriber's release of its
            // cursor after it finished reading the samples before it.
            let cursor = core.u64_at(line + CURSOR).load(Ordering::Acquire);
            if cursor > self.next {
                self.broken = true;
                return Err(core.corrupt(
                    Op::Send,
                    format!("subscriber {i} is at sample {cursor}, beyond the {} published", self.next),
                ));
            }
            if cursor < min {
                (min, at) = (cursor, Some(i));
            }
        }
        Ok((min, at))
    }

    /// Frees the entries of dead subscribers that hold the next slot (reads
    /// liveness, on a mapping at most every 10 ms). Whether any was freed.
    fn reap_blockers(&mut self) -> bool {
        if !due(&self.core.mem, &mut self.reaped_at) {
            return false;
        }
        let core = &self.core;
        let need = (self.next + 1).saturating_sub(core.layout.slots);
        let mut freed = false;
        for i in 0..core.layout.max_subscribers {
            let line = core.entry(i);
            let owner = core.u64_at(line + OWNER).load(Ordering::Acquire);
            if state_of(owner) == ACTIVE
                && core.u64_at(line + CURSOR).load(Ordering::Acquire) < need
                && !core.owner_alive(line, owner)
            {
                freed |= core.reclaim(i, owner);
            }
        }
        freed
    }

    /// Frees dead subscribers that announced sleep (they keep `sleepers`
    /// above zero and make every publish wake nobody).
    fn reap_sleepers(&mut self) {
        let core = &self.core;
        for i in 0..core.layout.max_subscribers {
            let line = core.entry(i);
            let owner = core.u64_at(line + OWNER).load(Ordering::Acquire);
            if core.u32_at(line + SLEEPING).load(Ordering::Relaxed) != 0
                && matches!(state_of(owner), CLAIMING | ACTIVE)
                && !core.owner_alive(line, owner)
            {
                core.reclaim(i, owner);
            }
        }
    }

    /// Waits until the slot of sample `next` may be written; `None`
    /// deadline: don't wait.
    #[inline]
    fn reserve(&mut self, deadline: Option<Option<Instant>>) -> Result<()> {
        if self.broken {
            return Err(self.core.corrupt(Op::Send, "an earlier scan found corrupt shared memory".into()));
        }
        // A truncated object reads as zeros: no subscriber would ever hold
        // us back again, and nobody would see what we publish.
        self.core.check_truncated(Op::Send)?;
        let layout = &self.core.layout;
        if layout.policy == Policy::OverwriteOldest || self.next - self.cached_min < layout.slots {
            return Ok(());
        }
        self.reserve_slow(deadline)
    }

    /// [`reserve`](Self::reserve) when the cached minimum says the slot is
    /// not free: rescan, reap, spin, sleep.
    #[inline(never)]
    fn reserve_slow(&mut self, deadline: Option<Option<Instant>>) -> Result<()> {
        let slots = self.core.layout.slots;
        loop {
            let (min, blocker) = self.scan()?;
            self.cached_min = min;
            if self.next - min < slots {
                return Ok(());
            }
            if self.reap_blockers() {
                continue;
            }
            let Some(deadline) = deadline else {
                return Err(self.core.err(Op::Send, ErrorKind::WouldBlock));
            };
            // The cursor value that frees the slot.
            let need = self.next + 1 - slots;
            let core = &self.core;
            if let Some(i) = blocker {
                let line = core.entry(i);
                let spun = core.mem.spin_until(SPIN, || {
                    core.u64_at(line + CURSOR).load(Ordering::Acquire) >= need
                        || state_of(core.u64_at(line + OWNER).load(Ordering::Relaxed)) != ACTIVE
                });
                // (The deadline is checked also after a successful spin: a
                // cursor that keeps changing must not keep us here.)
                if spun && !expired(deadline) {
                    continue;
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(core.err(Op::Send, ErrorKind::Timeout));
            }
            let flag = core.u32_at(PUBLISHER_SLEEPING);
            flag.store(1, Ordering::Relaxed);
            core.mem.heavy_fence();
            let free = (0..core.layout.max_subscribers).all(|i| {
                let line = core.entry(i);
                state_of(core.u64_at(line + OWNER).load(Ordering::Acquire)) != ACTIVE
                    || core.u64_at(line + CURSOR).load(Ordering::Acquire) >= need
            });
            if !free {
                let limit = left.map_or(LIVENESS_INTERVAL, |t| t.min(LIVENESS_INTERVAL));
                #[cfg(all(loom, test))]
                loom_tests::note(&loom_tests::PUBLISHER_SLEPT);
                core.mem.wait(flag, 1, Some(limit));
            }
            flag.store(0, Ordering::Relaxed);
        }
    }

    /// Marks the slot of sample `next` as being written and returns the
    /// offset of its payload.
    #[inline]
    fn begin(&mut self) -> usize {
        let n = self.next;
        if self.core.layout.policy == Policy::OverwriteOldest {
            self.core.seq(n).store(writing(n), Ordering::Release);
        }
        // Orders the mark (overwrite-oldest) or the count of samples
        // published (back-pressure, stored by the last commit) before the
        // payload stores (seqlock writer).
        self.core.mem.fence(Ordering::Release);
        self.core.payload(n)
    }

    /// Publishes sample `next` of `len` bytes, already in place.
    #[inline]
    fn commit(&mut self, len: usize) -> u64 {
        let n = self.next;
        let core = &self.core;
        core.len_word(n).store(len as u64, Ordering::Relaxed);
        // SYNC POINT: release publishes the payload and length to a
        // subscriber that acquires this sequence word.
        core.seq(n).store(done(n), Ordering::Release);
        self.next = n + 1;
        core.u64_at(PUBLISHED).store(n + 1, Ordering::Release);
        // The slot's first line was last read by the subscribers, a lap
        // ago: ask for it now, not at the first store (as the ring does).
        core.mem.prefetch_write(core.slot(n + 1 + self.prefetch_ahead));
        // The next sample is likely as long as this one: own the rest of
        // its slot before the caller writes it. Those lines were written by
        // us a lap ago (subscribers that read in place read them too) and
        // sit in L2 or in a reader's cache; fetched now, while the caller
        // prepares the next sample, its copy into the loan runs at L1
        // speed (4 KiB round trip ~550 -> ~420 ns, stream 6.6 -> 10 M/s on
        // the development VM). Capped: a large sample streams anyway. (A
        // sample within the first line asks for nothing more.)
        let next = core.slot(n + 1);
        let span = (PAYLOAD + len).min(PREFETCH_SPAN);
        let mut at = LINE;
        while at < span {
            core.mem.prefetch_write(next + at);
            at += LINE;
        }
        core.mem.light_fence();
        if core.u32_at(SLEEPERS).load(Ordering::Relaxed) != 0 {
            self.wake_sleepers();
        }
        n
    }

    /// Wakes the subscribers that announced sleep.
    #[inline(never)]
    fn wake_sleepers(&mut self) {
        let notify = self.core.u32_at(NOTIFY);
        notify.fetch_add(1, Ordering::Release);
        if self.core.mem.wake(notify, WAKE_ALL) == 0 {
            self.idle_wakes += 1;
            if self.idle_wakes >= 1024 {
                self.idle_wakes = 0;
                self.reap_sleepers();
            }
        } else {
            self.idle_wakes = 0;
        }
    }

    /// Copies `data` into the next slot and publishes it.
    #[inline]
    fn publish_with(&mut self, data: &[u8], deadline: Option<Option<Instant>>) -> Result<u64> {
        let max = self.core.layout.max_sample;
        if data.len() as u64 > max {
            return Err(self.core.err(Op::Send, ErrorKind::MessageTooLarge { len: data.len() as u64, max }));
        }
        self.reserve(deadline)?;
        let at = self.begin();
        self.core.mem.write(at, data);
        Ok(self.commit(data.len()))
    }

    /// Marks the publisher closed and wakes the subscribers; whether the
    /// object should be removed (no live subscriber remains).
    fn close(&mut self) -> bool {
        let core = &self.core;
        let closed = core
            .u64_at(PUBLISHER + OWNER)
            .compare_exchange(pack(ACTIVE, self.me.pid), pack(CLOSED, 0), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if !closed {
            // Someone took our claim (we were taken for dead): not ours to
            // close.
            return false;
        }
        core.wake_subscribers();
        !core.any_live_subscriber()
    }
}

/// The publishing end of a service.
#[derive(Debug)]
pub struct Publisher {
    end: PubEnd<Mapped, Live>,
    /// The mapping `end` works on; dropped after it.
    seg: Segment,
}

impl Publisher {
    /// Creates the service `name` (or opens it, if it exists with the same
    /// parameters and type) and becomes its publisher.
    ///
    /// # Errors
    ///
    /// Bad options ([`ErrorKind::InvalidArgument`]), a service with other
    /// parameters ([`ErrorKind::InvalidArgument`]) or another type
    /// ([`ErrorKind::WrongType`]), another live publisher
    /// ([`ErrorKind::Busy`]), a corrupt object, or the OS refuses.
    pub fn open_or_create(name: &str, options: &PubSubOptions) -> Result<Publisher> {
        Self::from_shared(open_shared(name, Some(options), None, false)?)
    }

    /// Opens the existing service `name` as its publisher, whatever its
    /// parameters.
    ///
    /// # Errors
    ///
    /// No such service, another live publisher, or a corrupt object.
    pub fn open(name: &str) -> Result<Publisher> {
        Self::from_shared(open_shared(name, None, None, false)?)
    }

    fn from_shared((seg, core): (Segment, Core<Mapped, Live>)) -> Result<Publisher> {
        let mut publisher = Publisher { end: PubEnd::claim(core, ProcessId::current())?, seg };
        // On an error the publisher is dropped: it closes (and removes the
        // object if no live subscriber remains).
        publisher.end.resume()?;
        Ok(publisher)
    }

    /// The largest sample in bytes.
    pub fn max_sample(&self) -> usize {
        self.end.core.layout.max_sample as usize
    }

    /// The service's policy.
    pub fn policy(&self) -> Policy {
        self.end.core.layout.policy
    }

    /// The object's name in `/dev/shm`.
    pub fn object_name(&self) -> &str {
        self.seg.name()
    }

    /// Samples published so far: the next sample's sequence number.
    pub fn published(&self) -> u64 {
        self.end.next
    }

    /// Subscribers attached now (entries marked active; one that died
    /// counts until it is reclaimed). Read-only subscribers hold no entry
    /// and are not counted.
    pub fn subscribers(&self) -> usize {
        self.end.core.active_subscribers()
    }

    #[inline]
    fn loan_with(&mut self, deadline: Option<Option<Instant>>) -> Result<Loan<'_>> {
        self.end.reserve(deadline)?;
        let at = self.end.begin();
        // SAFETY: `at` is the offset of a slot's payload, which holds
        // `max_sample` bytes inside the mapping (the layout was validated
        // against its length at open).
        let ptr = unsafe { self.end.core.mem.base().as_ptr().add(at) };
        let capacity = self.end.core.layout.max_sample as usize;
        Ok(Loan { ptr, len: capacity, capacity, publisher: self })
    }

    /// Loans the next slot for a sample written in place (zero-copy),
    /// waiting (under back-pressure) until the slowest live subscriber has
    /// released it. Write through the [`Loan`], then [`Loan::publish`]; a
    /// loan dropped unpublished publishes nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`] if the subscriber table is corrupt.
    #[inline]
    pub fn loan(&mut self) -> Result<Loan<'_>> {
        self.loan_with(Some(None))
    }

    /// [`loan`](Self::loan) without waiting.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if a live subscriber still holds the slot,
    /// or as [`loan`](Self::loan).
    pub fn try_loan(&mut self) -> Result<Loan<'_>> {
        self.loan_with(None)
    }

    /// [`loan`](Self::loan), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`loan`](Self::loan), plus [`ErrorKind::Timeout`].
    pub fn loan_timeout(&mut self, timeout: Duration) -> Result<Loan<'_>> {
        self.loan_with(Some(Instant::now().checked_add(timeout)))
    }

    /// Copies `data` into the next slot and publishes it, waiting as
    /// [`loan`](Self::loan) does. Returns the sample's sequence number.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MessageTooLarge`], or as [`loan`](Self::loan).
    pub fn publish(&mut self, data: &[u8]) -> Result<u64> {
        self.end.publish_with(data, Some(None))
    }

    /// [`publish`](Self::publish) without waiting.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`ErrorKind::WouldBlock`].
    pub fn try_publish(&mut self, data: &[u8]) -> Result<u64> {
        self.end.publish_with(data, None)
    }

    /// [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`ErrorKind::Timeout`].
    pub fn publish_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<u64> {
        self.end.publish_with(data, Some(Instant::now().checked_add(timeout)))
    }

    /// Publishes a plain-data value (a sample of exactly its size).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub fn publish_value<T: Pod>(&mut self, value: &T) -> Result<u64> {
        self.publish(bytemuck::bytes_of(value))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.end.close() {
            let _ = self.seg.remove();
        }
    }
}

/// A slot loaned to the publisher, written in place. Publish it with
/// [`publish`](Self::publish); dropped unpublished, it publishes nothing.
#[derive(Debug)]
pub struct Loan<'p> {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    publisher: &'p mut Publisher,
}

impl Loan<'_> {
    /// Bytes the sample will have when published (initially the largest
    /// sample; see [`set_len`](Self::set_len)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the sample will be empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest sample.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the sample's length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MessageTooLarge`] above [`capacity`](Self::capacity).
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        if len > self.capacity {
            return Err(self
                .publisher
                .end
                .core
                .err(Op::Send, ErrorKind::MessageTooLarge { len: len as u64, max: self.capacity as u64 }));
        }
        self.len = len;
        Ok(())
    }

    /// Copies `data` into the slot at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit in the slot.
    #[inline]
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        match offset.checked_add(data.len()) {
            // SAFETY: inside the slot's payload area; `data` is private.
            Some(end) if end <= self.capacity => unsafe {
                copy_bytes(data.as_ptr(), self.ptr.add(offset), data.len());
            },
            _ => {
                return Err(self.publisher.end.core.err(
                    Op::Send,
                    ErrorKind::OutOfBounds {
                        offset: offset as u64,
                        len: data.len() as u64,
                        size: self.capacity as u64,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Writes a plain-data value at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit in the slot.
    #[inline]
    pub fn write<T: Pod>(&mut self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    /// The start of the slot's payload, 16-aligned, valid for
    /// [`capacity`](Self::capacity) bytes until the loan is published or
    /// dropped. Write through it with raw pointers, never a reference.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// The sequence number the sample will have.
    pub fn sequence(&self) -> u64 {
        self.publisher.end.next
    }

    /// Publishes the sample; returns its sequence number.
    #[inline]
    pub fn publish(self) -> u64 {
        self.publisher.end.commit(self.len)
    }
}

/// A subscriber's side of the protocol, over any [`Memory`].
#[derive(Debug)]
struct SubEnd<M, L> {
    core: Core<M, L>,
    me: ProcessId,
    /// This subscriber's entry (offset of its line); `None` for a read-only
    /// subscriber, which holds no entry and never stores to shared memory.
    line: Option<usize>,
    /// The next sample's number (private copy of the shared cursor).
    cursor: u64,
    /// Under back-pressure, the first sample the publisher cannot overwrite
    /// while this subscriber's cursor is below it (`published` read after
    /// the entry became active); samples before it (the history) are
    /// checked against `published` after they are read.
    safe_from: u64,
    missed: u64,
    /// Set after corrupt shared memory was found: later calls report it
    /// again instead of guessing.
    broken: bool,
    /// Bytes of the last sample copied out, at most [`SPIN_PREFETCH`]; zero
    /// after a sample read in place (which may read only part of it). A
    /// waiting subscriber asks for the lines of the next sample this long.
    expect: u64,
    /// Bytes of the last sample received, at most [`SPIN_PREFETCH`]: a
    /// waiting subscriber spins longer for the next one (see
    /// [`spin_budget`](Self::spin_budget)).
    last: u64,
    /// The publisher's owner word when its liveness was last read, and
    /// whether it was gone; when.
    gone: Option<(u64, bool)>,
    gone_at: Option<Instant>,
}

impl<M: Host, L: Fn(u32, u64) -> bool> SubEnd<M, L> {
    /// Claims a subscriber entry as `me` (first free entries, then entries
    /// whose holder died) and starts `history` samples back.
    fn join(core: Core<M, L>, me: ProcessId) -> Result<Self> {
        let mut holder = 0;
        for pass in 0..2 {
            for i in 0..core.layout.max_subscribers {
                let line = core.entry(i);
                let owner = core.u64_at(line + OWNER).load(Ordering::Acquire);
                let takeable = match state_of(owner) {
                    FREE => true,
                    CLAIMING | ACTIVE if pass == 1 => {
                        let alive = core.owner_alive(line, owner);
                        if alive {
                            holder = pid_of(owner);
                        }
                        !alive
                    }
                    CLAIMING | ACTIVE => false,
                    // A scribbled word: nobody holds it.
                    _ => pass == 1,
                };
                if !takeable || !core.try_claim(line, &me, owner) {
                    continue;
                }
                core.clear_sleeping(line);
                let published = core.u64_at(PUBLISHED).load(Ordering::Acquire);
                if published >= MAX_SEQ {
                    core.u64_at(line + OWNER).store(pack(FREE, 0), Ordering::SeqCst);
                    return Err(core.corrupt(Op::Open, format!("{published} samples published")));
                }
                let cursor = published - core.layout.history.min(published);
                core.u64_at(line + CURSOR).store(cursor, Ordering::Relaxed);
                if !core.activate(line, &me) {
                    continue;
                }
                // A SeqCst fence between the activation and this load, against
                // the one that starts the publisher's scans: either its next
                // scan sees this entry, or this load sees what it had
                // published before that scan, so the slots it may fill
                // before it sees us hold no sample from here on (see the
                // module docs).
                core.mem.fence(Ordering::SeqCst);
                let safe_from = core.u64_at(PUBLISHED).load(Ordering::Acquire);
                let mut end = Self::new(core, me, Some(line), cursor);
                // A scribbled count only makes every sample checked.
                end.safe_from = if safe_from < MAX_SEQ { safe_from } else { u64::MAX };
                return Ok(end);
            }
        }
        Err(core.err(Op::Open, ErrorKind::Busy { pid: holder }))
    }

    /// Subscribes without an entry (read-only): starts `history` samples
    /// back, invisible to the publisher.
    fn watch(core: Core<M, L>, me: ProcessId) -> Result<Self> {
        let published = core.u64_at(PUBLISHED).load(Ordering::Acquire);
        if published >= MAX_SEQ {
            return Err(core.corrupt(Op::Open, format!("{published} samples published")));
        }
        let cursor = published - core.layout.history.min(published);
        Ok(Self::new(core, me, None, cursor))
    }

    fn new(core: Core<M, L>, me: ProcessId, line: Option<usize>, cursor: u64) -> Self {
        SubEnd {
            core,
            me,
            line,
            cursor,
            safe_from: u64::MAX,
            missed: 0,
            broken: false,
            expect: 0,
            last: 0,
            gone: None,
            gone_at: None,
        }
    }

    fn fail(&mut self, what: String) -> Error {
        self.broken = true;
        self.core.corrupt(Op::Recv, what)
    }

    /// Moves the cursor to `to` and tells the publisher (waking it if it
    /// sleeps waiting for room).
    #[inline]
    fn advance(&mut self, to: u64) {
        self.cursor = to;
        let Some(line) = self.line else { return };
        let core = &self.core;
        // SYNC POINT: release: we are done reading the samples before `to`.
        core.u64_at(line + CURSOR).store(to, Ordering::Release);
        if core.layout.policy == Policy::BackPressure {
            core.mem.light_fence();
            let flag = core.u32_at(PUBLISHER_SLEEPING);
            if flag.load(Ordering::Relaxed) != 0 {
                flag.store(0, Ordering::Relaxed);
                core.mem.wake(flag, 1);
            }
        }
    }

    /// Looks at the slot of the sample at the cursor: `Some((n, len))` when
    /// sample `n` is there, `None` when it is not published yet. Skips
    /// overwritten samples, counting them as missed.
    #[inline]
    fn poll(&mut self) -> Result<Option<(u64, usize)>> {
        let c = self.cursor;
        // SYNC POINT: acquire pairs with the publisher's release of this
        // sequence word; the payload and length are visible.
        let seq = self.core.seq(c).load(Ordering::Acquire);
        // The common case inline: the sample at the cursor is there.
        if seq == done(c) && !self.broken {
            let len = self.core.len_word(c).load(Ordering::Relaxed);
            if len <= self.core.layout.max_sample {
                return Ok(Some((c, len as usize)));
            }
        }
        self.poll_slow(seq)
    }

    /// [`poll`](Self::poll) in full, from the sequence word it loaded:
    /// errors, lapped cursors, samples not yet there.
    #[inline(never)]
    fn poll_slow(&mut self, mut seq: u64) -> Result<Option<(u64, usize)>> {
        if self.broken {
            return Err(self.core.corrupt(Op::Recv, "an earlier sample was corrupt".into()));
        }
        let slots = self.core.layout.slots;
        for _ in 0..RETRIES {
            let c = self.cursor;
            let want = done(c);
            if seq == want {
                let len = self.core.len_word(c).load(Ordering::Relaxed);
                if len <= self.core.layout.max_sample {
                    return Ok(Some((c, len as usize)));
                }
                self.core.mem.fence(Ordering::Acquire);
                if self.core.seq(c).load(Ordering::Relaxed) == want {
                    return Err(self.fail(format!("sample {c} has {len} bytes, more than a slot holds")));
                }
                // Overwritten meanwhile: look again.
            } else {
                let sample = seq.wrapping_sub(1) / 2;
                if seq != 0 && (sample >= MAX_SEQ || sample & (slots - 1) != c & (slots - 1)) {
                    return Err(self.fail(format!(
                        "slot {} holds sequence word {seq:#x}, not a sample of that slot",
                        c & (slots - 1)
                    )));
                }
                if seq < want {
                    return Ok(None);
                }
                // Lapped: the slot holds a later sample. Skip to the oldest
                // one that may still be there.
                let published = self.core.u64_at(PUBLISHED).load(Ordering::Acquire);
                if published >= MAX_SEQ {
                    return Err(self.fail(format!("{published} samples published")));
                }
                let to = (c + 1).max((published + 1).saturating_sub(slots));
                self.missed += to - c;
                self.advance(to);
            }
            // SYNC POINT: as in `poll`.
            seq = self.core.seq(self.cursor).load(Ordering::Acquire);
        }
        Ok(None)
    }

    /// Whether sample `n` is still in its slot (the seqlock re-check after
    /// reading it).
    #[inline]
    fn intact(&self, n: u64) -> bool {
        let core = &self.core;
        core.mem.fence(Ordering::Acquire);
        if core.seq(n).load(Ordering::Relaxed) != done(n) {
            return false;
        }
        // Under back-pressure the publisher marks no slot it overwrites
        // (see "Loan"); only a history sample can be overwritten, and only
        // after sample `n + slots - 1` was published: the fence above makes
        // a payload store we saw imply we see that count.
        core.layout.policy == Policy::OverwriteOldest
            || n >= self.safe_from
            || core.u64_at(PUBLISHED).load(Ordering::Relaxed) < n + core.layout.slots
    }

    /// Whether the publisher closed or died. Its liveness is read at most
    /// every 10 ms on a mapping (per publisher identity).
    fn publisher_gone(&mut self) -> bool {
        let owner = self.core.publisher_owner();
        match state_of(owner) {
            FREE => false,
            CLAIMING | ACTIVE => {
                if let (Some((seen, gone)), Some(at)) = (self.gone, self.gone_at)
                    && seen == owner
                    && self.core.mem.fresh(at)
                {
                    return gone;
                }
                let gone = !self.core.owner_alive(PUBLISHER, owner);
                (self.gone, self.gone_at) = (Some((owner, gone)), Some(Instant::now()));
                gone
            }
            // Closed, or a scribbled word: nobody publishes.
            _ => true,
        }
    }

    /// Sleeps until the sample at the cursor is there (or a later one), the
    /// publisher closes, a wake-up, or `left` / `LIVENESS_INTERVAL` pass.
    fn park(&self, left: Option<Duration>) {
        let core = &self.core;
        let notify = core.u32_at(NOTIFY);
        let limit = left.map_or(LIVENESS_INTERVAL, |t| t.min(LIVENESS_INTERVAL));
        let Some(line) = self.line else {
            // Read-only: nobody knows we sleep, so nobody wakes us for our
            // sake; look again soon (a wake for a writable subscriber that
            // sleeps ends our wait too).
            let token = notify.load(Ordering::Acquire);
            if core.seq(self.cursor).load(Ordering::Acquire) < done(self.cursor) && !core.publisher_closed() {
                core.mem.wait(notify, token, Some(limit.min(READ_ONLY_POLL)));
            }
            return;
        };
        let flag = core.u32_at(line + SLEEPING);
        flag.store(1, Ordering::Relaxed);
        core.u32_at(SLEEPERS).fetch_add(1, Ordering::Relaxed);
        core.mem.heavy_fence();
        // Read before the re-check: an increment after it makes the wait
        // return at once; one before it synchronizes (release/acquire) with
        // a publisher that had stored the sample already.
        let token = notify.load(Ordering::Acquire);
        if core.seq(self.cursor).load(Ordering::Relaxed) < done(self.cursor) && !core.publisher_closed() {
            #[cfg(all(loom, test))]
            loom_tests::note(&loom_tests::SUBSCRIBER_SLEPT);
            core.mem.wait(notify, token, Some(limit));
        }
        core.clear_sleeping(line);
    }

    /// What a subscriber waiting for the sample at the cursor asks for while
    /// it spins, after a sample of `expect` bytes was copied out: a line to
    /// ask for on every look, and the lines to ask for round and round.
    ///
    /// Not the lines the publisher asks for itself before it writes them
    /// (`commit`, the first [`PREFETCH_SPAN`] bytes of the slot): there the
    /// two requests fight over each line and stall the publisher's copy. A
    /// two-line sample is the exception: its second line alone is worth the
    /// fight. Copying round trips on the development VM: 64 B ~510 -> ~390
    /// ns, 4 KiB unchanged (~1.7 us; asking for all its lines made it 2.15),
    /// 64 KiB ~17 -> ~12.4 us.
    fn lines_to_ask(&self) -> (Option<usize>, std::ops::Range<u64>) {
        let slot = self.core.slot(self.cursor);
        let end = slot + PAYLOAD + self.expect as usize;
        let second = (slot + LINE < end && end <= slot + 2 * LINE).then_some(slot + LINE);
        (second, (slot + PREFETCH_SPAN) as u64..end as u64)
    }

    /// Waits until a sample is there; `None` deadline: don't wait. Notes
    /// its length for the next wait's spin ([`last`](Self::last)).
    #[inline]
    fn wait(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, usize)> {
        let (n, len) = match self.poll()? {
            Some(ready) => ready,
            None => self.wait_slow(deadline)?,
        };
        self.last = (len as u64).min(SPIN_PREFETCH);
        Ok((n, len))
    }

    /// [`wait`](Self::wait) for a sample to be read in place, which may be
    /// read only in part: nothing is asked for while spinning.
    #[inline]
    fn wait_in_place(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, usize)> {
        self.expect = 0;
        self.wait(deadline)
    }

    /// How long to spin for the next sample: 20 µs, plus 0.5 ns a byte of
    /// the last one (up to 1 MiB: ~0.5 ms), which a publisher writing at 2
    /// GB/s or more has written by then; so a round trip of large samples
    /// pays no wake-up on either side.
    fn spin_budget(&self) -> Duration {
        SPIN + Duration::from_nanos(self.last / 2)
    }

    /// [`wait`](Self::wait) when the sample is not there yet: spin, sleep.
    #[inline(never)]
    fn wait_slow(&mut self, deadline: Option<Option<Instant>>) -> Result<(u64, usize)> {
        loop {
            if let Some(ready) = self.poll()? {
                return Ok(ready);
            }
            let core = &self.core;
            // Ready: the sample is there, or a later one (lapped).
            let (seq, want) = (core.seq(self.cursor), done(self.cursor));
            let (second, lines) = self.lines_to_ask();
            let ready = || {
                if let Some(line) = second {
                    core.mem.prefetch_read(line);
                }
                seq.load(Ordering::Relaxed) >= want || core.publisher_closed()
            };
            let spun = deadline.is_some()
                && if lines.is_empty() {
                    core.mem.spin_until(self.spin_budget(), ready)
                } else {
                    core.mem.spin_prefetching(self.spin_budget(), lines, ready)
                };
            if spun && !core.publisher_closed() && !deadline.is_some_and(expired) {
                continue;
            }
            self.core.check_truncated(Op::Recv)?;
            // The publisher publishes before it closes: look once more.
            if self.publisher_gone() {
                return match self.poll()? {
                    Some(ready) => Ok(ready),
                    None => Err(self.core.err(Op::Recv, ErrorKind::Disconnected)),
                };
            }
            let Some(deadline) = deadline else {
                return Err(self.core.err(Op::Recv, ErrorKind::WouldBlock));
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.core.err(Op::Recv, ErrorKind::Timeout));
            }
            if spun {
                continue;
            }
            self.park(left);
        }
    }

    /// Receives the next intact sample by copying it out: `copy` gets the
    /// memory, the payload's offset and length and copies (`None`: a
    /// sample of the wrong size, consumed); a sample overwritten while
    /// copied is counted as missed and the next one is taken.
    fn copy_with<R>(
        &mut self,
        deadline: Option<Option<Instant>>,
        mut copy: impl FnMut(&M, usize, usize) -> Option<R>,
    ) -> Result<(u64, R)> {
        let mut torn = 0;
        loop {
            let (n, len) = self.wait(deadline)?;
            let value = copy(&self.core.mem, self.core.payload(n), len);
            self.expect = self.last;
            let intact = self.intact(n);
            self.advance(n + 1);
            if intact {
                return match value {
                    Some(value) => Ok((n, value)),
                    None => Err(self.core.corrupt(Op::Recv, format!("sample {n} has {len} bytes, an unexpected size"))),
                };
            }
            #[cfg(all(loom, test))]
            loom_tests::note(&loom_tests::TORN);
            self.missed += 1;
            torn += 1;
            if deadline.is_none() && torn >= RETRIES {
                return Err(self.core.err(Op::Recv, ErrorKind::WouldBlock));
            }
        }
    }

    /// Receives the next intact sample into `buf` (replacing its contents).
    fn receive_into_with(&mut self, buf: &mut Vec<u8>, deadline: Option<Option<Instant>>) -> Result<u64> {
        let (n, ()) = self.copy_with(deadline, |mem, at, len| {
            // (`poll` checked `len <= max_sample`: the bytes lie in the slot.)
            buf.resize(len, 0);
            mem.read(at, buf);
            Some(())
        })?;
        Ok(n)
    }

    /// Leaves: frees the entry and wakes the publisher if it waits for
    /// room; whether the object should be removed (the publisher is gone
    /// and no live subscriber remains). A read-only subscriber holds
    /// nothing and removes nothing.
    fn leave(&mut self) -> bool {
        let Some(line) = self.line else { return false };
        let core = &self.core;
        let left = core
            .u64_at(line + OWNER)
            .compare_exchange(pack(ACTIVE, self.me.pid), pack(FREE, 0), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if !left {
            // The entry was taken from us (we were taken for dead).
            return false;
        }
        core.clear_sleeping(line);
        // Leaving may free the publisher's next slot.
        let flag = core.u32_at(PUBLISHER_SLEEPING);
        if flag.swap(0, Ordering::SeqCst) != 0 {
            core.mem.wake(flag, 1);
        }
        let owner = core.u64_at(PUBLISHER + OWNER).load(Ordering::SeqCst);
        let publisher_done = match state_of(owner) {
            CLAIMING | ACTIVE => !core.owner_alive(PUBLISHER, owner),
            _ => true,
        };
        publisher_done && !core.any_live_subscriber()
    }
}

/// A subscribing end of a service.
#[derive(Debug)]
pub struct Subscriber {
    end: SubEnd<Mapped, Live>,
    /// The mapping `end` works on; dropped after it.
    seg: Segment,
}

impl Subscriber {
    /// Creates the service `name` (or opens it, if it exists with the same
    /// parameters and type) and subscribes to it.
    ///
    /// # Errors
    ///
    /// As [`Publisher::open_or_create`]; [`ErrorKind::Busy`] if every
    /// subscriber entry is held by a live process.
    pub fn open_or_create(name: &str, options: &PubSubOptions) -> Result<Subscriber> {
        Self::join(open_shared(name, Some(options), None, false)?)
    }

    /// Subscribes to the existing service `name`, whatever its parameters.
    ///
    /// # Errors
    ///
    /// No such service, a corrupt object, or [`ErrorKind::Busy`] if every
    /// subscriber entry is held by a live process.
    pub fn open(name: &str) -> Result<Subscriber> {
        Self::join(open_shared(name, None, None, false)?)
    }

    /// Subscribes to the existing overwrite-oldest service `name` through
    /// a read-only mapping (see "Read-only subscribers" in the module
    /// docs): a store through it kills this process with `SIGSEGV`, and
    /// only read permission on the object is needed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for a back-pressure service; no such
    /// service, no read permission, or a corrupt object.
    pub fn open_read_only(name: &str) -> Result<Subscriber> {
        Self::watch(open_shared(name, None, None, true)?)
    }

    fn join((seg, core): (Segment, Core<Mapped, Live>)) -> Result<Subscriber> {
        Ok(Subscriber { end: SubEnd::join(core, ProcessId::current())?, seg })
    }

    fn watch((seg, core): (Segment, Core<Mapped, Live>)) -> Result<Subscriber> {
        Ok(Subscriber { end: SubEnd::watch(core, ProcessId::current())?, seg })
    }

    /// Whether this subscriber maps the service read-only.
    pub fn is_read_only(&self) -> bool {
        self.end.line.is_none()
    }

    /// The largest sample in bytes.
    pub fn max_sample(&self) -> usize {
        self.end.core.layout.max_sample as usize
    }

    /// The service's policy.
    pub fn policy(&self) -> Policy {
        self.end.core.layout.policy
    }

    /// Samples this subscriber missed so far: overwritten before it read
    /// them, or while it read them (overwrite-oldest).
    pub fn missed(&self) -> u64 {
        self.end.missed
    }

    /// The sequence number of the next sample this subscriber will get (if
    /// it is not overwritten first).
    pub fn position(&self) -> u64 {
        self.end.cursor
    }

    #[inline]
    fn receive_with(&mut self, deadline: Option<Option<Instant>>) -> Result<Sample<'_>> {
        let (seq, len) = self.end.wait_in_place(deadline)?;
        // SAFETY: the payload of a slot lies inside the mapping (layout
        // validated against its length at open).
        let ptr = unsafe { self.end.core.mem.base().as_ptr().add(self.end.core.payload(seq)) };
        Ok(Sample { ptr, seq, len, torn: std::cell::Cell::new(false), subscriber: self })
    }

    /// Waits for the next sample and gives access to it in place
    /// (zero-copy). Under back-pressure the publisher does not reuse its
    /// slot until the [`Sample`] is dropped; under overwrite-oldest it may,
    /// which the sample's reads detect.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] if the publisher closed or died and every
    /// sample was received, [`ErrorKind::Corrupt`] if shared memory does not
    /// hold a valid sample.
    #[inline]
    pub fn receive(&mut self) -> Result<Sample<'_>> {
        self.receive_with(Some(None))
    }

    /// [`receive`](Self::receive) without waiting.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::WouldBlock`].
    pub fn try_receive(&mut self) -> Result<Sample<'_>> {
        self.receive_with(None)
    }

    /// [`receive`](Self::receive), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::Timeout`].
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<Sample<'_>> {
        self.receive_with(Some(Instant::now().checked_add(timeout)))
    }

    /// Receives the next sample by copy into `buf` (replacing its
    /// contents); returns its sequence number. A sample overwritten while
    /// being copied is counted as missed, never returned.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive).
    pub fn receive_into(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        self.end.receive_into_with(buf, Some(None))
    }

    /// [`receive_into`](Self::receive_into) without waiting.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::WouldBlock`].
    pub fn try_receive_into(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        self.end.receive_into_with(buf, None)
    }

    /// [`receive_into`](Self::receive_into), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::Timeout`].
    pub fn receive_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u64> {
        self.end.receive_into_with(buf, Some(Instant::now().checked_add(timeout)))
    }

    fn receive_value_with<T: Pod>(&mut self, deadline: Option<Option<Instant>>) -> Result<T> {
        let size = std::mem::size_of::<T>();
        let (_, value) = self.end.copy_with(deadline, |mem, at, len| {
            if len != size {
                return None;
            }
            let mut value = T::zeroed();
            // (`poll` checked `len`; any bit pattern is a valid `T`: `Pod`.)
            mem.read(at, bytemuck::bytes_of_mut(&mut value));
            Some(value)
        })?;
        Ok(value)
    }

    /// Receives the next sample as a plain-data value, by copy; the sample
    /// must have exactly its size.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::Corrupt`] for a
    /// sample of another size (it is consumed).
    pub fn receive_value<T: Pod>(&mut self) -> Result<T> {
        self.receive_value_with(Some(None))
    }

    /// [`receive_value`](Self::receive_value) without waiting.
    ///
    /// # Errors
    ///
    /// As [`receive_value`](Self::receive_value), plus
    /// [`ErrorKind::WouldBlock`].
    pub fn try_receive_value<T: Pod>(&mut self) -> Result<T> {
        self.receive_value_with(None)
    }

    /// [`receive_value`](Self::receive_value), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`receive_value`](Self::receive_value), plus
    /// [`ErrorKind::Timeout`].
    pub fn receive_value_timeout<T: Pod>(&mut self, timeout: Duration) -> Result<T> {
        self.receive_value_with(Some(Instant::now().checked_add(timeout)))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.end.leave() {
            let _ = self.seg.remove();
        }
    }
}

/// A received sample, read in place in its slot. The slot is released to
/// the publisher when the sample is dropped.
///
/// The bytes are shared memory: they are read by copy
/// ([`read_at`](Self::read_at), [`read`](Self::read)) or through
/// [`as_ptr`](Self::as_ptr), never through a reference. Under
/// [`Policy::OverwriteOldest`] the publisher may overwrite the slot while
/// the sample is read: every read re-checks the slot's sequence afterwards
/// and says so, and such a sample counts as missed.
#[derive(Debug)]
pub struct Sample<'s> {
    ptr: *const u8,
    seq: u64,
    len: usize,
    /// Whether a read saw the sample overwritten.
    torn: std::cell::Cell<bool>,
    subscriber: &'s mut Subscriber,
}

impl Sample<'_> {
    /// The sample's sequence number (0 for the first sample published on
    /// the service); gaps are missed samples.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Bytes in the sample.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the sample is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes of the sample, starting at `offset`, into `buf`.
    /// `Ok(false)`: the publisher overwrote the sample while it was read, so
    /// `buf` holds no valid data (overwrite-oldest only).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if the range is outside the sample.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<bool> {
        match offset.checked_add(buf.len()) {
            // SAFETY: inside the sample, whose length `poll` checked is at
            // most the slot's payload size; `buf` is private.
            Some(end) if end <= self.len => unsafe {
                copy_bytes(self.ptr.add(offset), buf.as_mut_ptr(), buf.len());
            },
            _ => {
                return Err(self.subscriber.end.core.err(
                    Op::Recv,
                    ErrorKind::OutOfBounds { offset: offset as u64, len: buf.len() as u64, size: self.len as u64 },
                ));
            }
        }
        Ok(self.is_intact())
    }

    /// Reads a plain-data value at `offset`; `Ok(None)` if the sample was
    /// overwritten while it was read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if it does not fit in the sample.
    #[inline]
    pub fn read<T: Pod>(&self, offset: usize) -> Result<Option<T>> {
        let mut value = T::zeroed();
        let intact = self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(intact.then_some(value))
    }

    /// Copies the whole sample into `buf`; `false` if it was overwritten
    /// while copied.
    pub fn copy_to(&self, buf: &mut Vec<u8>) -> bool {
        buf.resize(self.len, 0);
        // Cannot fail: the range is exactly the sample.
        self.read_at(0, buf).unwrap_or(false)
    }

    /// Whether the sample is still in its slot. After reading through
    /// [`as_ptr`](Self::as_ptr), call this: `false` means what was read may
    /// be torn (and the sample counts as missed).
    #[inline]
    pub fn is_intact(&self) -> bool {
        let intact = !self.torn.get() && self.subscriber.end.intact(self.seq);
        if !intact {
            self.torn.set(true);
        }
        intact
    }

    /// The start of the sample, 16-aligned, valid for [`len`](Self::len)
    /// bytes while the sample lives. Read through it with raw pointers or
    /// atomics, never a reference: the memory is shared. Under
    /// overwrite-oldest, check [`is_intact`](Self::is_intact) afterwards.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl Drop for Sample<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.torn.get() {
            self.subscriber.end.missed += 1;
        }
        self.subscriber.end.advance(self.seq + 1);
    }
}

/// A publisher of samples of type `T` (a thin layer over [`Publisher`]
/// that records and checks the type).
#[derive(Debug)]
pub struct TypedPublisher<T: Pod> {
    raw: Publisher,
    _type: PhantomData<fn(T)>,
}

impl<T: Pod> TypedPublisher<T> {
    /// Creates (or opens) the service `name` for samples of type `T` and
    /// becomes its publisher. The options' sample size and type are
    /// replaced by `T`'s.
    ///
    /// # Errors
    ///
    /// As [`Publisher::open_or_create`].
    pub fn open_or_create(name: &str, options: &PubSubOptions) -> Result<Self> {
        let mut options = options.clone();
        options.set_type::<T>();
        Ok(TypedPublisher { raw: Publisher::open_or_create(name, &options)?, _type: PhantomData })
    }

    /// Opens the existing service `name`, which must carry `T`.
    ///
    /// # Errors
    ///
    /// As [`Publisher::open`], plus [`ErrorKind::WrongType`].
    pub fn open(name: &str) -> Result<Self> {
        let shared = open_shared(name, None, Some((type_name_bytes::<T>(), std::mem::size_of::<T>() as u64)), false)?;
        Ok(TypedPublisher { raw: Publisher::from_shared(shared)?, _type: PhantomData })
    }

    /// Publishes `value`, waiting as [`Publisher::loan`] does; returns its
    /// sequence number.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`].
    pub fn publish(&mut self, value: &T) -> Result<u64> {
        self.raw.publish(bytemuck::bytes_of(value))
    }

    /// [`publish`](Self::publish) without waiting.
    ///
    /// # Errors
    ///
    /// As [`Publisher::try_publish`].
    pub fn try_publish(&mut self, value: &T) -> Result<u64> {
        self.raw.try_publish(bytemuck::bytes_of(value))
    }

    /// [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish_timeout`].
    pub fn publish_timeout(&mut self, value: &T, timeout: Duration) -> Result<u64> {
        self.raw.publish_timeout(bytemuck::bytes_of(value), timeout)
    }

    /// The untyped publisher, for loans (zero-copy: write the value in place
    /// with [`Loan::write`] or through [`Loan::as_mut_ptr`]).
    pub fn raw(&mut self) -> &mut Publisher {
        &mut self.raw
    }
}

/// A subscriber to samples of type `T` (a thin layer over [`Subscriber`]
/// that checks the type).
#[derive(Debug)]
pub struct TypedSubscriber<T: Pod> {
    raw: Subscriber,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> TypedSubscriber<T> {
    /// Creates (or opens) the service `name` for samples of type `T` and
    /// subscribes. The options' sample size and type are replaced by `T`'s.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::open_or_create`].
    pub fn open_or_create(name: &str, options: &PubSubOptions) -> Result<Self> {
        let mut options = options.clone();
        options.set_type::<T>();
        Ok(TypedSubscriber { raw: Subscriber::open_or_create(name, &options)?, _type: PhantomData })
    }

    /// Subscribes to the existing service `name`, which must carry `T`.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::open`], plus [`ErrorKind::WrongType`].
    pub fn open(name: &str) -> Result<Self> {
        let shared = open_shared(name, None, Some((type_name_bytes::<T>(), std::mem::size_of::<T>() as u64)), false)?;
        Ok(TypedSubscriber { raw: Subscriber::join(shared)?, _type: PhantomData })
    }

    /// Subscribes read-only (see [`Subscriber::open_read_only`]) to the
    /// existing overwrite-oldest service `name`, which must carry `T`.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::open_read_only`], plus [`ErrorKind::WrongType`].
    pub fn open_read_only(name: &str) -> Result<Self> {
        let shared = open_shared(name, None, Some((type_name_bytes::<T>(), std::mem::size_of::<T>() as u64)), true)?;
        Ok(TypedSubscriber { raw: Subscriber::watch(shared)?, _type: PhantomData })
    }

    /// Receives the next value by copy, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::receive_value`].
    pub fn receive(&mut self) -> Result<T> {
        self.raw.receive_value()
    }

    /// [`receive`](Self::receive) without waiting.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_receive_value`].
    pub fn try_receive(&mut self) -> Result<T> {
        self.raw.try_receive_value()
    }

    /// [`receive`](Self::receive), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::receive_value_timeout`].
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<T> {
        self.raw.receive_value_timeout(timeout)
    }

    /// Samples missed so far (see [`Subscriber::missed`]).
    pub fn missed(&self) -> u64 {
        self.raw.missed()
    }

    /// The untyped subscriber, for zero-copy access ([`Subscriber::receive`]).
    pub fn raw(&mut self) -> &mut Subscriber {
        &mut self.raw
    }
}

/// Fills in what `shmkit info` and `ls` show about a service: the publisher
/// and subscribers with their liveness, and its shape. Reads only, by copy;
/// the values are reported as found (a hostile peer can make them lie, not
/// crash us).
pub(crate) fn inspect(seg: &Segment, header: &registry::ObjectHeader, info: &mut registry::ObjectInfo) -> Result<()> {
    let holder = |role: &'static str, line: usize| -> Result<Option<registry::Holder>> {
        let owner = seg.read::<u64>(line + OWNER)?;
        if !matches!(state_of(owner), CLAIMING | ACTIVE) || pid_of(owner) == 0 {
            return Ok(None);
        }
        let process = ProcessId { pid: pid_of(owner), start: seg.read::<u64>(line + START)? };
        Ok(Some(registry::Holder { role, process, alive: process.is_alive() }))
    };
    info.holders.extend(holder("publisher", PUBLISHER)?);
    let max = usize::try_from(header.params[2]).unwrap_or(0).min(MAX_SUBSCRIBERS);
    let mut subscribers = 0;
    for i in 0..max {
        let line = TABLE + LINE * i;
        if line + LINE > seg.len() {
            break;
        }
        if let Some(h) = holder("subscriber", line)? {
            subscribers += 1;
            info.holders.push(h);
        }
    }
    let policy = if header.params[3] == Policy::OverwriteOldest.code() { "overwrite oldest" } else { "back-pressure" };
    info.details.push(("slots", header.params[0].to_string()));
    info.details.push(("largest sample", header.params[1].to_string()));
    info.details.push(("policy", policy.to_string()));
    info.details.push(("subscribers", format!("{subscribers} of {max}")));
    info.details.push(("published", seg.read::<u64>(PUBLISHED)?.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::primitive::heap::Heap;

    fn alive(_pid: u32, _start: u64) -> bool {
        true
    }

    fn core(heap: &Heap, slots: u64, max_sample: u64, policy: Policy, history: u64) -> Core<Mapped, Live> {
        let layout = Layout::for_test(slots, max_sample, 1, policy, history);
        assert!(heap.mem().len() >= layout.total);
        Core { mem: heap.mem(), layout, label: "heap".into(), live: alive, truncated: None }
    }

    /// The interleaving the history check exists for, played step by step
    /// (the loom model of it would need four preemptions): under
    /// back-pressure the publisher scans before a subscriber joins with a
    /// history of one, then, within its stale cached minimum, publishes
    /// sample 2 and begins sample 3 in the slot of sample 1, which the
    /// joiner is reading. The slot's `seq` still says sample 1 (nothing is
    /// marked under back-pressure), so only `published` can tell; a sample
    /// from `safe_from` on needs no such check.
    #[test]
    fn a_history_sample_overwritten_unmarked_is_not_intact() {
        let (_, _, total) = Layout::compute(2, 16, 1, 1).unwrap();
        let heap = Heap::new(total);
        let open = || core(&heap, 2, 16, Policy::BackPressure, 1);
        let mut p = PubEnd::claim(open(), ProcessId { pid: 1, start: 1 }).unwrap();
        p.resume().unwrap();
        for n in 0..2u8 {
            p.publish_with(&[n; 16], Some(None)).unwrap();
        }
        // The scan for sample 2 finds nobody: the cached minimum is 2.
        p.reserve(None).unwrap();
        let mut s = SubEnd::join(open(), ProcessId { pid: 2, start: 1 }).unwrap();
        assert_eq!((s.cursor, s.safe_from), (1, 2));
        assert_eq!(s.wait(None).unwrap(), (1, 16));
        let at = p.begin();
        p.core.mem.write(at, &[2; 16]);
        p.commit(16);
        p.reserve(None).unwrap();
        let at = p.begin();
        assert_eq!(at, s.core.payload(1), "sample 3 goes to the slot of sample 1");
        p.core.mem.write(at, &[3; 16]);
        assert_eq!(s.core.seq(1).load(Ordering::Relaxed), done(1));
        assert!(!s.intact(1), "an overwritten history sample passed as intact");
        p.commit(16);
        assert!(!s.intact(1));
        // Sample 2 is past `safe_from`: its own sequence word is enough.
        assert!(s.intact(2));
    }

    /// What a waiting subscriber asks for follows the last sample it copied
    /// out, leaves the publisher's part of the slot alone, and is nothing
    /// after a sample read in place; how long it spins follows the last
    /// sample however it was read.
    #[test]
    fn a_waiting_subscriber_spins_for_and_asks_for_a_sample_as_long_as_the_last() {
        let max = 3 * PREFETCH_SPAN as u64;
        let (_, _, total) = Layout::compute(2, max, 1, 0).unwrap();
        let heap = Heap::new(total);
        let open = || core(&heap, 2, max, Policy::BackPressure, 0);
        let mut p = PubEnd::claim(open(), ProcessId { pid: 1, start: 1 }).unwrap();
        p.resume().unwrap();
        let mut s = SubEnd::join(open(), ProcessId { pid: 2, start: 1 }).unwrap();
        let mut buf = Vec::new();
        let mut copy = |p: &mut PubEnd<Mapped, Live>, s: &mut SubEnd<Mapped, Live>, len: usize| {
            p.publish_with(&vec![7; len], Some(None)).unwrap();
            s.receive_into_with(&mut buf, None).unwrap();
            assert_eq!(buf.len(), len);
            let slot = s.core.slot(s.cursor);
            (slot, s.lines_to_ask())
        };
        // Fits the slot's first line: nothing.
        let (_, (second, lines)) = copy(&mut p, &mut s, 48);
        assert!(second.is_none() && lines.is_empty());
        // Two lines: the second, on every look.
        let (slot, (second, lines)) = copy(&mut p, &mut s, 100);
        assert!(second == Some(slot + LINE) && lines.is_empty());
        // The publisher's 8 KiB and more: only what lies past them.
        let (slot, (second, lines)) = copy(&mut p, &mut s, 2 * PREFETCH_SPAN);
        assert!(second.is_none());
        assert_eq!(lines, (slot + PREFETCH_SPAN) as u64..(slot + PAYLOAD + 2 * PREFETCH_SPAN) as u64);
        assert_eq!(s.spin_budget(), SPIN + Duration::from_nanos(PREFETCH_SPAN as u64));
        // Read in place: nothing is known about what will be read.
        p.publish_with(&[1; 100], Some(None)).unwrap();
        let (n, _) = s.wait_in_place(None).unwrap();
        s.advance(n + 1);
        let (second, lines) = s.lines_to_ask();
        assert!(second.is_none() && lines.is_empty());
        // The spin still grows with its length.
        assert_eq!(s.spin_budget(), SPIN + Duration::from_nanos(50));
    }
}

/// Loom models of the protocol: the same `PubEnd`/`SubEnd` code as the real
/// ends, on loom's model memory. Run with
/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmkit --lib --release loom`.
///
/// Every model runs at the bound `LOOM_MAX_PREEMPTIONS` gives (two in CI:
/// the back-pressure model with two subscribers takes about 70 s there on
/// a two-core machine), except the join-with-history model, which runs at
/// one (at two it ran past 24 minutes; the ignored `_full_bound` variant);
/// it fails without the join's SeqCst fence. The history check itself is
/// played step by step in `tests`.
#[cfg(all(test, loom))]
mod loom_tests {
    use std::cell::Cell;
    use std::sync::Arc;
    use std::thread::LocalKey;
    use std::time::{Duration, Instant};

    use loom::thread;

    use super::*;
    use crate::sync::primitive::model::LoomMemory;

    // How often something happened over all executions of one model (loom
    // runs a model's threads on the test's own thread, one at a time).
    thread_local! {
        pub(super) static PUBLISHER_SLEPT: Cell<usize> = const { Cell::new(0) };
        pub(super) static SUBSCRIBER_SLEPT: Cell<usize> = const { Cell::new(0) };
        pub(super) static TORN: Cell<usize> = const { Cell::new(0) };
        static EXECUTIONS: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn note(counter: &'static LocalKey<Cell<usize>>) {
        counter.with(|c| c.set(c.get() + 1));
    }

    fn count(counter: &'static LocalKey<Cell<usize>>) -> usize {
        counter.with(Cell::get)
    }

    /// Model memory shared by the ends of one execution (`LoomMemory`,
    /// whose futex wakes queued sleepers by ticket, so a lost wake-up is a
    /// deadlock of the model).
    ///
    /// `reap`: whether liveness is read every time the protocol asks (as if
    /// `PROC_INTERVAL` had always passed); otherwise only the first time
    /// (fewer interleavings where reclamation is not what is checked).
    #[derive(Debug, Clone)]
    struct Model(Arc<LoomMemory>, bool);

    impl Model {
        fn new(len: usize, reap: bool) -> Model {
            Model(Arc::new(LoomMemory::new(len)), reap)
        }
    }

    impl Memory for Model {
        type W32 = loom::sync::atomic::AtomicU32;
        type W64 = loom::sync::atomic::AtomicU64;

        fn len(&self) -> usize {
            self.0.len()
        }
        fn u32_at(&self, offset: usize) -> &Self::W32 {
            self.0.u32_at(offset)
        }
        fn u64_at(&self, offset: usize) -> &Self::W64 {
            self.0.u64_at(offset)
        }
        fn write(&self, offset: usize, src: &[u8]) {
            self.0.write(offset, src)
        }
        fn read(&self, offset: usize, dst: &mut [u8]) {
            self.0.read(offset, dst)
        }
        fn fence(&self, order: Ordering) {
            self.0.fence(order)
        }
        fn light_fence(&self) {
            self.0.light_fence()
        }
        fn heavy_fence(&self) {
            self.0.heavy_fence()
        }
        fn wait(&self, word: &Self::W32, expected: u32, timeout: Option<Duration>) {
            self.0.wait(word, expected, timeout)
        }
        fn wake(&self, word: &Self::W32, count: u32) -> usize {
            self.0.wake(word, count)
        }
        fn pause(&self) {
            self.0.pause()
        }
    }

    impl Host for Model {
        fn spin_until(&self, _limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
            // One look: spinning would only multiply the interleavings; the
            // sleeping protocol must cope without it.
            ready()
        }

        fn spin_prefetching(&self, limit: Duration, _lines: std::ops::Range<u64>, ready: impl FnMut() -> bool) -> bool {
            self.spin_until(limit, ready)
        }

        fn fresh(&self, _at: Instant) -> bool {
            !self.1
        }
    }

    /// The pid the model's liveness calls dead.
    const DEAD: u32 = 66;
    const PUBLISHER_PID: u32 = 1;

    fn alive(pid: u32, _start: u64) -> bool {
        pid != DEAD
    }

    fn me(pid: u32) -> ProcessId {
        ProcessId { pid, start: 1 }
    }

    /// A service of `slots` slots of up to 8 bytes for `subscribers`
    /// subscribers, in fresh model memory.
    fn service(slots: u64, subscribers: u64, reap: bool) -> Model {
        let (_, _, total) = Layout::compute(slots, 8, subscribers, 0).unwrap();
        Model::new(total, reap)
    }

    fn core(mem: &Model, slots: u64, subscribers: u64, policy: Policy) -> Core<Model, Live> {
        core_with(mem, slots, 8, subscribers, policy, 0)
    }

    /// [`core`] with samples of up to `max_sample` bytes and a history.
    fn core_with(
        mem: &Model,
        slots: u64,
        max_sample: u64,
        subscribers: u64,
        policy: Policy,
        history: u64,
    ) -> Core<Model, Live> {
        let layout = Layout::for_test(slots, max_sample, subscribers, policy, history);
        Core { mem: mem.clone(), layout, label: "model".into(), live: alive, truncated: None }
    }

    /// Sample `n`'s payload: `bytes` bytes that all say `n` (a torn read
    /// mixes two samples' bytes; a stale one shows another sample's).
    fn payload(n: u64, bytes: usize) -> Vec<u8> {
        vec![n as u8 + 1; bytes]
    }

    fn publisher(mem: &Model, slots: u64, subscribers: u64, policy: Policy) -> PubEnd<Model, Live> {
        let mut end = PubEnd::claim(core(mem, slots, subscribers, policy), me(PUBLISHER_PID)).unwrap();
        end.resume().unwrap();
        end
    }

    fn subscriber(mem: &Model, slots: u64, subscribers: u64, policy: Policy, pid: u32) -> SubEnd<Model, Live> {
        SubEnd::join(core(mem, slots, subscribers, policy), me(pid)).unwrap()
    }

    /// Publishes samples `0..count` of `bytes` bytes, blocking as the
    /// policy says.
    fn publish_all(mut end: PubEnd<Model, Live>, count: u64, bytes: usize) -> PubEnd<Model, Live> {
        for n in 0..count {
            assert_eq!(end.publish_with(&payload(n, bytes), Some(None)).unwrap(), n);
        }
        end
    }

    /// Receives `count` samples under back-pressure: every one, intact and
    /// in order.
    fn receive_all(mut end: SubEnd<Model, Live>, count: u64) -> SubEnd<Model, Live> {
        let mut buf = Vec::new();
        for n in 0..count {
            assert_eq!(end.receive_into_with(&mut buf, Some(None)).unwrap(), n);
            assert_eq!(buf, payload(n, 1), "sample {n}");
        }
        assert_eq!(end.missed, 0, "back-pressure lost samples");
        end
    }

    /// Runs a model (at most `preemptions` preemptions if given; else as
    /// `LOOM_MAX_PREEMPTIONS` says) and says how long it took.
    fn checked(name: &str, preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
        let start = std::time::Instant::now();
        let mut builder = loom::model::Builder::new();
        if preemptions.is_some() {
            builder.preemption_bound = preemptions;
        }
        EXECUTIONS.with(|c| c.set(0));
        builder.check(move || {
            note(&EXECUTIONS);
            f()
        });
        eprintln!(
            "loom model {name}: {} executions in {:.1} s, preemption bound {:?}",
            count(&EXECUTIONS),
            start.elapsed().as_secs_f64(),
            builder.preemption_bound
        );
    }

    /// (a) Back-pressure, one publisher and two subscribers, three samples
    /// through two slots: each subscriber gets every sample intact and in
    /// order, none missed (the publisher never overwrote an unread slot).
    fn back_pressure_model(preemptions: Option<usize>) {
        checked("back-pressure", preemptions, || {
            let mem = service(2, 2, false);
            let a = subscriber(&mem, 2, 2, Policy::BackPressure, 2);
            let b = subscriber(&mem, 2, 2, Policy::BackPressure, 3);
            let p = publisher(&mem, 2, 2, Policy::BackPressure);
            let p = thread::spawn(move || publish_all(p, 3, 1));
            let b = thread::spawn(move || receive_all(b, 3));
            receive_all(a, 3);
            b.join().unwrap();
            assert_eq!(p.join().unwrap().next, 3);
        });
    }

    /// (a) at the bound `LOOM_MAX_PREEMPTIONS` gives (at two: 546,059
    /// executions, about 70 s on a two-core machine).
    #[test]
    fn loom_back_pressure_every_sample_to_every_subscriber() {
        back_pressure_model(None);
    }

    /// (b) Overwrite-oldest, two slots, three samples, then the publisher
    /// closes: what is returned is never torn, and received + missed =
    /// published exactly.
    #[test]
    fn loom_overwrite_oldest_never_returns_a_torn_sample_and_counts_every_miss() {
        TORN.with(|c| c.set(0));
        checked("overwrite-oldest", None, || {
            let mem = service(2, 1, false);
            let mut s = subscriber(&mem, 2, 1, Policy::OverwriteOldest, 2);
            let p = publisher(&mem, 2, 1, Policy::OverwriteOldest);
            let p = thread::spawn(move || {
                let mut p = publish_all(p, 3, 2);
                p.close();
            });
            let mut buf = Vec::new();
            let (mut received, mut next) = (0, 0);
            loop {
                match s.receive_into_with(&mut buf, Some(None)) {
                    Ok(n) => {
                        assert!(n >= next, "sample {n} after {next}");
                        assert_eq!(buf, payload(n, 2), "sample {n} returned torn");
                        received += 1;
                        next = n + 1;
                    }
                    Err(e) if *e.kind() == ErrorKind::Disconnected => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(received + s.missed, 3, "{received} received, {} missed", s.missed);
            p.join().unwrap();
        });
        // The model did reach reads overwritten while copied.
        eprintln!("  reads seen torn: {}", count(&TORN));
        assert!(count(&TORN) > 0, "no execution tore a read");
    }

    /// (c) Sleeping: a subscriber asleep waiting for a sample and a
    /// publisher asleep waiting for room are woken (a lost wake-up is a
    /// deadlock of the model, whose futex waits have no timeout).
    #[test]
    fn loom_sleepers_are_woken() {
        PUBLISHER_SLEPT.with(|c| c.set(0));
        SUBSCRIBER_SLEPT.with(|c| c.set(0));
        checked("sleeping", None, || {
            let mem = service(2, 1, false);
            let s = subscriber(&mem, 2, 1, Policy::BackPressure, 2);
            let p = publisher(&mem, 2, 1, Policy::BackPressure);
            let p = thread::spawn(move || publish_all(p, 3, 1));
            receive_all(s, 3);
            p.join().unwrap();
        });
        // Both sleeps happened in some executions: the model checked them.
        eprintln!("  subscriber slept {} times, publisher {}", count(&SUBSCRIBER_SLEPT), count(&PUBLISHER_SLEPT));
        assert!(count(&SUBSCRIBER_SLEPT) > 0 && count(&PUBLISHER_SLEPT) > 0);
    }

    /// (d) Reclamation: a subscriber the liveness calls dead, stuck at
    /// sample 0, is reclaimed and stops holding the publisher back; the
    /// live subscriber keeps its entry and gets every sample.
    #[test]
    fn loom_a_dead_subscriber_is_reclaimed_and_a_live_one_never() {
        checked("reclamation", None, || {
            let mem = service(2, 2, true);
            let dead = subscriber(&mem, 2, 2, Policy::BackPressure, DEAD);
            let (dead_line, _) = (dead.line.unwrap(), drop(dead));
            let live = subscriber(&mem, 2, 2, Policy::BackPressure, 3);
            let live_line = live.line.unwrap();
            let p = publisher(&mem, 2, 2, Policy::BackPressure);
            let p = thread::spawn(move || publish_all(p, 3, 1));
            receive_all(live, 3);
            p.join().unwrap();
            assert_eq!(mem.u64_at(dead_line + OWNER).load(Ordering::SeqCst), pack(FREE, 0));
            assert_eq!(mem.u64_at(live_line + OWNER).load(Ordering::SeqCst), pack(ACTIVE, 3));
        });
    }

    /// (e) Back-pressure, where the publisher marks no slot it overwrites:
    /// samples 0 and 1 (of 16 bytes: two model words, so a torn read can
    /// mix them) are published through two slots before a subscriber joins
    /// with a history of one sample; then the publisher publishes 2 and 3
    /// (3 goes to the slot of 1) while the subscriber receives one sample
    /// and leaves. What it returns is never torn or another sample's, and
    /// only a history sample (before `safe_from`) can be missed (the
    /// publisher scanned before the join, saw nobody, and so may write up to
    /// sample 3 without looking again).
    fn join_with_history_model(preemptions: Option<usize>) {
        TORN.with(|c| c.set(0));
        checked("join with history", preemptions, || {
            let (_, _, total) = Layout::compute(2, 16, 1, 1).unwrap();
            let mem = Model::new(total, false);
            let open = || core_with(&mem, 2, 16, 1, Policy::BackPressure, 1);
            let mut p = PubEnd::claim(open(), me(PUBLISHER_PID)).unwrap();
            p.resume().unwrap();
            for n in 0..2 {
                p.publish_with(&payload(n, 16), Some(None)).unwrap();
            }
            let p = thread::spawn(move || {
                let mut p = p;
                for n in 2..4 {
                    assert_eq!(p.publish_with(&payload(n, 16), Some(None)).unwrap(), n);
                }
            });
            let mut s = SubEnd::join(open(), me(2)).unwrap();
            let (start, safe_from) = (s.cursor, s.safe_from);
            let mut buf = Vec::new();
            let n = s.receive_into_with(&mut buf, Some(None)).unwrap();
            assert_eq!(buf, payload(n, 16), "sample {n} returned overwritten");
            assert!(n >= start, "sample {n} before the start {start}");
            assert!(n == start || start < safe_from, "sample {start} lost (got {n}, safe from {safe_from})");
            assert_eq!(s.missed, n - start);
            s.leave();
            p.join().unwrap();
        });
        eprintln!("  history reads seen overwritten: {}", count(&TORN));
    }

    /// (e) at one preemption (under a second).
    #[test]
    fn loom_a_joiner_with_history_never_returns_an_overwritten_sample() {
        join_with_history_model(Some(1));
    }

    /// (e) at the bound `LOOM_MAX_PREEMPTIONS` gives (at two it ran past 24
    /// minutes and was stopped): run with `--ignored`.
    #[test]
    #[ignore = "over 24 minutes at two preemptions; run with --ignored"]
    fn loom_a_joiner_with_history_never_returns_an_overwritten_sample_full_bound() {
        join_with_history_model(None);
    }
}
