//! A hostile peer: arbitrary bytes in shared memory give data or an error,
//! never a panic, an out-of-bounds access or an endless loop.
//!
//! - Properties (proptest): a peer rewrites an object's header, or patches
//!   a live ring, pub/sub service or request/response service (its object
//!   and the client's rings); the readers then get data within the limits
//!   or an error of an expected kind, in a bounded number of steps, and
//!   "corrupt" stays. Without patches they get exactly what was sent. The
//!   cases and checks are in [`drive`], shared with the cargo-fuzz targets
//!   in `fuzz/`. Each case runs under a watchdog that aborts the process
//!   (with the case) if it takes more than [`CASE_LIMIT`].
//! - Threaded: a thread flips random bytes anywhere in a live ring or
//!   service while this one sends and receives (500 rounds in debug
//!   builds, 2,000 in release builds).
//! - The fuzz targets' input decoding on random bytes, and the inputs the
//!   fuzzer once failed on, replayed.
//! - What was found, kept as regression tests (each panicked in debug
//!   builds or used a misaligned atomic before its fix).
//!
//! Cases per property: 10,000 in release builds, 1,000 in debug builds
//! (`SHMKIT_HOSTILE_CASES`, or proptest's own `PROPTEST_CASES`, overrides
//! both).

pub mod drive;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::Config;
use shmkit::channel::pubsub::{self, Policy, PubSubOptions, Publisher, Subscriber};
use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};
use shmkit::{ErrorKind, Lifetime, Segment, Target};

use self::drive::{HeaderCase, Outcome, Patch, Place, PubSubCase, ReqRepCase, RingCase, Value};
use crate::util;

/// Child roles of this module; `None` if `role` is not one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let _ = (role, args);
    None
}

/// The longest one case (or one round of the threaded tests) may take.
const CASE_LIMIT: Duration = Duration::from_secs(15);

fn cases() -> u32 {
    std::env::var("SHMKIT_HOSTILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    })
}

fn config() -> Config {
    // No regression files next to the sources: a failure prints its
    // smallest case, which goes into a test of its own.
    Config { cases: cases(), failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------- watchdog

/// Cases running now: (id, started, what).
static RUNNING: Mutex<Vec<(u64, Instant, String)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Watches one case from creation to drop: if it runs longer than
/// [`CASE_LIMIT`], the watchdog thread prints it and aborts the process, so
/// an endless loop fails the suite instead of hanging it.
struct Watch(u64);

fn watch(what: impl FnOnce() -> String) -> Watch {
    static THREAD: OnceLock<()> = OnceLock::new();
    THREAD.get_or_init(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, started, what)) = running.iter().find(|(_, at, _)| at.elapsed() > CASE_LIMIT) {
                    eprintln!(
                        "watchdog: a hostile case has run for {:?} (limit {CASE_LIMIT:?}); aborting. The case: {what}",
                        started.elapsed()
                    );
                    std::process::abort();
                }
            }
        });
    });
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push((id, Instant::now(), what()));
    Watch(id)
}

impl Drop for Watch {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, _, _)| *id != self.0);
    }
}

// ---------------------------------------------------------------- strategies

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (any::<u8>(), -4i8..=4).prop_map(|(anchor, delta)| Value::Near { anchor, delta }),
        1 => any::<u64>().prop_map(Value::Lit),
    ]
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        6 => (any::<u8>(), -16i16..=16).prop_map(|(anchor, delta)| Place::Near { anchor, delta }),
        1 => any::<u32>().prop_map(Place::Anywhere),
    ]
}

/// Which kind-specific patches a strategy may produce.
#[derive(Clone, Copy)]
enum Special {
    Ring,
    PubSub,
}

fn patch(special: Special) -> BoxedStrategy<Patch> {
    let word = (place(), any::<u8>(), value()).prop_map(|(place, width, value)| Patch::Word { place, width, value });
    let bytes = (place(), vec(any::<u8>(), 1..24)).prop_map(|(place, bytes)| Patch::Bytes { place, bytes });
    match special {
        Special::Ring => prop_oneof![
            3 => word,
            1 => bytes,
            2 => (-4i16..=64, value(), any::<bool>())
                .prop_map(|(rel, len, from_head)| Patch::Stamped { rel, len, from_head }),
        ]
        .boxed(),
        Special::PubSub => prop_oneof![
            3 => word,
            1 => bytes,
            2 => (-4i8..=8, any::<u8>(), value()).prop_map(|(rel, form, len)| Patch::Slot { rel, form, len }),
        ]
        .boxed(),
    }
}

/// Headers: the real one with fields set to interesting values (mostly),
/// or arbitrary bytes; a few single-byte flips.
fn header_case() -> impl Strategy<Value = HeaderCase> {
    (
        0..3u8,
        any::<u8>(),
        option::weighted(0.1, vec(any::<u8>(), 192)),
        vec((any::<u8>(), value()), 0..6),
        vec((any::<u8>(), any::<u8>()), 0..3),
    )
        .prop_map(|(kind, extra, base, edits, flips)| HeaderCase { kind, extra, base, edits, flips })
}

fn ring_case() -> impl Strategy<Value = RingCase> {
    let len = prop_oneof![3 => 0u16..64, 1 => any::<u16>()];
    (vec(len, 0..40), any::<u8>(), vec(patch(Special::Ring), 0..8), any::<bool>())
        .prop_map(|(sends, received, patches, in_place)| RingCase { sends, received, patches, in_place })
}

fn pubsub_case() -> impl Strategy<Value = PubSubCase> {
    (any::<bool>(), 0..3u8, any::<bool>(), 0..32u8, 0..32u8, vec(patch(Special::PubSub), 0..8), any::<bool>()).prop_map(
        |(overwrite, slots_log2, big, published, received, patches, in_place)| PubSubCase {
            overwrite,
            slots_log2,
            big,
            published,
            received,
            patches,
            in_place,
        },
    )
}

fn reqrep_case() -> impl Strategy<Value = ReqRepCase> {
    (0..4u8, vec((0..3u8, patch(Special::Ring)), 0..6)).prop_map(|(before, patches)| ReqRepCase { before, patches })
}

// ---------------------------------------------------------------- properties

/// What the readers got over all cases of a property.
#[derive(Default)]
struct Totals(Mutex<(u64, Outcome)>);

impl Totals {
    fn add(&self, outcome: &Outcome) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.0 += 1;
        t.1.add(outcome);
    }

    fn report(&self, what: &str, started: Instant) -> Outcome {
        let (cases, o) = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "hostile {what}: {cases} cases in {:.1?}: {} data, {} corrupt, {} other errors, {} opened, {} refused; no panic, no hang",
            started.elapsed(),
            o.data,
            o.corrupt,
            o.other,
            o.opened,
            o.refused
        );
        o
    }
}

static HEADER: OnceLock<Totals> = OnceLock::new();
static RING: OnceLock<Totals> = OnceLock::new();
static PUBSUB: OnceLock<Totals> = OnceLock::new();
static REQREP: OnceLock<Totals> = OnceLock::new();

proptest! {
    #![proptest_config(config())]

    fn header_property(case in header_case()) {
        let _watch = watch(|| format!("header {case:?}"));
        let outcome = drive::header(&util::unique_name("hdr"), &case);
        HEADER.get_or_init(Totals::default).add(&outcome);
    }

    fn ring_property(case in ring_case()) {
        let _watch = watch(|| format!("ring {case:?}"));
        let outcome = drive::ring(&util::unique_name("ring"), &case);
        RING.get_or_init(Totals::default).add(&outcome);
    }

    fn pubsub_property(case in pubsub_case()) {
        let _watch = watch(|| format!("pubsub {case:?}"));
        let outcome = drive::pubsub(&util::unique_name("ps"), &case);
        PUBSUB.get_or_init(Totals::default).add(&outcome);
    }

    fn reqrep_property(case in reqrep_case()) {
        let _watch = watch(|| format!("reqrep {case:?}"));
        let outcome = drive::reqrep(&util::unique_name("rr"), &case);
        REQREP.get_or_init(Totals::default).add(&outcome);
    }
}

#[test]
fn a_rewritten_header_opens_as_an_endpoint_or_gives_an_error() {
    let started = Instant::now();
    header_property();
    let o = HEADER.get_or_init(Totals::default).report("headers", started);
    // Both sides were reached: headers that still open, headers refused.
    assert!(o.opened > 0 && o.refused > 0);
}

#[test]
fn a_patched_ring_gives_its_consumer_data_or_errors_and_corrupt_stays() {
    let started = Instant::now();
    ring_property();
    let o = RING.get_or_init(Totals::default).report("ring", started);
    assert!(o.data > 0 && o.corrupt > 0);
}

#[test]
fn a_patched_pubsub_service_gives_its_subscribers_data_or_errors() {
    let started = Instant::now();
    pubsub_property();
    let o = PUBSUB.get_or_init(Totals::default).report("pub/sub", started);
    assert!(o.data > 0 && o.corrupt > 0);
}

#[test]
fn a_patched_reqrep_service_gives_its_client_and_server_data_or_errors() {
    let started = Instant::now();
    reqrep_property();
    let o = REQREP.get_or_init(Totals::default).report("request/response", started);
    assert!(o.data > 0 && o.corrupt > 0 && o.other > 0);
}

// ---------------------------------------------------------------- threaded

/// A xorshift generator (a seed per round, printed on failure through the
/// watch).
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Until `stop`, writes random bytes into the object: anywhere (a quarter
/// of them in the first KiB, where the indices and ends live, a quarter
/// within 16 bytes after `hot(object)`, where the reader looks next), one
/// byte, a random word, or a word of all ones or zeros.
fn flip(object: &str, seed: u64, stop: &AtomicBool, flipped: &AtomicU64, hot: fn(&Segment) -> u64) -> u64 {
    let target = Target::posix(object).unwrap();
    let mut seg = Segment::options().lifetime(Lifetime::Persistent).open(&target).unwrap();
    let mut rand = rng(seed);
    let len = seg.len() as u64;
    let mut flips = 0;
    while !stop.load(Ordering::Relaxed) {
        let at = match rand() % 4 {
            0 => rand() % 1024.min(len),
            1 => (hot(&seg) + rand() % 16) % len,
            _ => rand() % len,
        } as usize;
        let r = rand();
        match r % 4 {
            0 => seg.write_at(at, &[r as u8 >> 2]).unwrap(),
            1 => seg.write_at(at & !7, &rand().to_ne_bytes()[..8.min(seg.len() - (at & !7))]).unwrap(),
            2 => seg.write_at(at & !7, &[0xff; 8][..8.min(seg.len() - (at & !7))]).unwrap(),
            _ => seg.write_at(at & !7, &[0; 8][..8.min(seg.len() - (at & !7))]).unwrap(),
        }
        flips += 1;
        flipped.store(flips, Ordering::Relaxed);
        // Let the reader run between flips (two cores are shared).
        for _ in 0..(r >> 40) % 64 {
            std::hint::spin_loop();
        }
        if flips % 16 == 0 {
            std::thread::yield_now();
        }
    }
    flips
}

/// A ring's hot spot: the message header at the consumer's published
/// position (`head` at 256, data from 1024, 4096 bytes).
fn ring_hot(seg: &Segment) -> u64 {
    1024 + seg.read::<u64>(256).unwrap() % 4096
}

/// A service's hot spot: the slot of the last sample published
/// (`published` at 256; 8 slots of 64 bytes after a table of 2 lines from
/// 512).
fn pubsub_hot(seg: &Segment) -> u64 {
    640 + seg.read::<u64>(256).unwrap().wrapping_sub(1) % 8 * 64
}

fn rounds() -> u64 {
    if cfg!(debug_assertions) { 500 } else { 2_000 }
}

/// Steps of the reader per round: at least [`STEPS`] and until the peer
/// has flipped [`FLIPS`] times (at most [`MAX_STEPS`]); a round ends early
/// at "corrupt".
const STEPS: usize = 2_000;
const FLIPS: u64 = 64;
const MAX_STEPS: usize = 200_000;

#[test]
fn a_peer_flipping_bytes_while_a_ring_is_used_gets_errors_not_crashes() {
    let started = Instant::now();
    let (mut data, mut corrupt, mut other, mut flips) = (0u64, 0u64, 0u64, 0u64);
    for round in 0..rounds() {
        let seed = u64::from(std::process::id()) << 32 | round;
        let _watch = watch(|| format!("flipping ring, round {round}, seed {seed:#x}"));
        let name = util::unique_name("flip-ring");
        let object = ring::object_name(&name);
        let _guard = util::Remove(Target::posix(&object).unwrap());
        let mut tx = Sender::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
        let mut rx = Receiver::open(&name).unwrap();
        let max = rx.max_message();
        let stop = AtomicBool::new(false);
        let flipped = AtomicU64::new(0);
        std::thread::scope(|s| {
            let flipper = s.spawn(|| flip(&object, seed, &stop, &flipped, ring_hot));
            let mut rand = rng(seed ^ 0x5555);
            let mut buf = Vec::new();
            let mut broken = false;
            for step in 0..MAX_STEPS {
                if step >= STEPS {
                    if flipped.load(Ordering::Relaxed) >= FLIPS {
                        break;
                    }
                    // Let the peer run (the cores are shared).
                    std::thread::yield_now();
                }
                let len = (rand() % 200) as usize;
                match tx.try_send(&vec![7; len]) {
                    Err(e) if matches!(e.kind(), ErrorKind::Corrupt(_)) => corrupt += 1,
                    _ => {}
                }
                let result = if rand().is_multiple_of(2) {
                    rx.try_recv(&mut buf)
                } else {
                    rx.try_recv_ref().map(|m| {
                        m.copy_to(&mut buf);
                        m.len()
                    })
                };
                match result {
                    Ok(n) => {
                        assert!(n <= max && buf.len() == n, "a message of {n} bytes, the largest is {max}");
                        data += 1;
                    }
                    Err(e) => match e.kind() {
                        ErrorKind::Corrupt(_) => {
                            corrupt += 1;
                            broken = true;
                            break;
                        }
                        ErrorKind::WouldBlock | ErrorKind::Disconnected => other += 1,
                        kind => panic!("try_recv gave {kind:?}: {e}"),
                    },
                }
            }
            if broken {
                let e = rx.try_recv(&mut buf).expect_err("a corrupt ring delivered data");
                assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "after corrupt, {e}");
            }
            stop.store(true, Ordering::Relaxed);
            flips += flipper.join().unwrap();
        });
    }
    eprintln!(
        "flipping ring: {} rounds, {flips} flips, {data} messages, {corrupt} corrupt, {other} other errors in {:.1?}; no panic, no hang",
        rounds(),
        started.elapsed()
    );
    assert!(data > 0 && corrupt > 0);
}

#[test]
fn a_peer_flipping_bytes_while_a_pubsub_service_is_used_gets_errors_not_crashes() {
    let started = Instant::now();
    let (mut data, mut corrupt, mut other, mut flips) = (0u64, 0u64, 0u64, 0u64);
    for round in 0..rounds() {
        let seed = u64::from(std::process::id()) << 32 | round;
        let _watch = watch(|| format!("flipping pub/sub, round {round}, seed {seed:#x}"));
        let name = util::unique_name("flip-ps");
        let object = pubsub::object_name(&name);
        let _guard = util::Remove(Target::posix(&object).unwrap());
        let max = 40;
        let mut options = PubSubOptions::new();
        options.slots(8).max_sample(max).max_subscribers(2);
        if round % 2 == 1 {
            options.policy(Policy::OverwriteOldest);
        }
        let mut publisher = Publisher::open_or_create(&name, &options).unwrap();
        let mut sub = Subscriber::open(&name).unwrap();
        let stop = AtomicBool::new(false);
        let flipped = AtomicU64::new(0);
        std::thread::scope(|s| {
            let flipper = s.spawn(|| flip(&object, seed, &stop, &flipped, pubsub_hot));
            let mut rand = rng(seed ^ 0x5555);
            let mut buf = Vec::new();
            let mut broken = false;
            for step in 0..MAX_STEPS {
                if step >= STEPS {
                    if flipped.load(Ordering::Relaxed) >= FLIPS {
                        break;
                    }
                    // Let the peer run (the cores are shared).
                    std::thread::yield_now();
                }
                let len = (rand() % (max as u64 + 1)) as usize;
                match publisher.try_publish(&vec![9; len]) {
                    Err(e) if matches!(e.kind(), ErrorKind::Corrupt(_)) => corrupt += 1,
                    _ => {}
                }
                let result = if rand().is_multiple_of(2) {
                    sub.try_receive_into(&mut buf).map(|_| buf.len())
                } else {
                    sub.try_receive().map(|sample| {
                        assert!(sample.len() <= max, "a sample of {} bytes in slots of {max}", sample.len());
                        let _ = sample.copy_to(&mut buf);
                        sample.len()
                    })
                };
                match result {
                    Ok(n) => {
                        assert!(n <= max && buf.len() == n, "a sample of {n} bytes in slots of {max}");
                        data += 1;
                    }
                    Err(e) => match e.kind() {
                        ErrorKind::Corrupt(_) => {
                            corrupt += 1;
                            broken = true;
                            break;
                        }
                        ErrorKind::WouldBlock | ErrorKind::Disconnected => other += 1,
                        kind => panic!("try_receive gave {kind:?}: {e}"),
                    },
                }
            }
            if broken {
                let e = sub.try_receive_into(&mut buf).expect_err("a corrupt service delivered data");
                assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "after corrupt, {e}");
            }
            stop.store(true, Ordering::Relaxed);
            flips += flipper.join().unwrap();
        });
    }
    eprintln!(
        "flipping pub/sub: {} rounds, {flips} flips, {data} samples, {corrupt} corrupt, {other} other errors in {:.1?}; no panic, no hang",
        rounds(),
        started.elapsed()
    );
    assert!(data > 0 && corrupt > 0);
}

// ---------------------------------------------------------------- found

/// A sender blocked on a full ring keeps re-reading the consumer's `head`
/// while it spins and before it sleeps (`reserve_slow`'s closures in
/// ring.rs). It used to compute `tail + total - head` without the check
/// that `has_room` makes, so a peer storing a `head` beyond `tail` made the
/// subtraction overflow (a panic in debug builds). Fixed: the closures
/// compute it checked and let `has_room` report the corruption.
#[test]
fn a_blocked_sender_gets_an_error_when_a_peer_moves_head_past_tail() {
    let name = util::unique_name("head-past-tail");
    let object = ring::object_name(&name);
    let _guard = util::Remove(Target::posix(&object).unwrap());
    let _watch = watch(|| "a blocked sender, head moved past tail".into());
    let mut tx = Sender::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
    let _rx = Receiver::open(&name).unwrap();
    while tx.try_send(&[1; 100]).is_ok() {}
    // Spin (re-reading head) for long enough that the peer's store lands
    // while we spin.
    tx.set_spin(Duration::from_secs(2));
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            let target = Target::posix(&object).unwrap();
            let mut seg = Segment::options().lifetime(Lifetime::Persistent).open(&target).unwrap();
            seg.write(256, &u64::MAX).unwrap();
        });
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.send_timeout(&[2; 100], Duration::from_secs(3))))
    });
    let result = result.expect("send_timeout panicked on a head beyond tail");
    let e = result.expect_err("a send into a full ring with a corrupt head succeeded");
    assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "{e}");
}

// ---------------------------------------------------------------- fuzz inputs

proptest! {
    #![proptest_config(Config { cases: cases() / 10, ..config() })]

    /// The fuzz targets' input decoding, run here on random bytes: what
    /// `cargo fuzz` feeds them runs the same checks.
    #[test]
    fn fuzz_inputs_decode_into_cases_that_run(kind in 0..4u8, bytes in vec(any::<u8>(), 0..200)) {
        let mut input = drive::Input::new(&bytes);
        let _watch = watch(|| format!("fuzz input {kind} {bytes:?}"));
        match kind {
            0 => drop(drive::header(&util::unique_name("fz"), &HeaderCase::decode(&mut input))),
            1 => drop(drive::ring(&util::unique_name("fz"), &RingCase::decode(&mut input))),
            2 => drop(drive::pubsub(&util::unique_name("fz"), &PubSubCase::decode(&mut input))),
            _ => drop(drive::reqrep(&util::unique_name("fz"), &ReqRepCase::decode(&mut input))),
        }
    }
}

/// The consumer's `head` a reopening consumer starts from used to be taken
/// if it was a multiple of 8. At the top of the counter's range, with a
/// message header stamped for that position (a peer can compute the
/// stamp), receiving it computed `pos + 8 + padded(len)` and overflowed (a
/// panic in debug builds). Fixed: positions above 2^62 are refused at open.
#[test]
fn a_consumer_reopened_at_the_end_of_the_position_range_gets_an_error() {
    let name = util::unique_name("head-at-end");
    let object = ring::object_name(&name);
    let _guard = util::Remove(Target::posix(&object).unwrap());
    let _watch = watch(|| "a consumer reopened at the end of the position range".into());
    let _tx = Sender::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
    let target = Target::posix(&object).unwrap();
    let mut seg = Segment::options().lifetime(Lifetime::Persistent).open(&target).unwrap();
    let pos = u64::MAX - 7;
    seg.write(256, &pos).unwrap();
    // The header for `pos`: stamp `(pos >> 3) as u32 | 1 << 31`, length 0,
    // at data offset `pos % 4096`.
    let header = u64::from((pos >> 3) as u32 | 1 << 31) << 32;
    seg.write(1024 + (pos % 4096) as usize, &header).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut rx = Receiver::open(&name)?;
        let mut buf = Vec::new();
        rx.try_recv(&mut buf)?;
        rx.try_recv(&mut buf)
    }));
    let result = result.expect("the consumer panicked on a position at the end of the range");
    // Data (the peer's empty message) or an error; a fix may well refuse
    // the position at once.
    if let Err(e) = result {
        assert!(matches!(e.kind(), ErrorKind::Corrupt(_) | ErrorKind::WouldBlock), "{e}");
    }
}

/// The same for a reopening producer: `tail` and `head` both near the top
/// of the range used to pass, and the next send overflowed `tail + total`.
/// Fixed as above.
#[test]
fn a_producer_reopened_at_the_end_of_the_position_range_gets_an_error() {
    let name = util::unique_name("tail-at-end");
    let object = ring::object_name(&name);
    let _guard = util::Remove(Target::posix(&object).unwrap());
    let _watch = watch(|| "a producer reopened at the end of the position range".into());
    let _rx = Receiver::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
    let target = Target::posix(&object).unwrap();
    let mut seg = Segment::options().lifetime(Lifetime::Persistent).open(&target).unwrap();
    let pos = u64::MAX - 7;
    seg.write(192, &pos).unwrap();
    seg.write(256, &pos).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tx = Sender::open(&name)?;
        tx.try_send(b"x")
    }));
    let result = result.expect("the producer panicked on a position at the end of the range");
    if let Err(e) = result {
        assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "{e}");
    }
}

/// Inputs the fuzz targets once failed on, replayed through the same
/// decoding: `(target, input)`.
const FUZZ_FINDINGS: &[(&str, &[u8])] = &[
    // Once, after 25,112 inputs of a run under heavy load: the server did
    // not answer a request made before any patch within 5 s. Replays pass
    // (28-50 ms); kept to replay.
    (
        "reqrep",
        &[
            0x23, 0x23, 0x23, 0x23, 0x20, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0xb5, 0xfe, 0xff, 0xff, 0xff, 0xd3,
            0x4a,
        ],
    ),
    // The harness's own mistake: a clean producer may see a ring as full
    // after its consumer received everything (the consumer gives the room
    // back lazily), where the harness expected a message.
    (
        "ring_recv",
        &[
            0x9e, 0x9e, 0x9e, 0x9e, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57,
            0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57,
            0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57,
            0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57,
            0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57,
            0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x57, 0x9e,
            0x9e, 0x0b, 0x7e, 0x95, 0x7c, 0xa6, 0x0b, 0x7e,
        ],
    ),
];

#[test]
fn fuzz_findings_replay() {
    for (target, bytes) in FUZZ_FINDINGS {
        let _watch = watch(|| format!("fuzz finding {target} {bytes:?}"));
        let mut input = drive::Input::new(bytes);
        let name = util::unique_name("fz");
        match *target {
            "header" => drop(drive::header(&name, &HeaderCase::decode(&mut input))),
            "ring_recv" => drop(drive::ring(&name, &RingCase::decode(&mut input))),
            "pubsub_read" => drop(drive::pubsub(&name, &PubSubCase::decode(&mut input))),
            "reqrep" => drop(drive::reqrep(&name, &ReqRepCase::decode(&mut input))),
            other => panic!("no fuzz target {other}"),
        }
    }
}

/// A reopening producer used to take `tail` from shared memory checking
/// only `head` against it: a `tail` that is not a multiple of 8 passed, and
/// the next send stored message headers at unaligned offsets (a debug
/// assertion in debug builds; an `AtomicU64` made from an unaligned pointer,
/// undefined behaviour, in release builds). Found by the ring property's
/// reopen phase; fixed: an unaligned position is `Corrupt` at open.
#[test]
fn a_producer_reopened_at_an_unaligned_tail_gets_an_error() {
    let name = util::unique_name("tail-unaligned");
    let object = ring::object_name(&name);
    let _guard = util::Remove(Target::posix(&object).unwrap());
    let _watch = watch(|| "a producer reopened at an unaligned tail".into());
    let _rx = Receiver::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
    let target = Target::posix(&object).unwrap();
    let mut seg = Segment::options().lifetime(Lifetime::Persistent).open(&target).unwrap();
    seg.write(192, &1u64).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tx = Sender::open(&name)?;
        tx.try_send(b"x")
    }));
    let result = result.expect("the producer panicked on an unaligned tail");
    let e = result.expect_err("a producer sent from an unaligned tail");
    assert!(matches!(e.kind(), ErrorKind::Corrupt(_)), "{e}");
}
