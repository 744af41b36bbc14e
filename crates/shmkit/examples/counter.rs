//! Several processes adding to one counter in shared memory, under a robust
//! process-shared [`Mutex`]: what the seeds' "use a semaphore or a mutex in
//! production" advice (seed 001) looks like when done.
//!
//! Start the same command in several terminals (or `&` it a few times):
//!
//! ```text
//! cargo run -p shmkit --example counter -- [NAME] [ITERATIONS] [--wait-for N] [--crash-after K]
//! ```
//!
//! Each process opens the POSIX segment `NAME` (default `/shmkit-counter`),
//! creating it if it is first (`open_or_create`, mode 0600), joins, adds 1
//! to the counter `ITERATIONS` times (default 100000), each time under the
//! lock, leaves, and prints the value it saw when it left. The last process
//! to leave sees the sum of everyone's iterations and removes the segment
//! (`shm_unlink`), so nothing stays in `/dev/shm`.
//!
//! `--wait-for N` makes every process wait, after joining, until `N`
//! processes have joined (an [`Event`], so the wait sleeps instead of
//! polling): without it, a process started a few milliseconds late may find
//! the others done and the segment gone, and count alone in a new one.
//!
//! The segment holds the mutex and its value, a `#[repr(C)]` [`Pod`]
//! struct: the counter, how many processes have joined, whether the segment
//! is retired, and the pids of the members (at most 32 at a time). The last
//! one out is the member that, leaving, finds no other live member: it
//! removes the name and marks the segment retired while it holds the lock.
//! A process that opened the segment just before that and locks it after
//! sees "retired" and starts over with a new segment.
//!
//! A process that dies, even by `SIGKILL`, while it holds the lock does not
//! block the others: the kernel releases the robust mutex and the next
//! locker gets [`LockError::OwnerDied`]. This example then repairs the value:
//! the counter is whole (every update is a single store of the struct, made
//! with the lock held), but the dead process's remaining iterations are
//! lost, so the total falls short; dead members are dropped from the table,
//! so that the last live process still removes the segment; then it calls
//! [`MutexGuard::mark_consistent`] and carries on. (Without that call the
//! mutex would become unrecoverable for every process.) A member killed
//! while it did *not* hold the lock is noticed the same way when the others
//! leave. A process counts as dead when `/proc/PID` is gone, a zombie, or
//! exiting; if its pid is reused by then, the segment is not removed:
//! remove it with `shmkit rm posix:/shmkit-counter`. All processes must
//! share a pid namespace.
//!
//! `--crash-after K` demonstrates that: the process kills itself with
//! `SIGKILL` while it holds the lock, after `K` increments.

use std::error::Error;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmkit::sync::{Event, LockError, Mutex, MutexGuard};
use shmkit::{ErrorKind, Lifetime, Segment, Target};

/// How many processes may be members at the same time.
const MAX_MEMBERS: usize = 32;

/// The value the mutex protects.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Counter {
    /// The shared counter.
    count: u64,
    /// How many processes have joined so far (never decreases).
    joined: u64,
    /// Non-zero once the last member removed the segment's name.
    retired: u64,
    /// Pids of the members; 0 marks a free entry.
    members: [u32; MAX_MEMBERS],
}

const MUTEX: usize = 0;
/// After the mutex, rounded up to the 64-byte alignment primitives need.
const EVENT: usize = Mutex::<Counter>::SIZE.next_multiple_of(64);
const SIZE: usize = EVENT + Event::SIZE;

const DEFAULT_NAME: &str = "/shmkit-counter";
const USAGE: &str = "usage: counter [NAME] [ITERATIONS] [--wait-for N] [--crash-after K]";

/// Whether `pid` is a live process: `/proc/PID/stat` exists, its state is
/// not zombie or dead, and its flags do not say it is exiting.
fn alive(pid: u32) -> bool {
    /// `PF_EXITING` in the kernel's task flags: set as `exit` begins, before
    /// the robust mutexes of the process are released.
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "PID (COMM) STATE PPID PGRP SESSION TTY TPGID FLAGS …"; COMM may hold
    // spaces and parentheses, so split after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let flags = fields.get(6).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    !matches!(state, "Z" | "X" | "x") && flags & PF_EXITING == 0
}

/// Drops dead processes from the member table; returns how many.
fn prune(counter: &mut Counter) -> usize {
    let mut pruned = 0;
    for pid in &mut counter.members {
        if *pid != 0 && !alive(*pid) {
            *pid = 0;
            pruned += 1;
        }
    }
    pruned
}

/// Locks the counter; if the previous holder died, repairs and says so.
fn lock<'m>(mutex: &'m Mutex<'_, Counter>) -> shmkit::Result<MutexGuard<'m, Counter>> {
    match mutex.lock() {
        Ok(guard) => Ok(guard),
        Err(LockError::OwnerDied(mut guard)) => {
            let mut counter = guard.get();
            let pruned = prune(&mut counter);
            guard.set(counter);
            guard.mark_consistent()?;
            eprintln!(
                "counter {}: a process died holding the lock; the count ({}) is whole but misses the rest of its \
                 iterations; dropped {pruned} dead member(s); the lock is consistent again",
                std::process::id(),
                counter.count
            );
            Ok(guard)
        }
        Err(LockError::Failed(e)) => Err(e),
    }
}

/// Opens the segment, creating it if this process is first.
///
/// A process that opens the object in the instant between its creator's
/// `shm_open` and `ftruncate` finds it empty: shmkit's `open_or_create`
/// reports that as `TooSmall { actual: 0 }` instead of waiting. Such a
/// start-up race is retried for a moment.
fn open_segment(target: &Target) -> shmkit::Result<Segment> {
    let mut options = Segment::options();
    // The last member removes the name itself, under the lock.
    options.size(SIZE).lifetime(Lifetime::Persistent);
    let mut tries = 0;
    loop {
        match options.open_or_create(target) {
            Err(e) if matches!(e.kind(), ErrorKind::TooSmall { actual: 0, .. }) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

struct Args {
    target: Target,
    iterations: u64,
    wait_for: u64,
    crash_after: Option<u64>,
}

/// What one process saw.
enum Outcome {
    /// The segment was retired before this process joined: start over.
    Retired,
    /// Done: the value when leaving, and how many members stay.
    Left { value: u64, others: usize, removed: Option<String> },
}

/// One membership in the segment: join, count, leave.
fn session(args: &Args, seg: &Segment) -> Result<Outcome, Box<dyn Error>> {
    let me = std::process::id();
    let mutex = Mutex::open_or_create(seg, MUTEX, Counter::zeroed())?;
    let event = Event::open_or_create(seg, EVENT)?;

    {
        let mut guard = lock(&mutex)?;
        let mut counter = guard.get();
        if counter.retired != 0 {
            return Ok(Outcome::Retired);
        }
        let free = match counter.members.iter().position(|&pid| pid == 0) {
            Some(free) => Some(free),
            None => {
                prune(&mut counter);
                counter.members.iter().position(|&pid| pid == 0)
            }
        };
        let Some(free) = free else {
            return Err(format!("{MAX_MEMBERS} processes are counting already; try again later").into());
        };
        counter.members[free] = me;
        counter.joined += 1;
        guard.set(counter);
    }
    event.notify_all();

    if args.wait_for > 1 {
        // The condition is checked under the lock; an error ends the wait,
        // and the next lock below reports it.
        event.wait_until(|| lock(&mutex).map_or(true, |g| g.get().joined >= args.wait_for), None)?;
    }

    for done in 0..args.iterations {
        let mut guard = lock(&mutex)?;
        if args.crash_after == Some(done) {
            eprintln!("counter {me}: crashing (SIGKILL) while holding the lock, after {done} increments");
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)?;
        }
        let counter = guard.get();
        guard.set(Counter { count: counter.count + 1, ..counter });
    }

    let mut guard = lock(&mutex)?;
    let mut counter = guard.get();
    for pid in &mut counter.members {
        if *pid == me {
            *pid = 0;
        }
    }
    prune(&mut counter);
    let others = counter.members.iter().filter(|&&pid| pid != 0).count();
    let mut removed = None;
    if others == 0 {
        // Still under the lock: nobody can join this segment any more.
        match shmkit::segment::remove(&args.target) {
            Ok(()) => removed = Some(seg.name().to_string()),
            Err(e) if *e.kind() == ErrorKind::NotFound => {
                eprintln!("counter {me}: someone removed {} already", seg.name())
            }
            Err(e) => return Err(e.into()),
        }
        counter.retired = 1;
    }
    guard.set(counter);
    Ok(Outcome::Left { value: counter.count, others, removed })
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut positional = Vec::new();
    let mut wait_for = 1;
    let mut crash_after = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wait-for" => wait_for = args.next().ok_or(USAGE)?.parse().map_err(|_| USAGE)?,
            "--crash-after" => crash_after = Some(args.next().ok_or(USAGE)?.parse().map_err(|_| USAGE)?),
            a if a.starts_with('-') => return Err(USAGE.into()),
            _ => positional.push(arg),
        }
    }
    if positional.len() > 2 {
        return Err(USAGE.into());
    }
    let mut positional = positional.into_iter();
    let target = Target::posix(&positional.next().unwrap_or_else(|| DEFAULT_NAME.to_string()))?;
    let iterations = match positional.next() {
        Some(n) => n.parse().map_err(|_| USAGE)?,
        None => 100_000,
    };
    if wait_for as usize > MAX_MEMBERS {
        return Err(format!("--wait-for: at most {MAX_MEMBERS} processes").into());
    }
    Ok(Args { target, iterations, wait_for, crash_after })
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let me = std::process::id();
    // A few attempts: each retry means the segment was retired under us,
    // which needs another process to finish in between.
    for _ in 0..100 {
        let seg = open_segment(&args.target)?;
        match session(&args, &seg)? {
            Outcome::Retired => continue,
            Outcome::Left { value, others, removed } => {
                println!("counter {me}: added {}, value {value} when done", args.iterations);
                match removed {
                    Some(name) => println!("counter {me}: last one out, removed {name}"),
                    None if others == 0 => println!("counter {me}: last one out"),
                    None => println!("counter {me}: {others} other process(es) still counting; the last removes it"),
                }
                return Ok(());
            }
        }
    }
    Err(format!("{} was retired 100 times before this process could join", args.target).into())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("counter: {e}"))
}
