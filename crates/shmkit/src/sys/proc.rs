//! Facts about the system read from `/proc`, `sysconf` and `getrlimit`.

use std::io;
use std::path::Path;

/// The size of a page of memory, the unit of every mapping.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// Reads a `/proc/sys` value such as `kernel/shmmax` as an unsigned integer.
pub(crate) fn sysctl_u64(name: &str) -> io::Result<u64> {
    let path = Path::new("/proc/sys").join(name);
    let text = std::fs::read_to_string(&path)?;
    text.trim().parse::<u64>().map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a number: {:?}", path.display(), text.trim()))
    })
}

/// One row of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SysvShmRow {
    pub(crate) key: i32,
    pub(crate) id: i32,
    pub(crate) perms: u32,
    pub(crate) size: u64,
    pub(crate) uid: u32,
}

/// Every System V segment visible in this IPC namespace.
pub(crate) fn sysv_segments() -> io::Result<Vec<SysvShmRow>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "/proc/sysvipc/shm: unexpected format");
    let mut rows = Vec::new();
    // Columns: key shmid perms size cpid lpid nattch uid gid cuid cgid ...
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(bad());
        }
        let num = |i: usize| f[i].parse::<i64>().map_err(|_| bad());
        rows.push(SysvShmRow {
            key: num(0)? as i32,
            id: num(1)? as i32,
            perms: u32::from_str_radix(f[2], 8).map_err(|_| bad())?,
            size: num(3)? as u64,
            uid: num(7)? as u32,
        });
    }
    Ok(rows)
}

/// How many mappings this process has (`/proc/self/maps` lines), to compare
/// with `vm.max_map_count`.
pub(crate) fn map_count() -> io::Result<u64> {
    let text = std::fs::read("/proc/self/maps")?;
    Ok(text.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// `RLIMIT_NOFILE`: (soft, hard); `None` means unlimited.
pub(crate) fn nofile_limit() -> (Option<u64>, Option<u64>) {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (r.current, r.maximum)
}

/// How many file descriptors this process has open.
pub(crate) fn open_fds() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// A process's state letter and start time (clock ticks after boot) from
/// `/proc/PID/stat`; `None` if there is no such process.
pub(crate) fn process_start(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain ") ", so
    // split at the last one. Then: state (field 3) … starttime (field 22).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether a process with this pid exists (`kill(pid, 0)`): for when
/// `/proc` cannot say (not mounted, hidden by `hidepid`, or out of file
/// descriptors). A process of another user exists too (`EPERM`).
pub(crate) fn pid_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

/// The unix time now, in seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` and says
/// whether the kernel supports it (Linux 4.16 and later).
pub(crate) fn register_membarrier() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
}

/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: every running thread of
/// every registered process executes a full memory barrier before this
/// returns. The heavy half of an asymmetric fence.
pub(crate) fn global_barrier() -> io::Result<()> {
    Ok(rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited)?)
}
