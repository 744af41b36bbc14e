//! shmkit's own named objects: the `shmkit.` name prefix, the header every
//! such object starts with, and the liveness of the processes named in it.
//!
//! The header (128 bytes at offset 0) lets the command line list our
//! objects, say what each is and who made it, and tell live from stale:
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `state` | 0 empty, 1 initialising, 2 ready (written last, release) |
//! | 4 | `header_size` | 128 |
//! | 8 | `magic` | `b"SHMKIT\0\x01"` |
//! | 16 | `version` | layout version of the kind |
//! | 20 | `kind` | see [`ObjectKind`] |
//! | 24 | `total_size` | bytes of the object |
//! | 32 | `creator_pid` | |
//! | 40 | `creator_start` | the creator's start time (clock ticks after boot), so a reused pid is not taken for the creator |
//! | 48 | `created_at` | unix seconds |
//! | 56 | `params` | eight kind-specific `u64`s |
//!
//! Readers copy the header, then validate the copy (magic, sizes, kind,
//! version) before using any of it.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Op, Result};
use crate::segment::Segment;
use crate::sync::primitive::{AtomicU32, Ordering};
use crate::sys;

/// The prefix of every POSIX name shmkit gives its own objects.
pub const PREFIX: &str = "shmkit.";

/// Bytes of the header.
pub const HEADER_SIZE: usize = 128;

const MAGIC: [u8; 8] = *b"SHMKIT\0\x01";
const EMPTY: u32 = 0;
const INITIALIZING: u32 = 1;
const READY: u32 = 2;

/// What a shmkit object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A single-producer, single-consumer ring.
    Ring,
    /// A publish/subscribe service.
    PubSub,
    /// A request/response service.
    ReqRep,
}

impl ObjectKind {
    fn code(self) -> u32 {
        match self {
            ObjectKind::Ring => 2,
            ObjectKind::PubSub => 3,
            ObjectKind::ReqRep => 4,
        }
    }

    fn from_code(code: u32) -> Option<ObjectKind> {
        match code {
            2 => Some(ObjectKind::Ring),
            3 => Some(ObjectKind::PubSub),
            4 => Some(ObjectKind::ReqRep),
            _ => None,
        }
    }

    /// A short name: `ring`, `pubsub`, `reqrep`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Ring => "ring",
            ObjectKind::PubSub => "pubsub",
            ObjectKind::ReqRep => "reqrep",
        }
    }
}

/// A process, identified by pid and start time so that a reused pid is not
/// mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22);
    /// 0 when unknown.
    pub start: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId { pid, start: sys::proc::process_start(pid).map_or(0, |(_, s)| s) }
    }

    /// Whether the process still runs: it exists, is not a zombie, and
    /// started at the recorded time (when one was recorded).
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match sys::proc::process_start(self.pid) {
            Some(('Z' | 'X', _)) => false,
            Some((_, start)) => self.start == 0 || start == self.start,
            // `/proc` could not tell (gone, or unreadable: hidden by
            // `hidepid`, out of file descriptors): a live peer must not be
            // declared dead for that, so ask the kernel whether the pid
            // exists at all.
            None => sys::proc::pid_exists(self.pid),
        }
    }
}

/// A validated copy of an object's header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectHeader {
    /// What the object is.
    pub kind: ObjectKind,
    /// Its layout version.
    pub version: u32,
    /// Its size in bytes.
    pub total_size: u64,
    /// Who created it.
    pub creator: ProcessId,
    /// When, in unix seconds.
    pub created_at: u64,
    /// Kind-specific parameters.
    pub params: [u64; 8],
}

fn state_word(seg: &Segment) -> Result<&AtomicU32> {
    seg.word32(0)
}

fn corrupt(op: Op, seg: &Segment, what: String) -> Error {
    Error::new(op, seg.name(), ErrorKind::Corrupt(what))
}

/// Writes a new header in two phases: claims the object (`EMPTY` →
/// `INITIALIZING`), writes the fields, runs `setup` (which lays out the rest
/// of the object), then marks it `READY` with a release store.
pub(crate) fn init(
    seg: &mut Segment,
    kind: ObjectKind,
    version: u32,
    params: [u64; 8],
    setup: impl FnOnce(&mut Segment) -> Result<()>,
) -> Result<()> {
    if seg.len() < HEADER_SIZE {
        return Err(Error::invalid(Op::Init, seg.name(), "too small for a shmkit header"));
    }
    if !seg.is_writable() {
        return Err(Error::new(Op::Init, seg.name(), ErrorKind::ReadOnly));
    }
    let state = state_word(seg)?;
    if let Err(found) = state.compare_exchange(EMPTY, INITIALIZING, Ordering::Acquire, Ordering::Acquire) {
        return Err(match found {
            INITIALIZING | READY => Error::new(Op::Init, seg.name(), ErrorKind::AlreadyExists),
            other => corrupt(Op::Init, seg, format!("header state {other}")),
        });
    }
    let header = ObjectHeader {
        kind,
        version,
        total_size: seg.len() as u64,
        creator: ProcessId::current(),
        created_at: sys::proc::unix_now(),
        params,
    };
    // Everything but the state word, which is written last.
    seg.write_at(4, &encode(&header)[4..])?;
    setup(seg)?;
    // SYNC POINT: publishes header and layout to openers (acquire in `read`).
    state_word(seg)?.store(READY, Ordering::Release);
    Ok(())
}

/// Reads and validates the header of a shmkit object. An object still
/// being initialised is waited for, at most `wait`.
///
/// # Errors
///
/// [`ErrorKind::NotInitialized`] if it is empty or still initialising after
/// `wait`; [`ErrorKind::Corrupt`] if it is not a shmkit object or its header
/// does not make sense.
pub fn read(seg: &Segment, wait: Duration) -> Result<ObjectHeader> {
    if seg.len() < HEADER_SIZE {
        return Err(corrupt(Op::Open, seg, format!("{} bytes, too small for a shmkit header", seg.len())));
    }
    let start = Instant::now();
    loop {
        // SYNC POINT: pairs with the release store at the end of `init`.
        match state_word(seg)?.load(Ordering::Acquire) {
            READY => break,
            EMPTY | INITIALIZING if start.elapsed() < wait => std::thread::sleep(Duration::from_micros(200)),
            EMPTY | INITIALIZING => return Err(Error::new(Op::Open, seg.name(), ErrorKind::NotInitialized)),
            other => return Err(corrupt(Op::Open, seg, format!("header state {other}"))),
        }
    }
    let mut b = [0u8; HEADER_SIZE];
    seg.read_at(0, &mut b)?;
    decode(&b, seg.len()).map_err(|what| corrupt(Op::Open, seg, what))
}

/// The header's bytes (the state word left zero).
fn encode(header: &ObjectHeader) -> [u8; HEADER_SIZE] {
    let mut b = [0u8; HEADER_SIZE];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(4, &(HEADER_SIZE as u32).to_ne_bytes());
    put(8, &MAGIC);
    put(16, &header.version.to_ne_bytes());
    put(20, &header.kind.code().to_ne_bytes());
    put(24, &header.total_size.to_ne_bytes());
    put(32, &header.creator.pid.to_ne_bytes());
    put(40, &header.creator.start.to_ne_bytes());
    put(48, &header.created_at.to_ne_bytes());
    for (i, p) in header.params.iter().enumerate() {
        put(56 + 8 * i, &p.to_ne_bytes());
    }
    b
}

/// Validates a copy of a header read from an object of `len` bytes; the
/// error says what is wrong. Pure: no system call, no shared memory.
fn decode(b: &[u8; HEADER_SIZE], len: usize) -> std::result::Result<ObjectHeader, String> {
    let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
    if b[8..16] != MAGIC {
        return Err("no shmkit magic: not a shmkit object".into());
    }
    if u32_at(4) as usize != HEADER_SIZE {
        return Err(format!("header size {}", u32_at(4)));
    }
    let kind = ObjectKind::from_code(u32_at(20)).ok_or_else(|| format!("unknown object kind {}", u32_at(20)))?;
    let total_size = u64_at(24);
    if total_size != len as u64 {
        return Err(format!("header says {total_size} bytes, the object has {len}"));
    }
    let mut params = [0u64; 8];
    for (i, p) in params.iter_mut().enumerate() {
        *p = u64_at(56 + 8 * i);
    }
    Ok(ObjectHeader {
        kind,
        version: u32_at(16),
        total_size,
        creator: ProcessId { pid: u32_at(32), start: u64_at(40) },
        created_at: u64_at(48),
        params,
    })
}

/// [`read`], then checks the kind and version.
pub(crate) fn open(seg: &Segment, kind: ObjectKind, version: u32) -> Result<ObjectHeader> {
    let header = read(seg, Duration::from_secs(1))?;
    if header.kind != kind {
        return Err(Error::new(
            Op::Open,
            seg.name(),
            ErrorKind::WrongType(format!("a {}, not a {}", header.kind.name(), kind.name())),
        ));
    }
    if header.version != version {
        return Err(corrupt(
            Op::Open,
            seg,
            format!("{} layout version {}, this build reads {version}", kind.name(), header.version),
        ));
    }
    Ok(header)
}

/// A process that holds part of a shmkit object (a ring's producer, a
/// service's server, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// What it is to the object: `producer`, `consumer`, `publisher`, …
    pub role: &'static str,
    /// The process.
    pub process: ProcessId,
    /// Whether it still runs.
    pub alive: bool,
}

/// What `shmkit ls` and `shmkit info` show about a shmkit object.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Where initialisation stands: `ready`, `initializing` or `empty`.
    pub state: &'static str,
    /// The validated header (`None` unless `state` is `ready`).
    pub header: Option<ObjectHeader>,
    /// The creator as recorded (also while initialising).
    pub creator: ProcessId,
    /// Whether the creator still runs.
    pub creator_alive: bool,
    /// Processes holding parts of the object.
    pub holders: Vec<Holder>,
    /// Kind-specific figures, as (name, value) pairs: capacity, fill, …
    pub details: Vec<(&'static str, String)>,
}

impl ObjectInfo {
    /// Stale: its creator is dead and no live process holds any part of it,
    /// so nothing can use it any more and `shmkit gc` may remove it.
    pub fn is_stale(&self) -> bool {
        !self.creator_alive && !self.holders.iter().any(|h| h.alive)
    }
}

/// Reads what a shmkit object says about itself, without waiting and
/// without changing it (the segment may be mapped read-only).
///
/// # Errors
///
/// The object is not a shmkit object, or its header is corrupt.
pub fn inspect(seg: &Segment) -> Result<ObjectInfo> {
    if seg.len() < HEADER_SIZE {
        return Err(corrupt(Op::Stat, seg, format!("{} bytes, too small for a shmkit header", seg.len())));
    }
    let mut raw = [0u8; 48];
    seg.read_at(0, &mut raw)?;
    if raw[8..16] != MAGIC && state_word(seg)?.load(Ordering::Acquire) == READY {
        return Err(corrupt(Op::Stat, seg, "no shmkit magic: not a shmkit object".into()));
    }
    let creator = ProcessId {
        pid: u32::from_ne_bytes(raw[32..36].try_into().expect("4 bytes")),
        start: u64::from_ne_bytes(raw[40..48].try_into().expect("8 bytes")),
    };
    let state = match state_word(seg)?.load(Ordering::Acquire) {
        READY => "ready",
        INITIALIZING => "initializing",
        EMPTY => "empty",
        other => return Err(corrupt(Op::Stat, seg, format!("header state {other}"))),
    };
    let mut info = ObjectInfo {
        state,
        header: None,
        creator,
        creator_alive: creator.is_alive(),
        holders: Vec::new(),
        details: Vec::new(),
    };
    if state == "ready" {
        let header = read(seg, Duration::ZERO)?;
        match header.kind {
            ObjectKind::Ring => crate::channel::ring::inspect(seg, &header, &mut info)?,
            ObjectKind::ReqRep => crate::channel::reqrep::inspect(seg, &header, &mut info)?,
            ObjectKind::PubSub => crate::channel::pubsub::inspect(seg, &header, &mut info)?,
        }
        info.header = Some(header);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> ObjectHeader {
        ObjectHeader {
            kind: ObjectKind::PubSub,
            version: 3,
            total_size: 1 << 20,
            creator: ProcessId { pid: 4242, start: 987_654 },
            created_at: 1_790_000_000,
            params: [1, 2, 3, 4, 5, 6, 7, u64::MAX],
        }
    }

    #[test]
    fn a_header_survives_encode_and_decode() {
        let h = sample();
        assert_eq!(decode(&encode(&h), 1 << 20), Ok(h));
    }

    #[test]
    fn each_check_names_what_is_wrong() {
        let good = encode(&sample());
        let mut b = good;
        b[8] ^= 1;
        assert!(decode(&b, 1 << 20).unwrap_err().contains("magic"));
        let mut b = good;
        b[4] = 64;
        assert!(decode(&b, 1 << 20).unwrap_err().contains("header size 64"));
        let mut b = good;
        b[20] = 9;
        assert!(decode(&b, 1 << 20).unwrap_err().contains("kind 9"));
        assert!(decode(&good, 4096).unwrap_err().contains("the object has 4096"));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 16 } else { 10_000 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary bytes: a header or a reason, never a panic.
        #[test]
        fn arbitrary_bytes_decode_to_a_header_or_a_reason(bytes in prop::collection::vec(any::<u8>(), HEADER_SIZE), len in any::<usize>()) {
            let b: [u8; HEADER_SIZE] = bytes.try_into().unwrap();
            if let Ok(h) = decode(&b, len) {
                prop_assert_eq!(h.total_size, len as u64);
                prop_assert_eq!(decode(&encode(&h), len), Ok(h));
            }
        }

        /// A valid header with one byte scribbled over is caught by the check
        /// of that field, or still decodes to a consistent header.
        #[test]
        fn a_scribbled_header_is_caught_or_consistent(at in 4usize..56, byte in any::<u8>()) {
            let mut b = encode(&sample());
            b[at] = byte;
            match decode(&b, 1 << 20) {
                Ok(h) => prop_assert_eq!(decode(&encode(&h), 1 << 20), Ok(h)),
                // Only the checked fields can make it fail.
                Err(_) => prop_assert!((4..8).contains(&at) || (8..16).contains(&at) || (20..32).contains(&at)),
            }
        }
    }
}
