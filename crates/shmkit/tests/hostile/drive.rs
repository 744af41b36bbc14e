//! The hostile peer's moves and the readers' checks, shared by the proptest
//! properties (`tests/hostile.rs`) and the cargo-fuzz targets (`fuzz/`,
//! which include this file by path). Only `std` and shmkit's public API.
//!
//! A case describes what a peer writes into a live object: a whole header,
//! or patches. A patch's place and value are either literal or *anchored*:
//! an index into a list of the object's interesting offsets (the fields of
//! the documented layout, the message header at the consumer's position,
//! the last bytes before the end of the data area, …) or values (the
//! largest message and one more, the capacity, the positions, stamps and
//! sequence words that pass the first checks, …) plus a small delta. So
//! most patches land where a reader makes decisions, and the rest anywhere.
//!
//! Each `drive` function creates a fresh object under the name it is given,
//! applies the case, drives the readers a bounded number of steps, checks
//! that every answer is data within the limits or an error of an expected
//! kind, and removes everything it created (guards, also on panic). A
//! broken rule is a panic with a message: proptest reports it with the
//! smallest case, the fuzzer as a crash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmkit::channel::pubsub::{self, Policy, PubSubOptions, Publisher, Subscriber};
use shmkit::channel::reqrep::{self, Client, Server, ServiceOptions};
use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};
use shmkit::{ErrorKind, Lifetime, Segment, Target, registry};

/// Ring layout (module docs of `shmkit::channel::ring`).
const RING_TAIL: usize = 192;
const RING_HEAD: usize = 256;
const RING_DATA: usize = 1024;
const RING_CAPACITY: usize = 4096;
/// Pub/sub layout (module docs of `shmkit::channel::pubsub`).
const PS_PUBLISHED: usize = 256;
const PS_TABLE: usize = 512;
const PS_MAX_SUBSCRIBERS: usize = 2;
/// Request/response layout (module docs of `shmkit::channel::reqrep`).
const RR_SERVER: usize = 128;
const RR_ENTRIES: usize = 256;
const RR_MAX_CLIENTS: usize = 2;

/// How many receives a reader gets after the patches: more than a
/// well-behaved object could hold, so reaching it means an endless loop.
const RECEIVE_BOUND: usize = 1024;
/// How long a request waits for its reply once the peer has patched.
const PATCHED_TIMEOUT: Duration = Duration::from_millis(10);
/// How long a request waits before the patches (nothing is wrong then).
const CLEAN_TIMEOUT: Duration = Duration::from_secs(5);

/// A value a patch writes.
#[derive(Debug, Clone)]
pub enum Value {
    /// One of the object's interesting values (index modulo their count)
    /// plus `delta`.
    Near { anchor: u8, delta: i8 },
    /// Any value.
    Lit(u64),
}

/// Where a patch writes.
#[derive(Debug, Clone)]
pub enum Place {
    /// One of the object's interesting offsets (index modulo their count)
    /// plus `delta`.
    Near { anchor: u8, delta: i16 },
    /// Anywhere (modulo the object's length).
    Anywhere(u32),
}

/// One write of the hostile peer.
#[derive(Debug, Clone)]
pub enum Patch {
    /// A little-endian word of 1, 2, 4 or 8 bytes (`width` rounded to one
    /// of those), at its natural alignment.
    Word { place: Place, width: u8, value: Value },
    /// Bytes at any offset (cut at the end of the object).
    Bytes { place: Place, bytes: Vec<u8> },
    /// Ring: a message header stamped for position `base + 8 · rel` (so it
    /// passes the stamp check) with length `len`, where that position
    /// lives; `base` is the shared `tail`, or with `from_head` the shared
    /// `head` (as earlier patches left them).
    Stamped { rel: i16, len: Value, from_head: bool },
    /// Pub/sub: the slot of sample `published + rel`: its `seq` word set to
    /// `form` (0: published, 1: being written, 2: published a lap later,
    /// 3: a lap earlier, else zero) and its `len` word to `len`.
    Slot { rel: i8, form: u8, len: Value },
}

/// Interesting offsets and values of one live object.
#[derive(Debug, Default)]
struct Anchors {
    places: Vec<usize>,
    values: Vec<u64>,
}

impl Anchors {
    fn place(&self, place: &Place, len: usize) -> usize {
        let at = match *place {
            Place::Near { anchor, delta } => {
                let base = self.places[anchor as usize % self.places.len()] as i64;
                (base + i64::from(delta)).max(0) as usize
            }
            Place::Anywhere(at) => at as usize,
        };
        at % len
    }

    fn value(&self, value: &Value) -> u64 {
        match *value {
            Value::Near { anchor, delta } => {
                self.values[anchor as usize % self.values.len()].wrapping_add(i64::from(delta) as u64)
            }
            Value::Lit(v) => v,
        }
    }
}

/// A second mapping of an object, as a peer that can write it has.
fn raw(object: &str) -> Segment {
    let target = Target::posix(object).expect("object name");
    Segment::options().lifetime(Lifetime::Persistent).open(&target).expect("map the object as a peer")
}

/// Writes `bytes` at `at`, cut at the end of the object.
fn put(seg: &mut Segment, at: usize, bytes: &[u8]) {
    let at = at.min(seg.len());
    let n = bytes.len().min(seg.len() - at);
    seg.write_at(at, &bytes[..n]).expect("write inside the object");
}

fn read_u64(seg: &Segment, at: usize) -> u64 {
    seg.read::<u64>(at).expect("read inside the object")
}

fn read_u32(seg: &Segment, at: usize) -> u32 {
    seg.read::<u32>(at).expect("read inside the object")
}

/// Applies a generic patch (`Word` or `Bytes`); the kind-specific ones are
/// applied by their kind and ignored here.
fn apply_generic(seg: &mut Segment, anchors: &Anchors, patch: &Patch) {
    match patch {
        Patch::Word { place, width, value } => {
            let width = match width % 4 {
                0 => 1,
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let at = anchors.place(place, seg.len()) / width * width;
            let v = anchors.value(value).to_ne_bytes();
            put(seg, at, &v[..width]);
        }
        Patch::Bytes { place, bytes } => {
            let at = anchors.place(place, seg.len());
            put(seg, at, bytes);
        }
        Patch::Stamped { .. } | Patch::Slot { .. } => {}
    }
}

/// Whether a service's ring capacity (`params[1]`) is at most 1 MiB: a
/// peer may set any valid capacity up to 1 GiB, and clients then create
/// two rings of that size (fallocate, and every page written); the cases
/// connect only where that stays cheap.
fn small_rings(seg: &Segment) -> bool {
    read_u64(seg, 64) <= 1 << 20
}

/// Whether the header's init state makes an opener wait (1 s, by design):
/// such cases skip the re-openings (they would only be slow).
fn opener_waits(seg: &Segment) -> bool {
    read_u32(seg, 0) <= 1
}

/// Removes the named objects (and, with a prefix, every object in
/// `/dev/shm` whose name starts with it) when dropped, also on panic.
#[derive(Debug)]
pub struct Cleanup {
    objects: Vec<String>,
    prefix: Option<String>,
}

impl Cleanup {
    /// Removes `objects` (POSIX names with the slash) and, if given, every
    /// object whose name (without the slash) starts with `prefix`.
    pub fn new(objects: Vec<String>, prefix: Option<String>) -> Cleanup {
        Cleanup { objects, prefix }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for object in &self.objects {
            if let Ok(target) = Target::posix(object) {
                let _ = shmkit::segment::remove(&target);
            }
        }
        if let Some(prefix) = &self.prefix
            && let Ok(dir) = std::fs::read_dir("/dev/shm")
        {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix.as_str())
                    && let Ok(target) = Target::posix(&format!("/{name}"))
                {
                    let _ = shmkit::segment::remove(&target);
                }
            }
        }
    }
}

/// What the readers got over a case: for the statistics the properties
/// print and check (a property whose readers never got data, or never an
/// error, tests nothing).
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Messages, samples or replies received.
    pub data: u64,
    /// Errors that report bad shared memory.
    pub corrupt: u64,
    /// Other errors (would block, disconnected, timeout, busy, …).
    pub other: u64,
    /// Openings refused.
    pub refused: u64,
    /// Openings that succeeded.
    pub opened: u64,
}

impl Outcome {
    /// Adds `other` to this one.
    pub fn add(&mut self, other: &Outcome) {
        self.data += other.data;
        self.corrupt += other.corrupt;
        self.other += other.other;
        self.refused += other.refused;
        self.opened += other.opened;
    }

    fn error(&mut self, kind: &ErrorKind) {
        if matches!(kind, ErrorKind::Corrupt(_)) {
            self.corrupt += 1;
        } else {
            self.other += 1;
        }
    }

    fn open<T>(&mut self, result: &shmkit::Result<T>) {
        if result.is_ok() {
            self.opened += 1;
        } else {
            self.refused += 1;
        }
    }
}

/// Reads bytes for the fuzz targets: each call takes what it needs from
/// the front, zeros once the input is used up.
#[derive(Debug)]
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input(data)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    fn value(&mut self) -> Value {
        let tag = self.u8();
        if tag & 7 == 7 { Value::Lit(self.u64()) } else { Value::Near { anchor: self.u8(), delta: (tag as i8) >> 4 } }
    }

    fn place(&mut self) -> Place {
        let tag = self.u8();
        if tag & 7 == 7 {
            Place::Anywhere(self.u32())
        } else {
            Place::Near { anchor: self.u8(), delta: i16::from((tag as i8) >> 3) }
        }
    }

    /// A patch (any kind; a kind-specific one is ignored by other kinds).
    pub fn patch(&mut self) -> Patch {
        match self.u8() % 4 {
            0 => Patch::Bytes {
                place: self.place(),
                bytes: {
                    let n = self.u8() % 17;
                    (0..n).map(|_| self.u8()).collect()
                },
            },
            1 => {
                let rel = self.u8() as i8;
                Patch::Stamped { rel: i16::from(rel >> 1), len: self.value(), from_head: rel & 1 == 1 }
            }
            2 => Patch::Slot { rel: self.u8() as i8 >> 2, form: self.u8(), len: self.value() },
            _ => Patch::Word { place: self.place(), width: self.u8(), value: self.value() },
        }
    }

    /// Patches until the input is used up (at most `max`).
    pub fn patches(&mut self, max: usize) -> Vec<Patch> {
        let mut out = Vec::new();
        while !self.is_empty() && out.len() < max {
            out.push(self.patch());
        }
        out
    }
}

// ---------------------------------------------------------------- headers

/// What a peer makes of an object's first bytes.
#[derive(Debug, Clone)]
pub struct HeaderCase {
    /// 0 ring, 1 pub/sub, 2 request/response (modulo 3).
    pub kind: u8,
    /// Bytes written: 128 plus this (modulo 65): the registry header and
    /// up to the kind's first line.
    pub extra: u8,
    /// Start from the real header (`None`) or from these bytes.
    pub base: Option<Vec<u8>>,
    /// Fields set (index into the header's fields, modulo their count).
    pub edits: Vec<(u8, Value)>,
    /// Single bytes XORed: (offset modulo the length, mask).
    pub flips: Vec<(u8, u8)>,
}

impl HeaderCase {
    /// Decodes a case from fuzz input.
    pub fn decode(input: &mut Input<'_>) -> HeaderCase {
        let kind = input.u8();
        let extra = input.u8();
        let base = if input.u8().is_multiple_of(4) { Some((0..192).map(|_| input.u8()).collect()) } else { None };
        let mut edits = Vec::new();
        let mut flips = Vec::new();
        while !input.is_empty() && edits.len() + flips.len() < 32 {
            if input.u8().is_multiple_of(3) {
                flips.push((input.u8(), input.u8()));
            } else {
                edits.push((input.u8(), input.value()));
            }
        }
        HeaderCase { kind, extra, base, edits, flips }
    }
}

/// The header's fields: (offset, width).
const HEADER_FIELDS: [(usize, usize); 25] = [
    (0, 4),   // state
    (4, 4),   // header size
    (8, 8),   // magic
    (16, 4),  // version
    (20, 4),  // kind
    (24, 8),  // total size
    (32, 4),  // creator pid
    (40, 8),  // creator start
    (48, 8),  // created at
    (56, 8),  // params[0..8]
    (64, 8),  //
    (72, 8),  //
    (80, 8),  //
    (88, 8),  //
    (96, 8),  //
    (104, 8), //
    (112, 8), //
    (128, 8), // the kind's first line: type name, server claim, …
    (136, 8), //
    (144, 8), //
    (152, 8), //
    (160, 8), //
    (168, 8), //
    (176, 8), //
    (184, 8), //
];

/// Overwrites the first bytes of a live object of the case's kind, then
/// opens every kind of endpoint on it and inspects it: each gives `Ok` or
/// an error, and an endpoint that opens works within its limits.
pub fn header(name: &str, case: &HeaderCase) -> Outcome {
    let mut out = Outcome::default();
    match case.kind % 3 {
        0 => {
            let object = ring::object_name(name);
            let _cleanup = Cleanup::new(vec![object.clone()], None);
            let tx = Sender::open_or_create(name, RingOptions::new().capacity(RING_CAPACITY)).expect("create a ring");
            let mut seg = raw(&object);
            write_header(&mut seg, case);
            inspect(&seg, &mut out);
            let rx = Receiver::open(name);
            out.open(&rx);
            if let Ok(mut rx) = rx {
                assert_eq!(rx.max_message(), (seg.len() - RING_DATA) / 2 - 16, "a ring opened with a bad size");
                let mut buf = Vec::new();
                for _ in 0..4 {
                    match rx.try_recv(&mut buf) {
                        Ok(n) => {
                            assert!(n <= rx.max_message() && buf.len() == n);
                            out.data += 1;
                        }
                        Err(e) => out.error(e.kind()),
                    }
                }
            }
            drop(tx);
            if !opener_waits(&seg) {
                let tx = Sender::open(name);
                out.open(&tx);
                if let Ok(mut tx) = tx {
                    let _ = tx.try_send(b"after");
                }
            }
        }
        1 => {
            let object = pubsub::object_name(name);
            let _cleanup = Cleanup::new(vec![object.clone()], None);
            let mut options = PubSubOptions::new();
            options.slots(4).max_sample(24).max_subscribers(PS_MAX_SUBSCRIBERS);
            let publisher = Publisher::open_or_create(name, &options).expect("create a service");
            let mut seg = raw(&object);
            write_header(&mut seg, case);
            inspect(&seg, &mut out);
            let sub = Subscriber::open(name);
            out.open(&sub);
            if let Ok(mut sub) = sub {
                let max = sub.max_sample();
                let mut buf = Vec::new();
                for _ in 0..4 {
                    match sub.try_receive_into(&mut buf) {
                        Ok(_) => {
                            assert!(buf.len() <= max);
                            out.data += 1;
                        }
                        Err(e) => out.error(e.kind()),
                    }
                }
            }
            drop(publisher);
            if !opener_waits(&seg) {
                let publisher = Publisher::open(name);
                out.open(&publisher);
                if let Ok(mut publisher) = publisher {
                    let _ = publisher.try_publish(b"after");
                }
            }
        }
        _ => {
            let object = reqrep::object_name(name);
            let _cleanup = Cleanup::new(vec![object.clone()], Some(format!("shmkit.ring.reqrep.{name}.")));
            let mut options = ServiceOptions::new();
            options.max_clients(RR_MAX_CLIENTS).capacity(RING_CAPACITY);
            let server = Server::create(name, &options).expect("create a service");
            let mut seg = raw(&object);
            write_header(&mut seg, case);
            inspect(&seg, &mut out);
            if small_rings(&seg) {
                let client = Client::connect(name);
                out.open(&client);
                if let Ok(client) = &client {
                    let capacity = read_u64(&seg, 64) as usize;
                    assert!(client.index() < RR_MAX_CLIENTS, "a client in entry {}", client.index());
                    assert_eq!(client.max_message(), capacity / 2 - 24, "a client's largest message");
                }
            }
            // A second server: busy, or the header is bad (or the peer
            // freed the server line, which it may).
            let second = Server::create(name, &options);
            out.open(&second);
            drop(second);
            drop(server);
        }
    }
    out
}

/// The registry's view: `inspect` and `read` give data or an error.
fn inspect(seg: &Segment, out: &mut Outcome) {
    let info = registry::inspect(seg);
    out.open(&info);
    let header = registry::read(seg, Duration::ZERO);
    if let Ok(header) = &header {
        assert_eq!(header.total_size, seg.len() as u64, "a header accepted with the wrong size");
    }
}

fn write_header(seg: &mut Segment, case: &HeaderCase) {
    let len = 128 + usize::from(case.extra) % 65;
    let mut real = vec![0u8; 192];
    seg.read_at(0, &mut real).expect("read the header");
    let mut bytes = match &case.base {
        Some(base) => {
            let mut b = base.clone();
            b.resize(192, 0);
            b
        }
        None => real.clone(),
    };
    let field = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let mut values = vec![0, 1, 2, 3, 4, 5, 8, 16, 24, 64, 128, 192, 512, 1024, 4096, 4096 - 16, 2048 - 16];
    values.extend([seg.len() as u64, 1 << 20, 1 << 30, 1 << 40, 1 << 62, u64::from(u32::MAX), u64::MAX]);
    values.extend([u64::from(std::process::id()), u64::from_ne_bytes(*b"SHMKIT\0\x01")]);
    values.extend((0..24).map(|i| field(&real, i * 8)));
    let anchors = Anchors { places: Vec::new(), values };
    for (index, value) in &case.edits {
        let (at, width) = HEADER_FIELDS[*index as usize % HEADER_FIELDS.len()];
        let v = anchors.value(value).to_ne_bytes();
        bytes[at..at + width].copy_from_slice(&v[..width]);
    }
    for &(at, mask) in &case.flips {
        bytes[at as usize % len] ^= mask;
    }
    // States 0 and 1 make openers wait a second (tested elsewhere); keep
    // the cases fast.
    let state = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
    if state <= 1 {
        bytes[..4].copy_from_slice(&2u32.to_ne_bytes());
    }
    put(seg, 0, &bytes[..len]);
}

// ---------------------------------------------------------------- ring

/// A ring after some traffic, then patched.
#[derive(Debug, Clone)]
pub struct RingCase {
    /// Lengths of the messages sent before the patches (modulo the
    /// largest message plus one).
    pub sends: Vec<u16>,
    /// How many of them are received before the patches.
    pub received: u8,
    /// The peer's writes.
    pub patches: Vec<Patch>,
    /// Receive in place (`try_recv_ref`) rather than by copy.
    pub in_place: bool,
}

impl RingCase {
    /// Decodes a case from fuzz input.
    pub fn decode(input: &mut Input<'_>) -> RingCase {
        let n = input.u8() % 40;
        let sends = (0..n).map(|_| u16::from_le_bytes(input.bytes())).collect();
        let received = input.u8();
        let in_place = input.u8() & 1 == 1;
        RingCase { sends, received, patches: input.patches(16), in_place }
    }
}

fn ring_message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 7 + j) as u8).collect()
}

/// A ring: traffic, patches, then the consumer receives until it ends in
/// "would block", "disconnected" or "corrupt" (which stays), always within
/// [`RECEIVE_BOUND`] receives; every message is within the largest size,
/// and without patches exactly what was sent.
pub fn ring(name: &str, case: &RingCase) -> Outcome {
    let mut out = Outcome::default();
    let object = ring::object_name(name);
    let _cleanup = Cleanup::new(vec![object.clone()], None);
    let mut tx = Sender::open_or_create(name, RingOptions::new().capacity(RING_CAPACITY)).expect("create a ring");
    let mut rx = Receiver::open(name).expect("open the consumer end");
    let max = rx.max_message();
    let mut expected = std::collections::VecDeque::new();
    let mut buf = Vec::new();
    let mut received = 0;
    for (i, &len) in case.sends.iter().enumerate() {
        let message = ring_message(i, usize::from(len) % (max + 1));
        if tx.try_send(&message).is_ok() {
            expected.push_back(message);
        } else if received < usize::from(case.received) {
            // Full, as far as the producer knows: make room, as a consumer
            // would. (A consumer that received everything gives the room
            // back when it finds nothing more: "would block".)
            match rx.try_recv(&mut buf) {
                Ok(_) => {
                    assert_eq!(Some(&buf), expected.front(), "a clean ring delivers what was sent");
                    expected.pop_front();
                    received += 1;
                }
                Err(e) => assert!(expected.is_empty() && *e.kind() == ErrorKind::WouldBlock, "a clean ring: {e}"),
            }
        }
        if received < usize::from(case.received) && i % 3 == 2 && !expected.is_empty() {
            rx.try_recv(&mut buf).expect("a clean ring delivers");
            assert_eq!(Some(&buf), expected.front(), "a clean ring delivers what was sent");
            expected.pop_front();
            received += 1;
        }
    }
    let mut seg = raw(&object);
    let tail = read_u64(&seg, RING_TAIL);
    let head = read_u64(&seg, RING_HEAD);
    let cap = RING_CAPACITY as u64;
    let at = |pos: u64| RING_DATA + (pos % cap) as usize;
    let anchors = Anchors {
        places: vec![
            0,
            4,
            16,
            20,
            24,
            56,
            64,
            RING_TAIL,
            RING_HEAD,
            320,
            384,
            448,
            452,
            456,
            512,
            516,
            520,
            RING_DATA,
            RING_DATA + 8,
            at(tail),
            at(tail) + 8,
            at(head),
            at(head) + 8,
            at(tail.saturating_sub(8)),
            RING_DATA + RING_CAPACITY - 8,
            RING_DATA + RING_CAPACITY - 16,
        ],
        values: vec![
            0,
            1,
            2,
            3,
            8,
            max as u64,
            max as u64 + 1,
            cap,
            cap - 8,
            cap / 2,
            u64::from(u32::MAX),
            u64::MAX,
            tail,
            head,
            tail + cap,
            head + cap,
            1 << 31,
            i64::MAX as u64,
            u64::from(std::process::id()),
            stamped(tail, 0),
            stamped(tail, u32::MAX),
            stamped(head, 8),
            stamped(head, u32::MAX),
            // Positions at the end of the counter's range.
            u64::MAX - 7,
            u64::MAX - 7 - cap,
            1 << 63,
            tail + (1 << 35),
        ],
    };
    let patched = !case.patches.is_empty();
    for patch in &case.patches {
        match patch {
            Patch::Stamped { .. } => stamp_message(&mut seg, &anchors, patch),
            other => apply_generic(&mut seg, &anchors, other),
        }
    }
    // What `shmkit ls` and `info` read.
    let _ = registry::inspect(&seg);
    let mut corrupt = false;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps <= RECEIVE_BOUND, "the consumer received {RECEIVE_BOUND} times from a ring of {cap} bytes");
        let result = if case.in_place {
            rx.try_recv_ref().map(|m| {
                let n = m.len();
                m.copy_to(&mut buf);
                assert!(m.read_at(n, &mut [0u8; 1]).is_err(), "a read past a message was allowed");
                n
            })
        } else {
            rx.try_recv(&mut buf)
        };
        match result {
            Ok(n) => {
                assert!(n <= max && buf.len() == n, "a message of {n} bytes from a ring whose largest is {max}");
                if !patched {
                    assert_eq!(Some(&buf), expected.front(), "a clean ring delivers what was sent");
                    expected.pop_front();
                }
                out.data += 1;
            }
            Err(e) => {
                out.error(e.kind());
                match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::Disconnected => break,
                    ErrorKind::Corrupt(_) => {
                        corrupt = true;
                        break;
                    }
                    other => panic!("try_recv gave {other:?}: {e}"),
                }
            }
        }
    }
    if corrupt {
        for _ in 0..2 {
            let e = rx.try_recv(&mut buf).expect_err("a corrupt ring delivered data");
            assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "after corrupt, {e}");
        }
    }
    if !patched {
        assert!(expected.is_empty(), "a clean ring lost messages");
    }
    // The producer reads what the peer wrote too.
    for i in 0..4 {
        if let Err(e) = tx.try_send(&ring_message(i, i * 100)) {
            out.error(e.kind());
        }
    }
    // Each end reopened, as after a crash: it starts from the positions in
    // shared memory, which the peer wrote.
    drop(rx);
    if !opener_waits(&seg) {
        let rx = Receiver::open(name);
        out.open(&rx);
        if let Ok(mut rx) = rx {
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps <= RECEIVE_BOUND, "a reopened consumer received {RECEIVE_BOUND} times");
                match rx.try_recv(&mut buf) {
                    Ok(n) => {
                        assert!(n <= max && buf.len() == n, "a message of {n} bytes, the largest is {max}");
                        out.data += 1;
                    }
                    Err(e) => {
                        out.error(e.kind());
                        break;
                    }
                }
            }
            drop(tx);
            let tx = Sender::open(name);
            out.open(&tx);
            if let Ok(mut tx) = tx {
                for i in 0..4 {
                    if let Err(e) = tx.try_send(&ring_message(i, i * 100)) {
                        out.error(e.kind());
                    }
                }
            }
        }
    }
    out
}

/// A ring message header for position `pos` (the layout's stamp).
fn stamped(pos: u64, len: u32) -> u64 {
    u64::from((pos >> 3) as u32 | 1 << 31) << 32 | u64::from(len)
}

/// Applies a [`Patch::Stamped`] to a ring.
fn stamp_message(seg: &mut Segment, anchors: &Anchors, patch: &Patch) {
    if let Patch::Stamped { rel, len, from_head } = patch {
        let base = read_u64(seg, if *from_head { RING_HEAD } else { RING_TAIL });
        let pos = base.wrapping_add((8 * i64::from(*rel)) as u64);
        let word = stamped(pos, anchors.value(len) as u32);
        put(seg, RING_DATA + (pos % RING_CAPACITY as u64) as usize, &word.to_ne_bytes());
    }
}

// ---------------------------------------------------------------- pub/sub

/// A pub/sub service after some samples, then patched.
#[derive(Debug, Clone)]
pub struct PubSubCase {
    /// Overwrite-oldest rather than back-pressure.
    pub overwrite: bool,
    /// 2, 4 or 8 slots.
    pub slots_log2: u8,
    /// Samples of 24 bytes at most (one line per slot), or 100.
    pub big: bool,
    /// Samples published before the patches (modulo 32).
    pub published: u8,
    /// How many the subscriber reads before the patches.
    pub received: u8,
    /// The peer's writes.
    pub patches: Vec<Patch>,
    /// Read samples in place (`try_receive`) rather than by copy.
    pub in_place: bool,
}

impl PubSubCase {
    /// Decodes a case from fuzz input.
    pub fn decode(input: &mut Input<'_>) -> PubSubCase {
        let flags = input.u8();
        PubSubCase {
            overwrite: flags & 1 == 1,
            slots_log2: 1 + (flags >> 1) % 3,
            big: flags & 8 == 8,
            in_place: flags & 16 == 16,
            published: input.u8(),
            received: input.u8(),
            patches: input.patches(16),
        }
    }
}

/// A pub/sub service: samples, patches, then the subscriber receives until
/// "would block", "disconnected" or "corrupt" (which stays), within
/// [`RECEIVE_BOUND`]; a sample is never longer than a slot holds, and
/// without patches the samples are exactly those published.
pub fn pubsub(name: &str, case: &PubSubCase) -> Outcome {
    let mut out = Outcome::default();
    let object = pubsub::object_name(name);
    let _cleanup = Cleanup::new(vec![object.clone()], None);
    let slots = 1usize << (1 + case.slots_log2 % 3);
    let max = if case.big { 100 } else { 24 };
    let mut options = PubSubOptions::new();
    options.slots(slots).max_sample(max).max_subscribers(PS_MAX_SUBSCRIBERS);
    options.policy(if case.overwrite { Policy::OverwriteOldest } else { Policy::BackPressure });
    let mut publisher = Publisher::open_or_create(name, &options).expect("create a service");
    let mut sub = Subscriber::open(name).expect("subscribe");
    let sample = |n: u64| -> Vec<u8> { (0..(n as usize * 5) % (max + 1)).map(|j| (n as usize + j) as u8).collect() };
    let mut buf = Vec::new();
    let mut received = 0;
    for _ in 0..case.published % 32 {
        match publisher.try_publish(&sample(publisher.published())) {
            Ok(_) => {}
            Err(e) if *e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("a clean service refused a sample: {e}"),
        }
        if received < case.received % 32 {
            let n = sub.try_receive_into(&mut buf).expect("a clean service delivers");
            assert_eq!(buf, sample(n), "a clean service delivers what was published");
            received += 1;
        }
    }
    let mut seg = raw(&object);
    let published = read_u64(&seg, PS_PUBLISHED);
    let stride = (16 + max).div_ceil(64) * 64;
    let slots_at = PS_TABLE + 64 * PS_MAX_SUBSCRIBERS;
    let slot = |n: u64| slots_at + (n % slots as u64) as usize * stride;
    let cursor = sub.position();
    let anchors = Anchors {
        places: vec![
            0,
            16,
            20,
            24,
            56,
            64,
            72,
            80,
            88,
            96,
            104,
            128,
            192,
            196,
            200,
            PS_PUBLISHED,
            320,
            384,
            388,
            PS_TABLE,
            PS_TABLE + 4,
            PS_TABLE + 8,
            PS_TABLE + 16,
            PS_TABLE + 24,
            PS_TABLE + 64,
            PS_TABLE + 80,
            slots_at,
            slot(cursor),
            slot(cursor) + 8,
            slot(cursor) + 16,
            slot(published.wrapping_sub(1)),
            slot(published.wrapping_sub(1)) + 8,
            slot(published),
            seg.len() - 8,
        ],
        values: vec![
            0,
            1,
            2,
            3,
            max as u64,
            max as u64 + 1,
            stride as u64,
            slots as u64,
            published,
            published + 1,
            published + slots as u64,
            cursor,
            2 * cursor + 2,
            2 * cursor + 1,
            2 * published,
            1 << 62,
            u64::MAX,
            u64::from(u32::MAX),
            u64::from(std::process::id()) << 32 | 2,
            1 << 32 | 2,
        ],
    };
    let patched = !case.patches.is_empty();
    for patch in &case.patches {
        match patch {
            Patch::Slot { rel, form, len } => {
                let n = published.wrapping_add(i64::from(*rel) as u64);
                let done = |n: u64| n.wrapping_mul(2).wrapping_add(2);
                let seq = match form % 5 {
                    0 => done(n),
                    1 => done(n).wrapping_sub(1),
                    2 => done(n.wrapping_add(slots as u64)),
                    3 => done(n.wrapping_sub(slots as u64)),
                    _ => 0,
                };
                put(&mut seg, slot(n), &seq.to_ne_bytes());
                put(&mut seg, slot(n) + 8, &anchors.value(len).to_ne_bytes());
            }
            other => apply_generic(&mut seg, &anchors, other),
        }
    }
    let _ = registry::inspect(&seg);
    let mut corrupt = false;
    let mut steps = 0;
    let mut last = None;
    loop {
        steps += 1;
        assert!(steps <= RECEIVE_BOUND, "the subscriber received {RECEIVE_BOUND} times from {slots} slots");
        let result = if case.in_place {
            sub.try_receive().map(|s| {
                assert!(s.len() <= max, "a sample of {} bytes from slots of {max}", s.len());
                let intact = s.copy_to(&mut buf);
                assert!(s.read_at(s.len(), &mut [0u8; 1]).is_err(), "a read past a sample was allowed");
                assert!(intact || case.overwrite || patched, "a sample torn under back-pressure");
                s.sequence()
            })
        } else {
            sub.try_receive_into(&mut buf)
        };
        match result {
            Ok(n) => {
                assert!(buf.len() <= max, "a sample of {} bytes from slots of {max}", buf.len());
                assert!(last.is_none_or(|l| n > l), "sample {n} after sample {last:?}");
                last = Some(n);
                if !patched {
                    assert_eq!(buf, sample(n), "a clean service delivers what was published");
                }
                out.data += 1;
            }
            Err(e) => {
                out.error(e.kind());
                match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::Disconnected => break,
                    ErrorKind::Corrupt(_) => {
                        corrupt = true;
                        break;
                    }
                    other => panic!("try_receive gave {other:?}: {e}"),
                }
            }
        }
    }
    if corrupt {
        for _ in 0..2 {
            match sub.try_receive_into(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt(_)) => {}
                other => panic!("after corrupt, {other:?}"),
            }
        }
    }
    if !patched && !case.overwrite {
        assert_eq!(sub.missed(), 0, "a clean service under back-pressure lost samples");
    }
    // The publisher reads the table the peer wrote; a second subscriber
    // joins through it.
    for n in 0..3 {
        if let Err(e) = publisher.try_publish(&sample(n)) {
            out.error(e.kind());
        }
    }
    if !opener_waits(&seg) {
        let second = Subscriber::open(name);
        out.open(&second);
        if let Ok(mut second) = second {
            for _ in 0..4 {
                match second.try_receive_into(&mut buf) {
                    Ok(_) => assert!(buf.len() <= max),
                    Err(e) => {
                        out.error(e.kind());
                        break;
                    }
                }
            }
        }
    }
    // The publisher reopened, as after a crash: it resumes from what the
    // peer left.
    drop(publisher);
    if !opener_waits(&seg) {
        let publisher = Publisher::open(name);
        out.open(&publisher);
        if let Ok(mut publisher) = publisher {
            for n in 0..3 {
                if let Err(e) = publisher.try_publish(&sample(n)) {
                    out.error(e.kind());
                }
            }
        }
    }
    drop(sub);
    out
}

// ---------------------------------------------------------------- request/response

/// A service with one connected client after some requests, then patched
/// (the service object or the client's rings).
#[derive(Debug, Clone)]
pub struct ReqRepCase {
    /// Requests answered before the patches (1 to 4).
    pub before: u8,
    /// The peer's writes: (0 service object, 1 request ring, 2 reply
    /// ring, modulo 3; patch).
    pub patches: Vec<(u8, Patch)>,
}

impl ReqRepCase {
    /// Decodes a case from fuzz input.
    pub fn decode(input: &mut Input<'_>) -> ReqRepCase {
        let before = input.u8();
        let mut patches = Vec::new();
        while !input.is_empty() && patches.len() < 16 {
            patches.push((input.u8(), input.patch()));
        }
        ReqRepCase { before, patches }
    }
}

fn answer(request: &[u8]) -> Vec<u8> {
    request.iter().rev().map(|b| b.wrapping_add(1)).collect()
}

/// A service: requests answered by a server thread, patches, then more
/// requests: each gives a reply within the largest size or an error of an
/// expected kind, "disconnected" and "corrupt" stay, the server gives
/// requests or errors, nothing waits past its timeout.
pub fn reqrep(name: &str, case: &ReqRepCase) -> Outcome {
    let mut out = Outcome::default();
    let object = reqrep::object_name(name);
    let _cleanup = Cleanup::new(vec![object.clone()], Some(format!("shmkit.ring.reqrep.{name}.")));
    let mut options = ServiceOptions::new();
    options.max_clients(RR_MAX_CLIENTS).capacity(RING_CAPACITY);
    let mut server = Server::create(name, &options).expect("create a service");
    let mut client = Client::connect(name).expect("connect");
    let max = client.max_message();
    let before = 1 + usize::from(case.before % 4);
    let requests: Vec<Vec<u8>> = (0..before + 2).map(|i| ring_message(i, (i * 37) % 300)).collect();
    let stop = AtomicBool::new(false);
    let mut generation = None;
    let mut after = Vec::new();
    std::thread::scope(|s| {
        let serving = s.spawn(|| serve(&mut server, &stop));
        let mut reply = Vec::new();
        let mut failed = None;
        for (i, request) in requests[..before].iter().enumerate() {
            let started = Instant::now();
            match client.request_timeout(request, &mut reply, CLEAN_TIMEOUT) {
                Ok(n) => {
                    assert_eq!(reply, answer(request), "a clean service answers the request");
                    assert_eq!(n, reply.len());
                }
                Err(e) => {
                    failed = Some(format!("request {i} of {before}: {e} after {:?}", started.elapsed()));
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let (server_out, seen) = serving.join().expect("the server thread");
        // With what the server saw, to tell a starved machine from a
        // server that dropped a live client.
        if let Some(failed) = failed {
            panic!("a clean service did not answer: {failed}; the server saw {server_out:?}, generation {seen:?}");
        }
        generation = seen;
    });
    out.data += before as u64;
    let generation = generation.expect("the server saw the requests");
    let index = client.index();
    let rings = [
        ring::object_name(&format!("reqrep.{name}.{index}.{generation}.req")),
        ring::object_name(&format!("reqrep.{name}.{index}.{generation}.rep")),
    ];
    let mut segs = [raw(&object), raw(&rings[0]), raw(&rings[1])];
    let ring_anchors = |seg: &Segment| {
        let tail = read_u64(seg, RING_TAIL);
        let head = read_u64(seg, RING_HEAD);
        let at = |pos: u64| RING_DATA + (pos % RING_CAPACITY as u64) as usize;
        Anchors {
            places: vec![0, 24, 56, 64, RING_TAIL, RING_HEAD, 448, 452, 512, 516, at(tail), at(tail) + 8, at(head)],
            values: vec![
                0,
                1,
                8,
                tail,
                head,
                tail + 8,
                stamped(tail, 8),
                stamped(tail, 0),
                u64::MAX,
                RING_CAPACITY as u64,
            ],
        }
    };
    let pid = u64::from(std::process::id());
    let anchors = [
        Anchors {
            places: vec![
                0,
                56,
                64,
                72,
                RR_SERVER,
                RR_SERVER + 4,
                RR_SERVER + 8,
                RR_SERVER + 16,
                RR_SERVER + 20,
                192,
                196,
                RR_ENTRIES + 64 * index,
                RR_ENTRIES + 64 * index + 4,
                RR_ENTRIES + 64 * index + 16,
                RR_ENTRIES + 64 * index + 20,
                RR_ENTRIES + 64 * index + 24,
                RR_ENTRIES + 64 * (1 - index),
                RR_ENTRIES + 64 * (1 - index) + 16,
                RR_ENTRIES + 64 * (1 - index) + 24,
            ],
            values: vec![
                0,
                1,
                2,
                3,
                pid,
                pid << 32 | pid,
                u64::from(generation),
                u64::from(generation) + 1,
                4096,
                u64::MAX,
            ],
        },
        ring_anchors(&segs[1]),
        ring_anchors(&segs[2]),
    ];
    for (which, patch) in &case.patches {
        let k = usize::from(*which % 3);
        let anchors = &anchors[k];
        let seg = &mut segs[k];
        match patch {
            Patch::Stamped { .. } if k > 0 => stamp_message(seg, anchors, patch),
            other => apply_generic(seg, anchors, other),
        }
    }
    // Closing a client reopens its rings, and an opener waits a second on
    // a header in state 0 or 1 (by design, tested elsewhere): keep the
    // cases fast.
    for seg in &mut segs[1..] {
        if opener_waits(seg) {
            put(seg, 0, &2u32.to_ne_bytes());
        }
    }
    for seg in &segs {
        let _ = registry::inspect(seg);
    }
    let patched = !case.patches.is_empty();
    let timeout = if patched { PATCHED_TIMEOUT } else { CLEAN_TIMEOUT };
    stop.store(false, Ordering::SeqCst);
    std::thread::scope(|s| {
        let serving = s.spawn(|| serve(&mut server, &stop));
        let mut reply = Vec::new();
        let mut sticky: Option<ErrorKind> = None;
        for request in &requests[before..] {
            let result = client.request_timeout(request, &mut reply, timeout);
            after.push(result.as_ref().map(|&n| n).map_err(|e| e.kind().clone()));
            match result {
                Ok(n) => {
                    assert!(sticky.is_none(), "a request answered after {sticky:?}");
                    assert!(n <= max && reply.len() == n, "a reply of {n} bytes, the largest is {max}");
                    if !patched {
                        assert_eq!(reply, answer(request), "a clean service answers the request");
                    }
                }
                Err(e) => match e.kind() {
                    ErrorKind::Disconnected | ErrorKind::Corrupt(_) => {
                        if let Some(first) = &sticky {
                            assert_eq!(first, e.kind(), "the error after a broken connection changed");
                        }
                        sticky = Some(e.kind().clone());
                    }
                    ErrorKind::Timeout | ErrorKind::WouldBlock => {}
                    other => panic!("request gave {other:?}: {e}"),
                },
            }
        }
        stop.store(true, Ordering::SeqCst);
        let (server_out, _) = serving.join().expect("the server thread");
        out.add(&server_out);
    });
    for result in after {
        match result {
            Ok(_) => out.data += 1,
            Err(kind) => out.error(&kind),
        }
    }
    if !patched {
        assert_eq!(out.corrupt + out.other, 0, "a clean service failed");
    }
    drop(client);
    if !opener_waits(&segs[0]) && small_rings(&segs[0]) {
        let second = Client::connect(name);
        out.open(&second);
    }
    drop(server);
    out
}

/// Serves requests until `stop` (bounded: 10 s), answering each with
/// [`answer`]; returns what it saw and the generation of the last client.
fn serve(server: &mut Server, stop: &AtomicBool) -> (Outcome, Option<u32>) {
    let mut out = Outcome::default();
    let mut generation = None;
    let mut buf = Vec::new();
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
        match server.receive_timeout(&mut buf, Duration::from_millis(1)) {
            Ok(request) => {
                assert!(buf.len() <= server.max_message(), "a request of {} bytes", buf.len());
                generation = Some(request.generation());
                if let Err(e) = server.respond(&request, &answer(&buf)) {
                    out.error(e.kind());
                }
            }
            Err(e) => match e.kind() {
                ErrorKind::Timeout | ErrorKind::WouldBlock => {}
                ErrorKind::Corrupt(_) => {
                    out.corrupt += 1;
                    // Our claim was overwritten: every receive says so.
                    let again = server.try_receive(&mut buf).expect_err("a server with a broken claim received");
                    assert!(matches!(again.kind(), ErrorKind::Corrupt(_)), "then {again}");
                    break;
                }
                other => panic!("the server's receive gave {other:?}: {e}"),
            },
        }
    }
    (out, generation)
}
