//! `shmkit bench`: shmkit's ring next to every classic IPC mechanism (and,
//! with `--with-peers`, iceoryx2), on this machine, with the floors measured
//! in the same run: the cache-line round trip between the two processes,
//! a raw futex ping-pong, and `memcpy` at each size.
//!
//! Scenarios, each between two processes made by `fork`, pinned to two
//! different cores (round trips also on one core, as a second figure):
//!
//! - round trip: A sends a message of N bytes, B sends it back; the time per
//!   round trip, per sample (median, p99, p99.9);
//! - stream: B sends messages of N bytes as fast as the mechanism takes
//!   them, A receives; messages/s and bytes/s.
//!
//! Repetitions interleave the mechanisms (every mechanism, then the next
//! repetition), and each repetition measures the floors again, so drift on
//! a shared machine hits all of them and their baselines alike.

mod floors;
mod links;
mod report;

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

pub(crate) use self::links::Mechanism;
use self::links::{ALL, Resources};
use crate::cli::BenchArgs;

/// Message sizes measured.
pub(crate) const SIZES: [usize; 5] = [8, 64, 4096, 64 << 10, 1 << 20];

/// What one run measures, and how much.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) reps: usize,
    /// Round trips per repetition, for 8-byte messages (fewer for big ones).
    pub(crate) rounds: usize,
    /// Bytes streamed per repetition and mechanism (fewer messages for big ones).
    pub(crate) stream_bytes: usize,
    pub(crate) same_core: bool,
}

impl Plan {
    fn rounds_for(&self, size: usize) -> usize {
        (self.rounds * 64 / (64 + size / 64)).clamp(20, self.rounds)
    }

    fn messages_for(&self, size: usize) -> usize {
        (self.stream_bytes / size.max(1)).clamp(50, 2_000_000)
    }
}

/// The samples of one (mechanism, size, pinning) cell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cell {
    pub(crate) round_trips_ns: Vec<f64>,
    pub(crate) same_core_ns: Vec<f64>,
    /// (messages, seconds) per stream repetition.
    pub(crate) streams: Vec<(f64, f64)>,
    pub(crate) unsupported: Option<String>,
    /// Left out by `--only` or `--size`: not measured, not shown.
    pub(crate) skipped: bool,
    pub(crate) error: Option<String>,
}

pub(crate) fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The two CPUs to pin to: the first two this process may run on.
pub(crate) fn cpus() -> (usize, usize) {
    // SAFETY: sched_getaffinity fills the zeroed set.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    };
    // SAFETY: CPU_ISSET reads the set.
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    (allowed.first().copied().unwrap_or(0), allowed.get(1).copied().unwrap_or(0))
}

/// Runs `child` in a forked process pinned to `cpu`; returns its pid. The
/// child leaves with `_exit` (status 0 on success, 1 on error).
pub(crate) fn fork(cpu: usize, child: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<libc::pid_t> {
    // SAFETY: this process has one thread (the progress bar draws only when
    // asked), so the child may run ordinary code; it leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        pin(cpu);
        let code = match child() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("shmkit bench: child: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for a child; an error if it failed. A child that hangs is killed
/// after `limit`.
pub(crate) fn reap(pid: libc::pid_t, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 || start.elapsed() > limit {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            anyhow::bail!("benchmark child {pid} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        anyhow::bail!("benchmark child failed (status {status:#x})")
    }
}

const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Round trips: the child echoes `rounds` messages; the parent times each.
fn round_trips(m: Mechanism, size: usize, rounds: usize, cpus: (usize, usize), tag: &str) -> anyhow::Result<Vec<f64>> {
    let res = Resources::new(m, size, tag).with_context(|| format!("{} at {size} bytes", m.name()))?;
    let warmup = 50.min(rounds);
    let total = rounds + warmup;
    let child = fork(cpus.1, || {
        let mut end = res.endpoint(false)?;
        let mut buf = Vec::with_capacity(size);
        for _ in 0..total {
            end.recv(&mut buf, size)?;
            end.send(&buf)?;
        }
        Ok(())
    })?;
    pin(cpus.0);
    let result = (|| -> anyhow::Result<Vec<f64>> {
        let mut end = res.endpoint(true)?;
        let mut msg = vec![0x5au8; size];
        let mut buf = Vec::with_capacity(size);
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..total {
            // Each message carries its round number, and the echo must
            // bring it back: a stale or early message would fail the run.
            let stamp = (i as u64).to_le_bytes();
            let n = size.min(8);
            msg[..n].copy_from_slice(&stamp[..n]);
            let t = Instant::now();
            end.send(&msg)?;
            end.recv(&mut buf, size)?;
            let dt = t.elapsed();
            anyhow::ensure!(buf.len() == size, "{}: echoed {} bytes, sent {size}", m.name(), buf.len());
            anyhow::ensure!(buf[..n] == stamp[..n], "{}: round {i} got back another round's message", m.name());
            if i >= warmup {
                samples.push(dt.as_nanos() as f64);
            }
        }
        drop(end);
        Ok(samples)
    })();
    let reaped = reap(child, CHILD_LIMIT);
    let samples = result?;
    reaped?;
    Ok(samples)
}

/// A one-way stream: the child sends `messages`, the parent receives them;
/// returns seconds from the first message received to the last.
fn stream(m: Mechanism, size: usize, messages: usize, cpus: (usize, usize), tag: &str) -> anyhow::Result<f64> {
    let res = Resources::new(m, size, tag).with_context(|| format!("{} at {size} bytes", m.name()))?;
    let child = fork(cpus.1, || {
        let mut end = res.endpoint(false)?;
        let msg = vec![0xa5u8; size];
        for _ in 0..messages {
            end.send(&msg)?;
        }
        // Wait for the parent's "done" so our end outlives the stream.
        let mut buf = Vec::new();
        end.recv(&mut buf, 1)
    })?;
    pin(cpus.0);
    let result = (|| -> anyhow::Result<f64> {
        let mut end = res.endpoint(true)?;
        let mut buf = Vec::with_capacity(size);
        end.recv(&mut buf, size)?;
        let t = Instant::now();
        for _ in 1..messages {
            end.recv(&mut buf, size)?;
        }
        let secs = t.elapsed().as_secs_f64();
        end.send(&[1])?;
        Ok(secs)
    })();
    let reaped = reap(child, CHILD_LIMIT);
    let secs = result?;
    reaped?;
    Ok(secs)
}

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let plan = if args.quick {
        Plan { reps: 1, rounds: 400, stream_bytes: 8 << 20, same_core: true }
    } else {
        Plan { reps: 4, rounds: 10_000, stream_bytes: 128 << 20, same_core: true }
    };
    let cpus = cpus();
    let tag = std::process::id().to_string();
    let cells_total = ALL.len() * SIZES.len() * plan.reps;
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(cells_total as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    };
    let started = Instant::now();
    let mut floors = floors::measure(&plan, cpus)?;
    let mut cells: Vec<Vec<Cell>> = ALL.iter().map(|_| SIZES.iter().map(|_| Cell::default()).collect()).collect();
    for (mi, m) in ALL.iter().enumerate() {
        for (si, &size) in SIZES.iter().enumerate() {
            cells[mi][si].unsupported = links::unsupported(*m, size);
            cells[mi][si].skipped = !(args.only.is_empty() || args.only.contains(m))
                || !(args.size.is_empty() || args.size.contains(&size));
        }
    }
    for rep in 0..plan.reps {
        if rep > 0 {
            floors::again(&mut floors, &plan, cpus, rep)?;
        }
        for (si, &size) in SIZES.iter().enumerate() {
            for (mi, &m) in ALL.iter().enumerate() {
                bar.set_message(format!("{} {}", m.name(), report::size_name(size)));
                bar.inc(1);
                let cell = &mut cells[mi][si];
                if cell.skipped || cell.unsupported.is_some() || cell.error.is_some() {
                    continue;
                }
                let tag = format!("{tag}-{rep}-{mi}-{si}");
                let rounds = plan.rounds_for(size);
                let run = || -> anyhow::Result<(Vec<f64>, Vec<f64>, f64)> {
                    let rt = round_trips(m, size, rounds, cpus, &format!("{tag}-rt"))?;
                    let same = if plan.same_core && size <= 4096 {
                        round_trips(m, size, rounds, (cpus.0, cpus.0), &format!("{tag}-same"))?
                    } else {
                        Vec::new()
                    };
                    let messages = plan.messages_for(size);
                    let secs = stream(m, size, messages, cpus, &format!("{tag}-st"))?;
                    Ok((rt, same, secs))
                };
                match run() {
                    Ok((rt, same, secs)) => {
                        cell.round_trips_ns.extend(rt);
                        cell.same_core_ns.extend(same);
                        cell.streams.push(((plan.messages_for(size) - 1) as f64, secs));
                    }
                    Err(e) => cell.error = Some(format!("{e:#}")),
                }
            }
        }
    }
    bar.finish_and_clear();
    let peers = match &args.with_peers {
        Some(path) => report::run_peers(path)?,
        None => Vec::new(),
    };
    let report = report::Report { plan, floors, cells, peers, elapsed: started.elapsed(), cpus };
    if args.json {
        crate::output::out!("{}", report.json());
    } else {
        report.print()?;
    }
    if let Some(path) = &args.svg {
        report.svg(path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
