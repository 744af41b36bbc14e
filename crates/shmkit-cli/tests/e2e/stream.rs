//! `send` and `recv`: a byte stream through a ring between two processes,
//! whichever starts first; clean ends, crashed senders, readers that stop
//! early, timeouts, and a large random stream checked byte for byte.
//!
//! The data is a seeded pseudo-random stream that the test generates while
//! it writes and regenerates while it checks, so nothing large is kept in
//! memory or on disk.

use std::io::{self, Read, Write};
use std::process::{ChildStdin, ChildStdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{GcLock, Guard, Proc, by_name, ls_json, ring_exists, ring_ls_name, wait_for_holder, wait_until};
use crate::util::{shmkit, shmkit_with_input};

/// Bytes per generated block (a multiple of 8).
const BLOCK: usize = 64 << 10;

/// A seeded pseudo-random byte stream (splitmix64, 8 bytes a step).
struct Stream(u64);

impl Stream {
    fn new(seed: u64) -> Stream {
        Stream(seed)
    }

    /// The next `buf.len()` bytes (a multiple of 8).
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_exact_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
    }
}

/// The first `len` bytes of stream `seed`.
fn stream_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len.div_ceil(8) * 8];
    Stream::new(seed).fill(&mut data);
    data.truncate(len);
    data
}

/// Writes the first `total` bytes of stream `seed` into `to` from a thread,
/// then closes it (end of input). Stops quietly when the reader goes away;
/// returns how many bytes it wrote.
fn feed(mut to: ChildStdin, seed: u64, total: u64) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut stream = Stream::new(seed);
        let mut block = vec![0u8; BLOCK];
        let mut written = 0u64;
        while written < total {
            stream.fill(&mut block);
            let n = (total - written).min(BLOCK as u64) as usize;
            match to.write_all(&block[..n]) {
                Ok(()) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                Err(e) => panic!("cannot write to send: {e}"),
            }
        }
        written
    })
}

/// What [`check`] found.
#[derive(Debug)]
struct Checked {
    bytes: u64,
    /// The offset of the first byte that differs from the stream.
    mismatch: Option<u64>,
}

/// Reads `from` to its end from a thread, comparing every byte with stream
/// `seed` (so what arrived is always a prefix of the stream, or the
/// mismatch is reported); `progress` counts the bytes that matched.
fn check(mut from: ChildStdout, seed: u64, progress: Arc<AtomicU64>) -> JoinHandle<Checked> {
    thread::spawn(move || {
        let mut stream = Stream::new(seed);
        let mut expected = vec![0u8; BLOCK];
        let mut used = BLOCK;
        let mut buf = vec![0u8; 256 << 10];
        let mut bytes = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return Checked { bytes, mismatch: None },
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("cannot read recv's output: {e}"),
            };
            let mut got = &buf[..n];
            while !got.is_empty() {
                if used == BLOCK {
                    stream.fill(&mut expected);
                    used = 0;
                }
                let k = got.len().min(BLOCK - used);
                if got[..k] != expected[used..used + k] {
                    let at = (0..k).find(|&i| got[i] != expected[used + i]).expect("a difference");
                    return Checked { bytes, mismatch: Some(bytes + at as u64) };
                }
                used += k;
                bytes += k as u64;
                got = &got[k..];
            }
            progress.store(bytes, Ordering::Relaxed);
        }
    })
}

/// Starts `recv NAME ARGS…` with its output checked against stream `seed`.
fn checked_recv(name: &str, args: &[&str], seed: u64) -> (Proc, JoinHandle<Checked>, Arc<AtomicU64>) {
    let mut all = vec!["recv", name];
    all.extend_from_slice(args);
    let mut recv = Proc::shmkit(&all);
    let progress = Arc::new(AtomicU64::new(0));
    let checker = check(recv.stdout(), seed, Arc::clone(&progress));
    (recv, checker, progress)
}

/// Starts `send NAME ARGS…` fed the first `total` bytes of stream `seed`.
fn fed_send(name: &str, args: &[&str], seed: u64, total: u64) -> (Proc, JoinHandle<u64>) {
    let mut all = vec!["send", name];
    all.extend_from_slice(args);
    let mut send = Proc::shmkit(&all);
    let feeder = feed(send.stdin(), seed, total);
    (send, feeder)
}

#[test]
fn recv_first_then_send_streams_exact_bytes() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let total = (5 << 20) + 3;
    let (mut recv, checker, _) = checked_recv(&ring, &[], 1);
    wait_for_holder(&ring, "consumer", recv.id());

    // A second receiver is refused while the first lives.
    let out = shmkit(&["recv", &ring, "--timeout", "1"]);
    out.fails(1);
    assert!(out.stderr.contains(&format!("process {} holds", recv.id())), "{}", out.stderr);

    let (mut send, feeder) = fed_send(&ring, &[], 1, total);
    assert_eq!(send.expect_exit(0), "", "send has nothing to complain about");
    assert_eq!(feeder.join().expect("feeder"), total);
    assert_eq!(recv.expect_exit(0), "", "a clean end of stream");
    let checked = checker.join().expect("checker");
    assert_eq!(checked.mismatch, None, "recv wrote other bytes than were sent");
    assert_eq!(checked.bytes, total, "recv wrote every byte, and no more");
    assert!(!ring_exists(&ring), "the ring is removed when both ends closed");
}

#[test]
fn send_first_leaves_its_data_in_the_ring_for_recv() {
    // Between send's exit and recv's start nobody holds the ring: it is
    // stale, and a gc of another test would remove it. (And `ls` below
    // would make the gc test's rings look in use.)
    let _lock = GcLock::shared();
    let mut guard = Guard::new();
    let ring = guard.ring();
    let data = stream_bytes(2, 100_003);
    let sent = shmkit_with_input(&["send", &ring], &data);
    sent.ok();
    assert!(ring_exists(&ring), "the data waits in the ring");
    let listed = by_name(&ls_json(&["--kind", "shmkit"]));
    let k = &listed.get(&ring_ls_name(&ring)).unwrap_or_else(|| panic!("ls does not list the ring"))["shmkit"];
    assert_eq!(k["creator_pid"], sent.pid, "{k}");
    assert_eq!(k["holders"], serde_json::json!([]), "send has closed its end: {k}");

    let out = shmkit(&["recv", &ring]);
    assert!(
        out.ok().stdout == data,
        "recv wrote {} bytes, not the {} sent (or other bytes)",
        out.stdout.len(),
        data.len()
    );
    assert!(!ring_exists(&ring), "the ring is removed once read to the end");

    // An empty stream is a stream too.
    let empty = guard.ring();
    shmkit_with_input(&["send", &empty], b"").ok();
    let out = shmkit(&["recv", &empty]);
    assert_eq!(out.ok().stdout, b"");
    assert!(!ring_exists(&empty));
}

#[test]
fn send_first_waits_for_room_until_recv_comes() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let total = (1 << 20) + 5;
    // Sixteen times what the ring holds: send must wait for a reader.
    let (mut send, feeder) = fed_send(&ring, &["--capacity", "64k"], 3, total);
    wait_for_holder(&ring, "producer", send.id());
    assert!(send.running(), "send cannot have finished: the ring is full");

    // A second sender is refused while the first lives.
    let out = shmkit_with_input(&["send", &ring], b"intruder");
    out.fails(1);
    assert!(out.stderr.contains(&format!("process {} holds", send.id())), "{}", out.stderr);

    let (mut recv, checker, _) = checked_recv(&ring, &[], 3);
    assert_eq!(recv.expect_exit(0), "");
    send.expect_exit(0);
    assert_eq!(feeder.join().expect("feeder"), total);
    let checked = checker.join().expect("checker");
    assert_eq!((checked.bytes, checked.mismatch), (total, None), "recv wrote exactly what was sent");
    assert!(!ring_exists(&ring));
}

#[test]
fn a_killed_sender_ends_recv_with_exit_1_after_what_arrived() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let (mut recv, checker, progress) = checked_recv(&ring, &[], 4);
    wait_for_holder(&ring, "consumer", recv.id());
    // An endless stream; killed once at least 1 MiB went through.
    let (mut send, feeder) = fed_send(&ring, &[], 4, u64::MAX);
    wait_until("1 MiB to arrive", || progress.load(Ordering::Relaxed) >= 1 << 20 || !recv.running());
    send.kill();
    let written = feeder.join().expect("feeder");

    let stderr = recv.expect_exit(1);
    assert!(stderr.starts_with("shmkit:"), "{stderr}");
    assert!(stderr.contains("bytes received"), "recv says how much arrived: {stderr}");
    let checked = checker.join().expect("checker");
    assert_eq!(checked.mismatch, None, "what recv wrote is not a prefix of what was sent");
    assert!(checked.bytes >= 1 << 20, "recv wrote {} bytes", checked.bytes);
    assert!(checked.bytes <= written, "recv wrote {} bytes, more than the {written} sent", checked.bytes);
    assert!(stderr.contains(&format!("{} bytes received", checked.bytes)), "{stderr}");
    assert!(!ring_exists(&ring), "the receiver removes a ring whose sender died");
}

#[test]
fn a_reader_that_stops_early_stops_the_sender_cleanly() {
    // Like `shmkit recv NAME | head -c 10`.
    let mut guard = Guard::new();
    let ring = guard.ring();
    let mut recv = Proc::shmkit(&["recv", &ring]);
    let mut out = recv.stdout();
    wait_for_holder(&ring, "consumer", recv.id());
    let (mut send, feeder) = fed_send(&ring, &[], 5, u64::MAX);
    let mut first = [0u8; 10];
    out.read_exact(&mut first).expect("read 10 bytes from recv");
    assert_eq!(first[..], stream_bytes(5, 10)[..]);
    drop(out);

    assert_eq!(recv.expect_exit(0), "", "a closed pipe downstream is not an error");
    assert_eq!(send.expect_exit(0), "", "the receiver went away: send stops, quietly");
    feeder.join().expect("feeder");
    assert!(!ring_exists(&ring), "no ring is left behind");
}

#[test]
fn recv_with_a_timeout_and_no_sender_fails_and_leaves_nothing() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let mut recv = Proc::shmkit(&["recv", &ring, "--timeout", "0.5"]);
    let stderr = recv.expect_exit(1);
    assert!(stderr.starts_with("shmkit:") && stderr.contains(&ring), "{stderr}");
    assert!(!ring_exists(&ring), "recv left its ring behind");

    // With a sender in time, the timeout does not matter.
    let data = stream_bytes(6, 4321);
    let (mut recv, checker, _) = checked_recv(&ring, &["--timeout", "20"], 6);
    wait_for_holder(&ring, "consumer", recv.id());
    shmkit_with_input(&["send", &ring], &data).ok();
    recv.expect_exit(0);
    let checked = checker.join().expect("checker");
    assert_eq!((checked.bytes, checked.mismatch), (data.len() as u64, None));
    assert!(!ring_exists(&ring));
}

/// Bytes for the big stream: `$SHMKIT_CLI_STREAM_BYTES` (a number with an
/// optional k, M or G suffix), else 1 GiB.
fn big_stream_bytes() -> u64 {
    let Ok(text) = std::env::var("SHMKIT_CLI_STREAM_BYTES") else { return 1 << 30 };
    let t = text.trim();
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = num.parse().unwrap_or_else(|e| panic!("SHMKIT_CLI_STREAM_BYTES={text:?}: {e}"));
    n << shift
}

#[test]
fn a_big_random_stream_arrives_byte_identical() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let total = big_stream_bytes();
    // Generous: a loaded machine running a debug build.
    let limit = Duration::from_secs(60).max(Duration::from_secs(total >> 23));
    let start = Instant::now();
    let (mut recv, checker, _) = checked_recv(&ring, &[], 7);
    let (mut send, feeder) = fed_send(&ring, &[], 7, total);
    send.wait_limit(limit);
    assert_eq!(send.code(), 0, "send: {}", send.stderr());
    recv.wait_limit(limit);
    assert_eq!(recv.code(), 0, "recv: {}", recv.stderr());
    assert_eq!(feeder.join().expect("feeder"), total);
    let checked = checker.join().expect("checker");
    let elapsed = start.elapsed();
    eprintln!(
        "{total} bytes through `shmkit send | shmkit recv` in {elapsed:?} ({:.0} MiB/s)",
        total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(checked.mismatch, None, "recv wrote other bytes than were sent");
    assert_eq!(checked.bytes, total, "recv wrote every byte, and no more");
    assert!(!ring_exists(&ring));
}
