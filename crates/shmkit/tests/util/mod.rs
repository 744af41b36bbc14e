//! Helpers for the integration tests: unique names, guards that remove what
//! a test created (also when it fails), child processes with watchdogs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmkit::Target;

/// How long any child may take before the test fails instead of hanging.
pub const WATCHDOG: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name no other test (or test run) uses: pid plus a counter.
pub fn unique_name(tag: &str) -> String {
    format!("shmkit-test-{}-{}-{tag}", std::process::id(), next())
}

/// A System V key no other test uses: 0x5f prefix, 16 bits of pid, counter.
pub fn unique_key() -> i32 {
    (0x5f00_0000u32 | ((std::process::id() & 0xffff) << 8) | (next() & 0xff)) as i32
}

/// Removes a named object when dropped, ignoring "not found".
#[derive(Debug)]
pub struct Remove(pub Target);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = shmkit::segment::remove(&self.0);
        if let Target::Sysv(_) = self.0 {
            // A second removal finds nothing; the first may have left a
            // segment marked for removal, which the kernel frees itself.
        }
    }
}

/// The backends that have names, for conformance tests run once per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sysv,
    Posix,
    File,
}

pub const NAMED: [Backend; 3] = [Backend::Sysv, Backend::Posix, Backend::File];

impl Backend {
    /// A fresh target of this backend and the guard that removes it.
    pub fn target(self) -> (Target, Remove) {
        let target = match self {
            Backend::Sysv => Target::sysv(unique_key()),
            Backend::Posix => Target::posix(&unique_name("seg")).unwrap(),
            Backend::File => Target::file(temp_path("seg")),
        };
        (target.clone(), Remove(target))
    }
}

/// A path in the temporary directory that no other test uses.
pub fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(unique_name(tag))
}

/// The environment variable that makes the test binary act as a child.
pub const CHILD_ROLE: &str = "SHMKIT_TEST_CHILD_ROLE";
const CHILD_ARGS: &str = "SHMKIT_TEST_CHILD_ARGS";

/// Starts this test binary again as a child that runs `role` with `args`
/// (see `children::dispatch`).
pub fn child(role: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ROLE, role)
        .env(CHILD_ARGS, args.join("\x1f"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// The arguments given to [`child`], inside the child.
pub fn child_args() -> Vec<String> {
    std::env::var(CHILD_ARGS).unwrap_or_default().split('\x1f').map(str::to_string).collect()
}

/// Runs a child to completion under the watchdog.
pub fn run_child(role: &str, args: &[&str]) -> ExitStatus {
    let child = child(role, args).spawn().expect("spawn the test binary as a child");
    wait(child)
}

/// Waits for a child, killing it and failing the test after [`WATCHDOG`].
pub fn wait(mut child: Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: child {} still running after {WATCHDOG:?}; killed", child.id());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Forks; the child runs `f` and leaves with `_exit(f())`, never returning
/// into the test harness. Keep `f` to what is safe after `fork` in a
/// threaded process: memory accesses, no locks.
pub fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs only `f` (memory accesses) and then `_exit`, so
    // it never touches locks another thread might have held at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: `_exit` ends the child at once, without running the
        // parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for a forked child under the watchdog.
pub fn wait_pid(pid: libc::pid_t) -> Exit {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the status integer we pass.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            return if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            };
        }
        if start.elapsed() > WATCHDOG {
            // SAFETY: plain signal and reap of our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("watchdog: forked child {pid} still running after {WATCHDOG:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the tests run as root (some tests need it, others behave
/// differently under it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A deterministic pattern of `len` bytes, different per `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}
