//! The floors every figure is compared with, measured in the same run:
//! a cache line bounced between the two processes (spinning with the pause
//! instruction), a raw futex ping-pong (both sides sleep every time), and
//! single-thread `memcpy` at each message size.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::{Plan, SIZES, fork, pin, reap};

/// The floors.
#[derive(Debug, Clone)]
pub(crate) struct Floors {
    /// Cache-line round trips between two cores, ns, one sample per round trip.
    pub(crate) cache_line_ns: Vec<f64>,
    /// The same on one core (both processes pinned to it).
    pub(crate) cache_line_same_core_ns: Vec<f64>,
    /// Raw futex ping-pong round trips, ns per round trip.
    pub(crate) futex_ns: Vec<f64>,
    /// `memcpy` bytes per second at each of [`SIZES`].
    pub(crate) memcpy_bps: Vec<f64>,
}

/// A page shared with the child (`MAP_SHARED | MAP_ANONYMOUS`), unmapped on drop.
struct SharedPage(*mut u8);

impl SharedPage {
    fn new() -> std::io::Result<SharedPage> {
        // SAFETY: a fresh anonymous shared mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(SharedPage(p.cast())) }
    }

    fn u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: inside the page, 8-aligned, only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.0.add(offset).cast()) }
    }

    fn u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: inside the page, 4-aligned, only accessed atomically.
        unsafe { AtomicU32::from_ptr(self.0.add(offset).cast()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our mapping, not used after this.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

/// Waits between checks: the pause instruction across cores; on one core
/// the other process must run, so yield to it.
fn relax(same_core: bool) {
    if same_core {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

fn cache_line(rounds: u64, batches: usize, cpus: (usize, usize)) -> anyhow::Result<Vec<f64>> {
    let same = cpus.0 == cpus.1;
    let page = SharedPage::new()?;
    let (ping, pong) = (page.u64(0), page.u64(128));
    let total = rounds * batches as u64 + 1000;
    let child = fork(cpus.1, || {
        for i in 1..=total {
            while ping.load(Ordering::Acquire) != i {
                relax(same);
            }
            pong.store(i, Ordering::Release);
        }
        Ok(())
    })?;
    pin(cpus.0);
    let mut n = 0;
    let mut round = || {
        n += 1;
        ping.store(n, Ordering::Release);
        while pong.load(Ordering::Acquire) != n {
            relax(same);
        }
    };
    for _ in 0..1000 {
        round();
    }
    // Timed per round trip, exactly as the mechanisms are, so that the
    // ratios compare like with like (the timer's own cost is in both).
    let mut out = Vec::with_capacity(rounds as usize * batches);
    for _ in 0..rounds as usize * batches {
        let t = Instant::now();
        round();
        out.push(t.elapsed().as_nanos() as f64);
    }
    reap(child, super::CHILD_LIMIT)?;
    Ok(out)
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid aligned word (shared form: no PRIVATE).
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, std::ptr::null::<u8>()) };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid aligned word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

fn futex(rounds: usize, cpus: (usize, usize)) -> anyhow::Result<Vec<f64>> {
    let page = SharedPage::new()?;
    let (ping, pong) = (page.u32(0), page.u32(128));
    let child = fork(cpus.1, || {
        for i in 1..=rounds as u32 {
            while ping.load(Ordering::Acquire) != i {
                futex_wait(ping, i - 1);
            }
            pong.store(i, Ordering::Release);
            futex_wake(pong);
        }
        Ok(())
    })?;
    pin(cpus.0);
    let mut out = Vec::with_capacity(rounds);
    for i in 1..=rounds as u32 {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        futex_wake(ping);
        while pong.load(Ordering::Acquire) != i {
            futex_wait(pong, i - 1);
        }
        out.push(t.elapsed().as_nanos() as f64);
    }
    reap(child, super::CHILD_LIMIT)?;
    Ok(out)
}

fn memcpy(size: usize, bytes: usize) -> f64 {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    let rounds = (bytes / size).max(10);
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (size * rounds) as f64 / t.elapsed().as_secs_f64()
}

/// The floors' first repetition; [`again`] adds one per later repetition,
/// so the floors see the same drift as the mechanisms they are set against.
pub(crate) fn measure(plan: &Plan, cpus: (usize, usize)) -> anyhow::Result<Floors> {
    let mut floors = Floors {
        cache_line_ns: Vec::new(),
        cache_line_same_core_ns: Vec::new(),
        futex_ns: Vec::new(),
        memcpy_bps: vec![0.0; SIZES.len()],
    };
    again(&mut floors, plan, cpus, 0)?;
    Ok(floors)
}

/// Measures the floors once more (repetition `rep`, from 0) and merges the
/// samples; `memcpy` keeps the mean over repetitions.
pub(crate) fn again(floors: &mut Floors, plan: &Plan, cpus: (usize, usize), rep: usize) -> anyhow::Result<()> {
    floors.cache_line_ns.extend(cache_line(plan.rounds as u64, 1, cpus)?);
    floors.cache_line_same_core_ns.extend(cache_line((plan.rounds / 10) as u64, 1, (cpus.0, cpus.0))?);
    floors.futex_ns.extend(futex((plan.rounds / plan.reps.max(1)).clamp(500, 5_000), cpus)?);
    for (mean, &size) in floors.memcpy_bps.iter_mut().zip(&SIZES) {
        let bps = memcpy(size, plan.stream_bytes / plan.reps.max(1));
        *mean = (*mean * rep as f64 + bps) / (rep + 1) as f64;
    }
    Ok(())
}
