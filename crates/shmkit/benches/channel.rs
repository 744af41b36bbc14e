//! Cross-process figures of the ring, each next to its floor measured in the
//! same run, two processes pinned to two cores (`fork`):
//!
//! - round trip of an 8-byte message through two rings (spinning), against
//!   the cache-line round trip between the same two processes;
//! - one-way stream of 8-byte messages (default, blocking mode): messages/s;
//! - one-way stream of 1 MiB messages copied in and out, against single-thread
//!   `memcpy` of 1 MiB;
//! - blocking round trip (both sides asleep between messages), against a raw
//!   futex ping-pong done the same way.
//!
//! Run: `cargo bench -p shmkit --bench channel` (`-- --quick` for a short run).
//! The full comparison with every classic IPC mechanism is `shmkit bench`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmkit::Segment;
use shmkit::channel::ring::{Receiver, RingOptions, Sender};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn fork(cpu: usize, f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child runs `f` (this benchmark's own code) and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        pin(cpu);
        f();
        // SAFETY: ends the child without the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn name(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

fn opts(cap: usize) -> RingOptions {
    let mut o = RingOptions::new();
    o.capacity(cap);
    o
}

fn words(seg: &Segment) -> (&AtomicU64, &AtomicU64) {
    // SAFETY: two 8-aligned words on separate cache lines inside the
    // mapping, only accessed atomically, not outliving `seg`.
    unsafe {
        let base = seg.as_ptr().as_ptr();
        (AtomicU64::from_ptr(base.cast()), AtomicU64::from_ptr(base.add(128).cast()))
    }
}

/// Round trips of a cache line: ns per round trip, per batch.
fn cache_line_floor(rounds: u64, batches: usize) -> Vec<f64> {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let (ping, pong) = words(&seg);
    let total = rounds * batches as u64 + 1000;
    let child = fork(1, || {
        for i in 1..=total {
            while ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pong.store(i, Ordering::Release);
        }
    });
    let mut n = 0;
    let mut round = || {
        n += 1;
        ping.store(n, Ordering::Release);
        while pong.load(Ordering::Acquire) != n {
            std::hint::spin_loop();
        }
    };
    for _ in 0..1000 {
        round();
    }
    let mut out = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..rounds {
            round();
        }
        out.push(t.elapsed().as_nanos() as f64 / rounds as f64);
    }
    reap(child);
    out
}

/// Round trips of an 8-byte message through two rings.
fn ring_round_trip(rounds: u64, batches: usize) -> Vec<f64> {
    let (a, b) = (name("rt-a"), name("rt-b"));
    let mut tx = Sender::open_or_create(&a, &opts(1 << 16)).unwrap();
    let mut rx = Receiver::open_or_create(&b, &opts(1 << 16)).unwrap();
    let child = fork(1, || {
        let mut rx = Receiver::open_or_create(&a, &opts(1 << 16)).unwrap();
        let mut tx = Sender::open_or_create(&b, &opts(1 << 16)).unwrap();
        loop {
            let Ok(v) = rx.recv_value::<u64>() else { return };
            if tx.send_value(&v).is_err() {
                return;
            }
        }
    });
    let mut n = 0u64;
    let mut round = || {
        n += 1;
        tx.send_value(&n).unwrap();
        assert_eq!(rx.recv_value::<u64>().unwrap(), n);
    };
    for _ in 0..1000 {
        round();
    }
    let mut out = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..rounds {
            round();
        }
        out.push(t.elapsed().as_nanos() as f64 / rounds as f64);
    }
    drop(tx);
    drop(rx);
    reap(child);
    out
}

/// One-way stream: messages per second.
fn ring_stream(len: usize, messages: u64, capacity: usize) -> f64 {
    let ring = name("stream");
    let mut rx = Receiver::open_or_create(&ring, &opts(capacity)).unwrap();
    let child = fork(1, || {
        let mut tx = Sender::open_or_create(&ring, &opts(capacity)).unwrap();
        let data = vec![7u8; len];
        for _ in 0..messages {
            tx.send(&data).unwrap();
        }
    });
    let mut buf = Vec::with_capacity(len);
    rx.recv(&mut buf).unwrap();
    let t = Instant::now();
    for _ in 1..messages {
        rx.recv(&mut buf).unwrap();
        black_box(&buf);
    }
    let rate = (messages - 1) as f64 / t.elapsed().as_secs_f64();
    reap(child);
    rate
}

/// Single-thread memcpy of `len` bytes: bytes per second.
fn memcpy_bandwidth(len: usize, rounds: u64) -> f64 {
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let t = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (len as u64 * rounds) as f64 / t.elapsed().as_secs_f64()
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid aligned word, shared form.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, std::ptr::null::<u8>()) };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid aligned word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Raw futex ping-pong with a pause between rounds (both sides asleep).
fn futex_round_trip(rounds: usize, gap: Duration) -> Vec<f64> {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    // SAFETY: two words on separate lines of the mapping, used atomically.
    let (ping, pong) = unsafe {
        let base = seg.as_ptr().as_ptr();
        (AtomicU32::from_ptr(base.cast()), AtomicU32::from_ptr(base.add(128).cast()))
    };
    let child = fork(1, || {
        for i in 1..=rounds as u32 {
            while ping.load(Ordering::Acquire) != i {
                futex_wait(ping, i - 1);
            }
            pong.store(i, Ordering::Release);
            futex_wake(pong);
        }
    });
    let mut out = Vec::new();
    for i in 1..=rounds as u32 {
        std::thread::sleep(gap);
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        futex_wake(ping);
        while pong.load(Ordering::Acquire) != i {
            futex_wait(pong, i - 1);
        }
        out.push(t.elapsed().as_nanos() as f64);
    }
    reap(child);
    out
}

/// Ring ping-pong with a pause between rounds (both sides asleep).
fn ring_blocking_round_trip(rounds: usize, gap: Duration) -> Vec<f64> {
    let (a, b) = (name("blk-a"), name("blk-b"));
    let mut tx = Sender::open_or_create(&a, &opts(1 << 16)).unwrap();
    let mut rx = Receiver::open_or_create(&b, &opts(1 << 16)).unwrap();
    let child = fork(1, || {
        let mut rx = Receiver::open_or_create(&a, &opts(1 << 16)).unwrap();
        let mut tx = Sender::open_or_create(&b, &opts(1 << 16)).unwrap();
        loop {
            let Ok(v) = rx.recv_value::<u64>() else { return };
            if tx.send_value(&v).is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    for i in 0..rounds as u64 {
        std::thread::sleep(gap);
        let t = Instant::now();
        tx.send_value(&i).unwrap();
        assert_eq!(rx.recv_value::<u64>().unwrap(), i);
        out.push(t.elapsed().as_nanos() as f64);
    }
    drop(tx);
    drop(rx);
    reap(child);
    out
}

/// Send and receive in one thread, in batches: the instruction cost of the
/// ring without any cache-line traffic between cores.
fn ring_single_thread(batch: usize, rounds: usize) -> f64 {
    let ring = name("single");
    let mut tx = Sender::open_or_create(&ring, &opts(1 << 20)).unwrap();
    let mut rx = Receiver::open(&ring).unwrap();
    let mut buf = Vec::with_capacity(8);
    let t = Instant::now();
    for _ in 0..rounds {
        for i in 0..batch as u64 {
            tx.try_send(&i.to_le_bytes()).unwrap();
        }
        for _ in 0..batch {
            rx.try_recv(&mut buf).unwrap();
        }
    }
    (batch * rounds) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo test` runs benches with `--bench` absent; do a tiny run then.
    let scale = if quick { 1 } else { 10 };
    pin(0);
    if std::env::args().any(|a| a == "--single") {
        let single = ring_single_thread(4096, 5000);
        println!("8 B send+receive, one thread: {:7.1} M messages/s", single / 1e6);
        return;
    }
    let batches = 5 * scale;
    let floor = cache_line_floor(20_000, batches);
    let ring = ring_round_trip(20_000, batches);
    let (floor_med, ring_med) = (median(floor), median(ring));
    println!(
        "8 B round trip, spinning:   ring {ring_med:7.1} ns   cache-line floor {floor_med:7.1} ns   ratio {:.2}",
        ring_med / floor_med
    );

    let single = ring_single_thread(4096, 500 * scale);
    println!("8 B send+receive, one thread: {:7.1} M messages/s (no cross-core traffic)", single / 1e6);
    let stream = ring_stream(8, 20_000_000 * scale as u64, 1 << 20);
    println!("8 B one-way stream:         ring {:7.1} M messages/s", stream / 1e6);

    let mib = 1 << 20;
    let big = ring_stream(mib, 500 * scale as u64, 8 << 20) * mib as f64;
    let copy = memcpy_bandwidth(mib, 2000 * scale as u64);
    println!(
        "1 MiB one-way stream:       ring {:7.2} GB/s   memcpy {:7.2} GB/s   ratio {:.2}",
        big / 1e9,
        copy / 1e9,
        big / copy
    );

    let gap = Duration::from_micros(500);
    let rounds = 200 * scale;
    let futex = futex_round_trip(rounds, gap);
    let blocking = ring_blocking_round_trip(rounds, gap);
    let (f50, b50) = (median(futex.clone()), median(blocking.clone()));
    let (f99, b99) = (percentile(futex, 0.99), percentile(blocking, 0.99));
    println!(
        "blocking round trip:        ring {:7.1} us (p99 {:.1})   futex ping-pong {:7.1} us (p99 {:.1})   ratio {:.2}",
        b50 / 1e3,
        b99 / 1e3,
        f50 / 1e3,
        f99 / 1e3,
        b50 / f50
    );
}
