//! POSIX named semaphores (`sem_open`), for cooperating with C programs.
//! glibc keeps each one as `/dev/shm/sem.NAME`.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Op, Result};
use crate::segment::PosixName;
use crate::sys;
use crate::sys::fs::OpenHow;

/// A POSIX named semaphore.
///
/// # Examples
///
/// ```
/// use shmkit::sync::NamedSemaphore;
///
/// let name = format!("/shmkit-doc-sem-{}", std::process::id());
/// let sem = NamedSemaphore::create(&name, 0, 0o600)?;
/// sem.post()?;
/// sem.wait()?;
/// // Created here, so unlinked when dropped.
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: sys::psem::Sem,
    name: PosixName,
    unlink_on_drop: bool,
}

// SAFETY: a sem_t from sem_open is process-wide and its operations are
// thread-safe (POSIX); the handle is closed once, in Drop.
unsafe impl Send for NamedSemaphore {}
// SAFETY: see `Send`.
unsafe impl Sync for NamedSemaphore {}

impl NamedSemaphore {
    /// Creates a semaphore (`O_CREAT | O_EXCL`) with `value` and `mode`;
    /// it is unlinked when dropped unless [`persist`](Self::persist) is
    /// called.
    ///
    /// # Errors
    ///
    /// The name is invalid or taken, or no permission.
    pub fn create(name: &str, value: u32, mode: u32) -> Result<Self> {
        let name = PosixName::new(name)?;
        let sem = sys::psem::open(name.as_str(), OpenHow::CreateExclusive, mode, value)
            .map_err(|e| Error::os(Op::Create, format!("posix-sem:{name}"), e))?;
        let sem = NamedSemaphore { sem, name, unlink_on_drop: true };
        // sem_open applies the umask; set the mode exactly, as for segments.
        let path = std::path::Path::new(sys::fs::SHM_DIR).join(format!("sem.{}", &sem.name.as_str()[1..]));
        if let Ok(fd) = sys::fs::open(&path, OpenHow::Existing, false, 0) {
            sys::fs::fchmod(&fd, mode & 0o777).map_err(|e| Error::os(Op::Create, sem.label(), e))?;
        }
        Ok(sem)
    }

    /// Opens an existing semaphore.
    ///
    /// # Errors
    ///
    /// No such semaphore, or no permission.
    pub fn open(name: &str) -> Result<Self> {
        let name = PosixName::new(name)?;
        let sem = sys::psem::open(name.as_str(), OpenHow::Existing, 0, 0)
            .map_err(|e| Error::os(Op::Open, format!("posix-sem:{name}"), e))?;
        Ok(NamedSemaphore { sem, name, unlink_on_drop: false })
    }

    fn label(&self) -> String {
        format!("posix-sem:{}", self.name)
    }

    /// Keeps the semaphore after this handle is dropped.
    pub fn persist(&mut self) {
        self.unlink_on_drop = false;
    }

    /// Removes the name (`sem_unlink`); open handles keep working.
    ///
    /// # Errors
    ///
    /// No such semaphore, or no permission.
    pub fn unlink(name: &str) -> Result<()> {
        let name = PosixName::new(name)?;
        sys::psem::unlink(name.as_str()).map_err(|e| Error::os(Op::Remove, format!("posix-sem:{name}"), e))
    }

    /// Adds a unit (`sem_post`).
    ///
    /// # Errors
    ///
    /// The value would overflow (`EOVERFLOW`).
    pub fn post(&self) -> Result<()> {
        sys::psem::post(self.sem).map_err(|e| Error::os(Op::Post, self.label(), e))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<()> {
        sys::psem::wait(self.sem, timeout).map_err(|e| {
            let err = Error::os(Op::Wait, self.label(), e);
            match err.raw_os_error() {
                Some(libc::ETIMEDOUT) => err.with_kind(ErrorKind::Timeout),
                Some(libc::EAGAIN) => err.with_kind(ErrorKind::WouldBlock),
                _ => err,
            }
        })
    }

    /// Takes a unit, waiting as long as it takes (`sem_wait`).
    ///
    /// # Errors
    ///
    /// Only if the OS fails.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(None)
    }

    /// Takes a unit if one is available (`sem_trywait`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] if the value is zero.
    pub fn try_wait(&self) -> Result<()> {
        self.wait_with(Some(Duration::ZERO))
    }

    /// Takes a unit, waiting at most `timeout` on the monotonic clock
    /// (`sem_clockwait`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if no unit came in time.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_with(Some(timeout.max(Duration::from_nanos(1))))
    }

    /// The current value (`sem_getvalue`).
    ///
    /// # Errors
    ///
    /// Only if the OS fails.
    pub fn value(&self) -> Result<u32> {
        sys::psem::value(self.sem).map(|v| v.max(0) as u32).map_err(|e| Error::os(Op::Stat, self.label(), e))
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        // Errors are ignored: closing an open semaphore cannot fail, and
        // the unlink fails only if someone removed the name already.
        // SAFETY: the handle is not used after this.
        let _ = unsafe { sys::psem::close(self.sem) };
        if self.unlink_on_drop {
            let _ = sys::psem::unlink(self.name.as_str());
        }
    }
}
