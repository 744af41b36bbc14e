//! What child processes do, by role. Exit codes: 0 success; other values
//! name the check that failed (see each role).

use std::os::fd::{FromRawFd, OwnedFd};

use shmkit::{ErrorKind, Lifetime, Segment, Target};

use crate::util::pattern;

pub fn dispatch(role: &str, args: &[String]) -> i32 {
    let num = |i: usize| args[i].parse::<usize>().unwrap();
    match role {
        "read-and-reply" => read_and_reply(&args[0].parse().unwrap(), num(1), num(2), num(3) as u8),
        "write-readonly" => write_readonly(&args[0].parse().unwrap()),
        "create-under-umask" => create_under_umask(&args[0].parse().unwrap(), num(1) as u32, num(2) as u32),
        "file-writer" => file_writer(&args[0].parse().unwrap(), num(1), num(2) as u8),
        "memfd-read" => memfd_read(num(0) as i32, num(1), num(2) as u8),
        "sysv-limits-in-namespace" => crate::limits::in_private_ipc_namespace(),
        "mutex-increment" => crate::primitives::mutex_increment(&args[0].parse().unwrap(), num(1) as u64),
        "mutex-hold-forever" => crate::primitives::mutex_hold_forever(&args[0].parse().unwrap()),
        "semaphore-wait" => crate::primitives::semaphore_wait(&args[0].parse().unwrap()),
        "event-wait" => crate::primitives::event_wait(&args[0].parse().unwrap()),
        "ring-producer" => crate::ring::ring_producer(&args[0], num(1) as u64, num(2) as u64),
        "ring-producer-forever" => crate::ring::ring_producer_forever(&args[0]),
        "ring-idle-consumer" => crate::ring::ring_idle_consumer(&args[0]),
        other => {
            if let Some(code) = crate::pubsub::child(other, args)
                .or_else(|| crate::reqrep::child(other, args))
                .or_else(|| crate::kill::child(other, args))
                .or_else(|| crate::hostile::child(other, args))
                .or_else(|| crate::hardening::child(other, args))
            {
                return code;
            }
            eprintln!("unknown child role {other:?}");
            90
        }
    }
}

/// Opens `target`, checks `len` bytes at `offset` are `pattern(len, seed)`,
/// then writes `pattern(len, seed + 1)` right after them.
/// 10: open failed; 11: wrong bytes; 12: write failed.
fn read_and_reply(target: &Target, offset: usize, len: usize, seed: u8) -> i32 {
    let Ok(mut seg) = Segment::open(target) else { return 10 };
    let mut buf = vec![0; len];
    seg.read_at(offset, &mut buf).unwrap();
    if buf != pattern(len, seed) {
        return 11;
    }
    if seg.write_at(offset + len, &pattern(len, seed.wrapping_add(1))).is_err() {
        return 12;
    }
    0
}

/// Maps `target` read-only; `write_at` must refuse, and a raw store must
/// kill this process with SIGSEGV. 20: open failed; 21: write_at did not
/// refuse; 22: the raw store survived.
fn write_readonly(target: &Target) -> i32 {
    let Ok(mut seg) = Segment::options().read_only().open(target) else { return 20 };
    match seg.write_at(0, b"x") {
        Err(e) if *e.kind() == ErrorKind::ReadOnly => {}
        _ => return 21,
    }
    // SAFETY: deliberately wrong: the page is mapped without PROT_WRITE, so
    // the kernel delivers SIGSEGV before anything is written.
    unsafe { seg.as_ptr().as_ptr().write_volatile(1) };
    22
}

/// Sets the umask, then creates `target` (4096 bytes, kept) with `mode`.
/// 30: create failed.
fn create_under_umask(target: &Target, umask: u32, mode: u32) -> i32 {
    // SAFETY: umask has no preconditions; this child is single-purpose.
    unsafe { libc::umask(umask) };
    match Segment::options().size(4096).mode(mode).lifetime(Lifetime::Persistent).create(target) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            30
        }
    }
}

/// Creates a file segment, writes a pattern, flushes and exits, leaving the
/// file. 40: create failed; 41: write or flush failed.
fn file_writer(target: &Target, len: usize, seed: u8) -> i32 {
    let Ok(mut seg) = Segment::create(target, len) else { return 40 };
    if seg.write_at(0, &pattern(len, seed)).and_then(|()| seg.flush()).is_err() {
        return 41;
    }
    0
}

/// Maps an inherited memfd and checks its bytes. 50: mapping refused;
/// 51: wrong bytes.
fn memfd_read(fd: i32, len: usize, seed: u8) -> i32 {
    // SAFETY: the parent cleared FD_CLOEXEC on this descriptor and passed
    // its number; nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let Ok(seg) = Segment::from_fd(fd, &Segment::options()) else { return 50 };
    let mut buf = vec![0; len];
    seg.read_at(0, &mut buf).unwrap();
    if buf != pattern(len, seed) { 51 } else { 0 }
}
