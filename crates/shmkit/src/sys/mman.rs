//! Memory mappings: `mmap(2)`, `munmap(2)`, `mremap(2)`, `msync(2)`.
//!
//! Mappings are always `MAP_SHARED`: shmkit exists to share memory.

use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use rustix::mm::{MapFlags, MremapFlags, MsyncFlags, ProtFlags};

fn prot(writable: bool) -> ProtFlags {
    if writable { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::READ }
}

fn non_null(ptr: *mut std::ffi::c_void) -> io::Result<NonNull<u8>> {
    // The kernel never returns address 0 for a mapping we did not place there.
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// Maps `len` bytes of `fd` from offset 0, shared.
///
/// Safe: the kernel picks a fresh address range, so no existing Rust object is
/// affected. Touching bytes past the end of the file gives `SIGBUS`; the caller
/// checks the size first.
pub(crate) fn map_fd(fd: impl AsFd, len: usize, writable: bool) -> io::Result<NonNull<u8>> {
    // SAFETY: a null hint lets the kernel choose an unused range, so the call
    // cannot overlap memory owned by anything else in this process.
    let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot(writable), MapFlags::SHARED, fd, 0)? };
    non_null(ptr)
}

/// Maps `len` bytes of fresh zeroed memory, shared with children made by `fork`.
pub(crate) fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: as in `map_fd`, the kernel chooses an unused range.
    let ptr = unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot(true), MapFlags::SHARED)? };
    non_null(ptr)
}

/// Removes a mapping.
///
/// # Safety
///
/// `ptr..ptr + len` must be a mapping made by this module that nothing will
/// touch again.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: forwarded from the caller's promise.
    unsafe { Ok(rustix::mm::munmap(ptr.as_ptr().cast(), len)?) }
}

/// Grows or shrinks a shared mapping, possibly moving it.
///
/// # Safety
///
/// `ptr..ptr + old_len` must be a mapping made by this module; after the call
/// the old address must not be used again.
pub(crate) unsafe fn remap(ptr: NonNull<u8>, old_len: usize, new_len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: forwarded from the caller's promise; MREMAP_MAYMOVE lets the
    // kernel pick a fresh range if the mapping cannot grow in place.
    let new = unsafe { rustix::mm::mremap(ptr.as_ptr().cast(), old_len, new_len, MremapFlags::MAYMOVE)? };
    non_null(new)
}

/// `msync(2)`: writes dirty pages of a file mapping back to the file, waiting
/// for the write (`MS_SYNC`) or only scheduling it (`MS_ASYNC`).
pub(crate) fn sync(ptr: NonNull<u8>, len: usize, wait: bool) -> io::Result<()> {
    let flags = if wait { MsyncFlags::SYNC } else { MsyncFlags::ASYNC };
    // SAFETY: msync does not change the mapping or its contents; an address
    // range that is not mapped gives ENOMEM instead of undefined behaviour.
    unsafe { Ok(rustix::mm::msync(ptr.as_ptr().cast(), len, flags)?) }
}
