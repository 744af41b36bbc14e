//! The SPSC ring: order and integrity across `fork` and unrelated processes,
//! wrap-around, zero-copy, peer death, reopening after a crash, and a hostile
//! peer scribbling over the shared memory.

use std::os::unix::process::ExitStatusExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};
use shmkit::{ErrorKind, Segment, Target};

use crate::util::{Exit, child, fork, unique_name, wait, wait_pid};

/// Removes a ring's object when dropped (tests that fail midway).
struct RemoveRing(String);

impl Drop for RemoveRing {
    fn drop(&mut self) {
        let _ = shmkit::segment::remove(&Target::posix(&ring::object_name(&self.0)).unwrap());
    }
}

fn ring_name(tag: &str) -> (String, RemoveRing) {
    let name = unique_name(tag);
    (name.clone(), RemoveRing(name))
}

fn opts(capacity: usize) -> RingOptions {
    let mut o = RingOptions::new();
    o.capacity(capacity);
    o
}

/// A random source buffer; message `i` is a slice of it, so both sides can
/// produce and check it cheaply (memcpy, memcmp) even in debug builds.
fn source() -> &'static [u8] {
    static SOURCE: OnceLock<Vec<u8>> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..(64 << 10) + 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

fn mix(i: u64, seed: u64) -> u64 {
    let mut x = i.wrapping_add(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 29)
}

/// Length of message `i`: log-uniform from 1 byte to `max`.
fn length(i: u64, seed: u64, max: usize) -> usize {
    let bits = (max as f64).log2();
    let r = (mix(i, seed) >> 11) as f64 / (1u64 << 53) as f64;
    (2f64.powf(r * bits) as usize).clamp(1, max)
}

/// Message `i`: its sequence number in the first 8 bytes (when it fits),
/// then a slice of the source.
fn fill(i: u64, seed: u64, max: usize, buf: &mut Vec<u8>) {
    let len = length(i, seed, max);
    let offset = (mix(i, seed ^ 0x55) % 4096) as usize;
    buf.clear();
    buf.extend_from_slice(&source()[offset..offset + len]);
    if len >= 8 {
        buf[..8].copy_from_slice(&i.to_le_bytes());
    }
}

fn check(i: u64, seed: u64, max: usize, got: &[u8], expected: &mut Vec<u8>) {
    fill(i, seed, max, expected);
    if got != &expected[..] {
        let seq = (got.len() >= 8).then(|| u64::from_le_bytes(got[..8].try_into().unwrap()));
        panic!("message {i}: got {} bytes (sequence {seq:?}), expected {}", got.len(), expected.len());
    }
}

const MAX: usize = 64 << 10;
const CAPACITY: usize = 1 << 20;

/// Child role: opens the ring as producer and sends `count` messages.
/// 140: open failed; 141: a send failed.
pub fn ring_producer(name: &str, count: u64, seed: u64) -> i32 {
    let Ok(mut tx) = Sender::open_or_create(name, &opts(CAPACITY)) else { return 140 };
    let mut buf = Vec::new();
    for i in 0..count {
        fill(i, seed, MAX, &mut buf);
        if tx.send(&buf).is_err() {
            return 141;
        }
    }
    0
}

/// Child role: produces forever (until killed), message `i` carrying `i`.
pub fn ring_producer_forever(name: &str) -> i32 {
    let Ok(mut tx) = Sender::open_or_create(name, &opts(1 << 16)) else { return 150 };
    let mut i = 0u64;
    loop {
        if tx.send(&i.to_le_bytes()).is_err() {
            return 151;
        }
        i += 1;
    }
}

/// Child role: opens the ring as consumer and then blocks (until killed)
/// without reading.
pub fn ring_idle_consumer(name: &str) -> i32 {
    let Ok(_rx) = Receiver::open_or_create(name, &opts(1 << 16)) else { return 160 };
    std::thread::sleep(crate::util::WATCHDOG);
    161
}

fn receive_all(rx: &mut Receiver, count: u64, seed: u64) {
    let mut got = Vec::new();
    let mut expected = Vec::new();
    for i in 0..count {
        rx.recv_timeout(&mut got, crate::util::WATCHDOG).unwrap_or_else(|e| panic!("message {i}: {e}"));
        check(i, seed, MAX, &got, &mut expected);
    }
    // Nothing more: the producer closed.
    let err = rx.recv_timeout(&mut got, crate::util::WATCHDOG).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Disconnected, "{err}");
}

fn message_count() -> u64 {
    std::env::var("SHMKIT_RING_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[test]
fn a_million_messages_arrive_whole_and_in_order_from_another_process() {
    let (name, _guard) = ring_name("ring");
    let count = message_count();
    let mut rx = Receiver::open_or_create(&name, &opts(CAPACITY)).unwrap();
    let producer = child("ring-producer", &[&name, &count.to_string(), "1"]).spawn().unwrap();
    receive_all(&mut rx, count, 1);
    assert_eq!(wait(producer).code(), Some(0));
}

#[test]
fn a_million_messages_arrive_whole_and_in_order_across_fork() {
    let (name, _guard) = ring_name("ring");
    let count = message_count();
    // The consumer exists first; the child (after fork) is the producer.
    let mut rx = Receiver::open_or_create(&name, &opts(CAPACITY)).unwrap();
    let pid = fork(|| ring_producer(&name, count, 2));
    receive_all(&mut rx, count, 2);
    assert_eq!(wait_pid(pid), Exit::Code(0));
}

#[test]
fn either_end_may_start_first_and_messages_wait_for_the_consumer() {
    let (name, _guard) = ring_name("ring");
    let mut tx = Sender::open_or_create(&name, &opts(4096)).unwrap();
    tx.send(b"early").unwrap();
    drop(tx); // the producer leaves before any consumer came
    let mut rx = Receiver::open(&name).unwrap();
    let mut buf = Vec::new();
    rx.recv_timeout(&mut buf, Duration::from_secs(1)).unwrap();
    assert_eq!(buf, b"early");
    assert_eq!(*rx.try_recv(&mut buf).unwrap_err().kind(), ErrorKind::Disconnected);
    drop(rx);
    // Both ends closed: the object is gone.
    assert!(Receiver::open(&name).is_err());
}

#[test]
fn wraps_around_with_padding_and_applies_back_pressure() {
    let (name, _guard) = ring_name("ring");
    let mut tx = Sender::open_or_create(&name, &opts(4096)).unwrap();
    let mut rx = Receiver::open(&name).unwrap();
    assert_eq!(tx.max_message(), 2048 - 16);
    let mut buf = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20_000u64 {
        fill(i, 3, 2000, &mut expected);
        // Fill until full, then drain one: exercises every wrap offset.
        match tx.try_send(&expected) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(*e.kind(), ErrorKind::WouldBlock, "{e}");
                // Drain until this message fits. (The consumer hands room
                // back in batches, and all of it when it runs dry.)
                loop {
                    match rx.try_recv(&mut buf) {
                        Ok(_) => {}
                        Err(e) => assert_eq!(*e.kind(), ErrorKind::WouldBlock, "{e}"),
                    }
                    match tx.try_send(&expected) {
                        Ok(()) => break,
                        Err(e) => assert_eq!(*e.kind(), ErrorKind::WouldBlock, "{e}"),
                    }
                }
            }
        }
    }
    let mut n = 0;
    while rx.try_recv(&mut buf).is_ok() {
        n += 1;
    }
    assert!(n > 0);
    let err = tx.try_send(&vec![0; 4000]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::MessageTooLarge { len: 4000, max: 2032 }), "{err}");
    tx.try_send(b"").unwrap();
    assert_eq!(rx.try_recv(&mut buf).unwrap(), 0);
    assert_eq!(*rx.try_recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    let timeout = Duration::from_millis(20);
    let start = Instant::now();
    assert_eq!(*rx.recv_timeout(&mut buf, timeout).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(start.elapsed() >= timeout);
}

#[test]
fn zero_copy_loans_and_typed_values() {
    let (name, _guard) = ring_name("ring");
    let mut tx = Sender::open_or_create(&name, &opts(1 << 16)).unwrap();
    let mut rx = Receiver::open(&name).unwrap();
    let mut loan = tx.loan(24).unwrap();
    loan.write(0, &1u64).unwrap();
    loan.write_at(8, b"in place, no copy").unwrap_err(); // 17 bytes do not fit at 8
    loan.write_at(8, b"in place, no cop").unwrap();
    loan.commit();
    {
        // Dropped without commit: nothing is sent.
        let _uncommitted = tx.loan(100).unwrap();
    }
    tx.send_value(&0xdead_beef_u32).unwrap();
    {
        let msg = rx.recv_ref().unwrap();
        assert_eq!(msg.len(), 24);
        assert_eq!(msg.read::<u64>(0).unwrap(), 1);
        let mut text = [0u8; 16];
        msg.read_at(8, &mut text).unwrap();
        assert_eq!(&text, b"in place, no cop");
        assert!(msg.read::<u64>(20).is_err());
    }
    assert_eq!(rx.recv_value::<u32>().unwrap(), 0xdead_beef);
    tx.send(b"abc").unwrap();
    assert_eq!(
        *rx.recv_value::<u64>().unwrap_err().kind(),
        ErrorKind::Corrupt("a message of 3 bytes where a value of 8 was expected".into())
    );
}

#[test]
fn one_producer_and_one_consumer_at_a_time() {
    let (name, _guard) = ring_name("ring");
    let _tx = Sender::open_or_create(&name, &opts(4096)).unwrap();
    let err = Sender::open(&name).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Busy { pid: std::process::id() }, "{err}");
    let err = Receiver::open_or_create(&name, &opts(8192)).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
    let bad = RingOptions::new().capacity(5000).clone();
    assert!(Sender::open_or_create(&unique_name("bad"), &bad).is_err());
}

#[test]
fn a_killed_producer_disconnects_the_consumer_and_can_be_replaced() {
    let (name, _guard) = ring_name("ring");
    let mut rx = Receiver::open_or_create(&name, &opts(1 << 16)).unwrap();
    let producer = child("ring-producer-forever", &[&name]).spawn().unwrap();
    let mut buf = Vec::new();
    let mut next = 0u64;
    for _ in 0..10_000 {
        rx.recv_timeout(&mut buf, crate::util::WATCHDOG).unwrap();
        assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next);
        next += 1;
    }
    let mut producer = producer;
    producer.kill().unwrap();
    assert_eq!(wait(producer).signal(), Some(libc::SIGKILL));
    // Everything it sent still arrives, in order; then "disconnected",
    // within a second.
    let start = Instant::now();
    loop {
        match rx.recv_timeout(&mut buf, crate::util::WATCHDOG) {
            Ok(_) => {
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next);
                next += 1;
            }
            Err(e) => {
                assert_eq!(*e.kind(), ErrorKind::Disconnected, "{e}");
                break;
            }
        }
    }
    eprintln!("producer killed: consumer disconnected {:?} after draining", start.elapsed());
    // A new producer takes over the dead one's end and goes on.
    let mut tx = Sender::open(&name).unwrap();
    tx.send(b"after the crash").unwrap();
    rx.recv_timeout(&mut buf, Duration::from_secs(1)).unwrap();
    assert_eq!(buf, b"after the crash");
}

#[test]
fn a_killed_consumer_disconnects_a_blocked_producer() {
    let (name, _guard) = ring_name("ring");
    let mut tx = Sender::open_or_create(&name, &opts(1 << 16)).unwrap();
    let mut consumer = child("ring-idle-consumer", &[&name]).spawn().unwrap();
    // Fill the ring: the consumer never reads.
    let start = Instant::now();
    loop {
        match tx.try_send(&[7u8; 1000]) {
            Ok(()) => {}
            Err(e) if *e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < crate::util::WATCHDOG);
    }
    // Make sure the consumer has claimed its end before killing it.
    while consumer.try_wait().unwrap().is_none() && !consumer_claimed(&name) {
        assert!(start.elapsed() < crate::util::WATCHDOG, "watchdog: consumer never claimed its end");
        std::thread::sleep(Duration::from_millis(1));
    }
    consumer.kill().unwrap();
    assert_eq!(wait(consumer).signal(), Some(libc::SIGKILL));
    let err = tx.send_timeout(&[7u8; 1000], crate::util::WATCHDOG).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Disconnected, "{err}");
}

fn consumer_claimed(name: &str) -> bool {
    let seg = Segment::options().read_only().open(&Target::posix(&ring::object_name(name)).unwrap()).unwrap();
    seg.read::<u32>(512).unwrap() == 1
}

#[test]
fn a_hostile_peer_scribbling_over_the_ring_gets_errors_not_crashes() {
    let (name, _guard) = ring_name("ring");
    let target = Target::posix(&ring::object_name(&name)).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64 ^ u64::from(std::process::id());
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut data, mut errors, mut reopen_failures) = (0u32, 0u32, 0u32);
    let mut ends: Option<(Sender, Receiver)> = None;
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        if ends.is_none() {
            let _ = shmkit::segment::remove(&target);
            let tx = Sender::open_or_create(&name, &opts(4096));
            let rx = Receiver::open(&name);
            match (tx, rx) {
                (Ok(tx), Ok(rx)) => ends = Some((tx, rx)),
                _ => {
                    reopen_failures += 1;
                    continue;
                }
            }
        }
        let (tx, rx) = ends.as_mut().unwrap();
        let _ = tx.try_send(&rand().to_le_bytes()[..(rand() % 8) as usize]);
        // Scribble: a random word anywhere in the object.
        let mut raw = Segment::open(&target).unwrap();
        let offset = (rand() % raw.len() as u64) as usize & !7;
        let value = match rand() % 4 {
            0 => 0,
            1 => u64::MAX,
            2 => rand() & 0xffff_ffff,
            _ => rand(),
        };
        raw.write(offset, &value).unwrap();
        match rx.try_recv(&mut buf) {
            Ok(n) => {
                assert!(n <= rx.max_message());
                data += 1;
            }
            Err(e) => {
                errors += 1;
                if matches!(e.kind(), ErrorKind::Corrupt(_) | ErrorKind::Disconnected) {
                    ends = None;
                }
            }
        }
        // The sender validates what it reads too.
        if ends.as_mut().is_some_and(|(tx, _)| tx.try_send(b"x").is_err()) {
            ends = None;
        }
    }
    drop(ends);
    eprintln!("hostile ring: {data} messages, {errors} errors, {reopen_failures} refused reopenings, no panic");
    assert!(data > 0 && errors > 0);
}
