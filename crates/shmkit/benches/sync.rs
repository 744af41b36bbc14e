//! Micro-benchmarks of the synchronization primitives (criterion):
//!
//! - uncontended `Mutex` lock + unlock, and `Semaphore` post + wait, in one
//!   process (no system call on these paths);
//! - a cross-process round trip through two `Event`s (ping, then pong),
//!   next to a raw futex ping-pong between the same two processes, measured
//!   in the same run. The `Event` spins briefly before it sleeps, so when
//!   both processes are on their own cores it answers without a system call;
//!   the raw futex always sleeps and wakes.
//!
//! Run: `cargo bench -p shmkit --bench sync`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use shmkit::Segment;
use shmkit::sync::{Event, Mutex, Semaphore};

fn uncontended(c: &mut Criterion) {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let mutex = Mutex::create(&seg, 0, 0u64).unwrap();
    c.bench_function("mutex lock+unlock (uncontended)", |b| {
        b.iter(|| {
            let guard = mutex.lock().unwrap();
            black_box(&guard);
        })
    });
    let sem = Semaphore::create(&seg, 128, 0).unwrap();
    c.bench_function("semaphore post+wait (uncontended)", |b| {
        b.iter(|| {
            sem.post().unwrap();
            sem.wait().unwrap();
        })
    });
    let event = Event::create(&seg, 192).unwrap();
    c.bench_function("event notify (nobody waiting)", |b| b.iter(|| event.notify_one()));
}

/// Words in the shared page: ping and pong counters, a stop flag.
const PING: usize = 1024;
const PONG: usize = 1088;
const STOP: usize = 1152;

fn word(seg: &Segment, offset: usize) -> &AtomicU32 {
    // SAFETY: inside the 4096-byte mapping, 4-aligned, only used atomically,
    // and the reference does not outlive `seg`.
    unsafe { AtomicU32::from_ptr(seg.as_ptr().as_ptr().add(offset).cast()) }
}

fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child runs `f` (atomics and futex calls only) and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn event_round_trip(c: &mut Criterion) {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let ping_event = Event::create(&seg, 0).unwrap();
    let pong_event = Event::create(&seg, 64).unwrap();
    let (ping, pong, stop) = (word(&seg, PING), word(&seg, PONG), word(&seg, STOP));
    let child = fork(|| {
        let mut seen = 0;
        loop {
            ping_event
                .wait_until(|| ping.load(Ordering::Acquire) != seen || stop.load(Ordering::Acquire) != 0, None)
                .unwrap();
            if stop.load(Ordering::Acquire) != 0 {
                return;
            }
            seen = ping.load(Ordering::Acquire);
            pong.store(seen, Ordering::Release);
            pong_event.notify_one();
        }
    });
    let mut n = 0u32;
    c.bench_function("event round trip (2 processes)", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            ping.store(n, Ordering::Release);
            ping_event.notify_one();
            pong_event.wait_until(|| pong.load(Ordering::Acquire) == n, None).unwrap();
        })
    });
    stop.store(1, Ordering::Release);
    ping_event.notify_all();
    reap(child);
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned word; shared (no PRIVATE flag).
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, std::ptr::null::<u8>()) };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

fn raw_futex_round_trip(c: &mut Criterion) {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let (ping, pong, stop) = (word(&seg, PING), word(&seg, PONG), word(&seg, STOP));
    let child = fork(|| {
        let mut seen = 0;
        loop {
            while ping.load(Ordering::Acquire) == seen {
                futex_wait(ping, seen);
            }
            if stop.load(Ordering::Acquire) != 0 {
                return;
            }
            seen = ping.load(Ordering::Acquire);
            pong.store(seen, Ordering::Release);
            futex_wake(pong);
        }
    });
    let mut n = 0u32;
    c.bench_function("raw futex round trip (2 processes)", |b| {
        b.iter(|| {
            let before = pong.load(Ordering::Acquire);
            n = n.wrapping_add(1);
            ping.store(n, Ordering::Release);
            futex_wake(ping);
            while pong.load(Ordering::Acquire) == before {
                futex_wait(pong, before);
            }
        })
    });
    stop.store(1, Ordering::Release);
    ping.fetch_add(1, Ordering::Release);
    futex_wake(ping);
    reap(child);
}

criterion_group!(benches, uncontended, event_round_trip, raw_futex_round_trip);
criterion_main!(benches);
