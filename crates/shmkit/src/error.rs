//! One error type for every fallible operation in shmkit.
//!
//! An [`Error`] says which operation failed ([`Op`]), on which object (as its
//! target string, e.g. `posix:/frames`), and what it means ([`ErrorKind`]),
//! and keeps the operating system's error as its [`source`](std::error::Error::source).
//! Its `Display` is written for a person: it says what to do next.

use std::fmt;
use std::io;

use crate::limits::LimitExceeded;

/// A `Result` whose error is shmkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Creating a new object.
    Create,
    /// Opening an existing object.
    Open,
    /// Mapping or attaching an object into this process.
    Map,
    /// Reading bytes or values.
    Read,
    /// Writing bytes or values.
    Write,
    /// Writing a file mapping back to its file (`msync`).
    Flush,
    /// Growing an object and its mapping.
    Resize,
    /// Querying an object (`IPC_STAT`, `fstat`).
    Stat,
    /// Removing an object's name (`IPC_RMID`, `shm_unlink`, `unlink`).
    Remove,
    /// Sealing a memfd or checking its seals.
    Seal,
    /// Reading the kernel's limits.
    Limits,
    /// Setting up a synchronization primitive in shared memory.
    Init,
    /// Locking a mutex.
    Lock,
    /// Unlocking a mutex.
    Unlock,
    /// Waiting on a semaphore or event.
    Wait,
    /// Posting a semaphore or notifying an event.
    Post,
    /// Sending on a channel.
    Send,
    /// Receiving from a channel.
    Recv,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Create => "create",
            Op::Open => "open",
            Op::Map => "map",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Resize => "resize",
            Op::Stat => "stat",
            Op::Remove => "remove",
            Op::Seal => "seal",
            Op::Limits => "read limits of",
            Op::Init => "initialize",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
            Op::Wait => "wait on",
            Op::Post => "post",
            Op::Send => "send on",
            Op::Recv => "receive from",
        })
    }
}

/// What went wrong, in terms a caller can branch on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No object has this name, key or id.
    NotFound,
    /// An object with this name or key exists already.
    AlreadyExists,
    /// The caller may not access the object. Owner and mode are given when
    /// they could be read.
    PermissionDenied {
        /// The object's owner uid.
        owner: Option<u32>,
        /// The object's permission bits.
        mode: Option<u32>,
    },
    /// A kernel or file-system limit does not allow the request.
    LimitExceeded(LimitExceeded),
    /// The object is smaller than the size asked for; mapping it would give
    /// `SIGBUS` on access past its end.
    TooSmall {
        /// Bytes asked for.
        requested: u64,
        /// Bytes the object has.
        actual: u64,
    },
    /// An existing System V segment is smaller than the size asked for
    /// (`shmget` gives `EINVAL`).
    SizeMismatch {
        /// Bytes asked for.
        requested: u64,
        /// Bytes the segment has, when known.
        actual: Option<u64>,
    },
    /// An access outside the segment.
    OutOfBounds {
        /// First byte of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the segment.
        size: u64,
    },
    /// A write through a read-only mapping.
    ReadOnly,
    /// A memfd lacks the seals that make it safe to map (it could shrink
    /// under us).
    NotSealed {
        /// The seals it has (`F_SEAL_*` bits).
        seals: u32,
    },
    /// The object exists but is not what this operation works on (e.g. a
    /// directory where a file was expected, or an empty object).
    WrongType(String),
    /// A wait ended because its timeout passed.
    Timeout,
    /// A non-blocking call would have had to wait.
    WouldBlock,
    /// A mutex whose holder died was unlocked without being marked
    /// consistent; it cannot be locked again until re-initialised.
    Unrecoverable,
    /// The calling thread already holds this mutex.
    Deadlock,
    /// The previous holder of a mutex died holding it (reported once per
    /// death, to the next locker).
    OwnerDied,
    /// Shared memory does not hold what it should (wrong magic, version or
    /// layout, or a value out of range): a bug, a different shmkit version,
    /// or a hostile peer. The text says what was found.
    Corrupt(String),
    /// No primitive has been initialised at this place yet, or its creator
    /// is still initialising it (or died doing so).
    NotInitialized,
    /// The other end of a channel closed or died (after everything it sent
    /// was received).
    Disconnected,
    /// A message is larger than the channel carries.
    MessageTooLarge {
        /// Bytes of the message.
        len: u64,
        /// The most the channel carries.
        max: u64,
    },
    /// The end of a channel is already held by another live process.
    Busy {
        /// That process.
        pid: u32,
    },
    /// Another process truncated the object under our mapping: an access
    /// met a page past its new end (or, more rarely, the file system could
    /// not provide a page of it). shmkit survived the `SIGBUS` that would
    /// have killed the process, but the bytes are gone; every later access
    /// to this segment gives this error. Reopen the object.
    Truncated {
        /// The bytes this segment mapped.
        size: u64,
    },
    /// The existing object is owned by another user, or group or others may
    /// write it, so someone else could change or truncate it under us.
    /// Opening it anyway needs
    /// [`SegmentOptions::allow_untrusted`](crate::SegmentOptions::allow_untrusted).
    Untrusted {
        /// The object's owner uid.
        owner: u32,
        /// The object's permission bits.
        mode: u32,
    },
    /// An argument is not valid; the text says which and why.
    InvalidArgument(String),
    /// Any other operating-system error, by errno.
    Os(i32),
}

/// The error of every fallible shmkit operation.
#[derive(Debug)]
pub struct Error {
    op: Op,
    object: String,
    kind: ErrorKind,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(op: Op, object: impl Into<String>, kind: ErrorKind) -> Self {
        Error { op, object: object.into(), kind, source: None }
    }

    /// An error from the OS, classified by its errno (see [`classify`]).
    pub(crate) fn os(op: Op, object: impl Into<String>, err: io::Error) -> Self {
        let kind = classify(&err);
        Error { op, object: object.into(), kind, source: Some(err) }
    }

    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn invalid(op: Op, object: impl Into<String>, why: impl Into<String>) -> Self {
        Error::new(op, object, ErrorKind::InvalidArgument(why.into()))
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The object the operation was on, as a target string such as
    /// `sysv:0x1234`, `posix:/name` or `file:/tmp/data`.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The errno behind the error, if it came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

/// The generic meaning of an errno; callers refine it where a call gives an
/// errno a specific meaning (e.g. `EINVAL` from `shmget`).
fn classify(err: &io::Error) -> ErrorKind {
    match err.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EEXIST) => ErrorKind::AlreadyExists,
        Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::PermissionDenied { owner: None, mode: None },
        Some(libc::ELOOP) => ErrorKind::WrongType("a symbolic link (shmkit never follows one)".into()),
        Some(libc::EISDIR) => ErrorKind::WrongType("a directory".into()),
        Some(code) => ErrorKind::Os(code),
        None => ErrorKind::Os(0),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}: ", self.op, self.object)?;
        match &self.kind {
            ErrorKind::NotFound => write!(f, "no such object"),
            ErrorKind::AlreadyExists => write!(f, "it already exists; open it instead, or remove it first"),
            ErrorKind::PermissionDenied { owner, mode } => {
                write!(f, "permission denied")?;
                match (owner, mode) {
                    (Some(uid), Some(mode)) => write!(
                        f,
                        " (owned by uid {uid}, mode {mode:04o}; this process runs as uid {})",
                        rustix::process::geteuid().as_raw()
                    ),
                    _ => Ok(()),
                }
            }
            ErrorKind::LimitExceeded(limit) => write!(f, "{limit}"),
            ErrorKind::TooSmall { requested, actual } => write!(
                f,
                "the object has {actual} bytes but {requested} were asked for; mapped past its end, stores in its last page would be lost and accesses beyond it would crash with SIGBUS"
            ),
            ErrorKind::SizeMismatch { requested, actual: Some(actual) } => write!(
                f,
                "the existing segment has {actual} bytes, fewer than the {requested} asked for; open it with a size of at most {actual}, or remove it first"
            ),
            ErrorKind::SizeMismatch { requested, actual: None } => {
                write!(f, "the kernel refused a size of {requested} bytes (below kernel.shmmin or above kernel.shmmax)")
            }
            ErrorKind::OutOfBounds { offset, len, size } => {
                write!(f, "bytes {offset}..{} are outside the segment of {size} bytes", offset.saturating_add(*len))
            }
            ErrorKind::ReadOnly => write!(f, "the segment is mapped read-only"),
            ErrorKind::NotSealed { seals } => write!(
                f,
                "the memfd is not sealed against shrinking (seals {seals:#x}); a peer could truncate it and crash us with SIGBUS"
            ),
            ErrorKind::WrongType(what) => write!(f, "it is {what}"),
            ErrorKind::Timeout => write!(f, "timed out"),
            ErrorKind::WouldBlock => write!(f, "it would block"),
            ErrorKind::Unrecoverable => write!(
                f,
                "the mutex is unrecoverable: a holder died and the next one unlocked it without marking the data consistent"
            ),
            ErrorKind::Deadlock => write!(f, "this thread already holds it"),
            ErrorKind::OwnerDied => write!(f, "its previous holder died holding it"),
            ErrorKind::Corrupt(what) => write!(f, "shared memory is corrupt: {what}"),
            ErrorKind::NotInitialized => write!(f, "it is not initialized (or its creator died while initializing it)"),
            ErrorKind::Disconnected => write!(f, "the other end closed or died"),
            ErrorKind::MessageTooLarge { len, max } => {
                write!(f, "a message of {len} bytes is larger than the {max} bytes the channel carries")
            }
            ErrorKind::Busy { pid } => write!(f, "process {pid} holds this end already"),
            ErrorKind::Truncated { size } => write!(
                f,
                "another process truncated it below the {size} bytes mapped here (or its file system could not provide a page); its bytes are lost to this mapping (accesses now read zeros and writes go nowhere), so reopen it"
            ),
            ErrorKind::Untrusted { owner, mode } => {
                let me = rustix::process::geteuid().as_raw();
                let mut why = Vec::new();
                if *owner != me {
                    why.push(format!("it is owned by uid {owner}, not by this process's uid {me}"));
                }
                if mode & 0o022 != 0 {
                    why.push(format!("its mode {mode:04o} lets group or others write it"));
                }
                if why.is_empty() {
                    why.push(format!("owner uid {owner}, mode {mode:04o}"));
                }
                write!(
                    f,
                    "refused: {}, so another user could change or truncate it under us; if that is intended, allow it with SegmentOptions::allow_untrusted(true)",
                    why.join(" and ")
                )
            }
            ErrorKind::InvalidArgument(why) => write!(f, "{why}"),
            ErrorKind::Os(_) => match &self.source {
                Some(e) => write!(f, "{e}"),
                None => write!(f, "unknown error"),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match err.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::PermissionDenied { .. } | ErrorKind::ReadOnly | ErrorKind::Untrusted { .. } => {
                io::ErrorKind::PermissionDenied
            }
            ErrorKind::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            ErrorKind::InvalidArgument(_) | ErrorKind::OutOfBounds { .. } | ErrorKind::SizeMismatch { .. } => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::LimitExceeded(_) => io::ErrorKind::OutOfMemory,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::WouldBlock => io::ErrorKind::WouldBlock,
            ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
            ErrorKind::Corrupt(_) => io::ErrorKind::InvalidData,
            _ => match err.raw_os_error() {
                Some(code) => return io::Error::new(io::Error::from_raw_os_error(code).kind(), err),
                None => io::ErrorKind::Other,
            },
        };
        io::Error::new(kind, err)
    }
}
