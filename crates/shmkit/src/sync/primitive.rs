//! The one door to memory another process can write: every lock-free
//! algorithm reads and writes shared words through [`Memory`], so that the
//! same code runs on a real mapping ([`Mapped`]) and, under `cfg(loom)`, on
//! memory whose atomics, fences and futexes belong to the loom model checker
//! ([`model::LoomMemory`]).
//!
//! A real mapping hands out `&AtomicU32`/`&AtomicU64` made with `from_ptr`:
//! atomics are made for concurrent modification, so a reference to one is
//! sound even while other processes write the word. Plain bytes (message
//! payloads) are never referenced; they are copied in and out.
//!
//! Under loom the words of a region live in two arrays of loom atomics, one
//! per width; an algorithm never views one address at both widths, so the two
//! need not alias. Payload bytes are kept in the 64-bit words and copied with
//! relaxed accesses: if an algorithm published a payload without the right
//! release/acquire pair, the model would show a reader stale bytes.

use std::ptr::NonNull;
use std::time::Duration;

pub(crate) use std::hint::spin_loop;
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The operations the algorithms use on a shared word, for std's atomics
/// and loom's alike.
pub(crate) trait Word<T>: Sync {
    fn load(&self, order: Ordering) -> T;
    fn store(&self, value: T, order: Ordering);
    fn swap(&self, value: T, order: Ordering) -> T;
    fn compare_exchange(&self, current: T, new: T, success: Ordering, failure: Ordering) -> Result<T, T>;
    fn compare_exchange_weak(&self, current: T, new: T, success: Ordering, failure: Ordering) -> Result<T, T>;
    fn fetch_add(&self, value: T, order: Ordering) -> T;
    fn fetch_sub(&self, value: T, order: Ordering) -> T;
}

macro_rules! impl_word {
    ($atomic:ty, $int:ty) => {
        impl Word<$int> for $atomic {
            #[inline(always)]
            fn load(&self, order: Ordering) -> $int {
                <$atomic>::load(self, order)
            }
            #[inline(always)]
            fn store(&self, value: $int, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
            #[inline(always)]
            fn swap(&self, value: $int, order: Ordering) -> $int {
                <$atomic>::swap(self, value, order)
            }
            #[inline(always)]
            fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
            #[inline(always)]
            fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                <$atomic>::compare_exchange_weak(self, current, new, success, failure)
            }
            #[inline(always)]
            fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                <$atomic>::fetch_add(self, value, order)
            }
            #[inline(always)]
            fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                <$atomic>::fetch_sub(self, value, order)
            }
        }
    };
}

impl_word!(AtomicU32, u32);
impl_word!(AtomicU64, u64);
#[cfg(all(loom, test))]
impl_word!(loom::sync::atomic::AtomicU32, u32);
#[cfg(all(loom, test))]
impl_word!(loom::sync::atomic::AtomicU64, u64);

/// A region of shared memory as the algorithms see it: offsets from its
/// start, words of 32 and 64 bits, byte copies, fences and futexes.
///
/// Offsets out of range panic (an internal bug, like a slice index): the
/// algorithms derive every offset from constants or reduce it modulo a
/// validated capacity, never take one from shared memory unchecked.
pub(crate) trait Memory: Sync {
    type W32: Word<u32>;
    type W64: Word<u64>;

    /// Bytes in the region.
    fn len(&self) -> usize;
    /// The 32-bit word at `offset` (a multiple of 4).
    fn u32_at(&self, offset: usize) -> &Self::W32;
    /// The 64-bit word at `offset` (a multiple of 8).
    fn u64_at(&self, offset: usize) -> &Self::W64;
    /// Copies `src` into the region at `offset`.
    fn write(&self, offset: usize, src: &[u8]);
    /// Copies `dst.len()` bytes at `offset` out of the region.
    fn read(&self, offset: usize, dst: &mut [u8]);
    /// A fence of the given ordering.
    fn fence(&self, order: Ordering);
    /// The light half of the asymmetric fence (every message).
    fn light_fence(&self);
    /// The heavy half (before sleeping).
    fn heavy_fence(&self);
    /// Sleeps while `*word == expected`, at most `timeout`; may return
    /// early for any reason (the caller re-checks).
    fn wait(&self, word: &Self::W32, expected: u32, timeout: Option<Duration>);
    /// Wakes up to `count` sleepers on `word`; returns how many it woke.
    fn wake(&self, word: &Self::W32, count: u32) -> usize;
    /// One step of a spin loop.
    fn pause(&self);
    /// A hint that the line at `offset` will be written soon: where the CPU
    /// can, fetch it in exclusive state now, so the store that comes does
    /// not wait for the other core to give it up. Any offset: a hint
    /// outside the region is ignored; models ignore all.
    #[inline(always)]
    fn prefetch_write(&self, offset: usize) {
        let _ = offset;
    }
    /// A hint that the line at `offset` will be read soon. Any offset, as
    /// for [`prefetch_write`](Self::prefetch_write).
    #[inline(always)]
    fn prefetch_read(&self, offset: usize) {
        let _ = offset;
    }
}

/// Borrowed memory is memory too, so several algorithms (or threads of a
/// model) can share one region.
impl<T: Memory> Memory for &T {
    type W32 = T::W32;
    type W64 = T::W64;

    #[inline(always)]
    fn len(&self) -> usize {
        (**self).len()
    }
    #[inline(always)]
    fn u32_at(&self, offset: usize) -> &Self::W32 {
        (**self).u32_at(offset)
    }
    #[inline(always)]
    fn u64_at(&self, offset: usize) -> &Self::W64 {
        (**self).u64_at(offset)
    }
    #[inline(always)]
    fn write(&self, offset: usize, src: &[u8]) {
        (**self).write(offset, src)
    }
    #[inline(always)]
    fn read(&self, offset: usize, dst: &mut [u8]) {
        (**self).read(offset, dst)
    }
    #[inline(always)]
    fn fence(&self, order: Ordering) {
        (**self).fence(order)
    }
    #[inline(always)]
    fn light_fence(&self) {
        (**self).light_fence()
    }
    #[inline(always)]
    fn heavy_fence(&self) {
        (**self).heavy_fence()
    }
    #[inline(always)]
    fn wait(&self, word: &Self::W32, expected: u32, timeout: Option<Duration>) {
        (**self).wait(word, expected, timeout)
    }
    #[inline(always)]
    fn wake(&self, word: &Self::W32, count: u32) -> usize {
        (**self).wake(word, count)
    }
    #[inline(always)]
    fn pause(&self) {
        (**self).pause()
    }
    #[inline(always)]
    fn prefetch_write(&self, offset: usize) {
        (**self).prefetch_write(offset)
    }
    #[inline(always)]
    fn prefetch_read(&self, offset: usize) {
        (**self).prefetch_read(offset)
    }
}

/// A shared mapping (or, in tests, any memory this process owns) at `base`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapped {
    base: NonNull<u8>,
    len: usize,
    membarrier: bool,
}

// SAFETY: a `Mapped` is an address range; everything done through it is an
// atomic access or a byte copy the algorithms order with atomics.
unsafe impl Send for Mapped {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// # Safety
    ///
    /// `base` must be 8-aligned and valid for reads of `len` bytes (and for
    /// writes, if anything is written through the `Mapped`: a read-only
    /// mapping serves only loads, copies out and futex waits) for as long as
    /// the `Mapped` (and every copy of it) is used, and the bytes must only
    /// be accessed atomically or by byte copies.
    /// `membarrier`: whether this process registered for the expedited
    /// global membarrier (the light fence relies on it).
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize, membarrier: bool) -> Mapped {
        debug_assert!((base.as_ptr() as usize).is_multiple_of(8));
        Mapped { base, len, membarrier }
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    #[inline(always)]
    fn check(&self, offset: usize, size: usize, align: usize) {
        if !(offset.is_multiple_of(align) && offset <= self.len && size <= self.len - offset) {
            out_of_range(offset, size, self.len);
        }
    }
}

/// The panic of a failed bounds check, out of line so that the check costs
/// a compare and a branch on the hot paths.
#[cold]
#[inline(never)]
fn out_of_range(offset: usize, size: usize, len: usize) -> ! {
    panic!("shared access of {size} bytes at offset {offset} outside a region of {len} bytes")
}

impl Memory for Mapped {
    type W32 = AtomicU32;
    type W64 = AtomicU64;

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and 4-aligned (checked above; the base is
        // 8-aligned), valid for the lifetime of `self` (constructor's
        // contract), and only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    #[inline(always)]
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    #[inline(always)]
    fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), 1);
        // SAFETY: the destination is inside the region (checked), the
        // source is private memory, so they do not overlap.
        unsafe { crate::channel::copy_bytes(src.as_ptr(), self.base.as_ptr().add(offset), src.len()) }
    }

    #[inline(always)]
    fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), 1);
        // SAFETY: as in `write`, the other way round.
        unsafe { crate::channel::copy_bytes(self.base.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    #[inline(always)]
    fn fence(&self, order: Ordering) {
        std::sync::atomic::fence(order);
    }

    #[inline(always)]
    fn light_fence(&self) {
        crate::channel::light_fence(self.membarrier);
    }

    fn heavy_fence(&self) {
        crate::channel::heavy_fence(self.membarrier);
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        crate::sys::futex::wait(word, expected, timeout);
    }

    fn wake(&self, word: &AtomicU32, count: u32) -> usize {
        crate::sys::futex::wake(word, count)
    }

    #[inline(always)]
    fn pause(&self) {
        spin_loop();
    }

    #[inline(always)]
    fn prefetch_write(&self, offset: usize) {
        // (Miri runs no inline assembly; a hint changes nothing it checks.)
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if offset < self.len && has_prefetchw() {
            // SAFETY: PREFETCHW (the CPU has it) neither reads nor writes
            // memory and cannot fault; the address is inside the mapping.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) self.base.as_ptr().add(offset),
                    options(nostack, preserves_flags, readonly),
                )
            };
        }
        #[cfg(any(not(target_arch = "x86_64"), miri))]
        let _ = offset;
    }

    #[inline(always)]
    fn prefetch_read(&self, offset: usize) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if offset < self.len {
            // SAFETY: PREFETCHT0 (in every x86-64 CPU) neither reads nor
            // writes memory and cannot fault; the address is inside the
            // mapping.
            unsafe {
                std::arch::asm!(
                    "prefetcht0 [{0}]",
                    in(reg) self.base.as_ptr().add(offset),
                    options(nostack, preserves_flags, readonly),
                )
            };
        }
        #[cfg(any(not(target_arch = "x86_64"), miri))]
        let _ = offset;
    }
}

/// Whether this CPU has `PREFETCHW` (prefetch a line in exclusive state,
/// for writing); asked once.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline]
fn has_prefetchw() -> bool {
    use std::sync::atomic::AtomicU8;
    // 0: not asked yet, 1: no, 2: yes.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            use std::arch::x86_64::__cpuid;
            // CPUID leaf 0x8000_0001, ECX bit 8: PRFCHW (3DNowPrefetch).
            #[allow(unused_unsafe)]
            // SAFETY: CPUID exists on every x86-64 CPU; the extended leaf is
            // read only if the highest extended leaf includes it.
            let has = unsafe { __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 << 8 != 0 };
            HAS.store(if has { 2 } else { 1 }, Ordering::Relaxed);
            has
        }
        v => v == 2,
    }
}

/// Shared memory inside the loom model checker.
#[cfg(all(loom, test))]
pub(crate) mod model {
    use std::time::Duration;

    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::{Condvar, Mutex};

    use super::{Memory, Ordering, Word};

    /// A region of `len` bytes of model memory, all zero. Futexes are one
    /// mutex and condition variable for the whole region: a wait checks
    /// the word under the mutex, a wake takes the mutex, so a wake between
    /// a waiter's check and its sleep cannot be lost (the kernel's promise).
    /// A wake on one word does not end a wait on another. Waits ignore their
    /// timeout: a wake-up the algorithm loses shows as a deadlock of the
    /// model.
    #[derive(Debug)]
    pub(crate) struct LoomMemory {
        w32: Vec<AtomicU32>,
        w64: Vec<AtomicU64>,
        len: usize,
        futex: Mutex<Futexes>,
        woken: Condvar,
    }

    /// Per word address, a queue of sleepers as tickets: `next` is the
    /// ticket the next sleeper takes, `woken` the first ticket not yet
    /// woken. A wake releases the oldest sleepers, so one that arrives after
    /// a wake cannot take the release meant for an earlier one (the kernel
    /// wakes threads that are queued, never later arrivals).
    #[derive(Debug, Default)]
    struct Futexes(Vec<(usize, u64, u64)>);

    impl Futexes {
        fn entry(&mut self, addr: usize) -> &mut (usize, u64, u64) {
            let i = match self.0.iter().position(|e| e.0 == addr) {
                Some(i) => i,
                None => {
                    self.0.push((addr, 0, 0));
                    self.0.len() - 1
                }
            };
            &mut self.0[i]
        }
    }

    impl LoomMemory {
        pub(crate) fn new(len: usize) -> LoomMemory {
            assert!(len.is_multiple_of(8));
            LoomMemory {
                w32: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
                w64: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
                len,
                futex: Mutex::new(Futexes::default()),
                woken: Condvar::new(),
            }
        }
    }

    impl Memory for LoomMemory {
        type W32 = AtomicU32;
        type W64 = AtomicU64;

        fn len(&self) -> usize {
            self.len
        }

        fn u32_at(&self, offset: usize) -> &AtomicU32 {
            assert!(offset.is_multiple_of(4));
            &self.w32[offset / 4]
        }

        fn u64_at(&self, offset: usize) -> &AtomicU64 {
            assert!(offset.is_multiple_of(8));
            &self.w64[offset / 8]
        }

        fn write(&self, offset: usize, src: &[u8]) {
            for (i, &byte) in src.iter().enumerate() {
                let at = offset + i;
                let word = &self.w64[at / 8];
                let shift = (at % 8) * 8;
                let old = Word::load(word, Ordering::Relaxed);
                let new = (old & !(0xff << shift)) | (u64::from(byte) << shift);
                Word::store(word, new, Ordering::Relaxed);
            }
        }

        fn read(&self, offset: usize, dst: &mut [u8]) {
            for (i, byte) in dst.iter_mut().enumerate() {
                let at = offset + i;
                *byte = (Word::load(&self.w64[at / 8], Ordering::Relaxed) >> ((at % 8) * 8)) as u8;
            }
        }

        fn fence(&self, order: Ordering) {
            loom::sync::atomic::fence(order);
        }

        fn light_fence(&self) {
            // membarrier makes the light side behave as a full fence
            // whenever the heavy side runs; SeqCst models exactly that.
            loom::sync::atomic::fence(Ordering::SeqCst);
        }

        fn heavy_fence(&self) {
            loom::sync::atomic::fence(Ordering::SeqCst);
        }

        fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
            let addr = word as *const AtomicU32 as usize;
            let mut futex = self.futex.lock().unwrap();
            if Word::load(word, Ordering::SeqCst) != expected {
                return;
            }
            let entry = futex.entry(addr);
            let ticket = entry.1;
            entry.1 += 1;
            while futex.entry(addr).2 <= ticket {
                futex = self.woken.wait(futex).unwrap();
            }
        }

        fn wake(&self, word: &AtomicU32, count: u32) -> usize {
            let addr = word as *const AtomicU32 as usize;
            let mut futex = self.futex.lock().unwrap();
            let entry = futex.entry(addr);
            let woken = (entry.1 - entry.2).min(u64::from(count));
            entry.2 += woken;
            if woken > 0 {
                self.woken.notify_all();
            }
            woken as usize
        }

        fn pause(&self) {
            loom::thread::yield_now();
        }
    }
}

/// Private heap memory standing in for a mapping, for unit tests (which
/// Miri can run: no system calls).
#[cfg(test)]
pub(crate) mod heap {
    use std::ptr::NonNull;

    use super::Mapped;

    /// Zeroed, 8-aligned heap words seen through [`Mapped`], as a mapping
    /// would be; `mem` may be called again for a second end or thread.
    #[derive(Debug)]
    pub(crate) struct Heap {
        words: NonNull<[u64]>,
    }

    // SAFETY: the words are reached only through `Mapped` (atomics and
    // byte copies the algorithms under test order), from any thread.
    unsafe impl Send for Heap {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for Heap {}

    impl Heap {
        /// At least `len` bytes.
        pub(crate) fn new(len: usize) -> Heap {
            let words = Box::into_raw(vec![0u64; len.div_ceil(8)].into_boxed_slice());
            Heap { words: NonNull::new(words).expect("a box is never null") }
        }

        pub(crate) fn mem(&self) -> Mapped {
            // SAFETY: the words are 8-aligned and live until `self` drops;
            // each test drops what uses the memory before its heap, and
            // touches the words only through `Mapped`.
            unsafe { Mapped::new(self.words.cast::<u8>(), self.words.len() * 8, false) }
        }
    }

    impl Drop for Heap {
        fn drop(&mut self) {
            // SAFETY: made by `Box::into_raw` in `new`, freed only here.
            drop(unsafe { Box::from_raw(self.words.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::heap::Heap;
    use super::*;
    use crate::sync::{event, semaphore};

    #[test]
    fn bytes_go_in_and_come_out_at_every_length_and_offset() {
        let heap = Heap::new(256);
        let mem = heap.mem();
        for len in 0..=40 {
            for offset in [0, 1, 3, 8, 13, 256 - len] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset + len) as u8).collect();
                mem.write(offset, &data);
                let mut back = vec![0xaa; len];
                mem.read(offset, &mut back);
                assert_eq!(back, data, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside a region")]
    fn a_word_past_the_end_is_a_panic_not_an_access() {
        let heap = Heap::new(64);
        let mem = heap.mem();
        mem.u64_at(64);
    }

    #[test]
    #[should_panic(expected = "outside a region")]
    fn a_copy_past_the_end_is_a_panic_not_an_access() {
        let heap = Heap::new(64);
        let mem = heap.mem();
        mem.write(60, &[0; 5]);
    }

    #[test]
    fn the_semaphore_protocol_counts_without_system_calls() {
        let heap = Heap::new(64);
        let sem = semaphore::Protocol { mem: heap.mem(), at: 16, spin: 3 };
        assert!(!sem.try_take());
        assert!(sem.post());
        assert!(sem.post());
        assert!(sem.try_take());
        assert!(sem.wait(None));
        assert!(!sem.try_take());
        sem.mem.u32_at(16).store(u32::MAX, Ordering::Relaxed);
        assert!(!sem.post(), "the count must not wrap");
    }

    #[test]
    fn the_event_protocol_notifies_nobody_without_system_calls() {
        let heap = Heap::new(64);
        let ev = event::Protocol { mem: heap.mem(), at: 16, spin: 3 };
        ev.notify(1);
        ev.notify(u32::MAX);
        assert_eq!(ev.mem.u32_at(16).load(Ordering::Relaxed), 2);
        let mut checks = 0;
        assert!(ev.wait_until(
            || {
                checks += 1;
                checks == 3
            },
            None
        ));
    }
}
