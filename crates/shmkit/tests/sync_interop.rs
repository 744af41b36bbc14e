//! Interoperability of `shmkit::sync` with C programs that use the classic
//! semaphores: System V sets (`semget`/`semop` with `SEM_UNDO`) next to a
//! System V segment, and POSIX named semaphores (`sem_open`).
//!
//! The C programs live in `tests/c/` and are compiled at test time with
//! `$CC` (else `cc`, else `gcc`) into a fresh temporary directory that is
//! removed afterwards; without a compiler these tests fail and say so. Every
//! key and name is unique to the process and call, every object is removed
//! by a guard (also when a test fails), and every C program runs under a
//! watchdog (and an `alarm` of its own).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shmkit::sync::{NamedSemaphore, SemSet};
use shmkit::{ErrorKind, Segment, SysvKey, Target};

/// How long a C program may run, or a line take to come, before the test
/// kills it and fails.
const WATCHDOG: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Compiling the C programs
// ---------------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("shmkit-sync-interop-{}-{}", std::process::id(), next()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `argv --version` runs and succeeds.
fn runs(argv: &[String]) -> bool {
    Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The C compiler: `$CC` (which may carry flags), else `cc`, else `gcc`.
/// Panics if none runs: these tests must not pass silently without one.
fn c_compiler() -> Vec<String> {
    if let Ok(cc) = std::env::var("CC") {
        let argv: Vec<String> = cc.split_whitespace().map(String::from).collect();
        if !argv.is_empty() {
            assert!(runs(&argv), "$CC is {cc:?}, but `{cc} --version` does not run; fix $CC or unset it");
            return argv;
        }
    }
    for cc in ["cc", "gcc"] {
        let argv = vec![cc.to_string()];
        if runs(&argv) {
            return argv;
        }
    }
    panic!(
        "no C compiler found: neither `cc` nor `gcc` runs and $CC is not set. These tests check that \
         shmkit::sync interoperates with C programs; install gcc (or set $CC)."
    );
}

/// Compiles `tests/c/NAME.c` with `-Wall -Wextra -Werror` into `dir` and
/// returns the executable's path.
fn compile(dir: &TempDir, name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(format!("{name}.c"));
    let exe = dir.0.join(name);
    let cc = c_compiler();
    let mut cmd = Command::new(&cc[0]);
    cmd.args(&cc[1..]).args(["-Wall", "-Wextra", "-Werror", "-O1", "-pthread", "-o"]).arg(&exe).arg(&source);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let status = wait_watched(&mut child, &format!("{cc:?} {}", source.display()));
    let (out, err) = (out.join().expect("stdout reader"), err.join().expect("stderr reader"));
    assert!(status.success(), "compiling {} failed ({status}):\n{out}{err}", source.display());
    exe
}

// ---------------------------------------------------------------------------
// C programs under a watchdog
// ---------------------------------------------------------------------------

fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits for `child`, killing it and panicking after [`WATCHDOG`].
fn wait_watched(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("watchdog: `{what}` still ran after {WATCHDOG:?}; killed it");
            }
            Err(e) => panic!("cannot wait for `{what}`: {e}"),
        }
    }
}

/// A running C program: its stdout comes line by line, its stderr is kept
/// for error messages; it is killed and reaped if the test ends early.
struct CProgram {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    finished: bool,
}

impl CProgram {
    fn spawn(exe: &Path, args: &[String]) -> CProgram {
        let what = format!("{} {}", exe.display(), args.join(" "));
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(drain(child.stderr.take().expect("piped")));
        CProgram { what, child, lines, stderr, finished: false }
    }

    /// The next line of its stdout, waiting at most [`WATCHDOG`].
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("watchdog: `{}` printed no line in {WATCHDOG:?}", self.what),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_watched(&mut self.child, &self.what);
                self.finished = true;
                let stderr = self.stderr_text();
                panic!("`{}` ended ({status}) before the expected line; stderr:\n{stderr}", self.what)
            }
        }
    }

    /// Writes `line` and a newline to its stdin.
    fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to `{}`: {e}", self.what));
    }

    fn stderr_text(&mut self) -> String {
        self.stderr.take().map(|h| h.join().expect("stderr reader")).unwrap_or_default()
    }

    /// Waits for it to end (under the watchdog) and asserts it succeeded.
    fn success(mut self) {
        let status = wait_watched(&mut self.child, &self.what);
        self.finished = true;
        let stderr = self.stderr_text();
        assert!(status.success(), "`{}` failed ({status}); stderr:\n{stderr}", self.what);
    }

    /// Kills it with `SIGKILL` and reaps it.
    fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("kill the C program");
        let status = wait_watched(&mut self.child, &self.what);
        self.finished = true;
        status
    }
}

impl Drop for CProgram {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Unique objects, removed by guards
// ---------------------------------------------------------------------------

/// A System V key made from the pid and a counter (prefix 0x5d, apart from
/// the other test modules' keys).
fn unique_key() -> SysvKey {
    let raw = 0x5d00_0000 | ((std::process::id() & 0xffff) << 8) | (next() & 0xff);
    SysvKey::new(raw as i32)
}

/// A new semaphore set of one semaphore with `value`, under a fresh key;
/// it is removed when dropped (created here).
fn new_sem_set(value: u16) -> (SysvKey, SemSet) {
    for _ in 0..64 {
        let key = unique_key();
        match SemSet::create(key, 1, value, 0o600) {
            Ok(set) => return (key, set),
            Err(e) if *e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create a semaphore set: {e}"),
        }
    }
    panic!("no free System V key for a semaphore set");
}

/// A new System V segment of `size` bytes under a fresh key; it is removed
/// when dropped (created here).
fn new_sysv_segment(size: usize) -> (SysvKey, Segment) {
    for _ in 0..64 {
        let key = unique_key();
        match Segment::options().size(size).create(&Target::Sysv(key)) {
            Ok(seg) => return (key, seg),
            Err(e) if *e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create a System V segment: {e}"),
        }
    }
    panic!("no free System V key for a segment");
}

/// A POSIX semaphore name unique to this process and call; the guard
/// unlinks it when dropped, whoever created it.
struct SemName(String);

impl SemName {
    fn new() -> SemName {
        SemName(format!("/shmkit-sync-interop-{}-{}", std::process::id(), next()))
    }
}

impl Drop for SemName {
    fn drop(&mut self) {
        let _ = NamedSemaphore::unlink(&self.0);
    }
}

/// Whether a semaphore set with `key` exists (a plain `semget`).
fn sem_set_exists(key: SysvKey) -> bool {
    // SAFETY: semget takes no pointers.
    unsafe { libc::semget(key.raw(), 0, 0) >= 0 }
}

fn sem_file(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("sem.{}", name.trim_start_matches('/')))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn sysv_semaphore_lock_shared_with_c_counts_exactly() {
    // Each side makes 2N semop calls, many of them contended (a sleep and
    // a wake-up): about a second here.
    const N: u64 = 30_000;
    let dir = TempDir::new();
    let exe = compile(&dir, "sysv_sem_counter");
    let (sem_key, set) = new_sem_set(1);
    let (shm_key, mut seg) = new_sysv_segment(8);

    let mut c = CProgram::spawn(&exe, &[sem_key.to_string(), shm_key.to_string(), N.to_string()]);
    assert_eq!(c.line(), "ready");
    for _ in 0..N {
        set.acquire_timeout(0, WATCHDOG).expect("acquire the System V lock");
        let value: u64 = seg.read(0).expect("read the counter");
        seg.write(0, &(value + 1)).expect("write the counter");
        set.release(0).expect("release the System V lock");
    }
    assert_eq!(c.line(), "done");
    c.success();

    assert_eq!(seg.read::<u64>(0).expect("read the counter"), 2 * N, "no increment was lost");
    assert_eq!(set.value(0).expect("GETVAL"), 1, "the lock is free");

    drop((set, seg));
    assert!(!sem_set_exists(sem_key), "the set is removed with its creator's handle");
    assert!(matches!(shmkit::segment::stat(&Target::Sysv(shm_key)), Err(e) if *e.kind() == ErrorKind::NotFound));
}

#[test]
fn sysv_semaphore_held_by_a_killed_c_program_is_undone() {
    let dir = TempDir::new();
    let exe = compile(&dir, "sysv_sem_hold");
    let (key, set) = new_sem_set(1);

    let mut c = CProgram::spawn(&exe, &[key.to_string()]);
    assert_eq!(c.line(), "locked");
    assert_eq!(set.value(0).expect("GETVAL"), 0, "the C program holds the lock");
    let err = set.try_wait(0).expect_err("the lock is held");
    assert_eq!(*err.kind(), ErrorKind::WouldBlock, "{err}");

    let status = c.kill();
    assert!(!status.success());

    // SEM_UNDO: the kernel gave the unit back when the holder died.
    set.acquire_timeout(0, WATCHDOG).expect("acquire after the holder was killed");
    assert_eq!(set.value(0).expect("GETVAL"), 0);
    set.release(0).expect("release");
    assert_eq!(set.value(0).expect("GETVAL"), 1);

    // An opener by key sees the same set; it does not remove it on drop.
    let opened = SemSet::open(key).expect("open by key");
    assert_eq!((opened.id(), opened.len()), (set.id(), 1));
    drop(opened);
    assert!(sem_set_exists(key));
    drop(set);
    assert!(!sem_set_exists(key), "the set is removed with its creator's handle");
}

#[test]
fn posix_named_semaphore_created_by_rust_posted_by_c() {
    let dir = TempDir::new();
    let exe = compile(&dir, "psem_post");
    let name = SemName::new();
    let sem = NamedSemaphore::create(&name.0, 0, 0o600).expect("create a named semaphore");
    let mode = std::fs::metadata(sem_file(&name.0)).expect("glibc keeps it in /dev/shm").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    let mut c = CProgram::spawn(&exe, &[name.0.clone(), "3".into()]);
    assert_eq!(c.line(), "posted 3");
    c.success();

    assert_eq!(sem.value().expect("sem_getvalue"), 3);
    for i in 0..3 {
        sem.wait_timeout(WATCHDOG).unwrap_or_else(|e| panic!("wait {i}: {e}"));
    }
    let err = sem.wait_timeout(Duration::from_millis(50)).expect_err("the fourth wait finds nothing");
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    let err = sem.try_wait().expect_err("nothing left");
    assert_eq!(*err.kind(), ErrorKind::WouldBlock, "{err}");

    drop(sem);
    assert!(!sem_file(&name.0).exists(), "the creator's handle unlinks the name");
}

#[test]
fn posix_named_semaphore_created_by_c_opened_by_rust() {
    let dir = TempDir::new();
    let exe = compile(&dir, "psem_create");
    let name = SemName::new();

    let mut c = CProgram::spawn(&exe, &[name.0.clone(), "2".into()]);
    assert_eq!(c.line(), "created");
    let sem = NamedSemaphore::open(&name.0).expect("open the C program's semaphore");

    assert_eq!(sem.value().expect("sem_getvalue"), 2, "the C program's initial value");
    for i in 0..2 {
        sem.wait_timeout(WATCHDOG).unwrap_or_else(|e| panic!("wait {i}: {e}"));
    }
    let err = sem.try_wait().expect_err("both units taken");
    assert_eq!(*err.kind(), ErrorKind::WouldBlock, "{err}");

    // Now the C program waits (sem_wait, blocking at zero); a post from
    // Rust wakes it.
    c.send_line("go");
    sem.post().expect("post");
    assert_eq!(c.line(), "woken");
    c.success();
    assert_eq!(sem.value().expect("sem_getvalue"), 0, "the C program took the posted unit");
    let err = sem.wait_timeout(Duration::from_millis(50)).expect_err("nothing left");
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");

    // Opened, not created: dropping the handle keeps the name.
    drop(sem);
    assert!(sem_file(&name.0).exists(), "an opener does not unlink");
    NamedSemaphore::unlink(&name.0).expect("unlink");
    assert!(!sem_file(&name.0).exists());
}
