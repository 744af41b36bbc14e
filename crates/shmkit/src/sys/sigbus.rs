//! Surviving a peer that truncates a mapped object: a process-wide `SIGBUS`
//! handler and a lock-free table of the mappings it guards.
//!
//! # Why
//!
//! A POSIX object or a file can be shrunk by any process that may write it
//! (`ftruncate`). Pages of our mapping past the new end then have no backing,
//! and the next access to one of them makes the kernel deliver `SIGBUS`,
//! whose default action kills the process. Checking the size before each
//! access cannot help (the peer can truncate between the check and the
//! access), so shmkit makes the access itself survivable.
//!
//! # How
//!
//! - The first time a POSIX or file segment (or an unsealed memfd) is mapped,
//!   [`guard`] installs a `SIGBUS` handler (`SA_SIGINFO | SA_ONSTACK`) for
//!   the whole process, after saving the disposition that was there before.
//! - Each guarded mapping takes a slot in a fixed table of [`SLOTS`] entries
//!   made only of atomics, so the handler can read it without locks and
//!   without allocating. A slot is claimed with a compare-exchange, filled,
//!   then published (`ACTIVE`, release); [`Guard`]'s `Drop` unpublishes it
//!   before the mapping is unmapped, so the handler never acts on an address
//!   range that has been reused.
//! - On a `SIGBUS` raised by an access to a page with no backing
//!   (`si_code == BUS_ADRERR`, what a truncation gives) whose address
//!   (`si_addr`) lies in an active slot, the handler sets the slot's
//!   `truncated` flag, maps private, anonymous, zero-filled memory over the
//!   faulting page and every page after it to the end of the mapping
//!   (`mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)`, with the mapping's
//!   protection), and returns: the faulting instruction runs again and now
//!   completes on a zero page.
//!   (A truncation removes the end of the object, so the later pages are
//!   gone too; replacing them at once costs one fault and one new memory
//!   area per mapping instead of one per page, which keeps a large segment
//!   from using up `vm.max_map_count`.)
//!   `Segment` checks the flag after each copy and from then on reports
//!   `ErrorKind::Truncated`, so what was read from zero pages is never
//!   handed out as data.
//! - Any other `SIGBUS` (an address outside every guarded mapping, another
//!   cause such as a hardware memory error or misalignment, or one sent with
//!   `kill`) goes where it would have gone without shmkit: to the
//!   previous handler if there was one (called directly, with the same
//!   arguments), else the previous disposition is restored and the handler
//!   returns, so the access faults again and the process dies of `SIGBUS` as
//!   it would have.
//!
//! # Async-signal safety
//!
//! The handler reads atomics, makes the `mmap` system call through rustix
//! (which, on Linux, issues the raw system call: no lock, no allocation, no
//! `errno`), and calls `sigaction` only on the path that hands the signal
//! back (POSIX lists `sigaction` as async-signal-safe); it saves and restores
//! `errno` around that call. Nothing else runs in it.
//!
//! # Limits
//!
//! - At most [`SLOTS`] mappings are guarded at once; further ones are mapped
//!   unguarded (as before this module existed), and a truncation under one
//!   of them still kills the process. Sealed memfds, System V and anonymous
//!   segments need no slot: they cannot shrink.
//! - Accesses through `Segment::as_ptr` (atomics in rings, futex words)
//!   survive too, but only code that checks `Segment::truncated` learns that
//!   it read zeros; the futex system call on a truncated page fails with
//!   `EFAULT` instead of faulting.
//! - The handler is process-wide. A library that later installs its own
//!   `SIGBUS` handler without chaining to ours turns the protection off; one
//!   that changes the disposition between our query and our install is
//!   overwritten (both are calls made once, at the first guarded mapping).
//! - Data written to a truncated page lands in private memory and is lost;
//!   the peer sees none of it. The error says so.

use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

/// How many mappings can be guarded at once.
pub(crate) const SLOTS: usize = 1024;

const FREE: u8 = 0;
const BUSY: u8 = 1;
const ACTIVE: u8 = 2;

/// One guarded mapping. Only atomics, so the signal handler may read it.
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    writable: AtomicBool,
    truncated: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            writable: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The page size, read once before the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// The disposition that was in place before ours; written once, before the
/// handler is installed, and only read afterwards.
struct Previous(std::cell::UnsafeCell<std::mem::MaybeUninit<libc::sigaction>>);

// SAFETY: written exactly once inside `INSTALL.call_once`, before our
// handler (the only reader) can run; never written again.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// A mapping registered with the handler. Dropping it unregisters the
/// mapping; drop it *before* unmapping.
#[derive(Debug)]
pub(crate) struct Guard {
    slot: usize,
}

/// Registers `start..start + len` (a whole-page mapping) with the handler,
/// installing the handler first if needed. `None` if the table is full or
/// the handler could not be installed: the mapping is then unguarded.
pub(crate) fn guard(start: *const u8, len: usize, writable: bool) -> Option<Guard> {
    install();
    if !INSTALLED.load(Ordering::Acquire) {
        return None;
    }
    for (i, slot) in TABLE.iter().enumerate() {
        if slot.state.compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            slot.start.store(start as usize, Ordering::Relaxed);
            slot.len.store(len, Ordering::Relaxed);
            slot.writable.store(writable, Ordering::Relaxed);
            slot.truncated.store(false, Ordering::Relaxed);
            slot.state.store(ACTIVE, Ordering::Release);
            return Some(Guard { slot: i });
        }
    }
    None
}

impl Guard {
    /// Whether the handler has replaced a page of this mapping because its
    /// backing object was truncated.
    pub(crate) fn truncated(&self) -> bool {
        TABLE[self.slot].truncated.load(Ordering::SeqCst)
    }

    /// The flag [`truncated`](Self::truncated) reads, for code that keeps
    /// it beside its own view of the mapping. Valid while this guard lives
    /// (a freed slot is reused by the next mapping).
    pub(crate) fn flag(&self) -> &'static AtomicBool {
        &TABLE[self.slot].truncated
    }

    /// The mapping moved or changed size (`mremap`).
    pub(crate) fn moved(&self, start: *const u8, len: usize) {
        let slot = &TABLE[self.slot];
        slot.state.store(BUSY, Ordering::Release);
        slot.start.store(start as usize, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.state.store(ACTIVE, Ordering::Release);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.state.store(BUSY, Ordering::Release);
        slot.start.store(0, Ordering::Relaxed);
        slot.len.store(0, Ordering::Relaxed);
        slot.state.store(FREE, Ordering::Release);
    }
}

/// Installs the handler once per process.
fn install() {
    INSTALL.call_once(|| {
        PAGE.store(rustix::param::page_size(), Ordering::Relaxed);
        // SAFETY: `PREVIOUS` is written only here, once, before the handler
        // that reads it is installed; a null new action only queries.
        let queried = unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), (*PREVIOUS.0.get()).as_mut_ptr()) };
        if queried != 0 {
            return;
        }
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no
        // flags); the fields are set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action.sa_mask` is a valid sigset_t we own.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and `handler` has the
        // signature SA_SIGINFO requires.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, ptr::null_mut()) } == 0 {
            INSTALLED.store(true, Ordering::Release);
        }
    });
}

/// The slot whose active mapping contains `addr`.
fn find(addr: usize) -> Option<&'static Slot> {
    TABLE.iter().find(|slot| {
        slot.state.load(Ordering::Acquire) == ACTIVE && {
            let start = slot.start.load(Ordering::Relaxed);
            let len = slot.len.load(Ordering::Relaxed);
            addr >= start && addr - start < len
        }
    })
}

/// The `SIGBUS` handler; see the module documentation.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // BUS_ADRERR: the kernel found no page for the address (past the end of
    // the object), and si_addr is the faulting address. Hardware errors
    // (BUS_MCEERR_*), misalignment, and kill/sigqueue (si_code <= 0) are
    // not ours.
    if code == libc::BUS_ADRERR
        && let Some(slot) = find(addr)
    {
        let page = PAGE.load(Ordering::Relaxed);
        let base = addr & !(page - 1);
        let end = slot.start.load(Ordering::Relaxed) + slot.len.load(Ordering::Relaxed);
        let prot =
            if slot.writable.load(Ordering::Relaxed) { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::READ };
        // The flag goes up before the zero pages appear: another thread that
        // reads them without faulting (they are mapped by then) must find
        // the flag set when it checks after its copy. The system call orders
        // the store before the new mapping becomes visible (it takes the
        // mm lock and shoots down other CPUs' TLB entries).
        slot.truncated.store(true, Ordering::SeqCst);
        // SAFETY: `base..end` lies inside a live mapping that shmkit owns
        // (the slot is active, and unregistered before any unmap; its start
        // and length are whole pages), and its old contents are gone (at or
        // past the end of the truncated object), so replacing it with zeros
        // invalidates nothing that could still be read correctly. rustix
        // issues the raw mmap system call.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(base as *mut _, end - base, prot, MapFlags::PRIVATE | MapFlags::FIXED)
        };
        if mapped.is_ok() {
            return;
        }
        // Could not map (out of memory): the process dies below, as it
        // would have without shmkit.
    }
    pass_on(sig, info, ctx);
}

/// Hands a `SIGBUS` that is not ours to whatever would have had it.
fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written before this handler was installed and is
    // never written again.
    let previous = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    let action = previous.sa_sigaction;
    if action != libc::SIG_DFL && action != libc::SIG_IGN {
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous owner installed this function with
            // SA_SIGINFO, so it has this signature; we call it as the kernel
            // would have.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(action) };
            f(sig, info, ctx);
        } else {
            // SAFETY: installed without SA_SIGINFO: a plain handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
            f(sig);
        }
        return;
    }
    // Default or ignored: put it back and return. A fault re-executes the
    // access, and the kernel then applies that disposition (it forces the
    // default for a synchronous fault that is ignored): the process dies of
    // SIGBUS as it would have without shmkit.
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: `previous` is a valid sigaction saved at install time.
    unsafe { libc::sigaction(libc::SIGBUS, previous, ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    if code_is_user(info) {
        // Sent with kill/raise: re-raising under the restored disposition
        // delivers it as it would have been.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

fn code_is_user(info: *mut libc::siginfo_t) -> bool {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    unsafe { (*info).si_code <= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "installs a signal handler (sigaction)")]
    fn the_table_fills_up_and_frees_slots() {
        // Fake, never-touched addresses far from any real mapping: the table
        // only stores them. Slots taken by concurrent tests make it fill
        // sooner; the check is that it fills, refuses, and frees.
        let base = usize::MAX / 2;
        let mut guards = Vec::new();
        while let Some(g) = guard((base + guards.len() * 4096) as *const u8, 4096, true) {
            guards.push(g);
            assert!(guards.len() <= SLOTS, "more guards than slots");
        }
        assert!(!guards.is_empty(), "the handler could not be installed");
        assert!(guards.iter().all(|g| !g.truncated()));
        let freed = guards.pop().unwrap();
        let slot = freed.slot;
        drop(freed);
        let again = guard(base as *const u8, 4096, false).expect("a freed slot is reused");
        assert_eq!(again.slot, slot);
        assert!(find(base).is_some() && find(base - 1).is_none());
        drop(again);
        drop(guards);
        assert!(find(base).is_none(), "dropped guards leave the table");
    }
}
