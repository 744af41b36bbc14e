//! The process-shared primitives of `shmkit::sync`, exercised by real
//! processes: mutual exclusion, owner death (SIGKILL mid-critical-section,
//! again and again), timeouts, wake-ups across processes, and the header
//! checks that keep a process from using a half-made or foreign primitive.

use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use shmkit::sync::{Event, LockError, Mutex, NamedSemaphore, SemSet, Semaphore};
use shmkit::{ErrorKind, Segment, SysvKey, Target};

use crate::util::{Backend, child, unique_key, unique_name, wait};

/// What the kill-loop mutex protects: a counter and a flag that is 1 only
/// in the middle of an update, so a half-done update is visible.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
struct Guarded {
    count: u64,
    in_progress: u64,
}

/// Offset of a word children use to say "I hold the lock now" (a counter).
const READY: usize = 256;

fn ready_word(seg: &Segment) -> &AtomicU32 {
    // SAFETY: offset 256 is inside every segment these tests make (4096
    // bytes), 4-aligned, and the word is only ever accessed atomically; the
    // reference lives no longer than `seg`.
    unsafe { AtomicU32::from_ptr(seg.as_ptr().as_ptr().add(READY).cast()) }
}

fn shared_segment() -> (Segment, Target, crate::util::Remove) {
    let (target, guard) = Backend::Posix.target();
    let seg = Segment::create(&target, 4096).unwrap();
    (seg, target, guard)
}

/// Waits until the ready word reaches `value`, or fails the test.
fn await_ready(seg: &Segment, value: u32, child: &mut Child) {
    let start = Instant::now();
    while ready_word(seg).load(Ordering::Acquire) < value {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child ended before taking the lock: {status:?}");
        }
        assert!(start.elapsed() < crate::util::WATCHDOG, "watchdog: the child never took the lock");
        std::thread::yield_now();
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    let status = wait(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// A tiny xorshift, so kill points vary without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

// ---- child roles (dispatched from `children.rs`) ----

/// Adds 1 to the `Mutex<u64>` at offset 0 of `target`, `n` times.
/// 100: open failed; 101: a lock failed.
pub fn mutex_increment(target: &Target, n: u64) -> i32 {
    let Ok(seg) = Segment::open(target) else { return 100 };
    let Ok(mutex) = Mutex::<u64>::open(&seg, 0) else { return 100 };
    for _ in 0..n {
        let Ok(mut guard) = mutex.lock() else { return 101 };
        guard.set(guard.get() + 1);
    }
    0
}

/// Locks the `Mutex<Guarded>` at 0, marks an update in progress, bumps the
/// ready word, then keeps updating inside the critical section until killed.
/// 110: open failed; 111: lock failed.
pub fn mutex_hold_forever(target: &Target) -> i32 {
    let Ok(seg) = Segment::open(target) else { return 110 };
    let Ok(mutex) = Mutex::<Guarded>::open(&seg, 0) else { return 110 };
    let Ok(mut guard) = mutex.lock() else { return 111 };
    let mut value = guard.get();
    value.in_progress = 1;
    guard.set(value);
    ready_word(&seg).fetch_add(1, Ordering::Release);
    loop {
        value.count += 1;
        guard.set(value);
        std::hint::spin_loop();
    }
}

/// Waits (at most 20 s) for a unit of the semaphore at 0. 120: open
/// failed; 121: the wait failed.
pub fn semaphore_wait(target: &Target) -> i32 {
    let Ok(seg) = Segment::open(target) else { return 120 };
    let Ok(sem) = Semaphore::open(&seg, 0) else { return 120 };
    ready_word(&seg).fetch_add(1, Ordering::Release);
    if sem.wait_timeout(crate::util::WATCHDOG).is_ok() { 0 } else { 121 }
}

/// Waits (at most 20 s) until the word at 512 is non-zero, using the event
/// at 0. 130: open failed; 131: timed out.
pub fn event_wait(target: &Target) -> i32 {
    let Ok(seg) = Segment::open(target) else { return 130 };
    let Ok(event) = Event::open(&seg, 0) else { return 130 };
    // SAFETY: as `ready_word`, at offset 512.
    let flag = unsafe { AtomicU32::from_ptr(seg.as_ptr().as_ptr().add(512).cast()) };
    ready_word(&seg).fetch_add(1, Ordering::Release);
    match event.wait_until(|| flag.load(Ordering::Acquire) != 0, Some(crate::util::WATCHDOG)) {
        Ok(()) => 0,
        Err(_) => 131,
    }
}

// ---- tests ----

#[test]
fn mutex_excludes_four_processes_of_100_000_increments() {
    let (seg, target, _guard) = shared_segment();
    let mutex = Mutex::create(&seg, 0, 0u64).unwrap();
    let text = target.to_string();
    let children: Vec<Child> = (0..4).map(|_| child("mutex-increment", &[&text, "100000"]).spawn().unwrap()).collect();
    for c in children {
        assert_eq!(wait(c).code(), Some(0));
    }
    assert_eq!(mutex.lock().unwrap().get(), 400_000);
}

/// Kills a lock holder `kills` times; every time, the next locker must see
/// "owner died" exactly once and be able to repair the data.
fn kill_loop(kills: u32) {
    let (seg, target, _guard) = shared_segment();
    let mutex = Mutex::create(&seg, 0, Guarded::default()).unwrap();
    let text = target.to_string();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut owner_died = 0;
    for round in 1..=kills {
        let mut holder = child("mutex-hold-forever", &[&text]).spawn().unwrap();
        await_ready(&seg, round, &mut holder);
        // Let it run inside the critical section for 0–300 µs, then kill it.
        let spin_until = Instant::now() + Duration::from_micros(next_random(&mut rng) % 300);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        kill(holder);
        match mutex.lock_timeout(crate::util::WATCHDOG) {
            Err(LockError::OwnerDied(mut guard)) => {
                owner_died += 1;
                assert!(guard.owner_died());
                let mut value = guard.get();
                assert_eq!(value.in_progress, 1, "round {round}: the dead holder's update is not visible");
                value.in_progress = 0;
                guard.set(value);
                guard.mark_consistent().unwrap();
            }
            Ok(_) => panic!("round {round}: lock succeeded without reporting the owner's death"),
            Err(e) => panic!("round {round}: {e}"),
        }
        // Exactly once per death: the next lock is an ordinary one.
        let guard = mutex.try_lock().unwrap();
        assert!(!guard.owner_died());
        assert_eq!(guard.get().in_progress, 0);
    }
    assert_eq!(owner_died, kills);
    eprintln!("mutex kill loop: {kills} holders killed, {owner_died} owner deaths reported, 0 hangs");
}

#[test]
fn mutex_survives_200_holders_killed_mid_critical_section() {
    kill_loop(200);
}

/// The long version: `SHMKIT_KILLS=10000 cargo test --release -p shmkit
/// --test tests mutex_kill_loop_long -- --ignored --nocapture`.
#[test]
#[ignore = "long: 10,000 kills by default; run on purpose"]
fn mutex_kill_loop_long() {
    let kills = std::env::var("SHMKIT_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    kill_loop(kills);
}

#[test]
fn mutex_left_inconsistent_becomes_unrecoverable_and_says_so() {
    let (seg, target, _guard) = shared_segment();
    let mutex = Mutex::create(&seg, 0, Guarded::default()).unwrap();
    let mut holder = child("mutex-hold-forever", &[&target.to_string()]).spawn().unwrap();
    await_ready(&seg, 1, &mut holder);
    kill(holder);
    match mutex.lock_timeout(crate::util::WATCHDOG) {
        // Unlock without repairing: the mutex must not silently carry on.
        Err(LockError::OwnerDied(guard)) => drop(guard),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    for (i, attempt) in
        [mutex.lock(), mutex.try_lock(), mutex.lock_timeout(Duration::from_millis(10))].into_iter().enumerate()
    {
        match attempt {
            Err(LockError::Failed(e)) => assert_eq!(*e.kind(), ErrorKind::Unrecoverable, "{i}: {e}"),
            other => panic!("expected Unrecoverable, got {other:?}"),
        }
    }
    // Another process sees the same.
    let other = Segment::open(&target).unwrap();
    let again = Mutex::<Guarded>::open(&other, 0).unwrap();
    assert!(matches!(again.lock(), Err(LockError::Failed(e)) if *e.kind() == ErrorKind::Unrecoverable));
}

#[test]
fn mutex_timeouts_and_try_lock_when_another_process_holds_it() {
    let (seg, target, _guard) = shared_segment();
    let mutex = Mutex::create(&seg, 0, Guarded::default()).unwrap();
    let mut holder = child("mutex-hold-forever", &[&target.to_string()]).spawn().unwrap();
    await_ready(&seg, 1, &mut holder);
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    match mutex.lock_timeout(timeout) {
        Err(LockError::Failed(e)) => assert_eq!(*e.kind(), ErrorKind::Timeout, "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() >= timeout, "the timeout fired early");
    match mutex.try_lock() {
        Err(LockError::Failed(e)) => assert_eq!(*e.kind(), ErrorKind::WouldBlock, "{e}"),
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    kill(holder);
    assert!(matches!(mutex.lock(), Err(LockError::OwnerDied(_))));
}

#[test]
fn mutex_relock_by_the_same_thread_is_an_error_not_a_hang() {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let mutex = Mutex::create(&seg, 0, 7u32).unwrap();
    let guard = mutex.lock().unwrap();
    match mutex.lock() {
        Err(LockError::Failed(e)) => assert_eq!(*e.kind(), ErrorKind::Deadlock),
        other => panic!("expected Deadlock, got {other:?}"),
    }
    assert_eq!(guard.get(), 7);
}

#[test]
fn semaphore_counts_times_out_and_is_posted_across_processes() {
    let (seg, target, _guard) = shared_segment();
    let sem = Semaphore::create(&seg, 0, 3).unwrap();
    for _ in 0..3 {
        sem.try_wait().unwrap();
    }
    assert_eq!(*sem.try_wait().unwrap_err().kind(), ErrorKind::WouldBlock);
    let timeout = Duration::from_millis(30);
    let start = Instant::now();
    assert_eq!(*sem.wait_timeout(timeout).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(start.elapsed() >= timeout, "the timeout fired early");

    // A waiter in another process is woken by our post.
    let mut waiter = child("semaphore-wait", &[&target.to_string()]).spawn().unwrap();
    let start = Instant::now();
    while ready_word(&seg).load(Ordering::Acquire) < 1 {
        assert!(start.elapsed() < crate::util::WATCHDOG, "watchdog: waiter never started");
        if let Some(status) = waiter.try_wait().unwrap() {
            panic!("waiter ended early: {status:?}");
        }
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // let it reach the futex
    sem.post().unwrap();
    assert_eq!(wait(waiter).code(), Some(0));
    assert_eq!(sem.value(), 0);
}

#[test]
fn event_wakes_every_waiting_process() {
    let (seg, target, _guard) = shared_segment();
    let event = Event::create(&seg, 0).unwrap();
    let text = target.to_string();
    let waiters: Vec<Child> = (0..3).map(|_| child("event-wait", &[&text]).spawn().unwrap()).collect();
    let start = Instant::now();
    while ready_word(&seg).load(Ordering::Acquire) < 3 {
        assert!(start.elapsed() < crate::util::WATCHDOG, "watchdog: waiters never started");
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: as `ready_word`, at offset 512.
    let flag = unsafe { AtomicU32::from_ptr(seg.as_ptr().as_ptr().add(512).cast()) };
    flag.store(1, Ordering::Release);
    event.notify_all();
    for w in waiters {
        assert_eq!(wait(w).code(), Some(0));
    }
    let timeout = Duration::from_millis(20);
    let start = Instant::now();
    assert_eq!(*event.wait_until(|| false, Some(timeout)).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(start.elapsed() >= timeout);
    // A condition that already holds returns at once, without a notify.
    event.wait_until(|| true, Some(Duration::ZERO)).unwrap();
}

#[test]
fn primitives_check_their_place_and_header() {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    // Nothing there yet.
    assert_eq!(*Mutex::<u64>::open(&seg, 0).unwrap_err().kind(), ErrorKind::NotInitialized);
    assert_eq!(*Semaphore::open(&seg, 64).unwrap_err().kind(), ErrorKind::NotInitialized);
    let _mutex = Mutex::create(&seg, 0, 1u64).unwrap();
    let _sem = Semaphore::create(&seg, 128, 0).unwrap();
    let _event = Event::create(&seg, 192).unwrap();
    // Taken places.
    assert_eq!(*Mutex::create(&seg, 0, 1u64).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(*Event::create(&seg, 128).unwrap_err().kind(), ErrorKind::AlreadyExists);
    // Wrong kind or payload: corrupt, with what was found.
    let err = Semaphore::open(&seg, 0).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Corrupt(what) if what.contains("magic")), "{err}");
    let err = Mutex::<u32>::open(&seg, 0).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Corrupt(what) if what.contains("payload")), "{err}");
    assert!(Semaphore::open(&seg, 128).is_ok() && Event::open(&seg, 192).is_ok());
    // Bad places.
    assert!(matches!(Semaphore::create(&seg, 100, 0).unwrap_err().kind(), ErrorKind::InvalidArgument(_)));
    assert!(matches!(Semaphore::create(&seg, 4096 - 32, 0).unwrap_err().kind(), ErrorKind::OutOfBounds { .. }));
    // A scribbled init state is reported, not trusted.
    let mut seg = seg;
    seg.write(192, &7u32).unwrap();
    assert!(matches!(Event::open(&seg, 192).unwrap_err().kind(), ErrorKind::Corrupt(_)));
    // open_or_create: the second caller opens.
    let (target, _guard) = Backend::Posix.target();
    let a = Segment::create(&target, 4096).unwrap();
    let b = Segment::open(&target).unwrap();
    let first = Semaphore::open_or_create(&a, 0, 2).unwrap();
    let second = Semaphore::open_or_create(&b, 0, 99).unwrap();
    assert_eq!((first.value(), second.value()), (2, 2));
}

#[test]
fn primitives_refuse_read_only_segments() {
    let (seg, target, _guard) = shared_segment();
    let _sem = Semaphore::create(&seg, 0, 1).unwrap();
    let ro = Segment::options().read_only().open(&target).unwrap();
    assert_eq!(*Semaphore::open(&ro, 0).unwrap_err().kind(), ErrorKind::ReadOnly);
}

#[test]
fn sysv_semaphore_set_counts_and_times_out() {
    let key = SysvKey::new(unique_key());
    let set = SemSet::create(key, 2, 1, 0o600).unwrap();
    assert_eq!(set.len(), 2);
    set.acquire(0).unwrap();
    assert_eq!(*set.acquire_timeout(0, Duration::from_millis(20)).unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(*set.try_wait(0).unwrap_err().kind(), ErrorKind::WouldBlock);
    set.release(0).unwrap();
    set.post(1).unwrap();
    assert_eq!((set.value(0).unwrap(), set.value(1).unwrap()), (1, 2));
    let other = SemSet::open(key).unwrap();
    assert_eq!(other.id(), set.id());
    other.wait(1).unwrap();
    assert_eq!(set.value(1).unwrap(), 1);
    assert!(matches!(set.post(2).unwrap_err().kind(), ErrorKind::InvalidArgument(_)));
    assert_eq!(*SemSet::create(key, 1, 0, 0o600).unwrap_err().kind(), ErrorKind::AlreadyExists);
    drop(other);
    drop(set);
    assert_eq!(*SemSet::open(key).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn posix_named_semaphore_basics() {
    let name = format!("/{}", unique_name("sem"));
    let sem = NamedSemaphore::create(&name, 1, 0o600).unwrap();
    let mode = std::fs::metadata(format!("/dev/shm/sem.{}", &name[1..])).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
    let other = NamedSemaphore::open(&name).unwrap();
    other.try_wait().unwrap();
    assert_eq!(*sem.try_wait().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(*sem.wait_timeout(Duration::from_millis(20)).unwrap_err().kind(), ErrorKind::Timeout);
    other.post().unwrap();
    assert_eq!(sem.value().unwrap(), 1);
    assert_eq!(*NamedSemaphore::create(&name, 0, 0o600).unwrap_err().kind(), ErrorKind::AlreadyExists);
    drop(other);
    drop(sem);
    assert_eq!(*NamedSemaphore::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_leaked_guard_keeps_its_mapping_alive() {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let address = seg.as_ptr().as_ptr() as usize;
    let mutex = Mutex::create(&seg, 0, 0u64).unwrap();
    std::mem::forget(mutex.lock().unwrap());
    drop(mutex);
    drop(seg);
    // glibc's robust list still points into the mapping, so it must stay.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps.lines().any(|line| {
        let (range, _) = line.split_once(' ').unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
        (lo..hi).contains(&address)
    });
    assert!(mapped, "the mapping of a segment with a held mutex was unmapped");
    // Other mutexes keep working.
    let other = Segment::options().size(4096).anonymous().unwrap();
    let m = Mutex::create(&other, 0, 1u64).unwrap();
    assert_eq!(m.lock().unwrap().get(), 1);
}

#[test]
fn huge_timeouts_mean_no_timeout() {
    let seg = Segment::options().size(4096).anonymous().unwrap();
    let sem = Semaphore::create(&seg, 0, 1).unwrap();
    sem.wait_timeout(Duration::MAX).unwrap();
    let event = Event::create(&seg, 64).unwrap();
    event.wait_until(|| true, Some(Duration::MAX)).unwrap();
    let mutex = Mutex::create(&seg, 128, 0u8).unwrap();
    assert!(mutex.lock_timeout(Duration::MAX).is_ok());
}
