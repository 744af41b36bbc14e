//! Helpers for the end-to-end tests: unique names, a watchdog around every
//! child process, guards that remove what a test created (even when it
//! fails), a C compiler, and parsers for `ipcs` and JSON output.

use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const SHMKIT: &str = env!("CARGO_BIN_EXE_shmkit");

/// How long any child process may run before the test kills it and fails.
const WATCHDOG: Duration = Duration::from_secs(20);

static KEYS: AtomicU32 = AtomicU32::new(0);
static NAMES: AtomicU32 = AtomicU32::new(0);

fn pid() -> u32 {
    std::process::id()
}

/// The system's page size, from `sysconf(_SC_PAGESIZE)`.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(page > 0, "sysconf(_SC_PAGESIZE) failed");
    page as u64
}

// ---------------------------------------------------------------------------
// Running processes under a watchdog
// ---------------------------------------------------------------------------

/// Waits for `child`, polling every few milliseconds; after [`WATCHDOG`] it
/// kills the child and panics.
pub(crate) fn wait_timeout(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if start.elapsed() < WATCHDOG => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("watchdog: `{what}` still ran after {WATCHDOG:?}; killed it");
            }
            Err(e) => panic!("cannot wait for `{what}`: {e}"),
        }
    }
}

/// What a finished process left.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) what: String,
    pub(crate) pid: u32,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Output {
    /// The exit code; panics if the process was killed by a signal.
    pub(crate) fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!("`{}` was killed by a signal ({:?}); stderr:\n{}", self.what, self.status, self.stderr),
        }
    }

    /// Standard output as text.
    pub(crate) fn out(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|e| panic!("`{}` printed non-UTF-8 on stdout: {e}", self.what))
    }

    /// Asserts the exit code and returns `self`.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "`{}` exited with the wrong code\nstdout:\n{}\nstderr:\n{}",
            self.what,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }

    /// Asserts success and returns `self`.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Asserts a failure with `code` and an error message on stderr that
    /// starts with `shmkit:` or `error:`.
    #[track_caller]
    pub(crate) fn fails(&self, code: i32) -> &Self {
        self.expect_code(code);
        let first = self.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("shmkit:") || first.starts_with("error:"),
            "`{}`: stderr should start with `shmkit:` or `error:`, got:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Like [`fails`](Self::fails), accepting exit code 1 or 2.
    #[track_caller]
    pub(crate) fn fails_1_or_2(&self) -> &Self {
        let code = if self.code() == 2 { 2 } else { 1 };
        self.fails(code)
    }

    /// Standard output parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!("`{}` did not print JSON ({e}):\n{}", self.what, String::from_utf8_lossy(&self.stdout))
        })
    }
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

fn drain<R: Read + Send + 'static>(mut from: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` to completion under the watchdog, feeding it `stdin` (or
/// nothing), and collects its output. Only a failure to start it is
/// returned as an error.
pub(crate) fn try_run(cmd: &mut Command, stdin: Option<&[u8]>) -> io::Result<Output> {
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // The child may exit without reading; a broken pipe is fine then.
            Some(thread::spawn(move || drop(pipe.write_all(&data))))
        }
        _ => None,
    };
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_timeout(&mut child, &what);
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder panicked");
    }
    let stdout = out.join().expect("stdout reader panicked");
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader panicked")).into_owned();
    Ok(Output { what, pid: child.id(), status, stdout, stderr })
}

/// [`try_run`], panicking if the program cannot be started.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    try_run(cmd, stdin).unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)))
}

/// Runs `shmkit ARGS…`.
pub(crate) fn shmkit(args: &[&str]) -> Output {
    run(Command::new(SHMKIT).args(args), None)
}

/// Runs `shmkit ARGS…` with `input` on its standard input.
pub(crate) fn shmkit_with_input(args: &[&str], input: &[u8]) -> Output {
    run(Command::new(SHMKIT).args(args), Some(input))
}

/// Runs `shmkit ARGS…` under `umask UMASK`, set by a shell that then execs it.
pub(crate) fn shmkit_umask(umask: &str, args: &[&str]) -> Output {
    let script = format!("umask {umask} && exec \"$0\" \"$@\"");
    run(Command::new("sh").arg("-c").arg(script).arg(SHMKIT).args(args), None)
}

/// A running child that is killed and reaped if the test ends early.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    finished: bool,
}

impl Running {
    /// Starts `cmd` with piped standard input and output; stderr is
    /// inherited so the test log shows it.
    pub(crate) fn spawn(cmd: &mut Command) -> Running {
        let what = describe(cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, what, lines, finished: false }
    }

    /// Its process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line of its standard output, waiting at most [`WATCHDOG`].
    pub(crate) fn line(&mut self) -> String {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("watchdog: `{}` printed no line in {WATCHDOG:?}", self.what),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_timeout(&mut self.child, &self.what);
                self.finished = true;
                panic!("`{}` ended ({status:?}) before printing the expected line", self.what)
            }
        }
    }

    /// Its standard input.
    pub(crate) fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("stdin is still open")
    }

    /// Closes its standard input and waits for it (under the watchdog).
    pub(crate) fn finish(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        let status = wait_timeout(&mut self.child, &self.what);
        self.finished = true;
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Unique names and cleanup
// ---------------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shmkit-cli-test-{}-{n}", pid()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
enum Object {
    Sysv(u32),
    Posix(String),
    File(PathBuf),
}

fn remove_sysv(key: u32) {
    // SAFETY: shmget and shmctl(IPC_RMID) take no pointers we own; a null
    // buffer is allowed for IPC_RMID.
    unsafe {
        let id = libc::shmget(key as libc::key_t, 0, 0);
        if id >= 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

fn remove_posix(name: &str) {
    let name = CString::new(format!("/{name}")).expect("no NUL in names");
    // SAFETY: `name` is a valid NUL-terminated string.
    unsafe { libc::shm_unlink(name.as_ptr()) };
}

/// Whether a System V segment with this key exists (checked with `shmget`,
/// independently of shmkit).
pub(crate) fn sysv_exists(key: u32) -> bool {
    // SAFETY: shmget takes no pointers.
    unsafe { libc::shmget(key as libc::key_t, 0, 0) >= 0 }
}

/// Whether the POSIX object exists in `/dev/shm`.
pub(crate) fn posix_exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).symlink_metadata().is_ok()
}

/// Hands out unique IPC names and removes every one of them (directly with
/// libc, not through the binary under test) when dropped, whether or not
/// the test passed. Names are also removed when handed out, in case an
/// earlier run with the same pid left them.
#[derive(Debug, Default)]
pub(crate) struct Cleanup(Vec<Object>);

impl Cleanup {
    pub(crate) fn new() -> Cleanup {
        Cleanup::default()
    }

    /// A unique System V key: `0x5e000000 | (pid & 0xffff) << 8 | counter`.
    pub(crate) fn sysv_key(&mut self) -> u32 {
        let n = KEYS.fetch_add(1, Ordering::Relaxed);
        assert!(n < 256, "the tests ran out of System V keys; widen the counter");
        let key = 0x5e00_0000 | ((pid() & 0xffff) << 8) | n;
        remove_sysv(key);
        self.0.push(Object::Sysv(key));
        key
    }

    /// A unique POSIX name, without the leading slash.
    pub(crate) fn posix_name(&mut self) -> String {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let name = format!("shmkit-clitest-{}-{n}", pid());
        remove_posix(&name);
        self.0.push(Object::Posix(name.clone()));
        name
    }

    /// A unique file path inside `dir` (which need not be a [`TempDir`]).
    pub(crate) fn file(&mut self, dir: &Path) -> PathBuf {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("shmkit-clitest-{}-{n}.seg", pid()));
        let _ = std::fs::remove_file(&path);
        self.0.push(Object::File(path.clone()));
        path
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for object in &self.0 {
            match object {
                Object::Sysv(key) => remove_sysv(*key),
                Object::Posix(name) => remove_posix(name),
                Object::File(path) => drop(std::fs::remove_file(path)),
            }
        }
    }
}

/// `sysv:0x…` for a key.
pub(crate) fn sysv_target(key: u32) -> String {
    format!("sysv:{key:#010x}")
}

// ---------------------------------------------------------------------------
// C programs
// ---------------------------------------------------------------------------

/// The C compiler: `$CC` (which may carry flags), else `cc`, else `gcc`.
/// Panics if none runs: these tests must not pass silently without one.
fn c_compiler() -> Vec<String> {
    let works = |argv: &[String]| {
        try_run(Command::new(&argv[0]).args(&argv[1..]).arg("--version"), None).is_ok_and(|o| o.status.success())
    };
    if let Ok(cc) = std::env::var("CC") {
        let argv: Vec<String> = cc.split_whitespace().map(String::from).collect();
        if !argv.is_empty() {
            assert!(works(&argv), "$CC is {cc:?}, but `{cc} --version` does not run; fix $CC or unset it");
            return argv;
        }
    }
    for cc in ["cc", "gcc"] {
        let argv = vec![cc.to_string()];
        if works(&argv) {
            return argv;
        }
    }
    panic!(
        "no C compiler found: neither `cc` nor `gcc` runs and $CC is not set. \
         These tests check interoperability with C programs; install gcc (or set $CC)."
    );
}

/// Compiles `tests/c/NAME.c` with `-Wall -Wextra -Werror` into `dir` and
/// returns the executable's path.
pub(crate) fn compile_c(dir: &TempDir, name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(format!("{name}.c"));
    let exe = dir.path().join(name);
    let cc = c_compiler();
    let out = run(
        Command::new(&cc[0])
            .args(&cc[1..])
            .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
            .arg(&exe)
            .arg(&source)
            .arg("-lrt"),
        None,
    );
    assert!(out.status.success(), "compiling {} failed ({:?}):\n{}", source.display(), out.status, out.stderr);
    exe
}

// ---------------------------------------------------------------------------
// ipcs
// ---------------------------------------------------------------------------

/// One row of `ipcs -m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpcsRow {
    pub(crate) key: String,
    pub(crate) shmid: i64,
    pub(crate) owner: String,
    pub(crate) perms: u32,
    pub(crate) bytes: u64,
    pub(crate) nattch: u64,
    pub(crate) status: String,
}

/// The `ipcs -m` row of the segment with `key`, if any. Panics with a clear
/// message if `ipcs` is not installed.
pub(crate) fn ipcs_row(key: u32) -> Option<IpcsRow> {
    let out = try_run(Command::new("ipcs").arg("-m").env("LC_ALL", "C"), None).unwrap_or_else(|e| {
        panic!("cannot run `ipcs -m` ({e}); install util-linux (it provides ipcs), which this test compares against")
    });
    out.ok();
    let want = format!("{key:#010x}");
    let text = out.out();
    text.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // key shmid owner perms bytes nattch [status]
        if cols.len() < 6 || !cols[0].eq_ignore_ascii_case(&want) {
            return None;
        }
        let parse = |i: usize| cols[i].parse::<u64>().unwrap_or_else(|e| panic!("bad ipcs column {i} ({e}): {line}"));
        Some(IpcsRow {
            key: cols[0].to_string(),
            shmid: parse(1) as i64,
            owner: cols[2].to_string(),
            perms: u32::from_str_radix(cols[3], 8).unwrap_or_else(|e| panic!("bad ipcs perms ({e}): {line}")),
            bytes: parse(4),
            nattch: parse(5),
            status: cols[6..].join(" "),
        })
    })
}
