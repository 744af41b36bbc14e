//! Kernel and file-system limits on shared memory, and the checks made before
//! creating an object so that a request that cannot fit fails up front with
//! a [`LimitExceeded`] that says how to raise the limit.

use std::fmt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Op, Result};
use crate::sys;

/// A limit that a request can run into.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// `kernel.shmmax`: the largest System V segment, in bytes.
    Shmmax,
    /// `kernel.shmall`: all System V segments together, in pages.
    Shmall,
    /// `kernel.shmmni`: how many System V segments may exist.
    Shmmni,
    /// Free space of the file system that holds the object (`/dev/shm` for
    /// POSIX objects), in bytes.
    Space {
        /// The file system's mount point or directory.
        path: String,
    },
    /// `RLIMIT_NOFILE`: open file descriptors of this process.
    NoFile,
    /// `vm.max_map_count`: mappings of this process.
    MaxMapCount,
}

/// A request that a limit does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// The limit's value, in its own unit (bytes, pages or a count).
    pub value: u64,
    /// What the request needed, in the same unit. For counting limits this is
    /// the count the request would have reached.
    pub requested: u64,
}

impl LimitExceeded {
    /// The command that raises the limit.
    pub fn how_to_raise(&self) -> String {
        match &self.limit {
            Limit::Shmmax => format!("sysctl -w kernel.shmmax={}", self.requested),
            Limit::Shmall => format!("sysctl -w kernel.shmall={}", self.requested),
            Limit::Shmmni => format!("sysctl -w kernel.shmmni={}", self.requested),
            Limit::Space { path } if path == sys::fs::SHM_DIR => {
                "free space in /dev/shm (see `shmkit ls`), or grow it: mount -o remount,size=<bytes> /dev/shm".into()
            }
            Limit::Space { path } => format!("free space on the file system of {path}"),
            Limit::NoFile => "ulimit -n <count> (RLIMIT_NOFILE)".into(),
            Limit::MaxMapCount => format!("sysctl -w vm.max_map_count={}", self.requested.max(65530) * 2),
        }
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, unit) = match &self.limit {
            Limit::Shmmax => ("kernel.shmmax".to_string(), "bytes"),
            Limit::Shmall => ("kernel.shmall".to_string(), "pages in all System V segments"),
            Limit::Shmmni => ("kernel.shmmni".to_string(), "segments"),
            Limit::Space { path } => (format!("free space of {path}"), "bytes"),
            Limit::NoFile => ("RLIMIT_NOFILE".to_string(), "open file descriptors"),
            Limit::MaxMapCount => ("vm.max_map_count".to_string(), "mappings"),
        };
        write!(
            f,
            "the request needs {} {unit} but {name} is {}; to allow it: {}",
            self.requested,
            self.value,
            self.how_to_raise()
        )
    }
}

/// Everything `shmkit limits` shows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Bytes per page; every mapping is a whole number of pages.
    pub page_size: u64,
    /// `kernel.shmmax`: the largest System V segment, in bytes.
    pub shmmax: u64,
    /// `kernel.shmall`: all System V segments together, in pages.
    pub shmall: u64,
    /// `kernel.shmmni`: the most System V segments.
    pub shmmni: u64,
    /// System V segments that exist now.
    pub sysv_segments: u64,
    /// Their total size in bytes.
    pub sysv_bytes: u64,
    /// Their total size in pages, as counted against `shmall`.
    pub sysv_pages: u64,
    /// Size of `/dev/shm` in bytes, if it is mounted.
    pub dev_shm_size: Option<u64>,
    /// Free bytes in `/dev/shm`, if it is mounted.
    pub dev_shm_free: Option<u64>,
    /// `RLIMIT_NOFILE` soft limit (`None`: unlimited).
    pub nofile_soft: Option<u64>,
    /// `RLIMIT_NOFILE` hard limit (`None`: unlimited).
    pub nofile_hard: Option<u64>,
    /// Open file descriptors of this process.
    pub open_fds: u64,
    /// `vm.max_map_count`: the most mappings per process.
    pub max_map_count: u64,
    /// Mappings of this process now.
    pub map_count: u64,
}

fn limits_err(what: &str, err: std::io::Error) -> Error {
    Error::os(Op::Limits, what, err)
}

impl Limits {
    /// Reads every limit and current usage.
    ///
    /// # Errors
    ///
    /// Fails if `/proc` is not mounted or a value cannot be parsed.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = shmkit::Limits::read()?;
    /// assert!(limits.page_size >= 4096);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn read() -> Result<Limits> {
        let sysctl = |name: &str| sys::proc::sysctl_u64(name).map_err(|e| limits_err(name, e));
        let page_size = sys::proc::page_size() as u64;
        let rows = sys::proc::sysv_segments().map_err(|e| limits_err("/proc/sysvipc/shm", e))?;
        let space = sys::fs::space(Path::new(sys::fs::SHM_DIR)).ok();
        let (nofile_soft, nofile_hard) = sys::proc::nofile_limit();
        Ok(Limits {
            page_size,
            shmmax: sysctl("kernel/shmmax")?,
            shmall: sysctl("kernel/shmall")?,
            shmmni: sysctl("kernel/shmmni")?,
            sysv_segments: rows.len() as u64,
            sysv_bytes: rows.iter().map(|r| r.size).sum(),
            sysv_pages: rows.iter().map(|r| r.size.div_ceil(page_size)).sum(),
            dev_shm_size: space.map(|s| s.total),
            dev_shm_free: space.map(|s| s.free),
            nofile_soft,
            nofile_hard,
            open_fds: sys::proc::open_fds().map_err(|e| limits_err("/proc/self/fd", e))?,
            max_map_count: sysctl("vm/max_map_count")?,
            map_count: sys::proc::map_count().map_err(|e| limits_err("/proc/self/maps", e))?,
        })
    }
}

fn exceeded(op: Op, object: &str, limit: Limit, value: u64, requested: u64) -> Error {
    Error::new(op, object, ErrorKind::LimitExceeded(LimitExceeded { limit, value, requested }))
}

/// Checks that a new System V segment of `size` bytes fits `shmmax`, `shmall`
/// and `shmmni`.
pub(crate) fn check_sysv(object: &str, size: u64) -> Result<()> {
    let limits = Limits::read()?;
    if size > limits.shmmax {
        return Err(exceeded(Op::Create, object, Limit::Shmmax, limits.shmmax, size));
    }
    let pages = limits.sysv_pages.saturating_add(size.div_ceil(limits.page_size));
    if pages > limits.shmall {
        return Err(exceeded(Op::Create, object, Limit::Shmall, limits.shmall, pages));
    }
    if limits.sysv_segments >= limits.shmmni {
        return Err(exceeded(Op::Create, object, Limit::Shmmni, limits.shmmni, limits.sysv_segments + 1));
    }
    check_map_count(Op::Create, object)
}

/// Checks that `size` bytes fit in the free space of the file system holding
/// `dir`.
pub(crate) fn check_space(op: Op, object: &str, dir: &Path, size: u64) -> Result<()> {
    // A file system that cannot report its space (rare) is left to fallocate.
    if let Ok(space) = sys::fs::space(dir)
        && size > space.free
    {
        return Err(space_exceeded(op, object, dir, space.free, size));
    }
    Ok(())
}

pub(crate) fn space_exceeded(op: Op, object: &str, dir: &Path, free: u64, size: u64) -> Error {
    let limit = Limit::Space { path: dir.display().to_string() };
    exceeded(op, object, limit, free, size)
}

/// Checks that one more mapping fits `vm.max_map_count`.
pub(crate) fn check_map_count(op: Op, object: &str) -> Result<()> {
    let (Ok(max), Ok(now)) = (sys::proc::sysctl_u64("vm/max_map_count"), sys::proc::map_count()) else {
        return Ok(());
    };
    if now >= max {
        return Err(exceeded(op, object, Limit::MaxMapCount, max, now + 1));
    }
    Ok(())
}

/// The error for `EMFILE`: this process has too many open files.
pub(crate) fn nofile_exceeded(op: Op, object: &str) -> Error {
    let (soft, _) = sys::proc::nofile_limit();
    let open = sys::proc::open_fds().unwrap_or(0);
    exceeded(op, object, Limit::NoFile, soft.unwrap_or(u64::MAX), open + 1)
}

/// The size of a page, the unit in which memory is mapped: a segment of
/// 4097 bytes occupies two pages (8192 bytes) on a machine with 4 KiB pages.
pub fn page_size() -> usize {
    sys::proc::page_size()
}
