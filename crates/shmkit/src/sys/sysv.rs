//! System V shared memory: `shmget(2)`, `shmat(2)`, `shmdt(2)`, `shmctl(2)`,
//! and `ftok(3)`.
//!
//! rustix does not wrap these calls, so this is the one module that calls
//! `libc` for them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// `SHM_DEST` from `<linux/shm.h>`: the segment is marked for removal.
pub(crate) const SHM_DEST: u32 = 0o1000;
/// `SHM_LOCKED` from `<linux/shm.h>`: the segment is locked in memory.
pub(crate) const SHM_LOCKED: u32 = 0o2000;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// How [`get`] treats an existing or missing segment.
pub(crate) use super::fs::OpenHow;

/// `shmget(key, size, flags | mode)`; returns the shmid.
pub(crate) fn get(key: i32, size: usize, how: OpenHow, mode: u32) -> io::Result<i32> {
    let flags = match how {
        OpenHow::CreateExclusive => libc::IPC_CREAT | libc::IPC_EXCL,
        OpenHow::Existing => 0,
    };
    // SAFETY: shmget takes only integers and touches no memory of ours.
    cvt(unsafe { libc::shmget(key, size, flags | (mode & 0o777) as libc::c_int) })
}

/// `shmat(id, NULL, 0 or SHM_RDONLY)`.
pub(crate) fn attach(id: i32, writable: bool) -> io::Result<NonNull<u8>> {
    let flags = if writable { 0 } else { libc::SHM_RDONLY };
    // SAFETY: a null address lets the kernel choose an unused range, so the
    // new mapping cannot overlap memory owned by anything else.
    let ptr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if ptr as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// `shmdt(ptr)`.
///
/// # Safety
///
/// `ptr` must come from [`attach`] and nothing may touch the mapping again.
pub(crate) unsafe fn detach(ptr: NonNull<u8>) -> io::Result<()> {
    // SAFETY: forwarded from the caller's promise.
    cvt(unsafe { libc::shmdt(ptr.as_ptr().cast()) }).map(drop)
}

/// What `shmctl(IPC_STAT)` reports about a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) key: i32,
    pub(crate) size: u64,
    pub(crate) nattch: u64,
    pub(crate) cpid: i32,
    pub(crate) lpid: i32,
    pub(crate) atime: i64,
    pub(crate) dtime: i64,
    pub(crate) ctime: i64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) cuid: u32,
    pub(crate) cgid: u32,
    /// Permission bits and the `SHM_DEST`/`SHM_LOCKED` flags.
    pub(crate) mode: u32,
}

/// `shmctl(id, IPC_STAT)`.
pub(crate) fn stat(id: i32) -> io::Result<Stat> {
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: `ds` is a writable shmid_ds; IPC_STAT fills exactly that.
    cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and then filled by the kernel; every field is
    // a plain integer, so every bit pattern is valid.
    let ds = unsafe { ds.assume_init() };
    Ok(Stat {
        key: ds.shm_perm.__key,
        size: ds.shm_segsz as u64,
        nattch: ds.shm_nattch,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
        atime: ds.shm_atime,
        dtime: ds.shm_dtime,
        ctime: ds.shm_ctime,
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        cuid: ds.shm_perm.cuid,
        cgid: ds.shm_perm.cgid,
        mode: ds.shm_perm.mode as u32,
    })
}

/// `shmctl(id, IPC_RMID)`: the segment goes when its last process detaches.
pub(crate) fn remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// `ftok(path, proj_id)`, exactly as glibc computes it, so that C programs
/// using the same file and id find the same segment.
pub(crate) fn ftok(path: &Path, proj_id: u8) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let key = unsafe { libc::ftok(c.as_ptr(), libc::c_int::from(proj_id)) };
    if key == -1 { Err(io::Error::last_os_error()) } else { Ok(key) }
}
