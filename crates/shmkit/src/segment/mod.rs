//! Shared-memory segments: one [`Segment`] type over five backends.
//!
//! | backend | created by | named by | shared with |
//! |---|---|---|---|
//! | System V | `shmget` + `shmat` | [`Target::Sysv`] key, [`Target::SysvId`] | any process |
//! | POSIX | `shm_open` + `ftruncate` + `mmap` | [`Target::Posix`] | any process |
//! | file | `open` + `ftruncate` + `mmap` | [`Target::File`] | any process; data persists |
//! | anonymous | `mmap(MAP_SHARED \| MAP_ANONYMOUS)` | nothing | children made by `fork` |
//! | memfd | `memfd_create` + seals | a file descriptor | children, or fd passing |
//!
//! Whatever the backend, a segment is opened through [`SegmentOptions`], read
//! and written with bounds-checked copies ([`Segment::read_at`],
//! [`Segment::write_at`], [`Segment::read`], [`Segment::write`]), and
//! unmapped when dropped. shmkit never hands out a Rust reference into the
//! mapping, because another process may change the bytes at any time; use
//! [`Segment::as_ptr`] with atomics or volatile accesses to build protocols.
//!
//! A mapping never extends past its backing object: opening an object smaller
//! than the size asked for is an error ([`ErrorKind::TooSmall`]), and creating
//! one reserves its space (`fallocate`) so that a full `/dev/shm` is an error
//! at creation rather than a `SIGBUS` later.
//!
//! A peer may still shrink a POSIX object or a file that we have mapped.
//! shmkit then survives the access that would have killed us with `SIGBUS`:
//! a process-wide handler puts a zero page where the lost one was, and the
//! segment reports [`ErrorKind::Truncated`] from that access on (see
//! `ARCHITECTURE.md`, and the limits there: at most 1024 mappings are
//! guarded at once). Sealed memfds, System V and anonymous segments cannot
//! shrink.
//!
//! Opening an existing named object that another user owns, or that group
//! or others may write, is refused ([`ErrorKind::Untrusted`]): whoever can
//! write it can corrupt or truncate it under us. Allow it with
//! [`SegmentOptions::allow_untrusted`] when that is intended.
//!
//! # Examples
//!
//! ```
//! use shmkit::segment::{Segment, Target};
//!
//! let name = format!("posix:/shmkit-doc-{}", std::process::id());
//! let target: Target = name.parse()?;
//! let mut writer = Segment::options().size(4097).create(&target)?;
//! writer.write_at(0, b"hello")?;
//!
//! let reader = Segment::options().read_only().open(&target)?;
//! let mut buf = [0u8; 5];
//! reader.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(reader.len(), 4097);
//! assert_eq!(reader.mapped_len(), 8192); // whole pages
//! # drop(reader);
//! // Dropping the creator removes the name, as it was created here.
//! drop(writer);
//! assert!(Segment::open(&target).is_err());
//! # Ok::<(), shmkit::Error>(())
//! ```

#![allow(unsafe_code)]

mod anon;
mod fd;
mod file;
mod memfd;
mod posix;
mod sysv;
mod target;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use bytemuck::Pod;

pub use self::target::{PosixName, SysvKey, Target};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::sys;

/// Who removes a named segment, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// The name is removed when this [`Segment`] is dropped. The default for
    /// System V and POSIX segments this process created.
    RemoveOnDrop,
    /// The object outlives this process until someone removes it. The
    /// default for objects this process opened, and for files.
    Persistent,
    /// The name is removed right after mapping, so the kernel frees the
    /// memory when the last process unmaps it: a crash cannot leak it. A
    /// System V segment stays reachable by its shmid (Linux allows attaching
    /// a segment marked for removal); POSIX objects and files become
    /// unnamed, shared only with children or through their descriptor.
    /// Anonymous and memfd segments always behave so.
    KernelRefcounted,
}

/// The backend of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// System V (`shmget`).
    Sysv,
    /// POSIX (`shm_open`).
    Posix,
    /// An ordinary file.
    File,
    /// `MAP_SHARED | MAP_ANONYMOUS`.
    Anonymous,
    /// `memfd_create`.
    Memfd,
}

/// How to create or open a segment: size, mode, access and lifetime.
///
/// Like [`std::fs::OpenOptions`], the options are set first and the intent
/// comes last: [`create`](Self::create) (exclusive: fails if it exists),
/// [`open`](Self::open) (must exist), [`open_or_create`](Self::open_or_create),
/// [`anonymous`](Self::anonymous) and [`memfd`](Self::memfd).
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    size: Option<usize>,
    mode: u32,
    writable: bool,
    lifetime: Option<Lifetime>,
    seal: bool,
    allow_unsealed: bool,
    allow_untrusted: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            size: None,
            mode: 0o600,
            writable: true,
            lifetime: None,
            seal: true,
            allow_unsealed: false,
            allow_untrusted: false,
        }
    }
}

impl SegmentOptions {
    /// Read-write, mode 0600, size taken from the object when opening.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size in bytes. Needed to create; when opening, the object must
    /// have at least this many bytes and only these are mapped (the default
    /// maps the whole object).
    pub fn size(&mut self, bytes: usize) -> &mut Self {
        self.size = Some(bytes);
        self
    }

    /// Permission bits for a new object (default `0o600`). They are set
    /// exactly, whatever the process's umask.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Maps read-only (`SHM_RDONLY`, `O_RDONLY` + `PROT_READ`). A store
    /// through [`Segment::as_ptr`] then kills the process with `SIGSEGV`,
    /// and [`Segment::write_at`] returns [`ErrorKind::ReadOnly`].
    pub fn read_only(&mut self) -> &mut Self {
        self.writable = false;
        self
    }

    /// Who removes the object; see [`Lifetime`] for the defaults.
    pub fn lifetime(&mut self, lifetime: Lifetime) -> &mut Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Whether [`memfd`](Self::memfd) seals the new memfd against shrinking,
    /// growing and further sealing (default `true`).
    pub fn seal(&mut self, seal: bool) -> &mut Self {
        self.seal = seal;
        self
    }

    /// Whether [`Segment::from_fd`] accepts a memfd that is not sealed
    /// against shrinking (default `false`: a peer could truncate it and make
    /// our accesses fault with `SIGBUS`).
    pub fn allow_unsealed(&mut self, allow: bool) -> &mut Self {
        self.allow_unsealed = allow;
        self
    }

    /// Whether [`open`](Self::open) and [`open_or_create`](Self::open_or_create)
    /// accept an existing object that another user owns, or whose mode lets
    /// group or others write it (default `false`: such an object is refused
    /// with [`ErrorKind::Untrusted`], because whoever may write it can change
    /// or truncate it under us). Set it to work with objects made by other
    /// programs (C programs often create them `0666`) or shared on purpose
    /// between users. Objects this call creates, and descriptors given to
    /// [`Segment::from_fd`], are not checked.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmkit::{ErrorKind, Segment, Target};
    ///
    /// let target = Target::posix(&format!("shmkit-doc-untrusted-{}", std::process::id()))?;
    /// // Another program made it writable by everyone.
    /// let _theirs = Segment::options().size(64).mode(0o666).create(&target)?;
    ///
    /// let err = Segment::open(&target).unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::Untrusted { mode: 0o666, .. }));
    ///
    /// let seg = Segment::options().allow_untrusted(true).open(&target)?;
    /// assert_eq!(seg.len(), 64);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn allow_untrusted(&mut self, allow: bool) -> &mut Self {
        self.allow_untrusted = allow;
        self
    }

    /// Refuses an existing object owned by another user, or writable by
    /// group or others, unless [`allow_untrusted`](Self::allow_untrusted).
    pub(crate) fn check_trust(&self, op: Op, object: &str, owner: u32, mode: u32) -> Result<()> {
        let me = rustix::process::geteuid().as_raw();
        if self.allow_untrusted || (owner == me && mode & 0o022 == 0) {
            return Ok(());
        }
        Err(Error::new(op, object, ErrorKind::Untrusted { owner, mode: mode & 0o7777 }))
    }

    /// Creates a new object; fails with [`ErrorKind::AlreadyExists`] if the
    /// name or key is taken (`O_EXCL`, `IPC_EXCL`).
    ///
    /// # Errors
    ///
    /// The name exists, a size is missing or zero, a limit would be
    /// exceeded ([`ErrorKind::LimitExceeded`], checked before anything is
    /// created), or the OS refuses. Nothing is left behind on failure.
    pub fn create(&self, target: &Target) -> Result<Segment> {
        self.dispatch(target, Intent::Create)
    }

    /// Opens an existing object.
    ///
    /// # Errors
    ///
    /// No such object, no permission, the object is smaller than
    /// [`size`](Self::size) ([`ErrorKind::TooSmall`]), or another user owns
    /// it or group or others may write it ([`ErrorKind::Untrusted`]; see
    /// [`allow_untrusted`](Self::allow_untrusted)).
    pub fn open(&self, target: &Target) -> Result<Segment> {
        self.dispatch(target, Intent::Open)
    }

    /// Opens the object, creating it first if it does not exist.
    /// [`Segment::created`] tells which happened.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self, target: &Target) -> Result<Segment> {
        self.dispatch(target, Intent::OpenOrCreate)
    }

    /// Maps fresh zeroed memory shared with children made by `fork`.
    ///
    /// # Errors
    ///
    /// A size is missing or zero, or the OS refuses.
    pub fn anonymous(&self) -> Result<Segment> {
        anon::create(self)
    }

    /// Creates a memfd of [`size`](Self::size) bytes, reserves its space and,
    /// unless [`seal`](Self::seal) is off, seals it (`F_SEAL_SHRINK |
    /// F_SEAL_GROW | F_SEAL_SEAL`). Share it with [`Segment::fd`].
    ///
    /// # Errors
    ///
    /// A size is missing or zero, memory is short, or the OS refuses.
    pub fn memfd(&self, name: &str) -> Result<Segment> {
        memfd::create(self, name)
    }

    fn dispatch(&self, target: &Target, intent: Intent) -> Result<Segment> {
        match target {
            Target::Sysv(_) | Target::SysvId(_) => sysv::open(self, target, intent),
            Target::Posix(name) => posix::open(self, name, intent),
            Target::File(path) => file::open(self, path, intent),
        }
    }

    pub(crate) fn required_size(&self, op: Op, object: &str) -> Result<usize> {
        match self.size {
            Some(0) => Err(Error::invalid(op, object, "the size must be at least 1 byte")),
            Some(n) if n > isize::MAX as usize => {
                Err(Error::invalid(op, object, "the size is larger than memory can hold"))
            }
            Some(n) => Ok(n),
            None => Err(Error::invalid(op, object, "a size is needed to create a segment")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    Create,
    Open,
    OpenOrCreate,
}

/// What keeps a segment's memory alive, and how to remove its name.
#[derive(Debug)]
enum Backing {
    Sysv { id: i32, key: i32 },
    Fd { fd: OwnedFd, kind: Kind, path: Option<std::path::PathBuf> },
    Anonymous,
}

/// A shared-memory segment mapped into this process.
///
/// Created or opened through [`SegmentOptions`] (or the shorthands
/// [`Segment::create`] and [`Segment::open`]). Dropping it unmaps it and,
/// if its [`Lifetime`] is [`Lifetime::RemoveOnDrop`], removes its name.
#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    writable: bool,
    created: bool,
    remove_on_drop: bool,
    removed: bool,
    backing: Backing,
    label: String,
    /// Robust mutexes in this mapping that this process holds (glibc's
    /// per-thread list points into the mapping while they are held).
    pinned: std::sync::atomic::AtomicUsize,
    /// The mapping's entry in the `SIGBUS` handler's table (POSIX, file and
    /// unsealed memfd segments, while the table has room).
    sigbus: Option<sys::sigbus::Guard>,
}

// SAFETY: the mapping belongs to the process, not to a thread, and is
// unmapped exactly once (in Drop). `&self` methods only copy bytes out;
// writes need `&mut self`, so Rust code in this process cannot race through
// a `Segment`. Raw-pointer users take responsibility for their accesses.
unsafe impl Send for Segment {}
// SAFETY: see the `Send` impl; shared access only reads.
unsafe impl Sync for Segment {}

fn page_round(len: usize) -> usize {
    let page = sys::proc::page_size();
    len.div_ceil(page).saturating_mul(page)
}

impl Segment {
    /// Options with the defaults: read-write, mode 0600.
    pub fn options() -> SegmentOptions {
        SegmentOptions::new()
    }

    /// Creates a new segment of `size` bytes, mode 0600, removed on drop
    /// (files: kept). Shorthand for `Segment::options().size(size).create(target)`.
    ///
    /// # Errors
    ///
    /// As [`SegmentOptions::create`].
    pub fn create(target: &Target, size: usize) -> Result<Segment> {
        Segment::options().size(size).create(target)
    }

    /// Opens an existing segment read-write, mapping all of it.
    ///
    /// # Errors
    ///
    /// As [`SegmentOptions::open`].
    pub fn open(target: &Target) -> Result<Segment> {
        Segment::options().open(target)
    }

    /// Maps a memfd (or any shared-memory file descriptor) received from
    /// another process. Unless [`SegmentOptions::allow_unsealed`] is set, a
    /// memfd must carry `F_SEAL_SHRINK`.
    ///
    /// # Errors
    ///
    /// The descriptor is not a regular file, is smaller than the size asked
    /// for, or lacks the seal.
    pub fn from_fd(fd: OwnedFd, options: &SegmentOptions) -> Result<Segment> {
        memfd::from_fd(fd, options)
    }

    /// The usable length in bytes: what was asked for, or the object's size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: segments have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped length: [`len`](Self::len) rounded up to whole pages.
    pub fn mapped_len(&self) -> usize {
        self.map_len
    }

    /// Whether the mapping allows writes.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Whether this process created the object (see
    /// [`SegmentOptions::open_or_create`]).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The backend.
    pub fn kind(&self) -> Kind {
        match &self.backing {
            Backing::Sysv { .. } => Kind::Sysv,
            Backing::Fd { kind, .. } => *kind,
            Backing::Anonymous => Kind::Anonymous,
        }
    }

    /// A printable name of the segment (`posix:/name`, `sysv:0x…`, …).
    pub fn name(&self) -> &str {
        &self.label
    }

    /// The System V shmid, for System V segments.
    pub fn sysv_id(&self) -> Option<i32> {
        match self.backing {
            Backing::Sysv { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The System V key the segment was created with (`IPC_PRIVATE`, i.e.
    /// 0, for private segments and for segments marked for removal).
    pub fn sysv_key(&self) -> Option<SysvKey> {
        match self.backing {
            Backing::Sysv { key, .. } => Some(SysvKey::new(key)),
            _ => None,
        }
    }

    /// Lets children started with `exec` inherit the file descriptor of a
    /// POSIX, file or memfd segment (clears `FD_CLOEXEC`), or stops that.
    /// The child finds the number in [`fd`](Self::fd) and maps it with
    /// [`Segment::from_fd`].
    ///
    /// # Errors
    ///
    /// The segment has no descriptor (System V, anonymous).
    pub fn set_inheritable(&self, inheritable: bool) -> Result<()> {
        match &self.backing {
            Backing::Fd { fd, .. } => {
                sys::fs::set_inheritable(fd, inheritable).map_err(|e| Error::os(Op::Open, self.label.clone(), e))
            }
            _ => Err(Error::invalid(
                Op::Open,
                self.label.clone(),
                "only POSIX, file and memfd segments have a descriptor",
            )),
        }
    }

    /// The file descriptor of POSIX, file and memfd segments. Pass it to
    /// another process (inherit it, or send it over a Unix socket) and map it
    /// there with [`Segment::from_fd`].
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Fd { fd, .. } => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// The start of the mapping.
    ///
    /// The bytes may change at any time (another process may write them), so
    /// never build a `&T` or `&[u8]` over them: use atomics, volatile
    /// accesses or copies. The pointer is valid for [`mapped_len`](Self::mapped_len)
    /// bytes until the segment is dropped or [`grow`](Self::grow)n; writes
    /// through it fault if the segment is read-only.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The address of `len` bytes at `offset`, checked to be inside the
    /// segment, aligned to `align`, and writable: where `sync` and `channel`
    /// place their shared structures.
    pub(crate) fn region(&self, op: Op, offset: usize, len: usize, align: usize) -> Result<NonNull<u8>> {
        self.check_range(op, offset, len)?;
        if !offset.is_multiple_of(align) {
            return Err(Error::invalid(
                op,
                self.label.clone(),
                format!("offset {offset} is not a multiple of {align}"),
            ));
        }
        if !self.writable {
            return Err(Error::new(op, self.label.clone(), ErrorKind::ReadOnly));
        }
        // SAFETY: `offset + len <= self.len` was checked, so the result is
        // inside the mapping and not null.
        Ok(unsafe { self.ptr.add(offset) })
    }

    /// The 32-bit word at `offset` as an atomic, checked to be inside the
    /// segment and 4-aligned. Stores through it fault on a read-only mapping,
    /// so callers that store check [`is_writable`](Self::is_writable).
    ///
    /// An `&AtomicU32` into shared memory is sound although other processes
    /// write it: atomics are made for concurrent modification.
    pub(crate) fn word32(&self, offset: usize) -> Result<&crate::sync::primitive::AtomicU32> {
        self.check_range(Op::Read, offset, 4)?;
        if !offset.is_multiple_of(4) {
            return Err(Error::invalid(Op::Read, self.label.clone(), format!("offset {offset} is not 4-aligned")));
        }
        // SAFETY: in bounds (checked), 4-aligned (the mapping is page-aligned
        // and the offset a multiple of 4), and the reference's lifetime is
        // tied to `&self`, so it cannot outlive the mapping.
        Ok(unsafe { crate::sync::primitive::AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }

    fn check_range(&self, op: Op, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::new(
                op,
                self.label.clone(),
                ErrorKind::OutOfBounds { offset: offset as u64, len: len as u64, size: self.len as u64 },
            )),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the segment.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] if the range does not fit in [`len`](Self::len);
    /// [`ErrorKind::Truncated`] if another process truncated the object
    /// under this mapping (then, or during an earlier access).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(Op::Read, offset, buf.len())?;
        self.check_truncated(Op::Read)?;
        // SAFETY: the range is inside the mapping (checked above) and `buf`
        // is private memory that cannot overlap it. A byte copy creates no
        // reference to the shared bytes, so a concurrent writer in another
        // process can only give us a mix of old and new bytes. If a peer
        // truncates the object meanwhile, the SIGBUS handler puts zero pages
        // in place and the copy completes; the check below reports it.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        self.check_truncated(Op::Read)
    }

    /// Copies `data` into the segment at `offset`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ReadOnly`] on a read-only mapping,
    /// [`ErrorKind::OutOfBounds`], or [`ErrorKind::Truncated`] (the bytes
    /// did not reach the object).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::new(Op::Write, self.label.clone(), ErrorKind::ReadOnly));
        }
        self.check_range(Op::Write, offset, data.len())?;
        self.check_truncated(Op::Write)?;
        // SAFETY: the range is inside a writable mapping (checked above) and
        // `data` is private memory that cannot overlap it. A truncation under
        // us is survived as in `read_at`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len()) };
        self.check_truncated(Op::Write)
    }

    /// Whether another process truncated the backing object under this
    /// mapping: an access met a page past its new end (and got zeros from
    /// the `SIGBUS` handler instead of dying). Once true, it stays true.
    /// Always `false` for unguarded mappings (System V, anonymous, sealed
    /// memfd, or when the handler's table was full).
    pub(crate) fn truncated(&self) -> bool {
        self.sigbus.as_ref().is_some_and(sys::sigbus::Guard::truncated)
    }

    /// The flag behind [`truncated`](Self::truncated), for channels that
    /// check it in their wait loops; `None` for unguarded mappings. Valid as
    /// long as this segment is mapped.
    pub(crate) fn truncation_flag(&self) -> Option<&'static std::sync::atomic::AtomicBool> {
        self.sigbus.as_ref().map(sys::sigbus::Guard::flag)
    }

    /// [`ErrorKind::Truncated`] if [`truncated`](Self::truncated): what
    /// channels call after reading shared memory through raw pointers.
    pub(crate) fn check_truncated(&self, op: Op) -> Result<()> {
        if self.truncated() {
            return Err(Error::new(op, self.label.clone(), ErrorKind::Truncated { size: self.len as u64 }));
        }
        Ok(())
    }

    /// Reads a plain-data value at `offset` (any alignment). Every bit
    /// pattern is a valid `T` ([`Pod`]), so whatever another process wrote,
    /// the result is a value; check that it makes sense before using it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OutOfBounds`] or [`ErrorKind::Truncated`].
    ///
    /// # Examples
    ///
    /// ```
    /// let mut seg = shmkit::Segment::options().size(64).anonymous()?;
    /// seg.write(8, &0xfeed_u32)?;
    /// assert_eq!(seg.read::<u32>(8)?, 0xfeed);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn read<T: Pod>(&self, offset: usize) -> Result<T> {
        let mut value = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Writes a plain-data value at `offset` (any alignment).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ReadOnly`], [`ErrorKind::OutOfBounds`] or
    /// [`ErrorKind::Truncated`].
    pub fn write<T: Pod>(&mut self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    /// Writes dirty pages back to the backing file and waits (`msync(MS_SYNC)`).
    /// Useful for file segments; harmless for the others.
    ///
    /// # Errors
    ///
    /// The OS reports an I/O error, or the object was truncated under us
    /// ([`ErrorKind::Truncated`]).
    #[doc(alias = "msync")]
    pub fn flush(&self) -> Result<()> {
        self.check_truncated(Op::Flush)?;
        sys::mman::sync(self.ptr, self.map_len, true).map_err(|e| Error::os(Op::Flush, self.label.clone(), e))
    }

    /// Schedules the write-back without waiting (`msync(MS_ASYNC)`).
    ///
    /// # Errors
    ///
    /// The OS reports an error, or the object was truncated under us.
    pub fn flush_async(&self) -> Result<()> {
        self.check_truncated(Op::Flush)?;
        sys::mman::sync(self.ptr, self.map_len, false).map_err(|e| Error::os(Op::Flush, self.label.clone(), e))
    }

    /// Grows a POSIX or file segment (and its backing object) to `new_len`
    /// bytes, reserving the space first. The mapping may move: earlier
    /// [`as_ptr`](Self::as_ptr) values are invalid afterwards. Other
    /// processes keep their old, shorter mapping until they reopen.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for other backends, a sealed memfd or
    /// a smaller size; [`ErrorKind::LimitExceeded`] if the space is missing;
    /// [`ErrorKind::Truncated`] if a peer truncated the object under us.
    pub fn grow(&mut self, new_len: usize) -> Result<()> {
        fd::grow(self, new_len)
    }

    /// Removes the object's name now: `IPC_RMID`, `shm_unlink` or `unlink`.
    /// The mapping stays valid until the segment is dropped; a System V
    /// segment is freed when its last process detaches.
    ///
    /// # Errors
    ///
    /// The object is already gone, or this process may not remove it.
    pub fn remove(&mut self) -> Result<()> {
        let result = match &self.backing {
            Backing::Sysv { id, .. } => sys::sysv::remove(*id),
            Backing::Fd { path: Some(path), .. } => sys::fs::unlink(path),
            Backing::Fd { path: None, .. } | Backing::Anonymous => Ok(()),
        };
        result.map_err(|e| Error::os(Op::Remove, self.label.clone(), e))?;
        self.removed = true;
        Ok(())
    }

    /// Keeps the object after this segment is dropped (ownership released).
    pub fn persist(&mut self) {
        self.remove_on_drop = false;
    }

    /// Removes the object's name when this segment is dropped.
    pub fn remove_on_drop(&mut self) {
        self.remove_on_drop = true;
    }

    /// Everything the kernel reports about the object (`IPC_STAT`, `fstat`).
    ///
    /// # Errors
    ///
    /// The OS refuses the query.
    pub fn info(&self) -> Result<Info> {
        let err = |e| Error::os(Op::Stat, self.label.clone(), e);
        match &self.backing {
            Backing::Sysv { id, .. } => Ok(Info::from_sysv(*id, sys::sysv::stat(*id).map_err(err)?)),
            Backing::Fd { fd, kind, .. } => Ok(Info::from_file(*kind, sys::fs::fstat(fd).map_err(err)?)),
            Backing::Anonymous => Ok(Info {
                kind: Kind::Anonymous,
                size: self.len as u64,
                mode: 0o600,
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
                atime: None,
                mtime: None,
                ctime: None,
                sysv: None,
            }),
        }
    }

    fn new(parts: Mapped, label: String) -> Segment {
        let map_len = page_round(parts.len);
        let sigbus = if parts.guard { sys::sigbus::guard(parts.ptr.as_ptr(), map_len, parts.writable) } else { None };
        Segment {
            ptr: parts.ptr,
            len: parts.len,
            map_len,
            writable: parts.writable,
            created: parts.created,
            remove_on_drop: false,
            removed: false,
            backing: parts.backing,
            label,
            pinned: std::sync::atomic::AtomicUsize::new(0),
            sigbus,
        }
    }

    /// Records that a robust mutex inside the mapping is held: the mapping
    /// must then never be unmapped or moved (see `sync::mutex`).
    pub(crate) fn pin(&self) {
        self.pinned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Undoes one [`pin`](Self::pin).
    pub(crate) fn unpin(&self) {
        self.pinned.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_pinned(&self) -> bool {
        self.pinned.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Applies the lifetime chosen in `options` (or the default) right after
    /// mapping.
    fn with_lifetime(mut self, options: &SegmentOptions) -> Result<Segment> {
        let default = match self.kind() {
            Kind::File => Lifetime::Persistent,
            _ if self.created => Lifetime::RemoveOnDrop,
            _ => Lifetime::Persistent,
        };
        match options.lifetime.unwrap_or(default) {
            Lifetime::RemoveOnDrop => self.remove_on_drop = true,
            Lifetime::Persistent => self.remove_on_drop = false,
            Lifetime::KernelRefcounted => self.remove()?,
        }
        Ok(self)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Errors are ignored: Drop cannot report them, and both calls fail
        // only if the mapping or name is already gone, which is the goal.
        if self.is_pinned() {
            // A robust mutex in the mapping is still held through a leaked
            // guard. glibc's robust list points into the mapping, and glibc
            // writes through it on later lock calls and at thread exit, so
            // unmapping would let it write into whatever is mapped here next.
            // Leak the mapping instead (and its place in the SIGBUS table,
            // since it stays mapped).
            std::mem::forget(self.sigbus.take());
        } else if let Backing::Sysv { .. } = self.backing {
            // SAFETY: `ptr` came from shmat and is detached only here.
            let _ = unsafe { sys::sysv::detach(self.ptr) };
        } else {
            // Leave the SIGBUS handler's table before the range is unmapped
            // (and perhaps reused by another mapping).
            drop(self.sigbus.take());
            // SAFETY: `ptr..ptr+map_len` came from mmap/mremap and is
            // unmapped only here; `self` is going away, so nothing uses it.
            let _ = unsafe { sys::mman::unmap(self.ptr, self.map_len) };
        }
        if self.remove_on_drop && !self.removed {
            let _ = self.remove();
        }
    }
}

/// A freshly mapped object, before lifetime handling.
pub(crate) struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    created: bool,
    backing: Backing,
    /// Register with the SIGBUS handler: the object can shrink under us.
    guard: bool,
}

/// What the kernel reports about a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// The backend.
    pub kind: Kind,
    /// Size in bytes (`shm_segsz`, `st_size`).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Last access (System V: last attach), seconds since the epoch; `None`
    /// when never or not known.
    pub atime: Option<i64>,
    /// Last modification (System V: last detach).
    pub mtime: Option<i64>,
    /// Last status change.
    pub ctime: Option<i64>,
    /// System V details.
    pub sysv: Option<SysvInfo>,
}

/// What `IPC_STAT` adds for System V segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysvInfo {
    /// The key (`IPC_PRIVATE`, i.e. 0, once marked for removal).
    pub key: i32,
    /// The shmid.
    pub id: i32,
    /// Processes attached now.
    pub nattch: u64,
    /// Creator pid.
    pub cpid: i32,
    /// Pid of the last `shmat`/`shmdt`.
    pub lpid: i32,
    /// Last attach, seconds since the epoch (0: never).
    pub atime: i64,
    /// Last detach (0: never).
    pub dtime: i64,
    /// Last change.
    pub ctime: i64,
    /// Creator uid.
    pub cuid: u32,
    /// Creator gid.
    pub cgid: u32,
    /// `IPC_RMID` was called: the segment goes with its last detach.
    pub marked_for_removal: bool,
    /// Locked in memory (`SHM_LOCK`).
    pub locked: bool,
}

impl Info {
    fn from_sysv(id: i32, st: sys::sysv::Stat) -> Info {
        let nonzero = |t: i64| (t != 0).then_some(t);
        Info {
            kind: Kind::Sysv,
            size: st.size,
            mode: st.mode & 0o777,
            uid: st.uid,
            gid: st.gid,
            atime: nonzero(st.atime),
            mtime: nonzero(st.dtime),
            ctime: nonzero(st.ctime),
            sysv: Some(SysvInfo {
                key: st.key,
                id,
                nattch: st.nattch,
                cpid: st.cpid,
                lpid: st.lpid,
                atime: st.atime,
                dtime: st.dtime,
                ctime: st.ctime,
                cuid: st.cuid,
                cgid: st.cgid,
                marked_for_removal: st.mode & sys::sysv::SHM_DEST != 0,
                locked: st.mode & sys::sysv::SHM_LOCKED != 0,
            }),
        }
    }

    fn from_file(kind: Kind, st: sys::fs::FileStat) -> Info {
        Info {
            kind,
            size: st.size,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            atime: Some(st.atime),
            mtime: Some(st.mtime),
            ctime: Some(st.ctime),
            sysv: None,
        }
    }
}

/// Reports on a named object without mapping it (so a System V segment's
/// attach count is not changed by looking).
///
/// # Errors
///
/// No such object, or no permission to query it.
///
/// # Examples
///
/// ```
/// use shmkit::segment::{self, Segment, Target};
/// let target = Target::posix(&format!("shmkit-doc-stat-{}", std::process::id()))?;
/// let _owner = Segment::create(&target, 100)?;
/// let info = segment::stat(&target)?;
/// assert_eq!((info.size, info.mode), (100, 0o600));
/// # Ok::<(), shmkit::Error>(())
/// ```
pub fn stat(target: &Target) -> Result<Info> {
    let label = target.to_string();
    match target {
        Target::Sysv(_) | Target::SysvId(_) => {
            let id = sysv::resolve(target, Op::Stat)?;
            sys::sysv::stat(id).map(|st| Info::from_sysv(id, st)).map_err(|e| sysv::error(Op::Stat, &label, target, e))
        }
        Target::Posix(name) => fd::stat_path(&name.path(), Kind::Posix, &label),
        Target::File(path) => fd::stat_path(path, Kind::File, &label),
    }
}

/// Removes a named object: `IPC_RMID` (the kernel frees a System V segment
/// when its last process detaches), `shm_unlink`, or `unlink`.
///
/// # Errors
///
/// No such object, or no permission to remove it.
pub fn remove(target: &Target) -> Result<()> {
    let label = target.to_string();
    match target {
        Target::Sysv(_) | Target::SysvId(_) => {
            let id = sysv::resolve(target, Op::Remove)?;
            sys::sysv::remove(id).map_err(|e| sysv::error(Op::Remove, &label, target, e))
        }
        Target::Posix(name) => {
            sys::fs::unlink(&name.path()).map_err(|e| fd::error(Op::Remove, &label, &name.path(), e))
        }
        Target::File(path) => sys::fs::unlink(path).map_err(|e| fd::error(Op::Remove, &label, path, e)),
    }
}
