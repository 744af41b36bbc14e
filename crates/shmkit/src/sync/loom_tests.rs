//! Loom models of the futex state machines: the semaphore's and the
//! event's waiter protocols, the very code the primitives run, over model
//! memory. A lost wake-up makes the model deadlock (its futex ignores
//! timeouts), a missing ordering makes a thread read a stale payload.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmkit --lib --release loom`

use loom::sync::Arc;
use loom::thread;

use super::event;
use super::primitive::model::LoomMemory;
use super::primitive::{Memory, Ordering};
use super::semaphore;

/// Payload and condition words, away from the protocol's own words.
const PAYLOAD: usize = 32;
const FLAG: usize = 36;

fn semaphore(mem: &LoomMemory) -> semaphore::Protocol<&LoomMemory> {
    semaphore::Protocol { mem, at: 0, spin: 0 }
}

fn event(mem: &LoomMemory) -> event::Protocol<&LoomMemory> {
    event::Protocol { mem, at: 0, spin: 0 }
}

/// A waiter that finds the count zero sleeps; a post wakes it, and what the
/// poster wrote before posting is visible to it.
#[test]
fn loom_semaphore_post_wakes_a_sleeper_and_publishes() {
    loom::model(|| {
        let mem = Arc::new(LoomMemory::new(64));
        let waiter = {
            let mem = mem.clone();
            thread::spawn(move || {
                assert!(semaphore(&mem).wait(None));
                mem.u32_at(PAYLOAD).load(Ordering::Relaxed)
            })
        };
        mem.u32_at(PAYLOAD).store(42, Ordering::Relaxed);
        assert!(semaphore(&mem).post());
        assert_eq!(waiter.join().unwrap(), 42);
        assert_eq!(semaphore(&mem).count_now(), 0);
    });
}

/// Two sleepers, two posts from two threads: both wake, each takes one
/// unit, none is left over or lost.
#[test]
fn loom_semaphore_two_waiters_two_posters() {
    loom::model(|| {
        let mem = Arc::new(LoomMemory::new(64));
        let spawn = |post: bool| {
            let mem = mem.clone();
            thread::spawn(
                move || if post { assert!(semaphore(&mem).post()) } else { assert!(semaphore(&mem).wait(None)) },
            )
        };
        let threads = [spawn(false), spawn(false), spawn(true)];
        assert!(semaphore(&mem).post());
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(semaphore(&mem).count_now(), 0);
        assert!(!semaphore(&mem).try_take());
    });
}

/// A waiter whose condition is false sleeps; the notifier makes it true
/// and notifies once: the waiter wakes and sees the condition's data.
#[test]
fn loom_event_notify_wakes_a_waiter() {
    loom::model(|| {
        let mem = Arc::new(LoomMemory::new(64));
        let waiter = {
            let mem = mem.clone();
            thread::spawn(move || {
                let ready = || mem.u32_at(FLAG).load(Ordering::Acquire) == 1;
                assert!(event(&mem).wait_until(ready, None));
                mem.u32_at(PAYLOAD).load(Ordering::Relaxed)
            })
        };
        mem.u32_at(PAYLOAD).store(7, Ordering::Relaxed);
        mem.u32_at(FLAG).store(1, Ordering::Release);
        event(&mem).notify(1);
        assert_eq!(waiter.join().unwrap(), 7);
    });
}

/// notify_all wakes every sleeper.
#[test]
fn loom_event_notify_all_wakes_two_waiters() {
    loom::model(|| {
        let mem = Arc::new(LoomMemory::new(64));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let mem = mem.clone();
                thread::spawn(move || {
                    assert!(event(&mem).wait_until(|| mem.u32_at(FLAG).load(Ordering::Acquire) == 1, None));
                })
            })
            .collect();
        mem.u32_at(FLAG).store(1, Ordering::Release);
        event(&mem).notify(i32::MAX as u32);
        for w in waiters {
            w.join().unwrap();
        }
    });
}
