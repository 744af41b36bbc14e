//! File descriptors: POSIX shared-memory objects (which on Linux are files in
//! `/dev/shm`), ordinary files, memfds, and the metadata calls on them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FallocateFlags, Mode, OFlags, SealFlags};

/// The directory where Linux keeps POSIX shared-memory objects.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// How [`open`] treats an existing or missing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenHow {
    /// `O_CREAT | O_EXCL`.
    CreateExclusive,
    /// Neither flag: the object must exist.
    Existing,
}

/// Opens `path` as `shm_open(3)` does on Linux, but never follows a symbolic
/// link in the last component (`O_NOFOLLOW`) and never leaks the descriptor
/// into exec'd children (`O_CLOEXEC`).
pub(crate) fn open(path: &Path, how: OpenHow, writable: bool, mode: u32) -> io::Result<OwnedFd> {
    // O_NONBLOCK: a FIFO planted under the name must not block the open.
    let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    flags |= if writable { OFlags::RDWR } else { OFlags::RDONLY };
    match how {
        OpenHow::CreateExclusive => flags |= OFlags::CREATE | OFlags::EXCL,
        OpenHow::Existing => {}
    }
    Ok(rustix::fs::open(path, flags, Mode::from_raw_mode(mode))?)
}

/// Opens `path`, creating it if missing, and tells whether this call
/// created the file. A racing creator or remover makes it retry.
pub(crate) fn open_or_create(path: &Path, writable: bool, mode: u32) -> io::Result<(OwnedFd, bool)> {
    loop {
        match open(path, OpenHow::CreateExclusive, writable, mode) {
            Ok(fd) => return Ok((fd, true)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match open(path, OpenHow::Existing, writable, mode) {
            Ok(fd) => return Ok((fd, false)),
            // Removed between the two calls: try to create it again.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `unlink(2)`.
pub(crate) fn unlink(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::unlink(path)?)
}

/// `fchmod(2)`: sets the exact mode, whatever the umask was at creation.
pub(crate) fn fchmod(fd: impl AsFd, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// `ftruncate(2)`.
pub(crate) fn ftruncate(fd: impl AsFd, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// `fallocate(2)` with mode 0: reserves the blocks so that later stores into
/// a mapping cannot fail with `SIGBUS` for lack of space.
pub(crate) fn reserve(fd: impl AsFd, len: u64) -> io::Result<()> {
    loop {
        match rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, len) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// What `fstat(2)`/`lstat(2)` report about a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileStat {
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: i64,
    pub(crate) ctime: i64,
    pub(crate) atime: i64,
    pub(crate) is_regular: bool,
}

impl From<rustix::fs::Stat> for FileStat {
    fn from(st: rustix::fs::Stat) -> Self {
        FileStat {
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            ctime: st.st_ctime,
            atime: st.st_atime,
            is_regular: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile,
        }
    }
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: impl AsFd) -> io::Result<FileStat> {
    Ok(rustix::fs::fstat(fd)?.into())
}

/// `lstat(2)`: does not follow a symbolic link in the last component.
pub(crate) fn lstat(path: &Path) -> io::Result<FileStat> {
    Ok(rustix::fs::lstat(path)?.into())
}

/// Size and free space of a file system, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Space {
    pub(crate) total: u64,
    pub(crate) free: u64,
}

/// `statvfs(3)` on `path`. `free` counts what an unprivileged user may use.
pub(crate) fn space(path: &Path) -> io::Result<Space> {
    let st = rustix::fs::statvfs(path)?;
    Ok(Space { total: st.f_blocks.saturating_mul(st.f_frsize), free: st.f_bavail.saturating_mul(st.f_frsize) })
}

/// `memfd_create(2)` with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
pub(crate) fn memfd_create(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    Ok(rustix::fs::memfd_create(name.as_c_str(), flags)?)
}

/// The seals a memfd carries (`F_GET_SEALS`), as `F_SEAL_*` bits.
pub(crate) fn seals(fd: impl AsFd) -> io::Result<u32> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits())
}

/// Adds `F_SEAL_*` bits to a memfd (`F_ADD_SEALS`).
pub(crate) fn add_seals(fd: impl AsFd, seals: u32) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, SealFlags::from_bits_retain(seals))?)
}

/// Clears `FD_CLOEXEC` so that a child started with `exec` inherits `fd`.
pub(crate) fn set_inheritable(fd: impl AsFd, inheritable: bool) -> io::Result<()> {
    let flags = if inheritable { rustix::io::FdFlags::empty() } else { rustix::io::FdFlags::CLOEXEC };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}
