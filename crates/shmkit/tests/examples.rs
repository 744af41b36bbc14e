//! Runs the programs in `examples/` (the seeds' C programs done right) as
//! separate processes and checks what they print and what they leave behind.
//!
//! `cargo test` builds the examples before it runs the tests; when only this
//! test binary is built (`cargo test --test tests`), build them first with
//! `cargo build -p shmkit --examples`. Every name, key and file handed to an
//! example is unique to this run, every child runs under a watchdog, and a
//! guard removes every object even when a test fails.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use shmkit::segment::{self, SysvKey, Target};
use shmkit::{ErrorKind, Kind};

/// How long an example may run before it is killed.
const WATCHDOG: Duration = Duration::from_secs(10);

/// The `ftok` project id the System V examples use (`'A'`).
const PROJ_ID: u8 = b'A';

/// The size of the seeds' `people` record (`char name[4]; int age;`).
const RECORD: usize = 8;

/// The path of a built example.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the test binary");
    // target/<profile>/deps/tests-HASH → target/<profile>/examples/NAME
    let dir = exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps");
    let path = dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example binary {} is missing: build the examples first with `cargo build -p shmkit --examples` \
         (a plain `cargo test -p shmkit` builds them too)",
        path.display()
    );
    path
}

/// What an example did.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Panics, showing the output, unless the example succeeded.
    fn success(self) -> Outcome {
        assert!(self.status.success(), "the example failed with {}:\n{self}", self.status);
        self
    }

    /// Panics, showing the output, unless the example failed with exit
    /// status 1 (what `main` returning `Err` gives).
    fn failure(self) -> Outcome {
        assert_eq!(self.status.code(), Some(1), "the example should have failed with status 1:\n{self}");
        self
    }

    fn stdout_has(&self, text: &str) -> &Outcome {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{self}");
        self
    }

    fn stderr_has(&self, text: &str) -> &Outcome {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{self}");
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout\n{}--- stderr\n{}---", self.stdout, self.stderr)
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    let mut pipe = pipe.expect("the pipe was asked for");
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs example `name` with `args` under the watchdog, which kills it and
/// any process it started after [`WATCHDOG`].
fn run(name: &str, args: &[&str]) -> Outcome {
    let mut child = Command::new(example(name))
        .args(args)
        // A group of its own, so that the watchdog also kills its children.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
    // Drain both pipes while waiting, so a chatty child never blocks.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        match child.try_wait().expect("try_wait on an example") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                panic!("example {name} {args:?} ran longer than {WATCHDOG:?} and was killed");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    Outcome { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
}

/// A name unique to this process and call.
fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("shmkit-example-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A path in the temporary directory that does not exist yet.
fn unique_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(unique(tag))
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8 here")
}

/// Whether nothing answers to `target`.
fn is_free(target: &Target) -> bool {
    matches!(segment::stat(target), Err(e) if *e.kind() == ErrorKind::NotFound)
}

/// A System V key no segment uses now, made from the pid and a counter.
fn unique_sysv_key() -> SysvKey {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..256 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let raw = 0x5e00_0000 | ((std::process::id() & 0xffff) << 8) | (n & 0xff);
        let key = SysvKey::new(raw as i32);
        if is_free(&Target::Sysv(key)) {
            return key;
        }
    }
    panic!("no free System V key found");
}

/// Removes, when dropped, everything a test may have made; errors (mostly
/// "already gone") are ignored.
#[derive(Default)]
struct Cleanup {
    targets: Vec<Target>,
    files: Vec<PathBuf>,
}

impl Cleanup {
    fn target(&mut self, target: Target) -> Target {
        self.targets.push(target.clone());
        target
    }

    fn file(&mut self, path: PathBuf) -> PathBuf {
        self.files.push(path.clone());
        path
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for target in &self.targets {
            let _ = segment::remove(target);
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Writer, second writer, reader, reader `--remove`, for System V `arg`
/// (a key or a path) naming `target`.
fn sysv_round_trip(arg: &str, target: &Target) {
    let message = "Hello from shared memory! 你好";
    run("sysv_writer", &[arg, message]).success().stdout_has(&format!("Data written to shared memory: {message}"));
    let info = segment::stat(target).expect("the writer keeps the segment");
    assert_eq!((info.kind, info.size, info.mode), (Kind::Sysv, 1024, 0o600));
    assert_eq!(info.sysv.expect("System V details").nattch, 0, "the writer detached");

    // Create-exclusive: a second writer does not overwrite the first.
    run("sysv_writer", &[arg, "overwritten"]).failure().stderr_has("already exists").stderr_has("AlreadyExists");

    run("sysv_reader", &[arg])
        .success()
        .stdout_has(&format!("Data read from shared memory: {message}\n"))
        .stdout_has("stays");
    assert!(!is_free(target), "the reader without --remove keeps the segment");

    run("sysv_reader", &[arg, "--remove"])
        .success()
        .stdout_has(&format!("Data read from shared memory: {message}\n"))
        .stdout_has("removed");
    assert!(is_free(target), "--remove removed the segment");

    run("sysv_reader", &[arg]).failure().stderr_has("no such object").stderr_has("NotFound");
}

#[test]
fn sysv_writer_and_reader_by_key() {
    let mut cleanup = Cleanup::default();
    let key = unique_sysv_key();
    let target = cleanup.target(Target::Sysv(key));
    sysv_round_trip(&key.to_string(), &target);
}

#[test]
fn sysv_writer_and_reader_by_ftok_path() {
    let mut cleanup = Cleanup::default();
    // ftok keys can collide: try fresh files until one gives a free key.
    let (path, target) = (0..16)
        .find_map(|_| {
            let path = cleanup.file(unique_path("ftok"));
            std::fs::write(&path, b"").expect("create the ftok file");
            let target = Target::Sysv(SysvKey::ftok(&path, PROJ_ID).expect("ftok"));
            is_free(&target).then_some((path, target))
        })
        .expect("no free ftok key");
    let target = cleanup.target(target);
    sysv_round_trip(utf8(&path), &target);
}

#[test]
fn sysv_writer_refuses_a_message_that_does_not_fit() {
    let mut cleanup = Cleanup::default();
    let key = unique_sysv_key();
    let target = cleanup.target(Target::Sysv(key));
    let long = "x".repeat(1024); // plus its NUL: 1025 bytes
    run("sysv_writer", &[&key.to_string(), &long]).failure().stderr_has("1024");
    assert!(is_free(&target), "nothing is created for a message that does not fit");
}

#[test]
fn posix_writer_and_reader() {
    let mut cleanup = Cleanup::default();
    let name = unique("posix");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));
    let message = "line one\nline two";

    run("posix_writer", &[&name, message]).success().stdout_has("created posix:/");
    let info = segment::stat(&target).expect("the writer keeps the object");
    assert_eq!((info.kind, info.size, info.mode), (Kind::Posix, 1024, 0o600));

    let slashed = format!("/{name}");
    run("posix_writer", &[&slashed, "overwritten"]).failure().stderr_has("already exists");

    // The reader escapes control characters from the other process.
    run("posix_reader", &[&name])
        .success()
        .stdout_has("Data read from shared memory: line one\\nline two\n")
        .stdout_has("stays");
    assert!(!is_free(&target));

    run("posix_reader", &[&slashed, "--remove"]).success().stdout_has("removed");
    assert!(is_free(&target), "--remove unlinked the object");

    run("posix_reader", &[&name]).failure().stderr_has("no such object");
}

#[test]
fn fork_anon_child_writes_and_parent_reads() {
    let out = run("fork_anon", &["7"]).success();
    out.stdout_has("exited with status 0").stdout_has("wrote 7 people");
    let records: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("parent read: ")).collect();
    let expected: Vec<String> =
        (0..7u8).map(|i| format!("parent read: name: {} age {};", char::from(b'a' + i), 20 + u32::from(i))).collect();
    assert_eq!(records, expected, "\n{out}");
    // The parent reads only after the child has exited.
    let exited = out.stdout.find("exited with status 0").expect("exit line");
    let first = out.stdout.find("parent read: ").expect("a record");
    assert!(exited < first, "\n{out}");

    run("fork_anon", &["0"]).failure().stderr_has("usage");
}

#[test]
fn map_file_writer_and_reader() {
    let mut cleanup = Cleanup::default();
    let path = cleanup.file(unique_path("file"));
    let arg = utf8(&path);

    run("map_file_writer", &[arg]).success().stdout_has("initialize over: created").stdout_has("msync");
    let meta = std::fs::metadata(&path).expect("the file persists");
    assert_eq!(meta.len(), 10 * RECORD as u64);
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);

    let expected: String = (0..10u8).map(|i| format!("name: {} age {};\n", char::from(b'a' + i), 20 + i)).collect();
    let out = run("map_file_reader", &[arg]).success();
    assert_eq!(out.stdout, expected, "\n{out}");

    // A second writer opens the existing file instead of truncating it.
    run("map_file_writer", &[arg]).success().stdout_has("initialize over: opened");

    let out = run("map_file_reader", &[arg, "--remove"]).success();
    assert!(out.stdout.starts_with(&expected), "\n{out}");
    out.stdout_has("removed");
    assert!(!path.exists(), "--remove deleted the file");
}

#[test]
fn map_file_refuses_the_seeds_short_file() {
    let mut cleanup = Cleanup::default();
    let path = cleanup.file(unique_path("short"));
    let arg = utf8(&path);
    // What map_normalfile1.c makes: room for 5 records, where 10 are used.
    let content = [b'#'; 5 * RECORD];
    std::fs::write(&path, content).expect("create the short file");

    run("map_file_writer", &[arg])
        .failure()
        .stderr_has("TooSmall { requested: 80, actual: 40 }")
        .stderr_has("5 of the 10 records would lie past its end");
    assert_eq!(std::fs::read(&path).expect("the file is still there"), content, "the file is left untouched");

    run("map_file_reader", &[arg]).failure().stderr_has("TooSmall { requested: 80, actual: 40 }");
    assert!(path.exists(), "the reader without --remove keeps the file");
}

#[test]
fn map_file_writer_leaves_nothing_when_it_cannot_create() {
    let mut cleanup = Cleanup::default();
    let dir = cleanup.file(unique_path("missing-dir"));
    let path = dir.join("data");
    run("map_file_writer", &[utf8(&path)]).failure().stderr_has("NotFound");
    assert!(!path.exists() && !dir.exists());
}

#[test]
fn page_boundary_gives_errors_not_signals() {
    let mut cleanup = Cleanup::default();
    let path = cleanup.file(unique_path("page"));
    let page = shmkit::limits::page_size();

    let out = run("page_boundary", &[utf8(&path)]).success();
    out.stdout_has(&format!("pagesize is {page}\n"))
        .stdout_has("refused: TooSmall { requested: 80, actual: 40 }")
        .stdout_has(&format!("len() = 40 bytes, mapped_len() = {page} bytes"))
        .stdout_has("OutOfBounds { offset: 40, len: 8, size: 40 }")
        .stdout_has(&format!("refused: TooSmall {{ requested: {}, actual: {} }}", 3 * page, 2 * page - 99))
        .stdout_has(&format!("len() = {} bytes, mapped_len() = {} bytes", 2 * page - 99, 2 * page))
        .stdout_has("access page 1 edge over, now begin to access page 2\n  access page 2 over\n  stopped at people")
        .stdout_has("removed");
    assert!(!path.exists(), "the example removes its file");

    // It never overwrites a file that exists.
    std::fs::write(&path, b"keep me").expect("create a file");
    run("page_boundary", &[utf8(&path)]).failure();
    assert_eq!(std::fs::read(&path).expect("still there"), b"keep me");
}

// ---------------------------------------------------------------------------
// chat and counter: examples that run side by side
// ---------------------------------------------------------------------------

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Child;

/// An example started in the background, with `input` (if any) written to
/// its standard input, which is then closed. The watchdog counts from the
/// start; dropping it unfinished (a failing test) kills its process group.
struct Started {
    what: String,
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    deadline: Instant,
    finished: bool,
}

fn start(name: &str, args: &[&str], input: Option<&[u8]>) -> Started {
    let mut child = Command::new(example(name))
        .args(args)
        .process_group(0)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // The child may stop reading early (at `end`): a broken pipe is fine.
        thread::spawn(move || drop(pipe.write_all(&input)));
    }
    Started {
        what: format!("{name} {args:?}"),
        stdout: Some(drain(child.stdout.take())),
        stderr: Some(drain(child.stderr.take())),
        child,
        deadline: Instant::now() + WATCHDOG,
        finished: false,
    }
}

impl Started {
    /// Whether it is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait on an example").is_none()
    }

    /// Waits for it to end (killing it after the watchdog) and collects its
    /// output.
    fn finish(mut self) -> Outcome {
        let status = loop {
            match self.child.try_wait().expect("try_wait on an example") {
                Some(status) => break status,
                None if Instant::now() >= self.deadline => {
                    self.kill();
                    panic!("example {} ran longer than {WATCHDOG:?} and was killed", self.what);
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        };
        self.finished = true;
        let stdout = self.stdout.take().expect("stdout reader").join().expect("stdout reader");
        let stderr = self.stderr.take().expect("stderr reader").join().expect("stderr reader");
        Outcome { status, stdout, stderr }
    }

    fn kill(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.finished = true;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
        }
    }
}

/// Waits until `target` exists, while `started` still runs (checked under
/// the watchdog).
fn wait_for_object(target: &Target, started: &mut Started) {
    while is_free(target) {
        assert!(started.running(), "example {} ended before creating {target}", started.what);
        assert!(Instant::now() < started.deadline, "example {} did not create {target} in {WATCHDOG:?}", started.what);
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn chat_reader_first_prints_every_line() {
    let mut cleanup = Cleanup::default();
    let name = unique("chat");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));
    // 4501 bytes of 3-byte characters: split into three messages, the cuts
    // falling between characters.
    let long = format!("{}x", "长".repeat(1500));
    let lines = ["hello", "", "  two leading spaces", "你好, shared memory", &long, "endless is not end", "no newline"];
    let input = lines.join("\n"); // the last line has no newline, then EOF

    let mut reader = start("chat", &["reader", &name], None);
    wait_for_object(&target, &mut reader);
    let writer = start("chat", &["writer", &name], Some(input.as_bytes()));

    writer.finish().success().stderr_has(&format!("sent {} lines, then `end`", lines.len()));
    let out = reader.finish().success();
    assert_eq!(out.stdout, format!("{}\n", lines.join("\n")), "\n{out}");
    out.stderr_has("removed");
    assert!(is_free(&target), "the reader removes the segment");
}

#[test]
fn chat_writer_first_stops_at_end() {
    let mut cleanup = Cleanup::default();
    let name = unique("chat");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));
    let input = "first line\nsecond line\nend\nnot sent\n";

    let mut writer = start("chat", &["writer", &format!("/{name}")], Some(input.as_bytes()));
    // The writer creates the segment and sends the first line; it waits for
    // the reader before the second.
    wait_for_object(&target, &mut writer);
    let reader = start("chat", &["reader", &name], None);

    let out = reader.finish().success();
    assert_eq!(out.stdout, "first line\nsecond line\n", "\n{out}");
    writer.finish().success().stderr_has("sent 2 lines, then `end`");
    assert!(is_free(&target), "the reader removes the segment");

    run("chat", &["talker", &name]).failure().stderr_has("usage");
    assert!(is_free(&target));
}

/// The values the counter processes printed, and the one the last printed.
fn counter_values(outs: &[Outcome]) -> (Vec<u64>, Vec<u64>) {
    let value = |out: &Outcome| -> u64 {
        let line = out.stdout.lines().find(|l| l.ends_with(" when done")).unwrap_or_else(|| panic!("no value:\n{out}"));
        let word = line.split_whitespace().rev().nth(2).expect("… value N when done");
        word.parse().unwrap_or_else(|e| panic!("bad value {word:?} ({e}):\n{out}"))
    };
    let all = outs.iter().map(value).collect();
    let last = outs.iter().filter(|o| o.stdout.contains("last one out, removed posix:/")).map(value).collect();
    (all, last)
}

#[test]
fn counter_processes_add_up_and_the_last_removes_the_segment() {
    const PROCESSES: u64 = 3;
    const ITERATIONS: u64 = 20_000;
    let mut cleanup = Cleanup::default();
    let name = unique("counter");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));
    let (n, wait_for) = (ITERATIONS.to_string(), PROCESSES.to_string());

    let started: Vec<Started> =
        (0..PROCESSES).map(|_| start("counter", &[&name, &n, "--wait-for", &wait_for], None)).collect();
    let outs: Vec<Outcome> = started.into_iter().map(|s| s.finish().success()).collect();

    let (all, last) = counter_values(&outs);
    assert_eq!(last, [PROCESSES * ITERATIONS], "exactly one process is last and sees the total: {outs:#?}");
    assert_eq!(all.iter().max(), Some(&(PROCESSES * ITERATIONS)), "{outs:#?}");
    assert!(all.iter().all(|&v| v >= ITERATIONS), "each saw at least its own increments: {outs:#?}");
    assert!(is_free(&target), "the last process removes the segment");
}

#[test]
fn counter_recovers_when_a_holder_dies_with_the_lock() {
    let mut cleanup = Cleanup::default();
    let name = unique("counter");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));

    let crashed = run("counter", &[&name, "50000", "--crash-after", "3000"]);
    assert_eq!(crashed.status.signal(), Some(libc::SIGKILL), "\n{crashed}");
    crashed.stderr_has("crashing (SIGKILL) while holding the lock, after 3000 increments");
    assert!(!is_free(&target), "a killed member leaves the segment");

    // The survivor repairs the lock at its first lock, then locks it 1000
    // more times: without `mark_consistent` those would fail.
    let out = run("counter", &[&name, "1000"]).success();
    out.stderr_has("a process died holding the lock")
        .stderr_has("dropped 1 dead member(s)")
        .stdout_has("added 1000, value 4000 when done")
        .stdout_has("last one out, removed");
    assert!(is_free(&target), "the survivor, last one out, removes the segment");
}

#[test]
fn chat_reader_rejects_a_corrupt_length() {
    use bytemuck::{Pod, Zeroable};
    use shmkit::sync::{Mutex, Semaphore};

    /// The chat example's slot, as a hostile writer would fill it.
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Slot {
        len: u32,
        flags: u32,
        text: [u8; 2048],
    }

    let mut cleanup = Cleanup::default();
    let name = unique("chat");
    let target = cleanup.target(Target::posix(&name).expect("a valid name"));
    // The example's layout: `empty` at 0, `filled` at 64, the slot at 128.
    let seg = shmkit::Segment::create(&target, 128 + Mutex::<Slot>::SIZE).expect("create the chat segment");
    let _empty = Semaphore::create(&seg, 0, 0).expect("empty");
    let _filled = Semaphore::create(&seg, 64, 1).expect("filled: a message is waiting");
    let _slot = Mutex::create(&seg, 128, Slot { len: 4096, flags: 0, text: [b'A'; 2048] }).expect("slot");

    let out = run("chat", &["reader", &name]).failure();
    out.stderr_has("corrupt").stderr_has("length 4096");
    assert_eq!(out.stdout, "", "nothing of the bad message is printed");
    assert!(is_free(&target), "the reader removes the segment also after an error");
}
