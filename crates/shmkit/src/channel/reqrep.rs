//! Request/response: a named service, one server, many clients, each with
//! its own pair of [`ring`]s, so every reply goes to the client that asked.
//!
//! ```
//! use shmkit::channel::reqrep::{Client, Server, ServiceOptions};
//!
//! # let name = format!("doc-upper-{}", std::process::id());
//! // The server (usually a process of its own).
//! let mut server = Server::create(&name, &ServiceOptions::new())?;
//! // Any number of clients, in any processes.
//! let mut client = Client::connect(&name)?;
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         let mut buf = Vec::new();
//!         let request = server.receive(&mut buf)?;
//!         server.respond(&request, &buf.to_ascii_uppercase())
//!     });
//!     let mut reply = Vec::new();
//!     client.request(b"hello", &mut reply)?;
//!     assert_eq!(reply, b"HELLO");
//!     Ok::<(), shmkit::Error>(())
//! })?;
//! // Dropping the server removes the service.
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Objects
//!
//! The service is the POSIX object `/shmkit.reqrep.NAME`, created by the
//! first server. A client that connects claims an entry `i` of the service's
//! client table, bumps the entry's generation `g`, and creates two rings
//! named `reqrep.NAME.i.g.req` (requests, client → server) and
//! `reqrep.NAME.i.g.rep` (replies, server → client), i.e. the objects
//! `/shmkit.ring.reqrep.NAME.i.g.req|rep`. The server opens the other ends
//! when it first sees the entry connected. The index and generation in the
//! names mean that a reconnecting client never shares a ring with its
//! predecessor in the entry, and a reply meant for one never reaches the
//! other.
//!
//! # Layout of the service object
//!
//! All fields are `u32` words (a start time is two words, low then high),
//! each line written by one party at a time.
//!
//! | offset | what | written by |
//! |---|---|---|
//! | 0 | object header ([`crate::registry`]); `params`: `[0]` most clients, `[1]` capacity of each ring, `[2]` mode of the rings | creator |
//! | 128 | server claim: `owner` pid, `ready` pid, start time (2 words), `state` (0 none, 1 active, 2 closed), `epoch` | the server, on start and close |
//! | 192 | wake-up: `seq` (futex word), `sleeping` flag | the server going to sleep; clients waking it |
//! | 256 + 64·i | client entry `i`: `owner`, `ready`, start time (2 words), `state` (0 free, 1 connected), `epoch` of the server it connected to, `generation` | the client holding it; whoever reaps it after its holder died |
//!
//! The object is `256 + 64 · max_clients` bytes.
//!
//! # Claims
//!
//! The server line and each client entry are *claims*: `owner` is taken with
//! a compare-and-swap from 0 (free) or from the pid of a dead holder, then
//! the claimant writes its start time and then `ready = pid` (release). A
//! holder whose `ready` equals its `owner` is alive if a process with that
//! pid *and* start time runs (so a reused pid is not mistaken for it); a
//! claim still in progress (`ready != owner`) is alive if the pid exists. A
//! release writes `ready = 0`, then `owner = 0`.
//!
//! # Protocol
//!
//! - Server start: claim the server line (a live server gives
//!   [`ErrorKind::Busy`]; a dead one is taken over), bump `epoch`, set
//!   `state = active`.
//! - Client connect: check that a live server is active and read its epoch;
//!   claim a free entry (or one whose holder died); write `state = free`, a
//!   new `generation`, the `epoch`, then `ready`; remove what a dead holder
//!   left of its rings; create both rings; then `state = connected`
//!   (release). Then check the server once more.
//! - Request: the client sends `seq` (u64, +1 per request) and the payload on
//!   its request ring, then wakes the server if its `sleeping` flag is set.
//!   It waits on its reply ring in slices of `LIVENESS_INTERVAL` (100 ms), checking
//!   between slices that the server is still the live, active one it
//!   connected to. Replies carry the request's `seq`; a reply to an earlier
//!   request (one that timed out) is dropped, a reply to a later one is
//!   [`ErrorKind::Corrupt`].
//! - Receive: the server scans the table round-robin from the entry after
//!   the last one served, with `try_recv` on each connected entry's request
//!   ring (bounded work: one pass per attempt). A connected entry with a new
//!   generation gets its rings opened; one of an earlier server's epoch gets
//!   its rings closed (that client sees [`ErrorKind::Disconnected`]). When a
//!   pass finds nothing, the server spins about `SPIN` (20 µs), then
//!   sets `sleeping`, makes the heavy fence, reads `seq`, scans once more and
//!   sleeps on `seq` at most `LIVENESS_INTERVAL` (100 ms). Every
//!   `LIVENESS_INTERVAL` (100 ms) it reaps entries whose holder died: it claims the
//!   entry, removes the rings, frees it.
//! - Respond: the request handle carries the entry index and generation;
//!   the reply goes on that entry's reply ring only if the server's open
//!   slot has that generation, else [`ErrorKind::Disconnected`]. A respond
//!   never waits: a client that does not read its replies gets none
//!   ([`ErrorKind::WouldBlock`] to the server), it cannot stall the server.
//!
//! SYNC POINTs are marked in the code: the `state = connected` release
//! (ring names and generation visible to the server), the ready release of
//! a claim (start time visible), and the wake-up, which is the ring's
//! asymmetric Dekker pair (see [`super`]) with many notifiers: a client's
//! message store and light fence, then its load of `sleeping`; the server's
//! store of `sleeping`, heavy fence, load of `seq`, then its check of the
//! rings; a client that sees `sleeping` bumps `seq` and wakes. Only the
//! server clears `sleeping`.
//!
//! # Lifetime
//!
//! - The server removes the service object when it closes (drop): it marks
//!   it closed, unlinks the name and closes its ring ends, so connected
//!   clients get [`ErrorKind::Disconnected`] and new ones
//!   [`ErrorKind::NotFound`].
//! - A client removes its entry's rings when it closes, whatever the server
//!   did (see `close_rings`): the ring with the other end closed or dead is
//!   removed by the ring's own rule, one whose other end the server still
//!   holds is removed when the server closes that end.
//! - A server killed with `SIGKILL` leaves the service object; its clients
//!   see [`ErrorKind::Disconnected`] within about `LIVENESS_INTERVAL` (100 ms) plus
//!   a `/proc` read, and remove their rings when they close. A new server
//!   takes the object over, closes the rings of the dead server's clients
//!   that are still connected, and reaps the dead ones.
//! - A client killed with `SIGKILL` leaves its entry and rings; the server
//!   (within `LIVENESS_INTERVAL` (100 ms) while it receives, and when it closes)
//!   or the next client that takes the entry removes them.
//!
//! What `shmkit gc` must clean after crashes: a service object whose server
//! is dead (no live holder in the server line: none of the entries can be
//! served any more), and rings `shmkit.ring.reqrep.NAME.I.G.req|rep` whose
//! ends are both dead or closed, which remain when a client dies while no
//! server runs, or when both the server and a client die. A ring name is
//! parsed from the right (`.req`/`.rep`, then the generation and the
//! index), so service names may contain dots.
//!
//! # Limits
//!
//! - [`MAX_CLIENTS`] entries at most; [`Client::connect`] gives
//!   [`ErrorKind::WouldBlock`] while all are taken by live clients.
//! - A request or reply is at most the ring's largest message less the 8
//!   bytes of `seq` (see [`ServiceOptions::capacity`]).
//! - One request in flight per client (a [`Client`] is used through
//!   `&mut`); use one client per thread.
//! - A client that connects while a new server takes over may be
//!   disconnected at once; it should connect again.
//! - A hostile process that can write the object can deny service (make
//!   the server ignore a client, or clients give up on the server) but only
//!   causes errors here: every index, state and generation read from the
//!   object is checked or only used to build names, every loop is bounded.
//!   A server whose own line was overwritten says so
//!   ([`ErrorKind::Corrupt`] from every receive); it can be dropped and
//!   created again, which takes the service over afresh.
//! - A claim in progress (`owner` written, `ready` not yet: a few stores)
//!   counts as alive while a process with its pid exists. So a pid reused
//!   by another process in that window, or a live pid that a peer wrote
//!   into `owner`, keeps the entry taken until that process exits.

use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::ring::{self, Receiver, RingOptions, Sender};
use super::{LIVENESS_INTERVAL, SPIN, heavy_fence, light_fence, membarrier_ready};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::registry::{self, ObjectKind, ProcessId};
use crate::segment::{Lifetime, Segment, Target};
use crate::sync::primitive::{AtomicU32, Ordering};
use crate::sys::futex;

const VERSION: u32 = 1;

/// The server's claim line.
const SERVER: usize = 128;
/// The wake-up line.
const WAKE_SEQ: usize = 192;
const SLEEPING: usize = 196;
/// The client table.
const ENTRIES: usize = 256;
const ENTRY_SIZE: usize = 64;

/// Words of a claim line (server line and client entries).
const OWNER: usize = 0;
const READY: usize = 4;
const START_LO: usize = 8;
const START_HI: usize = 12;
const STATE: usize = 16;
const EPOCH: usize = 20;
/// Client entries only.
const GEN: usize = 24;

/// Server states.
const ACTIVE: u32 = 1;
const CLOSED: u32 = 2;
/// Entry states.
const FREE: u32 = 0;
const CONNECTED: u32 = 1;

/// The most clients a service can be made for.
pub const MAX_CLIENTS: usize = 1024;
const MAX_CAPACITY: usize = 1 << 30;
/// Bytes of the sequence number in front of every request and reply.
const SEQ: usize = 8;
/// The longest service name (ring names built from it must fit in 255 bytes).
const MAX_NAME: usize = 200;
/// How many times a claim retries its compare-and-swap before giving up on
/// a word that keeps changing.
const CLAIM_TRIES: usize = 8;

/// The POSIX name of the service called `name`.
pub fn object_name(name: &str) -> String {
    format!("/{}reqrep.{name}", registry::PREFIX)
}

/// The ring names (as given to [`ring`]) of entry `index`, generation `generation`.
fn ring_names(service: &str, index: usize, generation: u32) -> (String, String) {
    (format!("reqrep.{service}.{index}.{generation}.req"), format!("reqrep.{service}.{index}.{generation}.rep"))
}

/// Closes and removes what is left of an entry's rings, whoever left it.
/// Safe to call any number of times, by anyone: an end still held by a live
/// process is left alone (`Busy`), and that process removes the ring when it
/// closes its end.
///
/// - Request ring: take the consumer end (free, closed or dead) and close
///   it: removed if the producer is closed or dead, and a live producer
///   learns it is disconnected.
/// - Reply ring: take the producer end and close it (removed if the
///   consumer closed; a live consumer learns it is disconnected), then take
///   the consumer end if its holder died and close it (removed now that the
///   producer is closed).
fn close_rings(service: &str, index: usize, generation: u32) {
    let (req, rep) = ring_names(service, index, generation);
    drop(Receiver::open(&req));
    drop(Sender::open(&rep));
    drop(Receiver::open(&rep));
}

/// How to create a service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    max_clients: usize,
    capacity: usize,
    mode: u32,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions { max_clients: 64, capacity: 1 << 16, mode: 0o600 }
    }
}

impl ServiceOptions {
    /// 64 clients, rings of 64 KiB, mode 0600.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most clients connected at once, 1 to [`MAX_CLIENTS`].
    pub fn max_clients(&mut self, n: usize) -> &mut Self {
        self.max_clients = n;
        self
    }

    /// Bytes of each client's two rings: a power of two from 4096 to 2^30.
    /// The largest request or reply is half of it less 24 bytes.
    pub fn capacity(&mut self, bytes: usize) -> &mut Self {
        self.capacity = bytes;
        self
    }

    /// Permission bits of the service object and of the rings (default 0600).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    fn check(&self, label: &str) -> Result<()> {
        let why = if !(1..=MAX_CLIENTS).contains(&self.max_clients) {
            format!("a service has 1 to {MAX_CLIENTS} clients, not {}", self.max_clients)
        } else if !(4096..=MAX_CAPACITY).contains(&self.capacity) || !self.capacity.is_power_of_two() {
            format!("a service's ring capacity is a power of two from 4096 to 2^30 bytes, not {}", self.capacity)
        } else if self.mode > 0o777 {
            format!("mode {:o} has bits other than permissions", self.mode)
        } else {
            return Ok(());
        };
        Err(Error::invalid(Op::Create, label, why))
    }
}

/// Who holds a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Free,
    Alive(u32),
    Dead(u32),
}

/// What a claim attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Ours now; `true` if taken over from a dead holder.
    Won(bool),
    /// Held by this live process.
    Held(u32),
}

/// The mapped service object and its validated parameters.
#[derive(Debug)]
struct Service {
    seg: Segment,
    name: String,
    max_clients: usize,
    ring: RingOptions,
    /// The rings' largest message (the payload is 8 bytes less).
    ring_max: usize,
    membarrier: bool,
}

impl Service {
    /// Opens (or, with options, creates) the service object and validates
    /// its header.
    fn open(name: &str, create: Option<&ServiceOptions>) -> Result<Service> {
        let object = object_name(name);
        if name.is_empty() || name.len() > MAX_NAME || name.contains(['/', '\0']) {
            return Err(Error::invalid(
                Op::Open,
                format!("posix:{object}"),
                format!("a service name has 1 to {MAX_NAME} bytes, no '/' and no NUL"),
            ));
        }
        let target = Target::posix(&object)?;
        let seg = match create {
            Some(opts) => {
                opts.check(&target.to_string())?;
                let size = ENTRIES + ENTRY_SIZE * opts.max_clients;
                let created =
                    Segment::options().size(size).mode(opts.mode).lifetime(Lifetime::Persistent).create(&target);
                let mut seg = match created {
                    Err(e) if *e.kind() == ErrorKind::AlreadyExists => {
                        Segment::options().lifetime(Lifetime::Persistent).open(&target)?
                    }
                    other => other?,
                };
                if seg.created() {
                    let params = [opts.max_clients as u64, opts.capacity as u64, u64::from(opts.mode), 0, 0, 0, 0, 0];
                    registry::init(&mut seg, ObjectKind::ReqRep, VERSION, params, |_| Ok(()))?;
                }
                seg
            }
            None => Segment::options().lifetime(Lifetime::Persistent).open(&target)?,
        };
        let header = registry::open(&seg, ObjectKind::ReqRep, VERSION)?;
        let [max_clients, capacity, mode, ..] = header.params;
        let bad = |what: String| Error::new(Op::Open, seg.name(), ErrorKind::Corrupt(what));
        if !(1..=MAX_CLIENTS as u64).contains(&max_clients)
            || (ENTRIES + ENTRY_SIZE * max_clients as usize) as u64 != seg.len() as u64
        {
            return Err(bad(format!("{max_clients} clients do not fit an object of {} bytes", seg.len())));
        }
        if !(4096..=MAX_CAPACITY as u64).contains(&capacity) || !capacity.is_power_of_two() || mode > 0o777 {
            return Err(bad(format!("ring capacity {capacity}, mode {mode:o}")));
        }
        if let Some(opts) = create.filter(|o| o.max_clients as u64 != max_clients || o.capacity as u64 != capacity) {
            return Err(Error::invalid(
                Op::Open,
                seg.name(),
                format!(
                    "the service exists for {max_clients} clients with rings of {capacity} bytes, not {} and {}; \
                     remove it first (shmkit rm) if its server is gone",
                    opts.max_clients, opts.capacity
                ),
            ));
        }
        let mut ring = RingOptions::new();
        ring.capacity(capacity as usize).mode(mode as u32);
        Ok(Service {
            seg,
            name: name.to_string(),
            max_clients: max_clients as usize,
            ring,
            ring_max: capacity as usize / 2 - 16,
            membarrier: membarrier_ready(),
        })
    }

    fn label(&self) -> &str {
        self.seg.name()
    }

    fn err(&self, op: Op, kind: ErrorKind) -> Error {
        Error::new(op, self.label(), kind)
    }

    fn word(&self, offset: usize) -> Result<&AtomicU32> {
        self.seg.word32(offset)
    }

    /// The line of client entry `index` (below `max_clients`).
    fn entry(&self, index: usize) -> usize {
        ENTRIES + ENTRY_SIZE * index
    }

    /// Who holds the claim at `line`.
    fn holder(&self, line: usize) -> Result<Holder> {
        let owner = self.word(line + OWNER)?.load(Ordering::Acquire);
        if owner == 0 {
            return Ok(Holder::Free);
        }
        // SYNC POINT: acquire pairs with the claimant's release of `ready`,
        // after its start time.
        let ready = self.word(line + READY)?.load(Ordering::Acquire);
        let start = if ready == owner {
            let lo = self.word(line + START_LO)?.load(Ordering::Relaxed);
            let hi = self.word(line + START_HI)?.load(Ordering::Relaxed);
            u64::from(hi) << 32 | u64::from(lo)
        } else {
            // Claim in progress: its start time is not written yet.
            0
        };
        Ok(if (ProcessId { pid: owner, start }).is_alive() { Holder::Alive(owner) } else { Holder::Dead(owner) })
    }

    /// Tries to take the claim at `line` for `me`: free, or held by a dead
    /// process. On success the start time is written; the caller writes its
    /// fields, then calls [`finish_claim`](Self::finish_claim).
    fn try_claim(&self, line: usize, me: ProcessId) -> Result<Claim> {
        let owner = self.word(line + OWNER)?;
        for _ in 0..CLAIM_TRIES {
            let (current, took_over) = match self.holder(line)? {
                Holder::Free => (0, false),
                Holder::Dead(pid) => (pid, true),
                Holder::Alive(pid) => return Ok(Claim::Held(pid)),
            };
            if owner.compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.word(line + START_LO)?.store(me.start as u32, Ordering::Relaxed);
                self.word(line + START_HI)?.store((me.start >> 32) as u32, Ordering::Relaxed);
                return Ok(Claim::Won(took_over));
            }
        }
        // The word keeps changing under us: claimants racing, or a peer
        // scribbling. Count it as held.
        Ok(Claim::Held(owner.load(Ordering::Relaxed)))
    }

    fn finish_claim(&self, line: usize, me: ProcessId) -> Result<()> {
        // SYNC POINT: release publishes the start time (and the claimant's
        // other fields) to `holder`.
        self.word(line + READY)?.store(me.pid, Ordering::Release);
        Ok(())
    }

    fn release_claim(&self, line: usize) -> Result<()> {
        self.word(line + READY)?.store(0, Ordering::Release);
        self.word(line + OWNER)?.store(0, Ordering::Release);
        Ok(())
    }

    /// The epoch of the active, live server, or `Disconnected`.
    fn live_server(&self, op: Op) -> Result<u32> {
        let state = self.word(SERVER + STATE)?.load(Ordering::Acquire);
        if state == ACTIVE
            && let Holder::Alive(_) = self.holder(SERVER)?
        {
            return Ok(self.word(SERVER + EPOCH)?.load(Ordering::Acquire));
        }
        Err(self.err(op, ErrorKind::Disconnected))
    }

    /// Wakes the server if it sleeps. Call after sending a request.
    #[inline]
    fn notify(&self) -> Result<()> {
        // SYNC POINT: light half of the asymmetric fence: our message store
        // (in the ring) before our load of `sleeping`.
        light_fence(self.membarrier);
        if self.word(SLEEPING)?.load(Ordering::Relaxed) != 0 {
            let seq = self.word(WAKE_SEQ)?;
            seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(seq, 1);
        }
        Ok(())
    }
}

/// A request received by a [`Server`]: who sent it, to answer it with
/// [`Server::respond`].
#[derive(Debug, Clone)]
pub struct Request {
    client: usize,
    generation: u32,
    seq: u64,
    len: usize,
}

impl Request {
    /// The index of the client's entry in the service's table (a new client
    /// in the same entry is a different client: see [`generation`](Self::generation)).
    pub fn client(&self) -> usize {
        self.client
    }

    /// The generation of the client's entry.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The client's sequence number of this request.
    pub fn id(&self) -> u64 {
        self.seq
    }

    /// Bytes of the request's payload.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What the server knows of one client entry.
#[derive(Debug)]
enum Slot {
    /// Nothing open.
    Empty,
    /// Serving generation `generation` through these ring ends.
    Open { generation: u32, ends: Box<Ends> },
    /// Not serving generation `generation` (its rings failed, or it belongs to an
    /// earlier server): skipped until the entry changes.
    Ignored { generation: u32 },
}

/// The server's ends of one client's rings.
#[derive(Debug)]
struct Ends {
    req: Receiver,
    rep: Sender,
}

impl Slot {
    fn generation(&self) -> Option<u32> {
        match self {
            Slot::Empty => None,
            Slot::Open { generation, .. } | Slot::Ignored { generation } => Some(*generation),
        }
    }
}

/// The server of a service: receives requests from every client and
/// answers each to its sender.
#[derive(Debug)]
pub struct Server {
    svc: Service,
    me: ProcessId,
    epoch: u32,
    slots: Vec<Slot>,
    /// Where the next scan starts (round-robin).
    next: usize,
    last_reap: Instant,
    scratch: Vec<u8>,
}

impl Server {
    /// Creates the service `name` (or takes over the one a dead server
    /// left) and becomes its server.
    ///
    /// # Errors
    ///
    /// Bad options or name ([`ErrorKind::InvalidArgument`], also for an
    /// existing service made with other options), another live server
    /// ([`ErrorKind::Busy`]), a corrupt object, or the OS refuses.
    pub fn create(name: &str, options: &ServiceOptions) -> Result<Server> {
        let svc = Service::open(name, Some(options))?;
        let me = ProcessId::current();
        match svc.try_claim(SERVER, me)? {
            Claim::Held(pid) => return Err(svc.err(Op::Open, ErrorKind::Busy { pid })),
            Claim::Won(_) => {}
        }
        // Clients check `state`, then the holder, then read the epoch.
        svc.word(SERVER + STATE)?.store(0, Ordering::SeqCst);
        let epoch = svc.word(SERVER + EPOCH)?.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        svc.finish_claim(SERVER, me)?;
        // SYNC POINT: release: the claim and epoch before "active".
        svc.word(SERVER + STATE)?.store(ACTIVE, Ordering::Release);
        let slots = (0..svc.max_clients).map(|_| Slot::Empty).collect();
        let mut server = Server { svc, me, epoch, slots, next: 0, last_reap: Instant::now(), scratch: Vec::new() };
        // Clients a dead predecessor left: reap the dead ones now (the live
        // ones are disconnected by the first scan).
        server.reap()?;
        Ok(server)
    }

    /// The service object's name in `/dev/shm`.
    pub fn object_name(&self) -> &str {
        self.svc.label()
    }

    /// The most clients connected at once.
    pub fn max_clients(&self) -> usize {
        self.svc.max_clients
    }

    /// The largest request a client can send and the largest reply.
    pub fn max_message(&self) -> usize {
        self.svc.ring_max - SEQ
    }

    /// Clients being served: connected and seen by this server (a client is
    /// seen at the first scan after it connected).
    pub fn clients(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Open { .. })).count()
    }

    /// Fails if our claim on the service is no longer intact (a peer wrote
    /// over it): clients would not take us for the live server.
    fn check_claim(&self, op: Op) -> Result<()> {
        let word = |offset: usize| self.svc.word(SERVER + offset).map(|w| w.load(Ordering::Relaxed));
        let found = [word(OWNER)?, word(READY)?, word(START_LO)?, word(START_HI)?, word(STATE)?, word(EPOCH)?];
        let me = self.me;
        let expected = [me.pid, me.pid, me.start as u32, (me.start >> 32) as u32, ACTIVE, self.epoch];
        if found != expected {
            return Err(self.svc.err(
                op,
                ErrorKind::Corrupt(format!(
                    "the server line holds {found:?} (owner, ready, start, state, epoch), not this server's {expected:?}"
                )),
            ));
        }
        Ok(())
    }

    /// Closes our ends of slot `index` and cleans its rings up.
    fn close_slot(&mut self, index: usize) {
        if let Slot::Open { generation, ends } = std::mem::replace(&mut self.slots[index], Slot::Empty) {
            drop(ends);
            close_rings(&self.svc.name, index, generation);
        }
    }

    /// Starts serving generation `generation` of entry `index`.
    fn open_slot(&mut self, index: usize, generation: u32, epoch: u32) {
        let (req_name, rep_name) = ring_names(&self.svc.name, index, generation);
        if epoch == self.epoch {
            match (Receiver::open(&req_name), Sender::open(&rep_name)) {
                (Ok(req), Ok(rep)) if rep.max_message() == self.svc.ring_max => {
                    self.slots[index] = Slot::Open { generation, ends: Box::new(Ends { req, rep }) };
                    return;
                }
                (req, rep) => {
                    drop(req);
                    drop(rep);
                }
            }
        }
        // A client of an earlier server, or rings we cannot use: close them
        // (the client learns it is disconnected) and skip the entry until it
        // changes.
        close_rings(&self.svc.name, index, generation);
        self.slots[index] = Slot::Ignored { generation };
    }

    /// Frees entries whose holder died, with their rings.
    fn reap(&mut self) -> Result<()> {
        self.last_reap = Instant::now();
        for index in 0..self.svc.max_clients {
            let line = self.svc.entry(index);
            if !matches!(self.svc.holder(line)?, Holder::Dead(_)) {
                continue;
            }
            match self.svc.try_claim(line, self.me)? {
                Claim::Won(true) => {}
                Claim::Won(false) => {
                    // Freed meanwhile by its holder: give it back.
                    self.svc.release_claim(line)?;
                    continue;
                }
                Claim::Held(_) => continue,
            }
            self.svc.word(line + STATE)?.store(FREE, Ordering::SeqCst);
            let generation = self.svc.word(line + GEN)?.load(Ordering::Acquire);
            let served =
                self.slots[index].generation() == Some(generation) && matches!(self.slots[index], Slot::Open { .. });
            self.close_slot(index);
            if !served {
                close_rings(&self.svc.name, index, generation);
            }
            self.svc.release_claim(line)?;
        }
        Ok(())
    }

    /// One round-robin pass over the table: the first request found.
    fn scan(&mut self, buf: &mut Vec<u8>) -> Result<Option<Request>> {
        let n = self.svc.max_clients;
        for k in 0..n {
            let index = (self.next + k) % n;
            let line = self.svc.entry(index);
            // SYNC POINT: acquire pairs with the client's release of
            // `connected`: generation, epoch and rings are in place.
            let state = self.svc.word(line + STATE)?.load(Ordering::Acquire);
            if state != CONNECTED {
                if !matches!(self.slots[index], Slot::Empty) {
                    self.close_slot(index);
                    self.slots[index] = Slot::Empty;
                }
                continue;
            }
            let generation = self.svc.word(line + GEN)?.load(Ordering::Acquire);
            if self.slots[index].generation() != Some(generation) {
                let epoch = self.svc.word(line + EPOCH)?.load(Ordering::Acquire);
                self.close_slot(index);
                self.open_slot(index, generation, epoch);
            }
            let Slot::Open { ends, .. } = &mut self.slots[index] else { continue };
            match recv_request(&mut ends.req, buf) {
                Ok(seq) => {
                    self.next = (index + 1) % n;
                    return Ok(Some(Request { client: index, generation, seq, len: buf.len() }));
                }
                Err(e) if *e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    // Gone (disconnected) or misbehaving (corrupt): stop
                    // serving it; it sees "disconnected".
                    self.close_slot(index);
                    self.slots[index] = Slot::Ignored { generation };
                }
            }
        }
        Ok(None)
    }

    fn receive_with(&mut self, buf: &mut Vec<u8>, deadline: Option<Option<Instant>>) -> Result<Request> {
        loop {
            self.check_claim(Op::Recv)?;
            if self.last_reap.elapsed() >= LIVENESS_INTERVAL {
                self.reap()?;
            }
            if let Some(request) = self.scan(buf)? {
                return Ok(request);
            }
            let Some(deadline) = deadline else {
                return Err(self.svc.err(Op::Recv, ErrorKind::WouldBlock));
            };
            // Spin briefly: a client that sends at once is served without a
            // sleep.
            let spin_start = Instant::now();
            while spin_start.elapsed() < SPIN {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                if let Some(request) = self.scan(buf)? {
                    return Ok(request);
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.svc.err(Op::Recv, ErrorKind::Timeout));
            }
            let limit = left.map_or(LIVENESS_INTERVAL, |l| l.min(LIVENESS_INTERVAL));
            let sleeping = self.svc.word(SLEEPING)?;
            sleeping.store(1, Ordering::Relaxed);
            // SYNC POINT: heavy half of the asymmetric fence: `sleeping`
            // before the checks below; then `seq` before the final scan, so
            // a client that sends after the scan sees `sleeping` and bumps
            // `seq`, which ends the wait.
            heavy_fence(self.svc.membarrier);
            let seq = self.svc.word(WAKE_SEQ)?.load(Ordering::SeqCst);
            let found = self.scan(buf);
            if !matches!(found, Ok(None)) {
                self.svc.word(SLEEPING)?.store(0, Ordering::Relaxed);
                if let Some(request) = found? {
                    return Ok(request);
                }
            }
            futex::wait(self.svc.word(WAKE_SEQ)?, seq, Some(limit));
            self.svc.word(SLEEPING)?.store(0, Ordering::Relaxed);
        }
    }

    /// Waits for the next request from any client; its payload replaces the
    /// contents of `buf`. Clients are served round-robin.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`] if this server's claim on the service was
    /// overwritten. Faults of one client (it died, or sent garbage) are not
    /// errors here: that client is disconnected and the others are served.
    pub fn receive(&mut self, buf: &mut Vec<u8>) -> Result<Request> {
        self.receive_with(buf, Some(None))
    }

    /// [`receive`](Self::receive), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::Timeout`].
    pub fn receive_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Request> {
        self.receive_with(buf, Some(Instant::now().checked_add(timeout)))
    }

    /// [`receive`](Self::receive) without waiting.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::WouldBlock`].
    pub fn try_receive(&mut self, buf: &mut Vec<u8>) -> Result<Request> {
        self.receive_with(buf, None)
    }

    /// Waits for a request holding exactly one plain-data value.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive), plus [`ErrorKind::Corrupt`] for a
    /// request of another size (it is consumed, not answered).
    pub fn receive_value<T: Pod>(&mut self) -> Result<(Request, T)> {
        let mut buf = std::mem::take(&mut self.scratch);
        let result = self.receive(&mut buf).and_then(|request| match bytemuck::try_pod_read_unaligned(&buf) {
            Ok(value) => Ok((request, value)),
            Err(_) => Err(self.svc.err(
                Op::Recv,
                ErrorKind::Corrupt(format!(
                    "a request of {} bytes where a value of {} was expected",
                    buf.len(),
                    std::mem::size_of::<T>()
                )),
            )),
        });
        self.scratch = buf;
        result
    }

    /// Answers `request` with `reply`, to the client that sent it. Never
    /// waits.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] if that client closed, died or was
    /// replaced by another in its entry; [`ErrorKind::WouldBlock`] if its
    /// reply ring is full (it does not read its replies);
    /// [`ErrorKind::MessageTooLarge`].
    pub fn respond(&mut self, request: &Request, reply: &[u8]) -> Result<()> {
        let max = self.max_message();
        if reply.len() > max {
            return Err(self
                .svc
                .err(Op::Send, ErrorKind::MessageTooLarge { len: reply.len() as u64, max: max as u64 }));
        }
        let Some(Slot::Open { generation, ends }) = self.slots.get_mut(request.client) else {
            return Err(self.svc.err(Op::Send, ErrorKind::Disconnected));
        };
        if *generation != request.generation {
            return Err(self.svc.err(Op::Send, ErrorKind::Disconnected));
        }
        let result = ends.rep.try_loan(SEQ + reply.len()).and_then(|mut loan| {
            loan.write(0, &request.seq)?;
            loan.write_at(SEQ, reply)?;
            loan.commit();
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let kind = e.kind().clone();
                if !matches!(kind, ErrorKind::WouldBlock) {
                    let generation = *generation;
                    self.close_slot(request.client);
                    self.slots[request.client] = Slot::Ignored { generation };
                }
                Err(self.svc.err(Op::Send, kind))
            }
        }
    }

    /// Answers `request` with one plain-data value.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn respond_value<T: Pod>(&mut self, request: &Request, value: &T) -> Result<()> {
        self.respond(request, bytemuck::bytes_of(value))
    }
}

/// Takes one request off a client's ring into `buf`; returns its sequence
/// number.
fn recv_request(req: &mut Receiver, buf: &mut Vec<u8>) -> Result<u64> {
    let message = req.try_recv_ref()?;
    if message.len() < SEQ {
        let len = message.len();
        drop(message);
        return Err(Error::new(
            Op::Recv,
            "request",
            ErrorKind::Corrupt(format!("a request of {len} bytes, without a sequence number")),
        ));
    }
    let seq = message.read::<u64>(0)?;
    buf.clear();
    buf.resize(message.len() - SEQ, 0);
    message.read_at(SEQ, buf)?;
    Ok(seq)
}

impl Drop for Server {
    fn drop(&mut self) {
        let ours = self.check_claim(Op::Remove).is_ok();
        if ours {
            // Clients see "closed" at their next request or liveness check.
            if let Ok(state) = self.svc.word(SERVER + STATE) {
                state.store(CLOSED, Ordering::SeqCst);
            }
            // Fails only if someone removed it already.
            let _ = self.svc.seg.remove();
        }
        // Rings of clients that died and were not reaped yet.
        let _ = self.reap();
        for index in 0..self.slots.len() {
            self.close_slot(index);
        }
        if ours {
            let _ = self.svc.release_claim(SERVER);
        }
    }
}

/// A client of a service: sends requests and waits for their replies.
#[derive(Debug)]
pub struct Client {
    svc: Service,
    me: ProcessId,
    index: usize,
    generation: u32,
    epoch: u32,
    /// `Some` until dropped (the ends are closed before the entry is freed).
    req: Option<Sender>,
    rep: Option<Receiver>,
    seq: u64,
    /// Set once the server is gone or the reply ring is corrupt: every
    /// later request reports it again.
    broken: Option<ErrorKind>,
    scratch: Vec<u8>,
}

impl Client {
    /// Connects to the service `name`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is no such service,
    /// [`ErrorKind::Disconnected`] if its server closed or died,
    /// [`ErrorKind::WouldBlock`] if all its client entries are taken by
    /// live clients, [`ErrorKind::Corrupt`] for a corrupt object, or the OS
    /// refuses (creating the rings).
    pub fn connect(name: &str) -> Result<Client> {
        let svc = Service::open(name, None)?;
        let me = ProcessId::current();
        let epoch = svc.live_server(Op::Open)?;
        for index in 0..svc.max_clients {
            let line = svc.entry(index);
            let took_over = match svc.try_claim(line, me)? {
                Claim::Held(_) => continue,
                Claim::Won(took_over) => took_over,
            };
            // The entry is ours: the server must not use the old holder's
            // rings under our claim.
            svc.word(line + STATE)?.store(FREE, Ordering::SeqCst);
            let old = svc.word(line + GEN)?.load(Ordering::Acquire);
            let generation = match old.wrapping_add(1) {
                0 => 1,
                g => g,
            };
            svc.word(line + GEN)?.store(generation, Ordering::Relaxed);
            svc.word(line + EPOCH)?.store(epoch, Ordering::Relaxed);
            svc.finish_claim(line, me)?;
            if took_over {
                // What the dead holder left (after `ready`, to keep the
                // claim-in-progress window short).
                close_rings(&svc.name, index, old);
            }
            let mut client = Client {
                svc,
                me,
                index,
                generation,
                epoch,
                req: None,
                rep: None,
                seq: 0,
                broken: None,
                scratch: Vec::new(),
            };
            // From here on, dropping `client` cleans up.
            client.open_rings()?;
            // SYNC POINT: release: generation, epoch and rings before
            // "connected" (acquired by the server's scan).
            client.svc.word(line + STATE)?.store(CONNECTED, Ordering::Release);
            // The server may have gone while we set up.
            if client.svc.live_server(Op::Open)? != epoch {
                return Err(client.svc.err(Op::Open, ErrorKind::Disconnected));
            }
            return Ok(client);
        }
        Err(svc.err(Op::Open, ErrorKind::WouldBlock))
    }

    fn open_rings(&mut self) -> Result<()> {
        let (req, rep) = ring_names(&self.svc.name, self.index, self.generation);
        // Leftovers under these names (a generation counter that wrapped or
        // was scribbled over) would mix old messages in.
        for name in [&req, &rep] {
            if let Ok(target) = Target::posix(&ring::object_name(name)) {
                let _ = crate::segment::remove(&target);
            }
        }
        self.req = Some(Sender::open_or_create(&req, &self.svc.ring)?);
        self.rep = Some(Receiver::open_or_create(&rep, &self.svc.ring)?);
        Ok(())
    }

    /// The index of this client's entry in the service's table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The largest request (and reply).
    pub fn max_message(&self) -> usize {
        self.svc.ring_max - SEQ
    }

    fn fail(&mut self, op: Op, kind: ErrorKind) -> Error {
        if matches!(kind, ErrorKind::Disconnected | ErrorKind::Corrupt(_)) {
            self.broken = Some(kind.clone());
        }
        self.svc.err(op, kind)
    }

    /// Whether the server we connected to is still there; cheap (no `/proc`).
    fn server_active(&self) -> Result<bool> {
        Ok(self.svc.word(SERVER + STATE)?.load(Ordering::Acquire) == ACTIVE
            && self.svc.word(SERVER + EPOCH)?.load(Ordering::Acquire) == self.epoch)
    }

    /// Whether the server we connected to is still there and alive.
    fn server_alive(&self) -> Result<bool> {
        Ok(self.server_active()? && matches!(self.svc.holder(SERVER)?, Holder::Alive(_)))
    }

    fn request_with(&mut self, data: &[u8], reply: &mut Vec<u8>, deadline: Option<Instant>) -> Result<usize> {
        if let Some(kind) = &self.broken {
            return Err(self.svc.err(Op::Send, kind.clone()));
        }
        if !self.server_active()? {
            return Err(self.fail(Op::Send, ErrorKind::Disconnected));
        }
        let max = self.max_message();
        if data.len() > max {
            return Err(self.svc.err(Op::Send, ErrorKind::MessageTooLarge { len: data.len() as u64, max: max as u64 }));
        }
        self.seq += 1;
        self.send(data, deadline)?;
        self.svc.notify()?;
        self.wait_reply(reply, deadline)
    }

    /// Sends `[seq][data]`: in place if there is room, else waiting in
    /// slices, checking the server between them.
    fn send(&mut self, data: &[u8], deadline: Option<Instant>) -> Result<()> {
        let Some(req) = self.req.as_mut() else { return Err(self.svc.err(Op::Send, ErrorKind::Disconnected)) };
        let seq = self.seq;
        let first = req.try_loan(SEQ + data.len()).and_then(|mut loan| {
            loan.write(0, &seq)?;
            loan.write_at(SEQ, data)?;
            loan.commit();
            Ok(())
        });
        let mut result = first;
        if matches!(&result, Err(e) if *e.kind() == ErrorKind::WouldBlock) {
            let mut message = std::mem::take(&mut self.scratch);
            message.clear();
            message.extend_from_slice(&seq.to_ne_bytes());
            message.extend_from_slice(data);
            loop {
                let slice = slice_until(deadline);
                let Some(req) = self.req.as_mut() else { break };
                result = req.send_timeout(&message, slice);
                match &result {
                    Err(e) if *e.kind() == ErrorKind::Timeout => {
                        if !self.server_alive()? {
                            result = Err(self.svc.err(Op::Send, ErrorKind::Disconnected));
                            break;
                        }
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            self.scratch = message;
        }
        result.map_err(|e| self.fail(Op::Send, e.kind().clone()))
    }

    fn wait_reply(&mut self, reply: &mut Vec<u8>, deadline: Option<Instant>) -> Result<usize> {
        loop {
            let slice = slice_until(deadline);
            let Some(rep) = self.rep.as_mut() else { return Err(self.svc.err(Op::Recv, ErrorKind::Disconnected)) };
            match rep.recv_timeout(reply, slice) {
                Ok(n) if n >= SEQ => {
                    let seq = u64::from_ne_bytes(reply[..SEQ].try_into().unwrap_or([0; SEQ]));
                    if seq == self.seq {
                        reply.copy_within(SEQ.., 0);
                        reply.truncate(n - SEQ);
                        return Ok(n - SEQ);
                    }
                    if seq > self.seq {
                        let what = format!("a reply to request {seq}; the last one sent was {}", self.seq);
                        return Err(self.fail(Op::Recv, ErrorKind::Corrupt(what)));
                    }
                    // The late reply to a request that timed out: drop it.
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(self.svc.err(Op::Recv, ErrorKind::Timeout));
                    }
                }
                Ok(n) => {
                    let what = format!("a reply of {n} bytes, without a sequence number");
                    return Err(self.fail(Op::Recv, ErrorKind::Corrupt(what)));
                }
                Err(e) if *e.kind() == ErrorKind::Timeout => {
                    if !self.server_alive()? {
                        return Err(self.fail(Op::Recv, ErrorKind::Disconnected));
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(self.svc.err(Op::Recv, ErrorKind::Timeout));
                    }
                }
                Err(e) => return Err(self.fail(Op::Recv, e.kind().clone())),
            }
        }
    }

    /// Sends `request` and waits for its reply, which replaces the contents
    /// of `reply`; returns the reply's length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`] if the server closed or died (within
    /// about `LIVENESS_INTERVAL` (100 ms) of its death) or dropped this client;
    /// [`ErrorKind::MessageTooLarge`]; [`ErrorKind::Corrupt`] if the reply
    /// ring does not hold valid replies. After `Disconnected` or `Corrupt`
    /// every request fails the same way: connect again.
    pub fn request(&mut self, request: &[u8], reply: &mut Vec<u8>) -> Result<usize> {
        self.request_with(request, reply, None)
    }

    /// [`request`](Self::request), waiting at most `timeout` in all. A reply
    /// that comes after the timeout is dropped by the next request.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), plus [`ErrorKind::Timeout`] (the
    /// client stays usable).
    pub fn request_timeout(&mut self, request: &[u8], reply: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now().checked_add(timeout);
        self.request_with(request, reply, deadline)
    }

    /// Sends one plain-data value and waits for one in reply.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), plus [`ErrorKind::Corrupt`] for a
    /// reply of another size.
    pub fn request_value<Q: Pod, R: Pod>(&mut self, request: &Q) -> Result<R> {
        let mut reply = Vec::new();
        self.request(bytemuck::bytes_of(request), &mut reply)?;
        bytemuck::try_pod_read_unaligned(&reply).map_err(|_| {
            self.svc.err(
                Op::Recv,
                ErrorKind::Corrupt(format!(
                    "a reply of {} bytes where a value of {} was expected",
                    reply.len(),
                    std::mem::size_of::<R>()
                )),
            )
        })
    }
}

/// How long to wait next: until `deadline`, at most `LIVENESS_INTERVAL` (100 ms).
fn slice_until(deadline: Option<Instant>) -> Duration {
    deadline.map_or(LIVENESS_INTERVAL, |d| d.saturating_duration_since(Instant::now()).min(LIVENESS_INTERVAL))
}

impl Drop for Client {
    fn drop(&mut self) {
        // Our ends first, then whatever the server never opened.
        drop(self.req.take());
        drop(self.rep.take());
        close_rings(&self.svc.name, self.index, self.generation);
        let line = self.svc.entry(self.index);
        let ours = self.svc.word(line + OWNER).is_ok_and(|w| w.load(Ordering::Acquire) == self.me.pid)
            && self.svc.word(line + GEN).is_ok_and(|w| w.load(Ordering::Acquire) == self.generation);
        if ours {
            if let Ok(state) = self.svc.word(line + STATE) {
                state.store(FREE, Ordering::SeqCst);
            }
            let _ = self.svc.release_claim(line);
            // Let a sleeping server notice soon.
            let _ = self.svc.notify();
        }
    }
}

/// Fills in what `shmkit info` and `ls` show about a service: the server
/// and the connected clients with their liveness. Reads only, by copy; the
/// values are reported as found (a hostile peer can make them lie, not crash
/// us).
pub(crate) fn inspect(
    seg: &Segment,
    header: &crate::registry::ObjectHeader,
    info: &mut crate::registry::ObjectInfo,
) -> Result<()> {
    let holder = |role: &'static str, line: usize| -> Result<Option<crate::registry::Holder>> {
        let pid = seg.read::<u32>(line + OWNER)?;
        let start = u64::from(seg.read::<u32>(line + START_LO)?) | u64::from(seg.read::<u32>(line + START_HI)?) << 32;
        if pid == 0 {
            return Ok(None);
        }
        let process = crate::registry::ProcessId { pid, start };
        Ok(Some(crate::registry::Holder { role, process, alive: process.is_alive() }))
    };
    let server_state = seg.read::<u32>(SERVER + STATE)?;
    if server_state == ACTIVE {
        info.holders.extend(holder("server", SERVER)?);
    }
    let max = usize::try_from(header.params[0]).unwrap_or(0).min(MAX_CLIENTS);
    let mut connected = 0;
    for i in 0..max {
        let line = ENTRIES + ENTRY_SIZE * i;
        if line + ENTRY_SIZE > seg.len() {
            break;
        }
        if let Some(h) = holder("client", line)? {
            connected += 1;
            info.holders.push(h);
        }
    }
    let state = match server_state {
        ACTIVE => "active",
        CLOSED => "closed",
        _ => "none",
    };
    info.details.push(("server", state.to_string()));
    info.details.push(("clients", format!("{connected} of {max}")));
    info.details.push(("ring capacity", header.params[1].to_string()));
    Ok(())
}
