//! Publish/subscribe: every sample to every subscriber under back-pressure,
//! exact accounting of missed samples under overwrite-oldest (torn samples
//! never returned as data), subscribers and publishers killed, late joiners
//! and history, metadata checks, lifetime, and a hostile peer scribbling
//! over the shared memory.

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use shmkit::channel::pubsub::{self, Policy, PubSubOptions, Publisher, Subscriber, TypedPublisher, TypedSubscriber};
use shmkit::{ErrorKind, Segment, Target};

use crate::util::{WATCHDOG, child as command, unique_name, wait};

/// Removes a service's object when dropped (tests that fail midway).
struct RemoveService(String);

impl Drop for RemoveService {
    fn drop(&mut self) {
        let _ = shmkit::segment::remove(&target(&self.0));
    }
}

fn target(name: &str) -> Target {
    Target::posix(&pubsub::object_name(name)).unwrap()
}

fn service_name(tag: &str) -> (String, RemoveService) {
    let name = unique_name(tag);
    (name.clone(), RemoveService(name))
}

fn exists(name: &str) -> bool {
    match Segment::options().read_only().open(&target(name)) {
        Ok(_) => true,
        Err(e) if *e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("{e}"),
    }
}

/// Options by a compact code passed to children: `bp` back-pressure with 64
/// slots of 8 bytes; `ow` overwrite-oldest with 8 slots of 64 bytes.
fn opts(code: &str) -> PubSubOptions {
    let mut o = PubSubOptions::new();
    match code {
        "bp" => o.slots(64).max_sample(8),
        "ow" => o.slots(8).max_sample(WORDS * 8).policy(Policy::OverwriteOldest),
        other => panic!("unknown options {other}"),
    };
    o
}

/// Words of an overwrite-test sample; word `w` of sample `i`.
const WORDS: usize = 8;

fn word(i: u64, w: usize) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x
}

/// Waits until `n` subscribers are attached, failing if a child exits
/// early or the watchdog fires.
fn wait_for_subscribers(publisher: &Publisher, n: usize, children: &mut [Child]) {
    let start = Instant::now();
    while publisher.subscribers() < n {
        for c in children.iter_mut() {
            if let Some(status) = c.try_wait().unwrap() {
                panic!("child {} exited early: {status}", c.id());
            }
        }
        assert!(start.elapsed() < WATCHDOG, "watchdog: only {} of {n} subscribers joined", publisher.subscribers());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Child roles of this module: `Some(exit code)` if `role` is one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let num = |i: usize| args[i].parse::<u64>().unwrap();
    Some(match role {
        "pubsub-subscriber" => every_sample_in_order(&args[0], num(1)),
        "pubsub-slow-subscriber" => slow_subscriber(&args[0], num(1)),
        "pubsub-idle-subscriber" => idle_subscriber(&args[0]),
        "pubsub-publisher-forever" => publisher_forever(&args[0]),
        "pubsub-read-only-subscriber" => read_only_subscriber(&args[0], num(1)),
        "pubsub-read-only-writer" => read_only_writer(&args[0]),
        _ => return None,
    })
}

/// Child role: subscribes and checks that samples `0..count` (each a `u64`
/// holding its number) arrive in order, then `Disconnected`.
/// 200: open failed; 201: receive failed; 202: wrong value; 203: no
/// disconnect at the end; 204: samples missed.
fn every_sample_in_order(name: &str, count: u64) -> i32 {
    let mut sub = match Subscriber::open(name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 200;
        }
    };
    for i in 0..count {
        match sub.receive_value_timeout::<u64>(WATCHDOG) {
            Ok(v) if v == i => {}
            Ok(v) => {
                eprintln!("sample {i}: got {v}");
                return 202;
            }
            Err(e) => {
                eprintln!("sample {i}: {e}");
                return 201;
            }
        }
    }
    match sub.receive_value_timeout::<u64>(WATCHDOG) {
        Err(e) if *e.kind() == ErrorKind::Disconnected => {}
        other => {
            eprintln!("after {count} samples: {other:?}");
            return 203;
        }
    }
    if sub.missed() != 0 { 204 } else { 0 }
}

/// Child role: a slow subscriber of an overwrite-oldest service of `total`
/// samples. Reads some samples in place word by word (slowly), copies
/// others; checks that every sample returned as good is whole, that
/// sequence numbers increase, and that received + missed == total and the
/// missed count equals the gaps plus the samples seen torn.
/// 210: open failed; 211: receive failed; 212: sequence went back;
/// 213: a torn sample returned as good; 214: accounting is off.
fn slow_subscriber(name: &str, total: u64) -> i32 {
    let Ok(mut sub) = Subscriber::open(name) else { return 210 };
    let (mut received, mut gaps, mut torn, mut next) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        let in_place = received % 2 == 0;
        let seq = if in_place {
            let sample = match sub.receive_timeout(WATCHDOG) {
                Ok(s) => s,
                Err(e) if *e.kind() == ErrorKind::Disconnected => break,
                Err(e) => {
                    eprintln!("{e}");
                    return 211;
                }
            };
            let seq = sample.sequence();
            if sample.len() != WORDS * 8 {
                return 213;
            }
            let mut whole = true;
            for w in 0..WORDS {
                // Dawdle between words, so that the publisher overwrites
                // some samples while they are read.
                for _ in 0..300 {
                    std::hint::spin_loop();
                }
                match sample.read::<u64>(w * 8).unwrap() {
                    Some(v) if v == word(seq, w) => {}
                    Some(v) => {
                        eprintln!("sample {seq} word {w}: {v:#x} returned as good");
                        return 213;
                    }
                    None => {
                        whole = false;
                        break;
                    }
                }
            }
            if !whole {
                torn += 1;
            }
            (seq, whole)
        } else {
            match sub.receive_into_timeout(&mut buf, WATCHDOG) {
                Ok(seq) => {
                    for w in 0..WORDS {
                        if buf[w * 8..w * 8 + 8] != word(seq, w).to_ne_bytes() {
                            eprintln!("copied sample {seq} word {w} is torn");
                            return 213;
                        }
                    }
                    (seq, true)
                }
                Err(e) if *e.kind() == ErrorKind::Disconnected => break,
                Err(e) => {
                    eprintln!("{e}");
                    return 211;
                }
            }
        };
        let (seq, whole) = seq;
        if seq < next {
            eprintln!("sample {seq} after {next}");
            return 212;
        }
        gaps += seq - next;
        next = seq + 1;
        if whole {
            received += 1;
        }
        if received % 64 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    gaps += total.saturating_sub(next);
    let missed = sub.missed();
    eprintln!("slow subscriber: {received} received, {missed} missed ({torn} torn while read in place) of {total}");
    if received + missed != total || gaps + torn != missed {
        eprintln!("accounting: received {received} + missed {missed} != {total}, or gaps {gaps} + torn {torn}");
        return 214;
    }
    0
}

/// Child role: subscribes and never reads (until killed). 220: open failed.
fn idle_subscriber(name: &str) -> i32 {
    let Ok(_sub) = Subscriber::open(name) else { return 220 };
    std::thread::sleep(WATCHDOG);
    221
}

/// Child role: publishes `u64` samples `0, 1, …` under back-pressure until
/// killed. 230: open failed; 231: publish failed.
fn publisher_forever(name: &str) -> i32 {
    let mut publisher = match Publisher::open_or_create(name, &opts("bp")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 230;
        }
    };
    let mut i = 0u64;
    loop {
        if publisher.publish_timeout(&i.to_ne_bytes(), WATCHDOG).is_err() {
            return 231;
        }
        i += 1;
    }
}

/// Tells the parent (a line on stdout) that this child has subscribed.
fn say_ready() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready").and_then(|()| out.flush());
}

/// Child role: subscribes read-only and checks that `u64` samples
/// `0..count` arrive in order, none missed, then `Disconnected`.
/// 240: open failed; 241: not read-only; 242: receive failed; 243: wrong
/// value; 244: samples missed; 245: no disconnect at the end.
fn read_only_subscriber(name: &str, count: u64) -> i32 {
    let mut sub = match Subscriber::open_read_only(name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 240;
        }
    };
    if !sub.is_read_only() {
        return 241;
    }
    say_ready();
    for i in 0..count {
        match sub.receive_value_timeout::<u64>(WATCHDOG) {
            Ok(v) if v == i => {}
            Ok(v) => {
                eprintln!("read-only: sample {i}: got {v}");
                return 243;
            }
            Err(e) => {
                eprintln!("read-only: sample {i}: {e}");
                return 242;
            }
        }
    }
    if sub.missed() != 0 {
        return 244;
    }
    match sub.receive_value_timeout::<u64>(WATCHDOG) {
        Err(e) if *e.kind() == ErrorKind::Disconnected => 0,
        other => {
            eprintln!("read-only: after {count} samples: {other:?}");
            245
        }
    }
}

/// Child role: subscribes read-only, receives one sample and stores into
/// it through the mapping, which must kill this process with SIGSEGV.
/// 250: open failed; 251: receive failed; 252: the store survived.
fn read_only_writer(name: &str) -> i32 {
    let Ok(mut sub) = Subscriber::open_read_only(name) else { return 250 };
    say_ready();
    let Ok(sample) = sub.receive_timeout(WATCHDOG) else { return 251 };
    // SAFETY: deliberately wrong: the slot is mapped without PROT_WRITE, so
    // the kernel delivers SIGSEGV before anything is written.
    unsafe { sample.as_ptr().cast_mut().write_volatile(0xAA) };
    252
}

/// Starts a child whose stdout is a pipe and waits (under the watchdog)
/// for its "ready" line; fails if it exits first.
fn spawn_ready(role: &str, args: &[&str]) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = command(role, args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // (The test harness in the child may print lines of its own first.)
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut line = String::new();
        while matches!(out.read_line(&mut line), Ok(n) if n > 0) && line.trim() != "ready" {
            line.clear();
        }
        let _ = tx.send(line);
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(line) if line.trim() == "ready" => child,
        other => {
            let _ = child.kill();
            let status = child.wait();
            panic!("child {role} not ready: {other:?}, {status:?}");
        }
    }
}

fn sample_count() -> u64 {
    std::env::var("SHMKIT_PUBSUB_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// Runs `n` subscriber processes that each expect `count` samples, and
/// publishes them; the object is gone once all have left.
fn fan_out(n: usize, count: u64, options: &PubSubOptions) {
    let (name, _guard) = service_name("fanout");
    let mut publisher = Publisher::open_or_create(&name, options).unwrap();
    let mut children: Vec<Child> =
        (0..n).map(|_| command("pubsub-subscriber", &[&name, &count.to_string()]).spawn().unwrap()).collect();
    wait_for_subscribers(&publisher, n, &mut children);
    for i in 0..count {
        publisher.publish_timeout(&i.to_ne_bytes(), WATCHDOG).unwrap_or_else(|e| panic!("sample {i}: {e}"));
    }
    drop(publisher);
    for c in children {
        assert_eq!(wait(c).code(), Some(0));
    }
    // The last subscriber to leave removed the object.
    assert!(!exists(&name));
}

#[test]
fn four_subscriber_processes_each_receive_every_sample_in_order() {
    fan_out(4, sample_count(), &opts("bp"));
}

#[test]
fn sixteen_subscriber_processes_at_once_and_a_full_table() {
    let mut options = opts("bp");
    options.max_subscribers(16);
    let (name, _guard) = service_name("sixteen");
    let publisher = Publisher::open_or_create(&name, &options).unwrap();
    let mut children: Vec<Child> =
        (0..16).map(|_| command("pubsub-idle-subscriber", &[&name]).spawn().unwrap()).collect();
    wait_for_subscribers(&publisher, 16, &mut children);
    // All sixteen entries are held by live processes.
    let err = Subscriber::open(&name).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Busy { .. }), "{err}");
    for mut c in children {
        c.kill().unwrap();
        assert_eq!(wait(c).signal(), Some(libc::SIGKILL));
    }
    drop(publisher);
    // Sixteen at once, every sample to each.
    fan_out(16, 2_000, &options);
}

#[test]
fn overwrite_oldest_accounts_for_every_sample_and_never_returns_a_torn_one() {
    let (name, _guard) = service_name("overwrite");
    let total = sample_count() * 2;
    let mut publisher = Publisher::open_or_create(&name, &opts("ow")).unwrap();
    let mut children = vec![command("pubsub-slow-subscriber", &[&name, &total.to_string()]).spawn().unwrap()];
    wait_for_subscribers(&publisher, 1, &mut children);
    for i in 0..total {
        // Never waits: the subscriber is slow, and misses samples.
        let mut loan = publisher.try_loan().unwrap();
        for w in 0..WORDS {
            loan.write(w * 8, &word(i, w)).unwrap();
        }
        assert_eq!(loan.publish(), i);
        if i % 32 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    drop(publisher);
    assert_eq!(wait(children.pop().unwrap()).code(), Some(0));
    assert!(!exists(&name));
}

#[test]
fn a_sample_overwritten_while_read_in_place_is_reported_not_returned() {
    let (name, _guard) = service_name("torn");
    let mut publisher = Publisher::open_or_create(&name, &opts("ow")).unwrap();
    let mut sub = Subscriber::open(&name).unwrap();
    for i in 0..3u64 {
        publisher.publish(&i.to_ne_bytes()).unwrap();
    }
    {
        let sample = sub.try_receive().unwrap();
        assert_eq!(sample.sequence(), 0);
        assert_eq!(sample.read::<u64>(0).unwrap(), Some(0));
        // The publisher laps the sample while we hold it.
        for i in 3..12u64 {
            publisher.publish(&i.to_ne_bytes()).unwrap();
        }
        assert_eq!(sample.read::<u64>(0).unwrap(), None);
        assert!(!sample.is_intact());
    }
    assert_eq!(sub.missed(), 1);
    // Samples 1..=3 were overwritten too (slot 8 of 8 holds 11, …); the
    // subscriber skips to the oldest that may still be there.
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Ok(seq) = sub.try_receive_into(&mut buf) {
        assert_eq!(buf, seq.to_ne_bytes());
        got.push(seq);
    }
    assert_eq!(got.len() as u64 + sub.missed(), 12, "got {got:?}, missed {}", sub.missed());
    assert_eq!(got.last(), Some(&11));
}

#[test]
fn a_killed_subscriber_does_not_stop_a_back_pressure_publisher_and_its_entry_is_reclaimed() {
    let (name, _guard) = service_name("killsub");
    let mut options = PubSubOptions::new();
    options.slots(8).max_sample(8).max_subscribers(2);
    let mut publisher = Publisher::open_or_create(&name, &options).unwrap();
    let mut idle = vec![command("pubsub-idle-subscriber", &[&name]).spawn().unwrap()];
    wait_for_subscribers(&publisher, 1, &mut idle);
    let mut sub = Subscriber::open(&name).unwrap();
    // The table is full.
    let err = Subscriber::open(&name).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Busy { .. }), "{err}");
    for i in 0..8u64 {
        publisher.try_publish(&i.to_ne_bytes()).unwrap();
        assert_eq!(sub.try_receive_value::<u64>().unwrap(), i);
    }
    // The idle subscriber holds the publisher back.
    assert_eq!(*publisher.try_publish(&8u64.to_ne_bytes()).unwrap_err().kind(), ErrorKind::WouldBlock);
    let err = publisher.publish_timeout(&8u64.to_ne_bytes(), Duration::from_millis(20)).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    let mut idle = idle.pop().unwrap();
    idle.kill().unwrap();
    assert_eq!(wait(idle).signal(), Some(libc::SIGKILL));
    // The publisher notices the death and goes on.
    let start = Instant::now();
    for i in 8..100u64 {
        publisher.publish_timeout(&i.to_ne_bytes(), WATCHDOG).unwrap();
        assert_eq!(sub.receive_value_timeout::<u64>(WATCHDOG).unwrap(), i);
    }
    eprintln!("subscriber killed: publisher went on after {:?}", start.elapsed());
    assert_eq!(publisher.subscribers(), 1);
    // A dead subscriber's entry is taken by a joiner when the table is full
    // (the publisher had no reason to look at it).
    let mut idle = vec![command("pubsub-idle-subscriber", &[&name]).spawn().unwrap()];
    wait_for_subscribers(&publisher, 2, &mut idle);
    let mut idle = idle.pop().unwrap();
    idle.kill().unwrap();
    assert_eq!(wait(idle).signal(), Some(libc::SIGKILL));
    let mut late = Subscriber::open(&name).unwrap();
    publisher.publish_timeout(&100u64.to_ne_bytes(), WATCHDOG).unwrap();
    assert_eq!(late.receive_value_timeout::<u64>(WATCHDOG).unwrap(), 100);
    assert_eq!(sub.receive_value_timeout::<u64>(WATCHDOG).unwrap(), 100);
}

#[test]
fn a_late_joiner_starts_at_the_newest_sample_and_history_gives_the_last_k() {
    let (name, _guard) = service_name("late");
    let mut publisher = TypedPublisher::<u64>::open_or_create(&name, PubSubOptions::new().slots(8)).unwrap();
    for i in 0..10 {
        publisher.publish(&i).unwrap();
    }
    let mut late = TypedSubscriber::<u64>::open(&name).unwrap();
    assert_eq!(*late.try_receive().unwrap_err().kind(), ErrorKind::WouldBlock);
    publisher.publish(&10).unwrap();
    assert_eq!(late.try_receive().unwrap(), 10);
    assert_eq!(late.missed(), 0);

    let (name, _guard) = service_name("history");
    let mut options = PubSubOptions::new();
    options.slots(8).history(3);
    let mut publisher = TypedPublisher::<u64>::open_or_create(&name, &options).unwrap();
    for i in 0..10 {
        publisher.publish(&i).unwrap();
    }
    let mut late = TypedSubscriber::<u64>::open(&name).unwrap();
    for i in 7..10 {
        assert_eq!(late.receive_timeout(WATCHDOG).unwrap(), i);
    }
    assert_eq!(*late.try_receive().unwrap_err().kind(), ErrorKind::WouldBlock);
    // With fewer samples than the history, all of them.
    let (name, _guard) = service_name("history");
    let mut publisher = TypedPublisher::<u64>::open_or_create(&name, &options).unwrap();
    publisher.publish(&42).unwrap();
    let mut late = TypedSubscriber::<u64>::open(&name).unwrap();
    assert_eq!(late.try_receive().unwrap(), 42);
    assert_eq!(*late.try_receive().unwrap_err().kind(), ErrorKind::WouldBlock);
    let err = PubSubOptions::new().slots(4).history(4).clone();
    let err = Publisher::open_or_create(&unique_name("bad"), &err).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
}

#[test]
fn opening_with_other_metadata_is_a_clear_error() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Reading {
        at: u64,
        value: f64,
    }
    let (name, _guard) = service_name("meta");
    let _publisher = TypedPublisher::<Reading>::open_or_create(&name, &PubSubOptions::new()).unwrap();
    let err = TypedSubscriber::<u64>::open(&name).unwrap_err();
    let ErrorKind::WrongType(what) = err.kind() else { panic!("{err}") };
    assert!(what.contains("Reading") && what.contains("16 bytes") && what.contains("u64"), "{err}");
    let err = TypedSubscriber::<[u8; 16]>::open_or_create(&name, &PubSubOptions::new()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WrongType(_)), "{err}");
    let mut other = PubSubOptions::for_type::<Reading>();
    other.slots(32);
    let err = Subscriber::open_or_create(&name, &other).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(w) if w.contains("64 slots, not 32")), "{err}");
    let mut other = PubSubOptions::for_type::<Reading>();
    other.policy(Policy::OverwriteOldest);
    let err = Subscriber::open_or_create(&name, &other).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(w) if w.contains("policy")), "{err}");
    let err = Subscriber::open_or_create(&name, &PubSubOptions::new()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
    // The right type, and raw access, are fine.
    let _typed = TypedSubscriber::<Reading>::open(&name).unwrap();
    let _same = Subscriber::open_or_create(&name, &PubSubOptions::for_type::<Reading>()).unwrap();
    let raw = Subscriber::open(&name).unwrap();
    assert_eq!(raw.max_sample(), 16);
    // One publisher at a time.
    let err = Publisher::open(&name).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Busy { pid: std::process::id() }, "{err}");
    // Bad options.
    for bad in [PubSubOptions::new().slots(3).clone(), PubSubOptions::new().max_subscribers(0).clone()] {
        let err = Publisher::open_or_create(&unique_name("bad"), &bad).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
    }
    assert!(matches!(Subscriber::open(&unique_name("none")).unwrap_err().kind(), ErrorKind::NotFound));
}

#[test]
fn zero_copy_loans_samples_and_lifetime() {
    let (name, _guard) = service_name("loan");
    let mut publisher = Publisher::open_or_create(&name, PubSubOptions::new().max_sample(100)).unwrap();
    let mut sub = Subscriber::open(&name).unwrap();
    {
        let mut loan = publisher.loan().unwrap();
        assert_eq!(loan.capacity(), 100);
        loan.write(0, &7u64).unwrap();
        loan.write_at(8, b"written in place").unwrap();
        assert!(loan.write_at(90, &[0; 11]).is_err());
        assert!(loan.set_len(101).is_err());
        loan.set_len(24).unwrap();
        assert_eq!(loan.publish(), 0);
    }
    {
        // Dropped unpublished: nothing is published.
        let _unpublished = publisher.loan().unwrap();
    }
    publisher.publish_value(&0xfeed_u32).unwrap();
    let err = publisher.publish(&[0; 101]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::MessageTooLarge { len: 101, max: 100 }), "{err}");
    {
        let sample = sub.receive_timeout(WATCHDOG).unwrap();
        assert_eq!((sample.sequence(), sample.len()), (0, 24));
        assert_eq!(sample.read::<u64>(0).unwrap(), Some(7));
        let mut text = [0u8; 16];
        assert!(sample.read_at(8, &mut text).unwrap());
        assert_eq!(&text, b"written in place");
        assert!(sample.read::<u64>(20).is_err());
        // SAFETY: the sample's first byte is inside it; read by copy.
        assert_eq!(unsafe { sample.as_ptr().read_volatile() }, 7);
        assert!(sample.is_intact());
    }
    assert_eq!(sub.receive_value::<u32>().unwrap(), 0xfeed);
    publisher.publish(b"abc").unwrap();
    let err = sub.receive_value::<u64>().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Corrupt(_)), "{err}");
    assert_eq!(*sub.try_receive().unwrap_err().kind(), ErrorKind::WouldBlock);
    let start = Instant::now();
    let timeout = Duration::from_millis(20);
    assert_eq!(*sub.receive_timeout(timeout).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(start.elapsed() >= timeout);
    // The publisher leaves first: the object stays for the subscriber, which
    // is told, and removes it when it leaves.
    drop(publisher);
    assert!(exists(&name));
    assert_eq!(*sub.try_receive().unwrap_err().kind(), ErrorKind::Disconnected);
    drop(sub);
    assert!(!exists(&name));
    // The subscriber leaves first: the publisher removes it.
    let publisher = Publisher::open_or_create(&name, &PubSubOptions::new()).unwrap();
    drop(Subscriber::open(&name).unwrap());
    assert!(exists(&name));
    drop(publisher);
    assert!(!exists(&name));
}

#[test]
fn a_killed_publisher_disconnects_subscribers_after_draining_and_can_be_replaced() {
    let (name, _guard) = service_name("killpub");
    let mut sub = Subscriber::open_or_create(&name, &opts("bp")).unwrap();
    let mut publisher = command("pubsub-publisher-forever", &[&name]).spawn().unwrap();
    let mut next = 0u64;
    for _ in 0..10_000 {
        assert_eq!(sub.receive_value_timeout::<u64>(WATCHDOG).unwrap(), next);
        next += 1;
    }
    publisher.kill().unwrap();
    assert_eq!(wait(publisher).signal(), Some(libc::SIGKILL));
    // Everything it published still arrives, in order; then "disconnected".
    let start = Instant::now();
    loop {
        match sub.receive_value_timeout::<u64>(WATCHDOG) {
            Ok(v) => {
                assert_eq!(v, next);
                next += 1;
            }
            Err(e) => {
                assert_eq!(*e.kind(), ErrorKind::Disconnected, "{e}");
                break;
            }
        }
    }
    eprintln!("publisher killed: subscriber disconnected {:?} after draining", start.elapsed());
    assert_eq!(sub.missed(), 0);
    // A new publisher takes over the dead one's claim and goes on.
    let mut publisher = Publisher::open(&name).unwrap();
    assert_eq!(publisher.publish_value(&u64::MAX).unwrap(), next);
    assert_eq!(sub.receive_value_timeout::<u64>(WATCHDOG).unwrap(), u64::MAX);
}

#[test]
fn a_hostile_peer_scribbling_over_the_service_gets_errors_not_crashes() {
    let (name, _guard) = service_name("hostile");
    let target = target(&name);
    let mut x = 0x1234_5678_9abc_def1u64 ^ u64::from(std::process::id());
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut options = PubSubOptions::new();
    options.slots(4).max_sample(24).max_subscribers(2);
    let (mut data, mut errors, mut reopen_failures) = (0u32, 0u32, 0u32);
    let mut ends: Option<(Publisher, Subscriber)> = None;
    let mut buf = Vec::new();
    for round in 0..10_000u32 {
        if ends.is_none() {
            let _ = shmkit::segment::remove(&target);
            match (Publisher::open_or_create(&name, &options), Subscriber::open(&name)) {
                (Ok(p), Ok(s)) => ends = Some((p, s)),
                _ => {
                    reopen_failures += 1;
                    continue;
                }
            }
        }
        let (publisher, sub) = ends.as_mut().unwrap();
        let _ = publisher.try_publish(&rand().to_ne_bytes()[..(rand() % 9) as usize]);
        // Scribble: a random word anywhere in the object (mostly after the
        // header, where the protocol lives).
        let mut raw = Segment::open(&target).unwrap();
        let offset = match rand() % 4 {
            0 => rand() % raw.len() as u64,
            _ => 192 + rand() % (raw.len() as u64 - 192),
        } as usize
            & !7;
        let value = match rand() % 5 {
            0 => 0,
            1 => u64::MAX,
            2 => rand() & 0xffff_ffff,
            3 => rand() & 0xff,
            _ => rand(),
        };
        raw.write(offset, &value).unwrap();
        let result = if round % 2 == 0 {
            sub.try_receive().map(|s| {
                let mut copy = Vec::new();
                let _ = s.copy_to(&mut copy);
                assert!(s.len() <= 24);
                s.len()
            })
        } else {
            sub.try_receive_into(&mut buf).map(|_| buf.len())
        };
        match result {
            Ok(n) => {
                assert!(n <= 24);
                data += 1;
            }
            Err(e) => {
                errors += 1;
                if matches!(e.kind(), ErrorKind::Corrupt(_) | ErrorKind::Disconnected) {
                    ends = None;
                }
            }
        }
        // The publisher validates what it reads too.
        if let Some((publisher, _)) = ends.as_mut() {
            match publisher.try_publish(b"x") {
                Ok(_) => {}
                Err(e) if *e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => ends = None,
            }
        }
        if round % 1000 == 999 {
            // Now and then, start afresh (stale subscribers, blocked
            // publishers).
            ends = None;
        }
    }
    drop(ends);
    let _ = shmkit::segment::remove(&target);
    eprintln!("hostile pub/sub: {data} samples, {errors} errors, {reopen_failures} refused reopenings, no panic");
    assert!(data > 0 && errors > 0);
}

#[test]
fn a_read_only_subscriber_receives_and_a_store_through_its_mapping_kills_only_it() {
    let (name, _guard) = service_name("readonly");
    let mut options = PubSubOptions::for_type::<u64>();
    options.slots(256).policy(Policy::OverwriteOldest);
    let mut publisher = TypedPublisher::<u64>::open_or_create(&name, &options).unwrap();
    let mut writable = TypedSubscriber::<u64>::open(&name).unwrap();
    let reader = spawn_ready("pubsub-read-only-subscriber", &[&name, "200"]);
    let writer = spawn_ready("pubsub-read-only-writer", &[&name]);
    // Read-only subscribers hold no entry: the publisher sees only ours.
    assert_eq!(publisher.raw().subscribers(), 1);
    for i in 0..100u64 {
        publisher.publish(&i).unwrap();
    }
    // The writer received a sample, stored into it, and died of it.
    assert_eq!(wait(writer).signal(), Some(libc::SIGSEGV));
    // The publisher and the other subscribers go on.
    for i in 100..200u64 {
        publisher.publish(&i).unwrap();
    }
    for i in 0..200u64 {
        assert_eq!(writable.receive_timeout(WATCHDOG).unwrap(), i);
    }
    assert_eq!(writable.missed(), 0);
    drop(publisher);
    assert_eq!(wait(reader).code(), Some(0));
    drop(writable);
    assert!(!exists(&name));
}

#[test]
fn read_only_subscription_needs_an_overwrite_oldest_service() {
    let (name, _guard) = service_name("readonly-bp");
    let publisher = Publisher::open_or_create(&name, &opts("bp")).unwrap();
    let err = Subscriber::open_read_only(&name).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("overwrite-oldest"), "{err}");
    // A typed read-only subscriber checks the type too.
    let (other, _other_guard) = service_name("readonly-type");
    let mut options = PubSubOptions::for_type::<u32>();
    options.policy(Policy::OverwriteOldest);
    let _typed = TypedPublisher::<u32>::open_or_create(&other, &options).unwrap();
    let err = TypedSubscriber::<u64>::open_read_only(&other).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WrongType(_)), "{err}");
    assert!(TypedSubscriber::<u32>::open_read_only(&other).unwrap().raw().is_read_only());
    let err = Subscriber::open_read_only(&unique_name("readonly-none")).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::NotFound, "{err}");
    drop(publisher);
}
