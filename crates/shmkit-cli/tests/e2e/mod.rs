//! End-to-end tests of `ls`, `gc`, `rm` of objects in use, `send`/`recv`,
//! `completions` and the help texts, with the helpers they share.
//!
//! The same rules as in `cli.rs`: real processes under a watchdog, names
//! unique to this process, and guards that remove every object a test made
//! (directly, with libc, `std::fs` and `ipcrm`, not through the binary under
//! test), pass or fail. Other tests (and other test binaries) run at the same
//! time and may create objects of their own, so every assertion is about the
//! objects a test made, never about the host as a whole.
//!
//! `gc` is host-wide: it removes every stale shmkit object, also those of a
//! test running beside it. The only objects that are stale on purpose while a
//! test still needs them are rings whose sender finished before any receiver
//! came. And `shmkit ls` opens every shmkit object for a moment, so a `gc`
//! running at that moment sees them mapped by a live process and keeps them.
//! So the tests that run `gc` (and assert what it saw as stale) hold
//! [`GcLock::exclusive`], and the tests that leave a ring stale for a while
//! or run `ls` hold [`GcLock::shared`]: an advisory lock on the `/dev/shm`
//! directory, which also keeps concurrent runs of these tests apart. Every
//! other ring made here has a live creator or holder while it matters.

mod completions;
mod gc;
mod kill;
mod ls;
mod rm;
mod schema;
mod stream;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{SHMKIT, run, shmkit, wait_timeout};

/// How long a test waits for a condition (a ring to appear, a process to
/// claim its end) before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

static NAMES: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this process or another) uses: `e2e-PID-N`.
pub(crate) fn unique(tag: &str) -> String {
    format!("e2e{tag}-{}-{}", std::process::id(), NAMES.fetch_add(1, Ordering::Relaxed))
}

/// The file of the ring called `name`.
pub(crate) fn ring_file(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/shmkit.ring.{name}"))
}

/// The `posix:` target of the ring called `name`.
pub(crate) fn ring_target(name: &str) -> String {
    format!("posix:/shmkit.ring.{name}")
}

/// The `ls` name of the ring called `name`.
pub(crate) fn ring_ls_name(name: &str) -> String {
    format!("/shmkit.ring.{name}")
}

pub(crate) fn ring_exists(name: &str) -> bool {
    ring_file(name).symlink_metadata().is_ok()
}

/// Removes, when dropped, every `/dev/shm` file and System V object a test
/// registered: rings by their file, semaphores by `sem.NAME`, System V
/// objects made by `ipcmk` or C programs by id with `ipcrm`.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    files: Vec<PathBuf>,
    ipc: Vec<(&'static str, i64)>,
}

impl Guard {
    pub(crate) fn new() -> Guard {
        Guard::default()
    }

    /// A fresh ring name, whose object is removed at the end.
    pub(crate) fn ring(&mut self) -> String {
        let name = unique("");
        let _ = std::fs::remove_file(ring_file(&name));
        self.files.push(ring_file(&name));
        name
    }

    /// Removes `/dev/shm/FILE` at the end.
    pub(crate) fn shm_file(&mut self, file: &str) {
        self.files.push(PathBuf::from("/dev/shm").join(file));
    }

    /// Removes a System V object at the end: `flag` is `ipcrm`'s `-m`, `-s`
    /// or `-q`.
    pub(crate) fn ipc(&mut self, flag: &'static str, id: i64) {
        self.ipc.push((flag, id));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for (flag, id) in &self.ipc {
            // Quietly: most are gone already when the test passed.
            let _ = Command::new("ipcrm")
                .arg(flag)
                .arg(id.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An advisory lock (`flock`) on the `/dev/shm` directory, between the tests
/// that run `gc` and the tests that leave a ring stale on purpose for a
/// while or run `ls`. See the module documentation.
#[derive(Debug)]
pub(crate) struct GcLock {
    _dir: File,
}

impl GcLock {
    /// For a test that runs `gc` (or asserts what is stale).
    pub(crate) fn exclusive() -> GcLock {
        GcLock::take(libc::LOCK_EX)
    }

    /// For a test whose ring is stale for a while but still needed, or that
    /// runs `ls`.
    pub(crate) fn shared() -> GcLock {
        GcLock::take(libc::LOCK_SH)
    }

    fn take(op: libc::c_int) -> GcLock {
        let dir = File::open("/dev/shm").unwrap_or_else(|e| panic!("cannot open /dev/shm: {e}"));
        let start = Instant::now();
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(dir.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                return GcLock { _dir: dir };
            }
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK), "flock(/dev/shm): {err}");
            assert!(start.elapsed() < 3 * PATIENCE, "watchdog: the gc lock on /dev/shm stayed taken");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Polls `ready` every few milliseconds; fails after [`PATIENCE`].
#[track_caller]
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < PATIENCE, "watchdog: waited {PATIENCE:?} for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// `shmkit ls --json ARGS…`, one object per line.
pub(crate) fn ls_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ls", "--json"];
    all.extend_from_slice(args);
    let out = shmkit(&all);
    out.ok();
    out.out()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("`{}`: not JSON ({e}): {line}", out.what)))
        .collect()
}

/// The `ls --json` objects by name.
pub(crate) fn by_name(objects: &[Value]) -> HashMap<String, Value> {
    objects.iter().map(|v| (v["name"].as_str().expect("every object has a name").to_string(), v.clone())).collect()
}

/// The `shmkit` part of `info --json` for the ring `name`, if it exists.
pub(crate) fn ring_info(name: &str) -> Option<Value> {
    let out = shmkit(&["info", &ring_target(name), "--json"]);
    (out.code() == 0).then(|| out.json()["shmkit"].clone())
}

/// Whether process `pid` holds the `role` end of the ring `name` (as
/// `info` reports it).
pub(crate) fn holds(name: &str, role: &str, pid: u32) -> bool {
    ring_info(name).is_some_and(|k| {
        k["holders"].as_array().is_some_and(|hs| hs.iter().any(|h| h["role"] == role && h["pid"] == pid))
    })
}

/// Waits until process `pid` holds the `role` end of the ring `name`.
#[track_caller]
pub(crate) fn wait_for_holder(name: &str, role: &str, pid: u32) {
    wait_until(&format!("pid {pid} to hold the {role} end of ring {name}"), || holds(name, role, pid));
}

/// A child process with piped standard streams, killed and reaped if the
/// test ends early. Its standard error is collected in the background.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    pub(crate) what: String,
    stderr: Option<JoinHandle<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd`; standard input and output are piped for the test to
    /// take ([`stdin`](Self::stdin), [`stdout`](Self::stdout)).
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
        words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        let what = words.join(" ");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        Proc { child, what, stderr: Some(stderr), status: None }
    }

    /// Starts `shmkit ARGS…`.
    pub(crate) fn shmkit(args: &[&str]) -> Proc {
        Proc::spawn(Command::new(SHMKIT).args(args))
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its standard input, for the test to write and close.
    pub(crate) fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin taken once")
    }

    /// Its standard output, for the test to read.
    pub(crate) fn stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout taken once")
    }

    /// Closes its standard input (if the test has not taken it) and waits
    /// for it under the watchdog.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        let status = wait_timeout(&mut self.child, &self.what);
        self.status = Some(status);
        status
    }

    /// Waits at most `limit`, then kills it and fails.
    pub(crate) fn wait_limit(&mut self, limit: Duration) -> ExitStatus {
        drop(self.child.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("wait for `{}`: {e}", self.what)) {
                self.status = Some(status);
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("watchdog: `{}` still ran after {limit:?}; killed it", self.what);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether it still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it with SIGKILL (a crash: no destructor runs) and reaps it.
    pub(crate) fn kill(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap_or_else(|e| panic!("cannot kill `{}`: {e}", self.what));
        let status = wait_timeout(&mut self.child, &self.what);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "`{}` should have died of SIGKILL", self.what);
        self.status = Some(status);
    }

    /// Its exit code, after [`wait`](Self::wait); panics if a signal killed it.
    #[track_caller]
    pub(crate) fn code(&mut self) -> i32 {
        let status = self.status.expect("waited for");
        match status.code() {
            Some(code) => code,
            None => {
                let stderr = self.stderr();
                panic!("`{}` was killed ({status:?}); stderr:\n{stderr}", self.what)
            }
        }
    }

    /// What it wrote on standard error; only once it has exited.
    pub(crate) fn stderr(&mut self) -> String {
        assert!(self.status.is_some(), "stderr is read after the process exits");
        match self.stderr.take() {
            Some(handle) => String::from_utf8_lossy(&handle.join().expect("stderr reader")).into_owned(),
            None => String::new(),
        }
    }

    /// Waits and asserts exit code `want`; returns stderr.
    #[track_caller]
    pub(crate) fn expect_exit(&mut self, want: i32) -> String {
        self.wait();
        let code = self.code();
        let stderr = self.stderr();
        assert_eq!(code, want, "`{}` exited with {code}; stderr:\n{stderr}", self.what);
        stderr
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a program (not shmkit) to completion under the watchdog and returns
/// its standard output; it must succeed.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd.env("LC_ALL", "C"), None);
    out.ok();
    out.out()
}
