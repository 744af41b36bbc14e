//! Kill loops: real processes killed with `SIGKILL` at random points, again
//! and again, for every kind of end shmkit has: ring producers and
//! consumers, publishers, subscribers, request/response servers and
//! clients, and creators in the middle of making a ring, a pub/sub service
//! or a segment with sync primitives in it.
//!
//! What each loop checks after every kill: nothing hangs (every wait has
//! the watchdog), the survivors get every message that was sent, intact and
//! in order (sequence numbers and checksums), and then a clean
//! `Disconnected`, never before the kill (a peer declared dead while it
//! lives is a bug too); a new process takes the dead one's place; nobody
//! ever opens a half-initialised object as valid; and nothing is left in
//! `/dev/shm`: channels are removed by their last end, what dead creators
//! left by the test's guards (`shmkit gc` is checked by the CLI's
//! `e2e/kill.rs`).
//!
//! The kill delays come from a seeded generator; each loop prints its seed
//! (`SHMKIT_KILL_SEED=N` replays the same delays, the timing of the
//! processes around them being the machine's). `SHMKIT_KILLS=N` sets the
//! number of kills per loop (default: a few dozen, a few hundred in all):
//!
//! ```text
//! SHMKIT_KILLS=10000 cargo test --release -p shmkit --test tests kill_loop -- --test-threads=1
//! ```
//!
//! Each loop ends with one summary line on standard error, for example
//! `kill-loop ring-producer: 40 kills, 40 disconnects, 0 hangs, …`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shmkit::channel::pubsub::{Policy, PubSubOptions, Publisher, Subscriber};
use shmkit::channel::reqrep::{self, Client, Server, ServiceOptions};
use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};
use shmkit::sync::{Event, Semaphore};
use shmkit::{Error, ErrorKind, Segment, Target};

use crate::util::{self, Remove, WATCHDOG, unique_name};

// ---------------------------------------------------------------------------
// Knobs, random delays, messages
// ---------------------------------------------------------------------------

/// Kills per loop: `$SHMKIT_KILLS`, else `default`.
fn kills(default: u64) -> u64 {
    match std::env::var("SHMKIT_KILLS") {
        Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("SHMKIT_KILLS={v:?}: {e}")),
        Err(_) => default,
    }
}

/// A seeded generator (splitmix64) for kill delays and child behaviour.
struct Rng(u64);

impl Rng {
    /// Seeded from `$SHMKIT_KILL_SEED`, else from the clock and pid; the
    /// seed is printed so that a failure can be replayed.
    fn new(kind: &str) -> Rng {
        let seed = match std::env::var("SHMKIT_KILL_SEED") {
            Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("SHMKIT_KILL_SEED={v:?}: {e}")),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
            }
        };
        eprintln!("kill-loop {kind}: seed {seed} (replay with SHMKIT_KILL_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A delay from 0 to `max`, log-uniform above 10 µs (short delays are
    /// as interesting as long ones), zero one time in sixteen.
    fn delay(&mut self, max: Duration) -> Duration {
        if self.below(16) == 0 {
            return Duration::ZERO;
        }
        let lo = 10f64.ln();
        let hi = (max.as_micros().max(11) as f64).ln();
        let r = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_micros((lo + r * (hi - lo)).exp() as u64)
    }
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z ^= z >> 31;
    z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 29)
}

/// FNV-1a over `bytes`.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Message `seq` of at most `max` bytes (at least 24): the sequence number,
/// a body that depends on it, and the checksum of both.
fn message(seq: u64, max: usize, buf: &mut Vec<u8>) {
    let body = (mix(seq) % (max as u64 - 15)) as usize;
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    let salt = mix(seq ^ 0x5555);
    buf.extend((0..body).map(|i| (salt >> (8 * (i % 8))) as u8 ^ i as u8));
    let sum = checksum(buf);
    buf.extend_from_slice(&sum.to_le_bytes());
}

/// Checks a message: its checksum, then that it is exactly message `seq`
/// as [`message`] makes it. Returns its sequence number.
fn check_message(got: &[u8], max: usize, scratch: &mut Vec<u8>) -> Result<u64, String> {
    if got.len() < 16 {
        return Err(format!("a message of {} bytes", got.len()));
    }
    let (data, sum) = got.split_at(got.len() - 8);
    if checksum(data).to_le_bytes() != sum {
        return Err(format!("bad checksum in a message of {} bytes", got.len()));
    }
    let seq = u64::from_le_bytes(got[..8].try_into().unwrap());
    message(seq, max, scratch);
    if got != &scratch[..] {
        return Err(format!("message {seq}: {} bytes, not the {} it should be", got.len(), scratch.len()));
    }
    Ok(seq)
}

/// The name of an error kind without its fields, for counting outcomes.
fn kind_name(e: &Error) -> String {
    let text = format!("{:?}", e.kind());
    text.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------
// Children and killers
// ---------------------------------------------------------------------------

/// A child process (this test binary in a role) that is killed and reaped
/// if the test ends early, so no child outlives a failed test.
struct Kid {
    child: Option<Child>,
    role: String,
    /// What it wrote on standard output and was not used yet.
    out: Vec<u8>,
}

/// What a child writes when it is under way, and before the count it
/// reports at its end.
const READY: &[u8] = b"<ready>";
const COUNT: &str = "<count:";

impl Kid {
    fn spawn(role: &str, args: &[&str]) -> Kid {
        let child = util::child(role, args).spawn().unwrap_or_else(|e| panic!("spawn {role}: {e}"));
        Kid { child: Some(child), role: role.to_string(), out: Vec::new() }
    }

    /// As [`spawn`](Self::spawn), with standard output piped to the test.
    fn spawn_piped(role: &str, args: &[&str]) -> Kid {
        let child =
            util::child(role, args).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {role}: {e}"));
        Kid { child: Some(child), role: role.to_string(), out: Vec::new() }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Its exit status if it has exited (it stays unreaped until `reap`).
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits (under the watchdog) until it wrote [`READY`] on its standard
    /// output (where the test harness it runs in writes too): its signal
    /// that it is under way.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        let (pid, role) = (self.pid(), self.role.clone());
        let out = self.child.as_mut().unwrap().stdout.as_mut().expect("stdout piped");
        loop {
            if let Some(at) = self.out.windows(READY.len()).position(|w| w == READY) {
                self.out.drain(..at + READY.len());
                return;
            }
            let left = WATCHDOG.saturating_sub(start.elapsed());
            let mut poll = libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, owned by this frame, for the
            // duration of the call.
            let n = unsafe { libc::poll(&mut poll, 1, left.as_millis() as i32) };
            assert!(n == 1, "watchdog: child {pid} ({role}) never said it was ready");
            let mut chunk = [0u8; 256];
            let got = out.read(&mut chunk).unwrap();
            assert!(got > 0, "child {pid} ({role}) ended before it was ready");
            self.out.extend_from_slice(&chunk[..got]);
        }
    }

    /// Reads its standard output until it exits; returns what it wrote
    /// between [`COUNT`] and the next `>`.
    fn read_count(&mut self) -> String {
        let mut out = self.child.as_mut().unwrap().stdout.take().expect("stdout piped");
        out.read_to_end(&mut self.out).unwrap();
        let text = String::from_utf8_lossy(&self.out).into_owned();
        let Some(at) = text.find(COUNT) else { return format!("nothing (output {text:?})") };
        text[at + COUNT.len()..].split('>').next().unwrap_or_default().to_string()
    }

    /// Waits for it under the watchdog.
    fn reap(mut self) -> ExitStatus {
        util::wait(self.child.take().unwrap())
    }

    /// Reaps it and checks that SIGKILL ended it (not an exit of its own,
    /// which would mean it found something wrong: see its exit code).
    #[track_caller]
    fn reap_killed(self, context: &str) {
        let role = self.role.clone();
        let status = self.reap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{context}: {role} child ended with {status}, not SIGKILL");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills `pid` with SIGKILL after `delay`, from a thread; returns the
/// instant just before the signal (a peer that reports the death before it
/// was wrong). The child must not be reaped before the thread is joined
/// (so its pid cannot be reused meanwhile).
fn kill_after(pid: u32, delay: Duration) -> JoinHandle<Instant> {
    thread::spawn(move || {
        thread::sleep(delay);
        let at = Instant::now();
        // SAFETY: a plain signal to our own child, which stays unreaped (a
        // zombie at worst) until this thread is joined.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill {pid}: {}", std::io::Error::last_os_error());
        at
    })
}

/// Names in `/dev/shm` that contain `needle`.
fn in_dev_shm(needle: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(needle))
        .collect();
    found.sort();
    found
}

/// Removes, when dropped, every object in `/dev/shm` whose name contains
/// the test's unique name (rings, services and their client rings).
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for name in in_dev_shm(&self.0) {
            let _ = shmkit::segment::remove(&Target::posix(&format!("/{name}")).unwrap());
        }
    }
}

/// A unique name and the guard that sweeps every object made with it.
fn swept_name(tag: &str) -> (String, Sweep) {
    let name = unique_name(tag);
    (name.clone(), Sweep(name))
}

fn ring_target(name: &str) -> Target {
    Target::posix(&ring::object_name(name)).unwrap()
}

/// Writes what [`Kid::wait_ready`] waits for.
fn say_ready() {
    let mut out = std::io::stdout();
    let _ = out.write_all(READY).and_then(|()| out.flush());
}

/// Writes what [`Kid::read_count`] reads.
fn say_count(count: u64) {
    let mut out = std::io::stdout();
    let _ = write!(out, "{COUNT}{count}>").and_then(|()| out.flush());
}

/// Child roles of this module; `None` if `role` is not one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let num = |i: usize| args[i].parse::<u64>().unwrap();
    Some(match role {
        "kill-ring-producer" => ring_producer(&args[0], num(1)),
        "kill-ring-consumer" => ring_consumer(&args[0], &args[1], num(2)),
        "kill-publisher" => publisher(&args[0]),
        "kill-subscriber" => subscriber(&args[0], num(1)),
        "kill-create" => create_loop(&args[0], &args[1]),
        "kill-reqrep-server" => reqrep_server(&args[0]),
        "kill-reqrep-client" => reqrep_client(&args[0], num(1)),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Ring: producers killed
// ---------------------------------------------------------------------------

/// Largest ring message in these loops, and the ring's data area (small, so
/// the producer often waits on a full ring when it dies).
const RING_MAX: usize = 1500;
const RING_CAPACITY: usize = 64 << 10;

fn ring_options() -> RingOptions {
    let mut o = RingOptions::new();
    o.capacity(RING_CAPACITY);
    o
}

/// Child role: takes over the producer end of ring `name` and sends
/// messages `first, first + 1, …` until killed. 140: open failed; 141: a
/// send failed.
fn ring_producer(name: &str, first: u64) -> i32 {
    let mut tx = match Sender::open(name) {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("kill-ring-producer: {e}");
            return 140;
        }
    };
    let mut buf = Vec::new();
    for seq in first.. {
        message(seq, RING_MAX, &mut buf);
        if let Err(e) = tx.send(&buf) {
            eprintln!("kill-ring-producer: message {seq}: {e}");
            return 141;
        }
    }
    unreachable!()
}

/// Receives one message; checks that it is message `next`.
#[track_caller]
fn expect_ring_message(got: &[u8], next: u64, context: &str, scratch: &mut Vec<u8>) {
    match check_message(got, RING_MAX, scratch) {
        Ok(seq) => assert_eq!(seq, next, "{context}: message {seq} where {next} was due"),
        Err(what) => panic!("{context}: corrupt message where {next} was due: {what}"),
    }
}

fn ring_producer_loop(kills: u64) {
    let mut rng = Rng::new("ring-producer");
    let (name, _sweep) = swept_name("kill-ring-producer");
    let mut rx = Receiver::open_or_create(&name, &ring_options()).unwrap();
    let (mut next, mut buf, mut scratch) = (0u64, Vec::new(), Vec::new());
    let (mut disconnects, mut slowest) = (0u64, Duration::ZERO);
    let start = Instant::now();
    // For a failure's message: where recent producers began, and the
    // ring's shared positions (tail at 192, head at 256) when they came.
    let raw = Segment::options().read_only().open(&ring_target(&name)).unwrap();
    let mut recent = std::collections::VecDeque::new();
    for k in 0..kills {
        let (tail, head) = (raw.read::<u64>(192).unwrap(), raw.read::<u64>(256).unwrap());
        recent.push_back((next, tail, head));
        if recent.len() > 4 {
            recent.pop_front();
        }
        let context = format!("ring-producer kill {k} (recent producers' first message, tail, head: {recent:?})");
        let mut kid = Kid::spawn("kill-ring-producer", &[&name, &next.to_string()]);
        // Until the new producer claims its end, the dead one's end says
        // "disconnected".
        let waiting = Instant::now();
        loop {
            match rx.recv_timeout(&mut buf, WATCHDOG) {
                Ok(_) => break,
                Err(e) if *e.kind() == ErrorKind::Disconnected => {
                    assert!(kid.exited().is_none(), "{context}: the producer ended: {e}");
                    assert!(waiting.elapsed() < WATCHDOG, "watchdog: {context}: the producer never sent");
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{context}: {e}"),
            }
        }
        expect_ring_message(&buf, next, &context, &mut scratch);
        next += 1;
        let killer = kill_after(kid.pid(), rng.delay(Duration::from_millis(20)));
        // Everything it sent arrives, in order, then "disconnected".
        let err = loop {
            match rx.recv_timeout(&mut buf, WATCHDOG) {
                Ok(_) => {
                    expect_ring_message(&buf, next, &context, &mut scratch);
                    next += 1;
                }
                Err(e) => break (e, Instant::now()),
            }
        };
        let (err, err_at) = err;
        let killed = killer.join().unwrap();
        slowest = slowest.max(err_at.saturating_duration_since(killed));
        assert_eq!(*err.kind(), ErrorKind::Disconnected, "{context}: {err}");
        assert!(
            err_at >= killed,
            "{context}: the consumer was told the producer was gone {:?} before it was killed (message {next} \
             was due)",
            killed - err_at
        );
        disconnects += 1;
        kid.reap_killed(&context);
    }
    // One more takeover, in this process: the stream goes on.
    let mut tx = Sender::open(&name).unwrap();
    message(next, RING_MAX, &mut buf);
    tx.send(&buf).unwrap();
    rx.recv_timeout(&mut buf, WATCHDOG).unwrap();
    expect_ring_message(&buf, next, "after the loop", &mut scratch);
    drop((tx, rx, raw));
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "both ends closed: the ring is removed");
    eprintln!(
        "kill-loop ring-producer: {kills} kills, {disconnects} disconnects, 0 hangs, {} messages intact and in order, \
         0 corrupt; slowest disconnect after a kill {slowest:?}; {:?} in all",
        next + 1,
        start.elapsed()
    );
}

#[test]
fn kill_loop_ring_producer() {
    ring_producer_loop(kills(40));
}

// ---------------------------------------------------------------------------
// Ring: consumers killed
// ---------------------------------------------------------------------------

/// Words of the progress segment a consumer child writes.
const LAST: usize = 0;
const FIRST: usize = 8;

/// Child role: takes over the consumer end of ring `name` and receives,
/// checking each message and that they follow each other; writes to the
/// segment `progress` its first message's number + 1 (at `FIRST`) and,
/// before it releases each message, that message's number + 1 (at `LAST`).
/// After `stall` messages it stops reading (the producer then waits on a
/// full ring) until killed. 170: open failed; 171: receive failed; 172:
/// corrupt message; 173: out of order; 174: not killed while stalled.
fn ring_consumer(name: &str, progress: &str, stall: u64) -> i32 {
    let Ok(mut progress) = Segment::open(&progress.parse::<Target>().unwrap()) else { return 170 };
    let mut rx = match Receiver::open(name) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("kill-ring-consumer: {e}");
            return 170;
        }
    };
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut expected = None;
    for count in 0.. {
        if count == stall {
            thread::sleep(WATCHDOG);
            return 174;
        }
        let msg = match rx.recv_ref() {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("kill-ring-consumer: {e}");
                return 171;
            }
        };
        msg.copy_to(&mut buf);
        let seq = match check_message(&buf, RING_MAX, &mut scratch) {
            Ok(seq) => seq,
            Err(what) => {
                eprintln!("kill-ring-consumer: {what}");
                return 172;
            }
        };
        if expected.is_some_and(|e| e != seq) {
            eprintln!("kill-ring-consumer: message {seq} where {expected:?} was due");
            return 173;
        }
        expected = Some(seq + 1);
        if count == 0 {
            progress.write(FIRST, &(seq + 1)).unwrap();
        }
        progress.write(LAST, &(seq + 1)).unwrap();
        // Released only now: what the next consumer finds is never past
        // what `LAST` says.
        drop(msg);
    }
    unreachable!()
}

fn ring_consumer_loop(kills: u64) {
    let mut rng = Rng::new("ring-consumer");
    let (name, _sweep) = swept_name("kill-ring-consumer");
    let progress_target = Target::posix(&unique_name("kill-progress")).unwrap();
    let _progress_guard = Remove(progress_target.clone());
    let mut progress = Segment::create(&progress_target, 4096).unwrap();
    let progress_arg = progress_target.to_string();
    let mut tx = Sender::open_or_create(&name, &ring_options()).unwrap();
    let (mut sent, mut buf) = (0u64, Vec::new());
    // The first message the next consumer may get: nothing before it was
    // released by a consumer.
    let mut released = 0u64;
    let (mut disconnects, mut stalling, mut duplicates, mut slowest) = (0u64, 0u64, 0u64, Duration::ZERO);
    let start = Instant::now();
    for k in 0..kills {
        let context = format!("ring-consumer kill {k}");
        progress.write(FIRST, &0u64).unwrap();
        progress.write(LAST, &0u64).unwrap();
        // One consumer in three stops reading: the producer is blocked on a
        // full ring when the consumer dies.
        let stall = if rng.below(3) == 0 { rng.below(100) + 1 } else { u64::MAX };
        let mut kid = Kid::spawn("kill-ring-consumer", &[&name, &progress_arg, &stall.to_string()]);
        // Send until the new consumer has taken a message.
        let waiting = Instant::now();
        while progress.read::<u64>(LAST).unwrap() == 0 {
            message(sent, RING_MAX, &mut buf);
            match tx.send_timeout(&buf, Duration::from_millis(5)) {
                Ok(()) => sent += 1,
                Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Disconnected) => {
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{context}: {e}"),
            }
            if let Some(status) = kid.exited() {
                panic!("{context}: the consumer ended with {status} before it received");
            }
            assert!(waiting.elapsed() < WATCHDOG, "watchdog: {context}: the consumer never received");
        }
        let first = progress.read::<u64>(FIRST).unwrap() - 1;
        assert!(first <= released, "{context}: the new consumer began at {first}: messages {released}.. were lost");
        duplicates += released - first;
        let killer = kill_after(kid.pid(), rng.delay(Duration::from_millis(20)));
        // Send until the producer learns that the consumer is gone; a
        // timeout here would be a hang.
        let err = loop {
            message(sent, RING_MAX, &mut buf);
            match tx.send_timeout(&buf, WATCHDOG) {
                Ok(()) => sent += 1,
                Err(e) => break (e, Instant::now()),
            }
        };
        let (err, err_at) = err;
        let killed = killer.join().unwrap();
        slowest = slowest.max(err_at.saturating_duration_since(killed));
        assert_eq!(*err.kind(), ErrorKind::Disconnected, "{context}: {err}");
        assert!(
            err_at >= killed,
            "{context}: the producer was told the consumer was gone {:?} before it was killed",
            killed - err_at
        );
        disconnects += 1;
        stalling += u64::from(stall != u64::MAX);
        kid.reap_killed(&context);
        released = progress.read::<u64>(LAST).unwrap();
    }
    // A consumer in this process takes over and gets the rest, in order,
    // then "disconnected" once the producer closed. (A producer that
    // closes while the consumer is dead removes the ring: take over first.)
    let mut rx = Receiver::open(&name).unwrap();
    drop(tx);
    let mut scratch = Vec::new();
    let mut next = None;
    loop {
        match rx.recv_timeout(&mut buf, WATCHDOG) {
            Ok(_) => {
                let seq = check_message(&buf, RING_MAX, &mut scratch).unwrap_or_else(|w| panic!("after the loop: {w}"));
                match next {
                    None => {
                        assert!(seq <= released, "after the loop: began at {seq}, {released}.. lost");
                        duplicates += released - seq;
                    }
                    Some(n) => assert_eq!(seq, n, "after the loop: out of order"),
                }
                next = Some(seq + 1);
            }
            Err(e) => {
                assert_eq!(*e.kind(), ErrorKind::Disconnected, "after the loop: {e}");
                break;
            }
        }
    }
    assert_eq!(next.unwrap_or(released), sent, "after the loop: the last message is the last one sent");
    drop(rx);
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "both ends closed: the ring is removed");
    eprintln!(
        "kill-loop ring-consumer: {kills} kills, {disconnects} disconnects ({stalling} with a stalled consumer, the \
         producer blocked on a full ring), 0 hangs, {sent} messages sent, none lost, {duplicates} received twice across takeovers (read but \
         not yet released by the killed consumer); slowest disconnect after a kill {slowest:?}; {:?} in all",
        start.elapsed()
    );
}

#[test]
fn kill_loop_ring_consumer() {
    ring_consumer_loop(kills(40));
}

// ---------------------------------------------------------------------------
// Pub/sub: publishers killed
// ---------------------------------------------------------------------------

const SAMPLE_MAX: usize = 200;

fn service_options() -> PubSubOptions {
    let mut o = PubSubOptions::new();
    o.slots(16).max_sample(SAMPLE_MAX).max_subscribers(4).policy(Policy::BackPressure);
    o
}

/// Child role: takes over the publisher of service `name` and publishes
/// sample `n` as message `n` until killed. 180: open failed; 181: publish
/// failed; 182: a sample got another number than announced.
fn publisher(name: &str) -> i32 {
    let mut publisher = match Publisher::open(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kill-publisher: {e}");
            return 180;
        }
    };
    let mut buf = Vec::new();
    loop {
        let n = publisher.published();
        message(n, SAMPLE_MAX, &mut buf);
        match publisher.publish(&buf) {
            Ok(seq) if seq == n => {}
            Ok(seq) => {
                eprintln!("kill-publisher: sample {seq} where {n} was announced");
                return 182;
            }
            Err(e) => {
                eprintln!("kill-publisher: {e}");
                return 181;
            }
        }
    }
}

/// Receives sample `next` on `sub` and checks its number and bytes;
/// `Err` for an error from the service.
fn expect_sample(sub: &mut Subscriber, next: u64, context: &str, bufs: &mut (Vec<u8>, Vec<u8>)) -> Result<(), Error> {
    let seq = sub.receive_into_timeout(&mut bufs.0, WATCHDOG)?;
    assert_eq!(seq, next, "{context}: sample {seq} where {next} was due");
    match check_message(&bufs.0, SAMPLE_MAX, &mut bufs.1) {
        Ok(n) => assert_eq!(n, next, "{context}: sample {next} holds message {n}"),
        Err(what) => panic!("{context}: sample {next} is corrupt: {what}"),
    }
    Ok(())
}

fn publisher_loop(kills: u64) {
    let mut rng = Rng::new("publisher");
    let (name, _sweep) = swept_name("kill-publisher");
    let mut subs = [
        Subscriber::open_or_create(&name, &service_options()).unwrap(),
        Subscriber::open_or_create(&name, &service_options()).unwrap(),
    ];
    let mut bufs = (Vec::new(), Vec::new());
    let mut next = [0u64; 2];
    let (mut disconnects, mut slowest) = (0u64, Duration::ZERO);
    let start = Instant::now();
    for k in 0..kills {
        let context = format!("publisher kill {k}");
        let mut kid = Kid::spawn("kill-publisher", &[&name]);
        let waiting = Instant::now();
        loop {
            match expect_sample(&mut subs[0], next[0], &context, &mut bufs) {
                Ok(()) => break,
                Err(e) if *e.kind() == ErrorKind::Disconnected => {
                    assert!(kid.exited().is_none(), "{context}: the publisher ended: {e}");
                    assert!(waiting.elapsed() < WATCHDOG, "watchdog: {context}: the publisher never published");
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{context}: {e}"),
            }
        }
        next[0] += 1;
        let killer = kill_after(kid.pid(), rng.delay(Duration::from_millis(20)));
        // Both subscribers take turns (under back-pressure the publisher
        // waits for the slower one) until one learns the publisher is gone;
        // then the other drains to the same point.
        let mut gone = [None; 2];
        while gone.iter().any(Option::is_none) {
            for i in 0..2 {
                if gone[i].is_some() {
                    continue;
                }
                match expect_sample(&mut subs[i], next[i], &context, &mut bufs) {
                    Ok(()) => next[i] += 1,
                    Err(e) => {
                        assert_eq!(*e.kind(), ErrorKind::Disconnected, "{context}: subscriber {i}: {e}");
                        gone[i] = Some(Instant::now());
                    }
                }
            }
        }
        let killed = killer.join().unwrap();
        for (i, at) in gone.iter().flatten().enumerate() {
            slowest = slowest.max(at.saturating_duration_since(killed));
            assert!(*at >= killed, "{context}: subscriber {i} was told the publisher was gone before it was killed");
        }
        assert_eq!(next[0], next[1], "{context}: the subscribers got different numbers of samples");
        assert_eq!((subs[0].missed(), subs[1].missed()), (0, 0), "{context}: back-pressure lost samples");
        disconnects += 2;
        kid.reap_killed(&context);
    }
    // One more takeover, in this process.
    let mut publisher = Publisher::open(&name).unwrap();
    message(next[0], SAMPLE_MAX, &mut bufs.0);
    assert_eq!(publisher.publish(&bufs.0).unwrap(), next[0]);
    for (i, sub) in subs.iter_mut().enumerate() {
        expect_sample(sub, next[i], "after the loop", &mut bufs).unwrap();
    }
    drop((publisher, subs));
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "everyone left: the service is removed");
    eprintln!(
        "kill-loop publisher: {kills} kills, {disconnects} disconnects (2 subscribers), 0 hangs, {} samples each, \
         intact and in order, 0 missed, 0 corrupt; slowest disconnect after a kill {slowest:?}; {:?} in all",
        next[0] + 1,
        start.elapsed()
    );
}

#[test]
fn kill_loop_publisher() {
    publisher_loop(kills(40));
}

// ---------------------------------------------------------------------------
// Pub/sub: subscribers killed
// ---------------------------------------------------------------------------

/// Child role: subscribes to `name` and checks every sample (numbers that
/// follow each other, intact bytes). After `stall` samples it stops reading
/// until killed; `u64::MAX`: never stalls, and once the publisher closed it
/// prints how many samples it got and exits 0. 190: open failed; 191:
/// receive failed; 192: corrupt or out of order; 193: missed samples; 194:
/// not killed while stalled.
fn subscriber(name: &str, stall: u64) -> i32 {
    let mut sub = match Subscriber::open(name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kill-subscriber: {e}");
            return 190;
        }
    };
    say_ready();
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut expected = None;
    let mut count = 0u64;
    loop {
        if count == stall {
            thread::sleep(WATCHDOG);
            return 194;
        }
        let seq = match sub.receive_into(&mut buf) {
            Ok(seq) => seq,
            Err(e) if *e.kind() == ErrorKind::Disconnected && stall == u64::MAX => break,
            Err(e) => {
                eprintln!("kill-subscriber: {e}");
                return 191;
            }
        };
        match check_message(&buf, SAMPLE_MAX, &mut scratch) {
            Ok(n) if n == seq && expected.is_none_or(|e| e == seq) => {}
            Ok(n) => {
                eprintln!("kill-subscriber: sample {seq} holds message {n}, {expected:?} was due");
                return 192;
            }
            Err(what) => {
                eprintln!("kill-subscriber: sample {seq}: {what}");
                return 192;
            }
        }
        expected = Some(seq + 1);
        count += 1;
    }
    if sub.missed() != 0 {
        eprintln!("kill-subscriber: missed {}", sub.missed());
        return 193;
    }
    say_count(count);
    0
}

/// Publishes the next sample, failing the test if the publisher is held
/// back for the whole watchdog. Returns how long it took.
fn publish_next(publisher: &mut Publisher, buf: &mut Vec<u8>, context: &str) -> Duration {
    let n = publisher.published();
    message(n, SAMPLE_MAX, buf);
    let start = Instant::now();
    match publisher.publish_timeout(buf, WATCHDOG) {
        Ok(seq) => assert_eq!(seq, n, "{context}"),
        Err(e) => panic!("{context}: sample {n}: {e}"),
    }
    start.elapsed()
}

fn subscriber_loop(kills: u64) {
    let mut rng = Rng::new("subscriber");
    let (name, _sweep) = swept_name("kill-subscriber");
    let mut publisher = Publisher::open_or_create(&name, &service_options()).unwrap();
    let mut steady = Kid::spawn_piped("kill-subscriber", &[&name, &u64::MAX.to_string()]);
    steady.wait_ready();
    let mut buf = Vec::new();
    let (mut stalled, mut slowest) = (0u64, Duration::ZERO);
    let start = Instant::now();
    for k in 0..kills {
        let context = format!("subscriber kill {k}");
        // One victim in two stops reading: the publisher is held back by
        // a dead subscriber until it reclaims its entry.
        let stall = if rng.below(2) == 0 { rng.below(40) } else { u64::MAX - 1 };
        stalled += u64::from(stall != u64::MAX - 1);
        let mut kid = Kid::spawn_piped("kill-subscriber", &[&name, &stall.to_string()]);
        kid.wait_ready();
        assert_eq!(publisher.subscribers(), 2, "{context}");
        let killed = AtomicBool::new(false);
        let delay = rng.delay(Duration::from_millis(20));
        thread::scope(|s| {
            let killer = kill_after(kid.pid(), delay);
            s.spawn(|| {
                killer.join().unwrap();
                killed.store(true, Ordering::Release);
            });
            while !killed.load(Ordering::Acquire) {
                publish_next(&mut publisher, &mut buf, &context);
            }
        });
        // The dead subscriber holds nobody back for long: a full round of
        // slots and more goes through, each publish under the watchdog.
        for _ in 0..64 {
            slowest = slowest.max(publish_next(&mut publisher, &mut buf, &context));
        }
        assert_eq!(publisher.subscribers(), 1, "{context}: the dead subscriber's entry was not reclaimed");
        assert!(steady.exited().is_none(), "{context}: the steady subscriber ended");
        kid.reap_killed(&context);
    }
    let total = publisher.published();
    drop(publisher);
    let got = steady.read_count();
    let status = steady.reap();
    assert_eq!(status.code(), Some(0), "the steady subscriber failed: {status}");
    assert_eq!(got, total.to_string(), "the steady subscriber got {got} samples of {total}");
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "everyone left: the service is removed");
    eprintln!(
        "kill-loop subscriber: {kills} kills ({stalled} of a stalled subscriber), 0 hangs, {total} samples, every \
         one to the steady subscriber intact and in order; slowest publish after a kill {slowest:?}; {:?} in all",
        start.elapsed()
    );
}

#[test]
fn kill_loop_subscriber() {
    subscriber_loop(kills(40));
}

// ---------------------------------------------------------------------------
// Creators killed while they initialise
// ---------------------------------------------------------------------------

const CREATE_RING_CAPACITY: usize = 4096;
const SEMAPHORE_VALUE: u32 = 3;

fn create_options() -> PubSubOptions {
    let mut o = PubSubOptions::new();
    o.slots(8).max_sample(64).max_subscribers(2).policy(Policy::OverwriteOldest);
    o
}

/// Child role: creates and removes a `kind` object called `name`, again
/// and again until killed (`ring`: a ring; `pubsub`: a service; `sync`: a
/// POSIX segment with an event at 0 and a semaphore at 64), keeping it a
/// moment every other round. Says it is ready after the first round. 200:
/// a creation failed.
fn create_loop(kind: &str, name: &str) -> i32 {
    let mut ring_opts = RingOptions::new();
    ring_opts.capacity(CREATE_RING_CAPACITY);
    let sync_target = Target::posix(&format!("/{name}")).unwrap();
    for round in 0u64.. {
        let made = match kind {
            "ring" => Sender::open_or_create(name, &ring_opts)
                .map(|tx| {
                    hold(round);
                    drop(tx);
                })
                // Nobody consumed: the producer leaves the ring for a
                // consumer; remove it for the next round.
                .and_then(|()| shmkit::segment::remove(&ring_target(name))),
            "pubsub" => Publisher::open_or_create(name, &create_options()).map(|publisher| {
                hold(round);
                drop(publisher);
            }),
            "sync" => Segment::create(&sync_target, 4096).and_then(|seg| {
                Event::create(&seg, 0)?;
                Semaphore::create(&seg, 64, SEMAPHORE_VALUE)?;
                hold(round);
                Ok(())
            }),
            other => panic!("unknown kind {other}"),
        };
        if let Err(e) = made {
            eprintln!("kill-create {kind} round {round}: {e}");
            return 200;
        }
        if round == 0 {
            say_ready();
        }
    }
    unreachable!()
}

/// Keeps a finished object a little while every other round, so that some
/// kills find it whole (removal follows creation at once otherwise).
fn hold(round: u64) {
    if round % 2 == 1 {
        thread::sleep(Duration::from_micros(200));
    }
}

/// What an opener found after a creator was killed.
fn open_after_kill(kind: &str, name: &str) -> Result<&'static str, Error> {
    match kind {
        "ring" => {
            let mut rx = Receiver::open(name)?;
            // Opened: it must be whole. The dead creator's producer end is
            // taken over, and a message goes through.
            assert_eq!(rx.max_message(), CREATE_RING_CAPACITY / 2 - 16, "a ring opened with a wrong size");
            let mut tx = Sender::open(name).unwrap_or_else(|e| panic!("a ring opened, its producer end not: {e}"));
            tx.send(b"whole").unwrap();
            let mut buf = Vec::new();
            rx.recv_timeout(&mut buf, WATCHDOG).unwrap();
            assert_eq!(buf, b"whole");
            Ok("opened whole")
        }
        "pubsub" => {
            let mut sub = Subscriber::open(name)?;
            assert_eq!((sub.max_sample(), sub.policy()), (64, Policy::OverwriteOldest), "a service opened half-made");
            let mut publisher =
                Publisher::open(name).unwrap_or_else(|e| panic!("a service opened, its publisher end not: {e}"));
            let n = publisher.publish(b"whole").unwrap();
            let mut buf = Vec::new();
            assert_eq!(sub.receive_into_timeout(&mut buf, WATCHDOG).unwrap(), n);
            assert_eq!(buf, b"whole");
            Ok("opened whole")
        }
        "sync" => {
            let seg = Segment::open(&Target::posix(&format!("/{name}")).unwrap())?;
            let event = Event::open(&seg, 0);
            let semaphore = Semaphore::open(&seg, 64);
            match (event, semaphore) {
                (Ok(event), Ok(semaphore)) => {
                    // A semaphore seen as ready has its initial value.
                    assert_eq!(semaphore.value(), SEMAPHORE_VALUE, "a semaphore opened half-made");
                    semaphore.try_wait().unwrap();
                    semaphore.post().unwrap();
                    event.notify_all();
                    event.wait_until(|| true, Some(Duration::ZERO)).unwrap();
                    Ok("opened whole (event and semaphore)")
                }
                (Ok(_), Err(e)) => {
                    assert_eq!(*e.kind(), ErrorKind::NotInitialized, "semaphore: {e}");
                    Ok("event whole, semaphore not initialised")
                }
                (Err(e), Ok(_)) => panic!("a semaphore made before its event: {e}"),
                (Err(e), Err(_)) => Err(e),
            }
        }
        other => panic!("unknown kind {other}"),
    }
}

/// Kills creators of `kind` objects at random points, `batch` at a time
/// (each on its own name), then opens what each left, all at once (an
/// object left initialising makes its opener wait up to a second).
fn creator_loop(kind: &str, kills: u64) {
    let mut rng = Rng::new(&format!("creator-{kind}"));
    let (base, _sweep) = swept_name(&format!("kill-create-{kind}"));
    let batch = 8;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut done = 0;
    while done < kills {
        let n = batch.min(kills - done);
        let names: Vec<String> = (done..done + n).map(|i| format!("{base}.{i}")).collect();
        let mut kids: Vec<Kid> = names.iter().map(|name| Kid::spawn_piped("kill-create", &[kind, name])).collect();
        for kid in &mut kids {
            kid.wait_ready();
        }
        for kid in &kids {
            thread::sleep(rng.delay(Duration::from_millis(2)));
            kill_after(kid.pid(), Duration::ZERO).join().unwrap();
        }
        for (i, kid) in kids.into_iter().enumerate() {
            kid.reap_killed(&format!("creator-{kind} kill {}", done + i as u64));
        }
        let found: Vec<Result<&str, Error>> = thread::scope(|s| {
            let handles: Vec<_> = names.iter().map(|name| s.spawn(|| open_after_kill(kind, name))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, result) in found.into_iter().enumerate() {
            let outcome = match result {
                Ok(what) => what.to_string(),
                Err(e) => {
                    // Not there, not ready, too small for a header, or
                    // empty (killed before its size was set).
                    let clean = matches!(
                        e.kind(),
                        ErrorKind::NotFound
                            | ErrorKind::NotInitialized
                            | ErrorKind::Corrupt(_)
                            | ErrorKind::WrongType(_)
                    );
                    assert!(clean, "creator-{kind} kill {}: opening gave an unexpected error: {e}", done + i as u64);
                    format!("error {}", kind_name(&e))
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
        // What the dead creators left goes with the guard's sweep; nothing
        // may stay behind after it.
        drop(Sweep(base.clone()));
        assert_eq!(in_dev_shm(&base), Vec::<String>::new());
        done += n;
    }
    let summary: Vec<String> = outcomes.iter().map(|(what, n)| format!("{n} {what}")).collect();
    eprintln!(
        "kill-loop creator-{kind}: {kills} kills, 0 hangs, 0 half-made objects opened; openers found: {}; {:?} in all",
        summary.join(", "),
        start.elapsed()
    );
}

#[test]
fn kill_loop_creator_ring() {
    creator_loop("ring", kills(32));
}

#[test]
fn kill_loop_creator_pubsub() {
    creator_loop("pubsub", kills(32));
}

#[test]
fn kill_loop_creator_sync() {
    creator_loop("sync", kills(32));
}

// ---------------------------------------------------------------------------
// Request/response: servers and clients killed
// ---------------------------------------------------------------------------

const REQREP_CLIENTS: usize = 4;

fn reqrep_options() -> ServiceOptions {
    let mut o = ServiceOptions::new();
    o.max_clients(REQREP_CLIENTS).capacity(16 << 10);
    o
}

/// The server's answer: the request reversed and flipped, so a reply meant
/// for another client or request shows.
fn transform(request: &[u8], reply: &mut Vec<u8>) {
    reply.clear();
    reply.extend(request.iter().rev().map(|b| b ^ 0xa5));
}

/// Request `seq` of client `id`: both numbers, then a message.
fn make_request(id: u64, seq: u64, buf: &mut Vec<u8>) {
    message(seq ^ id << 40, 300, buf);
    buf.splice(0..0, id.to_le_bytes());
}

/// Child role: creates (or takes over) service `name` and answers every
/// request until killed. 110: create failed; 111: receive failed.
fn reqrep_server(name: &str) -> i32 {
    let mut server = match Server::create(name, &reqrep_options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kill-reqrep-server: {e}");
            return 110;
        }
    };
    let (mut buf, mut reply) = (Vec::new(), Vec::new());
    loop {
        let request = match server.receive(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("kill-reqrep-server: {e}");
                return 111;
            }
        };
        transform(&buf, &mut reply);
        // A client may have gone meanwhile: not the server's problem.
        let _ = server.respond(&request, &reply);
    }
}

/// Connects, retrying while there is no (live) server yet; `None` after
/// the watchdog.
fn connect_retry(name: &str) -> Result<Client, Error> {
    let start = Instant::now();
    loop {
        match Client::connect(name) {
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Disconnected | ErrorKind::WouldBlock)
                    && start.elapsed() < WATCHDOG =>
            {
                thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Sends requests and checks the replies until an error, which it
/// returns with when it came and the number of replies before it.
fn request_until_error(client: &mut Client, id: u64, served: &AtomicU64) -> (Error, Instant, u64) {
    let (mut request, mut reply, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 0.. {
        make_request(id, seq, &mut request);
        if let Err(e) = client.request_timeout(&request, &mut reply, WATCHDOG) {
            return (e, Instant::now(), seq);
        }
        transform(&request, &mut expected);
        assert!(reply == expected, "client {id}: a wrong reply to request {seq}");
        served.fetch_add(1, Ordering::Relaxed);
    }
    unreachable!()
}

/// A client thread of the server-kill loop: connects, requests until an
/// error, and returns it with when it came. A client that connected while
/// the new server took over may be disconnected at once, before any reply
/// (documented): it connects again. Any other error before the kill fails.
fn client_until_killed(
    name: &str,
    id: u64,
    served: &AtomicU64,
    killed: &AtomicBool,
    context: &str,
) -> (Error, Instant) {
    loop {
        let mut client = connect_retry(name).unwrap_or_else(|e| panic!("{context}: connect: {e}"));
        let (err, when, replies) = request_until_error(&mut client, id, served);
        if killed.load(Ordering::Acquire) {
            return (err, when);
        }
        let early = replies == 0 && *err.kind() == ErrorKind::Disconnected;
        assert!(early, "{context}: client {id}: {err} after {replies} replies, while the server lived");
    }
}

fn reqrep_server_loop(kills: u64) {
    let mut rng = Rng::new("reqrep-server");
    let (name, _sweep) = swept_name("kill-reqrep-server");
    let clients = 2;
    let (mut disconnects, mut slowest) = (0u64, Duration::ZERO);
    let served: Vec<AtomicU64> = (0..clients).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    for k in 0..kills {
        let context = format!("reqrep-server kill {k}");
        let kid = Kid::spawn("kill-reqrep-server", &[&name]);
        let delay = rng.delay(Duration::from_millis(20));
        let before: Vec<u64> = served.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let killed = AtomicBool::new(false);
        let ends: Vec<(Error, Instant)> = thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|id| {
                    let (name, served, context, killed) = (&name, &served[id], &context, &killed);
                    s.spawn(move || client_until_killed(name, id as u64, served, killed, context))
                })
                .collect();
            // Kill once both clients were served at least once.
            let waiting = Instant::now();
            while served.iter().zip(&before).any(|(s, b)| s.load(Ordering::Relaxed) == *b) {
                assert!(waiting.elapsed() < WATCHDOG, "watchdog: {context}: the clients were never served");
                thread::sleep(Duration::from_micros(200));
            }
            // The flag is set before the signal: an error after it may be
            // the kill's; one before it cannot.
            let (pid, killed) = (kid.pid(), &killed);
            let killer = s.spawn(move || {
                thread::sleep(delay);
                killed.store(true, Ordering::Release);
                kill_after(pid, Duration::ZERO).join().unwrap()
            });
            let ends: Vec<(Error, Instant)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let at = killer.join().unwrap();
            for (_, when) in &ends {
                slowest = slowest.max(when.saturating_duration_since(at));
            }
            ends
        });
        for (id, (err, _)) in ends.iter().enumerate() {
            assert_eq!(*err.kind(), ErrorKind::Disconnected, "{context}: client {id}: {err}");
            disconnects += 1;
        }
        kid.reap_killed(&context);
    }
    // A server in this process takes the service over, serves a client,
    // and removes everything when it closes.
    let mut server = Server::create(&name, &reqrep_options()).unwrap();
    let total: u64 = served.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    thread::scope(|s| {
        let client = s.spawn(|| {
            let mut client = connect_retry(&name).unwrap();
            let mut reply = Vec::new();
            client.request_timeout(b"after the loop", &mut reply, WATCHDOG).unwrap();
            reply
        });
        let mut buf = Vec::new();
        let request = server.receive_timeout(&mut buf, WATCHDOG).unwrap();
        let mut reply = Vec::new();
        transform(&buf, &mut reply);
        server.respond(&request, &reply).unwrap();
        assert_eq!(client.join().unwrap(), reply);
    });
    drop(server);
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "the server closed: nothing of the service is left");
    eprintln!(
        "kill-loop reqrep-server: {kills} kills, {disconnects} disconnects ({clients} waiting clients), 0 hangs, \
         {total} replies all correct; slowest client error after a kill {slowest:?}; {:?} in all",
        start.elapsed()
    );
}

#[test]
fn kill_loop_reqrep_server() {
    reqrep_server_loop(kills(30));
}

/// Child role: connects to `name` as client `id` and makes requests,
/// checking each reply; says it is ready after its first reply. Once the
/// server closes it prints how many replies it got and exits 0.
/// 210: connect failed; 211: a wrong reply; 212: a request failed.
fn reqrep_client(name: &str, id: u64) -> i32 {
    let mut client = match connect_retry(name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kill-reqrep-client {id}: {e}");
            return 210;
        }
    };
    let (mut request, mut reply, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 0.. {
        make_request(id, seq, &mut request);
        match client.request(&request, &mut reply) {
            Ok(_) => {}
            Err(e) if *e.kind() == ErrorKind::Disconnected => {
                say_count(seq);
                return 0;
            }
            Err(e) => {
                eprintln!("kill-reqrep-client {id}: {e}");
                return 212;
            }
        }
        transform(&request, &mut expected);
        if reply != expected {
            eprintln!("kill-reqrep-client {id}: a wrong reply to request {seq}");
            return 211;
        }
        if seq == 0 {
            say_ready();
        }
    }
    unreachable!()
}

/// Serves requests until `done` says so (checked between requests), under
/// the watchdog; counts the replies per client id.
fn serve_until(
    server: &mut Server,
    served: &mut BTreeMap<u64, u64>,
    context: &str,
    mut done: impl FnMut(&Server, &BTreeMap<u64, u64>) -> bool,
) {
    let start = Instant::now();
    let (mut buf, mut reply) = (Vec::new(), Vec::new());
    while !done(server, served) {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {context}");
        let request = match server.receive_timeout(&mut buf, Duration::from_millis(5)) {
            Ok(r) => r,
            Err(e) if *e.kind() == ErrorKind::Timeout => continue,
            Err(e) => panic!("{context}: receive: {e}"),
        };
        transform(&buf, &mut reply);
        let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
        match server.respond(&request, &reply) {
            Ok(()) => *served.entry(id).or_default() += 1,
            // The client died since it asked.
            Err(e) if matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::WouldBlock) => {}
            Err(e) => panic!("{context}: respond: {e}"),
        }
    }
}

fn reqrep_client_loop(kills: u64) {
    let mut rng = Rng::new("reqrep-client");
    let (name, _sweep) = swept_name("kill-reqrep-client");
    let mut server = Server::create(&name, &reqrep_options()).unwrap();
    let mut served = BTreeMap::new();
    let mut steady = Kid::spawn_piped("kill-reqrep-client", &[&name, "0"]);
    serve_until(&mut server, &mut served, "the steady client's first request", |_, s| s.contains_key(&0));
    steady.wait_ready();
    let start = Instant::now();
    for k in 0..kills {
        let context = format!("reqrep-client kill {k}");
        let id = k + 1;
        let mut kid = Kid::spawn_piped("kill-reqrep-client", &[&name, &id.to_string()]);
        serve_until(&mut server, &mut served, &format!("{context}: first request"), |_, s| s.contains_key(&id));
        kid.wait_ready();
        let killer = kill_after(kid.pid(), rng.delay(Duration::from_millis(20)));
        serve_until(&mut server, &mut served, &format!("{context}: the kill"), |_, _| killer.is_finished());
        killer.join().unwrap();
        let victim = kid.pid();
        kid.reap_killed(&context);
        // The server goes on serving the steady client, and reaps the dead
        // one: its entry in the client table is freed.
        let steady_before = served[&0];
        serve_until(&mut server, &mut served, &format!("{context}: serving on"), |server, s| {
            s[&0] >= steady_before + 20 && server.clients() == 1 && !entry_owners(&name).contains(&victim)
        });
        assert!(steady.exited().is_none(), "{context}: the steady client ended");
    }
    drop(server);
    let got = steady.read_count();
    let status = steady.reap();
    assert_eq!(status.code(), Some(0), "the steady client failed: {status}");
    assert_eq!(got, served[&0].to_string(), "the steady client got {got} replies, the server sent {}", served[&0]);
    assert_eq!(in_dev_shm(&name), Vec::<String>::new(), "the server closed: nothing of the service is left");
    eprintln!(
        "kill-loop reqrep-client: {kills} kills, 0 hangs, every killed client reaped, the steady client got all {} \
         replies, all correct; {:?} in all",
        served[&0],
        start.elapsed()
    );
}

/// The `owner` words of the client table of service `name` (see the
/// layout in `reqrep`'s module docs: entries of 64 bytes from 256).
fn entry_owners(name: &str) -> Vec<u32> {
    let seg = Segment::options().read_only().open(&Target::posix(&reqrep::object_name(name)).unwrap()).unwrap();
    (0..REQREP_CLIENTS).map(|i| seg.read::<u32>(256 + 64 * i).unwrap()).collect()
}

#[test]
fn kill_loop_reqrep_client() {
    reqrep_client_loop(kills(30));
}
