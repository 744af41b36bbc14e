//! End-to-end tests of the `shmkit` binary: real processes, real segments.
//!
//! Every test runs the built binary (and C programs compiled from
//! `tests/c/*.c` at test time) as separate processes under a watchdog, uses
//! System V keys and POSIX names unique to this process, and removes every
//! object it created, pass or fail, through [`util::Cleanup`] (which calls
//! libc directly rather than trusting the binary under test).
//!
//! Covered: interoperability with C programs that use `shmget`/`shmat` and
//! `shm_open`/`mmap` in both directions; `info` against `ipcs -m`; page
//! rounding and sizes up to 1 GiB; exit codes and messages for bad usage (2)
//! and failed operations (1); broken pipes; `rm` of every kind; `limits`;
//! `file:` targets and their persistence; modes under any umask. The newer
//! verbs (`ls`, `gc`, `rm` of objects in use, `send`/`recv`, `completions`)
//! are tested in [`e2e`].

mod e2e;
mod util;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use util::{
    Cleanup, Running, SHMKIT, TempDir, compile_c, ipcs_row, page_size, posix_exists, run, shmkit, shmkit_umask,
    shmkit_with_input, sysv_exists, sysv_target, wait_timeout,
};

/// A message with spaces, punctuation and non-ASCII bytes.
const MESSAGE: &str = "hello from C, h\u{e9}llo w\u{f6}rld \u{2713}";

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no unsigned {pointer} in {v}"))
}

fn i64_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or_else(|| panic!("no integer {pointer} in {v}"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string {pointer} in {v}"))
}

/// The `mode` of `info --json`, as a number.
fn json_mode(v: &Value) -> u32 {
    let text = str_at(v, "/mode");
    u32::from_str_radix(text, 8).unwrap_or_else(|e| panic!("mode {text:?} is not octal: {e}"))
}

fn file_mode(path: &Path) -> u32 {
    let meta = path.metadata().unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// 1–3. Interoperability with C programs
// ---------------------------------------------------------------------------

#[test]
fn c_creates_sysv_segment_and_shmkit_reads_it() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let writer = compile_c(&dir, "sysv_writer");
    let key = clean.sysv_key();
    let target = sysv_target(key);

    let c = run(Command::new(&writer).arg(format!("{key:#x}")).arg(MESSAGE), None);
    c.ok();
    let shmid: i64 = c.out().trim().parse().expect("sysv_writer prints the shmid");
    assert!(sysv_exists(key), "the segment outlives the C program");

    let out = shmkit(&["read", &target, "--cstr"]);
    assert_eq!(out.ok().out(), format!("{MESSAGE}\n"));
    // The same segment by the decimal key, and by shmid.
    let out = shmkit(&["read", &format!("sysv:{key}"), "--cstr"]);
    assert_eq!(out.ok().out(), format!("{MESSAGE}\n"));
    let out = shmkit(&["read", &format!("sysv-id:{shmid}"), "--cstr"]);
    assert_eq!(out.ok().out(), format!("{MESSAGE}\n"));
    // Raw bytes: the message, then the NUL strcpy wrote, then zeros.
    let out = shmkit(&["read", &target, "--len", &(MESSAGE.len() + 2).to_string()]);
    let mut expected = MESSAGE.as_bytes().to_vec();
    expected.extend([0, 0]);
    assert_eq!(out.ok().stdout, expected);

    let info = shmkit(&["info", &target, "--json"]).ok().json();
    assert_eq!(u64_at(&info, "/size"), 4096);
    assert_eq!(json_mode(&info), 0o600);
    assert_eq!(str_at(&info, "/kind"), "sysv");
    assert_eq!(str_at(&info, "/sysv/key"), format!("{key:#010x}"));
    assert_eq!(i64_at(&info, "/sysv/shmid"), shmid);
    assert_eq!(i64_at(&info, "/sysv/cpid"), i64::from(c.pid), "the creator is the C program");
    assert_eq!(info.pointer("/sysv/cpid_alive"), Some(&Value::Bool(false)));
    assert_eq!(u64_at(&info, "/sysv/nattch"), 0);
}

#[test]
fn shmkit_creates_sysv_segment_and_c_reads_it() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let reader = compile_c(&dir, "sysv_reader");
    let key = clean.sysv_key();
    let target = sysv_target(key);

    shmkit(&["create", &target, "--size", "4096"]).ok();
    assert!(sysv_exists(key));
    shmkit(&["write", &target, "--text", MESSAGE, "--nul"]).ok();
    let c = run(Command::new(&reader).arg(format!("{key:#x}")), None);
    assert_eq!(c.ok().out(), format!("{MESSAGE}\n"));

    // Standard input works as well, and a later, shorter string replaces it.
    shmkit_with_input(&["write", &target, "--nul"], b"from stdin").ok();
    let c = run(Command::new(&reader).arg(key.to_string()), None);
    assert_eq!(c.ok().out(), "from stdin\n");

    // At an offset: the C string at the start ends where the new text begins.
    shmkit(&["write", &target, "--offset", "4", "--text", "", "--nul"]).ok();
    let c = run(Command::new(&reader).arg(format!("{key:#x}")), None);
    assert_eq!(c.ok().out(), "from\n");
}

#[test]
fn c_creates_posix_object_and_shmkit_reads_it() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let writer = compile_c(&dir, "posix_writer");
    let name = clean.posix_name();
    let target = format!("posix:/{name}");

    run(Command::new(&writer).arg(format!("/{name}")).arg(MESSAGE), None).ok();
    assert!(posix_exists(&name), "the object outlives the C program");

    let out = shmkit(&["read", &target, "--cstr"]);
    assert_eq!(out.ok().out(), format!("{MESSAGE}\n"));
    // The leading slash is optional.
    let out = shmkit(&["read", &format!("posix:{name}"), "--cstr"]);
    assert_eq!(out.ok().out(), format!("{MESSAGE}\n"));

    let info = shmkit(&["info", &target, "--json"]).ok().json();
    assert_eq!(u64_at(&info, "/size"), 4096);
    assert_eq!(json_mode(&info), 0o600);
    assert_eq!(str_at(&info, "/kind"), "posix");
}

#[test]
fn shmkit_creates_posix_object_and_c_reads_it() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let reader = compile_c(&dir, "posix_reader");
    let name = clean.posix_name();
    let target = format!("posix:/{name}");

    shmkit(&["create", &target, "--size", "4096"]).ok();
    assert!(posix_exists(&name));
    shmkit(&["write", &target, "--text", MESSAGE, "--nul"]).ok();
    let c = run(Command::new(&reader).arg(format!("/{name}")), None);
    assert_eq!(c.ok().out(), format!("{MESSAGE}\n"));

    shmkit_with_input(&["write", &format!("posix:{name}"), "--nul"], b"from stdin").ok();
    let c = run(Command::new(&reader).arg(format!("/{name}")), None);
    assert_eq!(c.ok().out(), "from stdin\n");
}

// ---------------------------------------------------------------------------
// 4. `info` agrees with `ipcs -m`
// ---------------------------------------------------------------------------

#[test]
fn sysv_info_agrees_with_ipcs_while_a_c_program_is_attached() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let attach = compile_c(&dir, "sysv_attach");
    let key = clean.sysv_key();
    let target = sysv_target(key);
    let page = page_size();
    let size = page + 1;

    let created = shmkit(&["create", &target, "--size", &size.to_string(), "--mode", "0640", "--json"]).ok().json();
    let shmid = i64_at(&created, "/shmid");

    let mut c = Running::spawn(Command::new(&attach).arg(format!("{key:#x}")));
    assert_eq!(c.line(), format!("attached {shmid}"));

    let info = shmkit(&["info", &target, "--json"]).ok().json();
    let row = ipcs_row(key).unwrap_or_else(|| panic!("`ipcs -m` does not list {key:#010x}"));
    assert_eq!(row.key, format!("{key:#010x}"));
    assert_eq!(row.shmid, shmid);
    assert_eq!(i64_at(&info, "/sysv/shmid"), row.shmid);
    assert_eq!(u64_at(&info, "/size"), row.bytes);
    assert_eq!(row.bytes, size);
    assert_eq!(u64_at(&info, "/sysv/nattch"), row.nattch);
    assert_eq!(row.nattch, 1, "the C program is attached");
    assert_eq!(json_mode(&info), row.perms);
    assert_eq!(row.perms, 0o640);
    // ipcs prints at most 10 characters of the user name.
    let owner: String = str_at(&info, "/owner").chars().take(10).collect();
    assert_eq!(owner, row.owner);
    assert_eq!(row.status, "", "not marked for removal, not locked");
    assert_eq!(u64_at(&info, "/pages"), 2);
    assert_eq!(u64_at(&info, "/mapped_size"), 2 * page);
    assert_eq!(info.pointer("/sysv/marked_for_removal"), Some(&Value::Bool(false)));
    assert_eq!(i64_at(&info, "/sysv/lpid"), i64::from(c.id()), "the C program attached last");

    // The human form says the same.
    let human = shmkit(&["info", &target]).ok().out();
    let nattch = human.lines().find(|l| l.starts_with("nattch")).unwrap_or_else(|| panic!("no nattch row:\n{human}"));
    assert_eq!(nattch.split_whitespace().collect::<Vec<_>>(), ["nattch", "1"], "{human}");
    assert!(human.contains("2 pages"), "a {size}-byte segment spans 2 pages:\n{human}");
    assert!(human.contains(&format!("{size} bytes")), "{human}");
    assert!(human.contains("0640"), "{human}");

    // A write through shmkit is visible at once in the C program's mapping.
    shmkit(&["write", &target, "--text", "live update", "--nul"]).ok();
    c.stdin().write_all(b"show\n").expect("write to the C program");
    assert_eq!(c.line(), "live update");

    let status = c.finish();
    assert_eq!(status.code(), Some(0), "sysv_attach failed: {status:?}");
    let info = shmkit(&["info", &target, "--json"]).ok().json();
    assert_eq!(u64_at(&info, "/sysv/nattch"), 0, "detached");
    assert_eq!(ipcs_row(key).expect("still listed").nattch, 0);
}

// ---------------------------------------------------------------------------
// 5. Page rounding and sizes
// ---------------------------------------------------------------------------

/// Creates `target` of each size, checks what `info --json` reports, and
/// writes and reads back the last byte.
fn sizes_round_to_pages(target: &str) {
    let page = page_size();
    for (size_arg, size) in [("1", 1u64), ("4097", 4097), ("1G", 1 << 30)] {
        let created = shmkit(&["create", target, "--size", size_arg, "--json"]).ok().json();
        let pages = size.div_ceil(page);
        assert_eq!(u64_at(&created, "/size"), size);
        assert_eq!(u64_at(&created, "/pages"), pages);
        assert_eq!(u64_at(&created, "/mapped_size"), pages * page);

        let info = shmkit(&["info", target, "--json"]).ok().json();
        assert_eq!(u64_at(&info, "/size"), size, "{target} of {size_arg}");
        assert_eq!(u64_at(&info, "/pages"), pages, "{target} of {size_arg}");
        assert_eq!(u64_at(&info, "/mapped_size"), pages * page, "{target} of {size_arg}");
        if size == 4097 && page == 4096 {
            assert_eq!((u64_at(&info, "/pages"), u64_at(&info, "/mapped_size")), (2, 8192));
        }

        let last = (size - 1).to_string();
        shmkit(&["write", target, "--offset", &last, "--text", "Z"]).ok();
        let out = shmkit(&["read", target, "--offset", &last, "--len", "1"]);
        assert_eq!(out.ok().stdout, b"Z", "{target} of {size_arg}");
        // Reading to the end from the last byte gives just that byte.
        let out = shmkit(&["read", target, "--offset", &last]);
        assert_eq!(out.ok().stdout, b"Z", "{target} of {size_arg}");
        // One byte further is past the end, though still inside the page.
        shmkit(&["read", target, "--offset", &last, "--len", "2"]).fails(1);
        shmkit(&["write", target, "--offset", &size.to_string(), "--text", "Z"]).fails(1);

        shmkit(&["rm", target]).ok();
    }
}

#[test]
fn posix_sizes_round_to_pages() {
    let mut clean = Cleanup::new();
    let name = clean.posix_name();
    sizes_round_to_pages(&format!("posix:/{name}"));
    assert!(!posix_exists(&name));
}

#[test]
fn sysv_sizes_round_to_pages() {
    let mut clean = Cleanup::new();
    let key = clean.sysv_key();
    sizes_round_to_pages(&sysv_target(key));
    assert!(!sysv_exists(key));
}

#[test]
fn file_sizes_round_to_pages() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let path = clean.file(dir.path());
    let target = format!("file:{}", path.display());
    let page = page_size();
    for size in [1, 4097] {
        let created = shmkit(&["create", &target, "--size", &size.to_string(), "--json"]).ok().json();
        assert_eq!(u64_at(&created, "/size"), size);
        assert_eq!(u64_at(&created, "/mapped_size"), size.div_ceil(page) * page);
        assert_eq!(path.metadata().expect("the file exists").len(), size, "the file has exactly the size");
        shmkit(&["rm", &target]).ok();
    }
}

// ---------------------------------------------------------------------------
// 6. Exit codes and messages
// ---------------------------------------------------------------------------

#[test]
fn bad_usage_exits_2() {
    let mut clean = Cleanup::new();
    let name = clean.posix_name();
    let posix = format!("posix:/{name}");
    let key = clean.sysv_key();
    let sysv = sysv_target(key);

    // No verb at all: clap prints the help on stderr.
    let out = shmkit(&[]);
    out.expect_code(2);
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);

    let cases: Vec<Vec<&str>> = vec![
        vec!["frobnicate"],
        vec!["read", "sysv:zz"],
        vec!["read", "sysv:"],
        vec!["read", "sysv:0x1ffffffff"],
        vec!["read", "sysv-id:-1"],
        vec!["read", "sysv-id:abc"],
        vec!["read", "tcp:1"],
        vec!["read", "nokind"],
        vec!["read", "posix:"],
        vec!["read", "posix:a/b"],
        vec!["read", "file:"],
        vec!["read", &posix, "--offset", "x"],
        vec!["read", &posix, "--len", "-3"],
        vec!["create", &posix],
        vec!["create", &posix, "--size", "-1"],
        vec!["create", &posix, "--size=-1"],
        vec!["create", &posix, "--size", "0"],
        vec!["create", &posix, "--size", "0k"],
        vec!["create", &posix, "--size", "garbage"],
        vec!["create", &posix, "--size", "1x"],
        vec!["create", &posix, "--size", ""],
        vec!["create", &posix, "--size", "99999999999999999999"],
        vec!["create", &sysv, "--size", "-4096"],
        vec!["create", &sysv, "--size", "0"],
        vec!["create", &posix, "--size", "4096", "--mode", "0800"],
        vec!["create", &posix, "--size", "4096", "--mode", "rw"],
        vec!["create", &posix, "--size", "4096", "--mode=-1"],
        vec!["create", &posix, "--size", "4096", "--mode", "01777"],
        vec!["create", &sysv, "--size", "4096", "--mode", "9"],
        vec!["write", &posix, "--offset", "-1", "--text", "x"],
        vec!["rm"],
        vec!["info"],
        vec!["limits", "--bogus"],
    ];
    for args in &cases {
        shmkit(args).fails(2);
    }
    assert!(!posix_exists(&name), "no usage error creates anything");
    assert!(!sysv_exists(key), "no usage error creates anything");

    // Help and version are not errors.
    assert!(shmkit(&["--help"]).ok().out().contains("create"));
    assert!(shmkit(&["--version"]).ok().out().starts_with("shmkit "));
}

#[test]
fn failed_operations_exit_1() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let sysv = sysv_target(clean.sysv_key());
    let posix_name = clean.posix_name();
    let posix = format!("posix:/{posix_name}");
    let file = format!("file:{}", clean.file(dir.path()).display());
    let missing_sysv = sysv_target(clean.sysv_key());
    let missing_posix = format!("posix:/{}", clean.posix_name());
    let missing_file = format!("file:{}", clean.file(dir.path()).display());

    for target in [&sysv, &posix, &file] {
        shmkit(&["create", target, "--size", "4096"]).ok();
        // Creating what exists fails, whatever the size.
        shmkit(&["create", target, "--size", "4096"]).fails(1);
        shmkit(&["create", target, "--size", "1"]).fails(1);
        // Reading or writing past the end.
        for args in [
            vec!["read", target, "--offset", "4096", "--len", "1"],
            vec!["read", target, "--offset", "4095", "--len", "2"],
            vec!["read", target, "--len", "4097"],
            vec!["read", target, "--offset", "5000"],
            vec!["read", target, "--offset", "9223372036854775807", "--len", "2"],
            vec!["write", target, "--offset", "4095", "--text", "ab"],
            vec!["write", target, "--offset", "4096", "--text", "a"],
            vec!["write", target, "--offset", "4095", "--text", "a", "--nul"],
        ] {
            let out = shmkit(&args);
            out.fails(1);
            assert!(out.stdout.is_empty(), "{}: printed {} bytes before failing", out.what, out.stdout.len());
        }
        // Nothing was written by the failed writes.
        let out = shmkit(&["read", target, "--offset", "4094"]);
        assert_eq!(out.ok().stdout, [0, 0], "{target}");
    }
    for target in [&missing_sysv, &missing_posix, &missing_file, "sysv-id:2147483647"] {
        shmkit(&["read", target]).fails(1);
        shmkit(&["write", target, "--text", "x"]).fails(1);
        shmkit(&["info", target]).fails(1);
        shmkit(&["rm", target]).fails(1);
    }
    // Not even a parent directory.
    shmkit(&["create", &format!("file:{}/no/such/dir/seg", dir.path().display()), "--size", "1"]).fails(1);
    // A directory is not a segment.
    shmkit(&["read", &format!("file:{}", dir.path().display())]).fails(1);
    // Creating by shmid makes no sense, IPC_PRIVATE names nothing to open:
    // refused (as a failed operation or as bad usage, either is fair).
    shmkit(&["create", "sysv-id:1", "--size", "1"]).fails_1_or_2();
    shmkit(&["read", "sysv:IPC_PRIVATE"]).fails_1_or_2();

    // More than /dev/shm holds: refused up front, nothing left behind.
    let huge_name = clean.posix_name();
    shmkit(&["create", &format!("posix:/{huge_name}"), "--size", "1T"]).fails(1);
    assert!(!posix_exists(&huge_name));
}

#[test]
fn broken_pipe_exits_0() {
    let mut clean = Cleanup::new();
    let name = clean.posix_name();
    let target = format!("posix:/{name}");
    shmkit(&["create", &target, "--size", "1M"]).ok();
    shmkit(&["write", &target, "--text", "ABC"]).ok();

    let mut child = Command::new(SHMKIT)
        .args(["read", &target])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmkit read");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Like `| head -c 1`: take one byte, then close the pipe.
    let mut first = [0u8; 1];
    let got = stdout.read_exact(&mut first);
    drop(stdout);
    let status = wait_timeout(&mut child, "shmkit read (stdout closed early)");
    let errors = errors.join().expect("stderr reader");
    got.expect("read the first byte");
    assert_eq!(&first, b"A");
    assert!(status.code().is_some(), "killed by a signal ({status:?}); stderr: {errors}");
    assert_eq!(status.code(), Some(0), "a closed pipe downstream is not an error; stderr: {errors}");
    assert_eq!(errors, "", "nothing to complain about");
}

// ---------------------------------------------------------------------------
// 7. rm
// ---------------------------------------------------------------------------

#[test]
fn rm_removes_every_kind() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let key = clean.sysv_key();
    let key_by_id = clean.sysv_key();
    let name = clean.posix_name();
    let path = clean.file(dir.path());
    let sysv = sysv_target(key);
    let posix = format!("posix:/{name}");
    let file = format!("file:{}", path.display());

    for target in [&sysv, &posix, &file] {
        shmkit(&["create", target, "--size", "100"]).ok();
    }
    let created = shmkit(&["create", &sysv_target(key_by_id), "--size", "100", "--json"]).ok().json();
    let by_id = format!("sysv-id:{}", i64_at(&created, "/shmid"));
    assert!(sysv_exists(key) && sysv_exists(key_by_id) && posix_exists(&name) && path.exists());

    let out = shmkit(&["rm", &sysv, &posix, &file, &by_id]);
    assert_eq!(out.ok().out().lines().count(), 4, "one line per removed target:\n{}", out.out());
    assert!(!sysv_exists(key), "shmget still finds {sysv}");
    assert!(!sysv_exists(key_by_id), "shmget still finds {by_id}");
    assert!(!posix_exists(&name), "/dev/shm/{name} is still there");
    assert!(!path.exists(), "{} is still there", path.display());
    for target in [&sysv, &posix, &file, &by_id] {
        let out = shmkit(&["info", target]);
        out.fails(1);
        assert!(out.stderr.to_lowercase().contains("no such"), "info {target}: {}", out.stderr);
    }
}

#[test]
fn rm_with_a_missing_target_removes_the_others_and_exits_1() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let key = clean.sysv_key();
    let name = clean.posix_name();
    let path = clean.file(dir.path());
    let missing = format!("posix:/{}", clean.posix_name());
    let sysv = sysv_target(key);
    let posix = format!("posix:/{name}");
    let file = format!("file:{}", path.display());

    for target in [&sysv, &posix, &file] {
        shmkit(&["create", target, "--size", "100"]).ok();
    }
    let out = shmkit(&["rm", &missing, &sysv, &posix, &missing, &file]);
    out.fails(1);
    assert!(out.stderr.contains(&missing), "the error names the missing target:\n{}", out.stderr);
    assert!(!sysv_exists(key) && !posix_exists(&name) && !path.exists(), "the others are removed");
    for target in [&sysv, &posix, &file] {
        shmkit(&["info", target]).fails(1);
    }
}

// ---------------------------------------------------------------------------
// 8. limits
// ---------------------------------------------------------------------------

fn proc_number(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{path} holds {text:?}: {e}"))
}

#[test]
fn limits_json_parses_and_is_plausible() {
    let v = shmkit(&["limits", "--json"]).ok().json();
    assert_eq!(u64_at(&v, "/page_size"), page_size());
    for field in ["shmmax", "shmall", "shmall_bytes", "shmmni", "max_map_count", "map_count", "open_fds"] {
        assert!(u64_at(&v, &format!("/{field}")) > 0, "{field} should be positive: {v}");
    }
    for field in ["sysv_segments", "sysv_bytes", "sysv_pages"] {
        u64_at(&v, &format!("/{field}"));
    }
    assert_eq!(u64_at(&v, "/shmmax"), proc_number("/proc/sys/kernel/shmmax"));
    assert_eq!(u64_at(&v, "/shmall"), proc_number("/proc/sys/kernel/shmall"));
    assert_eq!(u64_at(&v, "/shmmni"), proc_number("/proc/sys/kernel/shmmni"));
    assert_eq!(u64_at(&v, "/max_map_count"), proc_number("/proc/sys/vm/max_map_count"));
    if Path::new("/dev/shm").is_dir() {
        assert!(u64_at(&v, "/dev_shm_size") >= u64_at(&v, "/dev_shm_free"));
    }
    let human = shmkit(&["limits"]).ok().out();
    for word in ["page size", "kernel.shmmax", "kernel.shmall", "kernel.shmmni"] {
        assert!(human.contains(word), "limits lacks {word:?}:\n{human}");
    }
}

// ---------------------------------------------------------------------------
// 9. file: targets and modes
// ---------------------------------------------------------------------------

#[test]
fn file_target_round_trip_and_persistence() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let path = clean.file(dir.path());
    let target = format!("file:{}", path.display());

    shmkit(&["create", &target, "--size", "8k"]).ok();
    shmkit_with_input(&["write", &target], b"hello from stdin").ok();
    shmkit(&["write", &target, "--offset", "8191", "--text", "!"]).ok();
    shmkit(&["write", &target, "--offset", "100", "--text", "second", "--nul"]).ok();

    assert_eq!(shmkit(&["read", &target, "--len", "16"]).ok().stdout, b"hello from stdin");
    assert_eq!(shmkit(&["read", &target, "--offset", "100", "--cstr"]).ok().out(), "second\n");
    // The data is in the file, after every shmkit process has exited.
    let bytes = std::fs::read(&path).expect("read the file");
    assert_eq!(bytes.len(), 8192);
    assert_eq!(&bytes[..16], b"hello from stdin");
    assert_eq!(&bytes[100..107], b"second\0");
    assert_eq!(bytes[8191], b'!');
    assert!(bytes[16..100].iter().chain(&bytes[107..8191]).all(|&b| b == 0));

    // And a write to the file is what shmkit reads.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).expect("open the file");
    f.write_all(b"HELLO").expect("write the file");
    drop(f);
    assert_eq!(shmkit(&["read", &target, "--len", "5"]).ok().stdout, b"HELLO");

    let info = shmkit(&["info", &target, "--json"]).ok().json();
    assert_eq!(str_at(&info, "/kind"), "file");
    assert_eq!(u64_at(&info, "/size"), 8192);
    assert_eq!(json_mode(&info), file_mode(&path));
}

#[test]
fn file_modes_ignore_the_umask() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let loose = clean.file(dir.path());
    let strict = clean.file(dir.path());
    let open = clean.file(dir.path());
    let t = |p: &Path| format!("file:{}", p.display());

    shmkit_umask("000", &["create", &t(&loose), "--size", "10"]).ok();
    assert_eq!(file_mode(&loose), 0o600, "the default is 0600 even under umask 000");
    shmkit_umask("077", &["create", &t(&strict), "--size", "10", "--mode", "0640"]).ok();
    assert_eq!(file_mode(&strict), 0o640, "--mode 0640 is exact under umask 077");
    shmkit_umask("077", &["create", &t(&open), "--size", "10", "--mode", "666"]).ok();
    assert_eq!(file_mode(&open), 0o666);
    for path in [&loose, &strict, &open] {
        assert_eq!(json_mode(&shmkit(&["info", &t(path), "--json"]).ok().json()), file_mode(path));
    }
}

#[test]
fn posix_modes_ignore_the_umask() {
    let mut clean = Cleanup::new();
    let names = [clean.posix_name(), clean.posix_name(), clean.posix_name()];
    let targets = names.each_ref().map(|n| format!("posix:/{n}"));
    let path = |n: &str| Path::new("/dev/shm").join(n);

    shmkit_umask("000", &["create", &targets[0], "--size", "10"]).ok();
    assert_eq!(file_mode(&path(&names[0])), 0o600, "the default is 0600 even under umask 000");
    shmkit_umask("077", &["create", &targets[1], "--size", "10", "--mode", "0640"]).ok();
    assert_eq!(file_mode(&path(&names[1])), 0o640, "--mode 0640 is exact under umask 077");
    shmkit_umask("077", &["create", &targets[2], "--size", "10", "--mode", "0o666"]).ok();
    assert_eq!(file_mode(&path(&names[2])), 0o666);
    for (name, target) in names.iter().zip(&targets) {
        assert_eq!(json_mode(&shmkit(&["info", target, "--json"]).ok().json()), file_mode(&path(name)));
    }
}

#[test]
fn sysv_modes_ignore_the_umask() {
    let mut clean = Cleanup::new();
    let keys = [clean.sysv_key(), clean.sysv_key(), clean.sysv_key()];
    let targets = keys.map(sysv_target);
    let mode_of = |target: &str| json_mode(&shmkit(&["info", target, "--json"]).ok().json());

    shmkit_umask("000", &["create", &targets[0], "--size", "10"]).ok();
    assert_eq!(mode_of(&targets[0]), 0o600, "the default is 0600 even under umask 000");
    shmkit_umask("077", &["create", &targets[1], "--size", "10", "--mode", "0640"]).ok();
    assert_eq!(mode_of(&targets[1]), 0o640, "--mode 0640 is exact under umask 077");
    shmkit_umask("077", &["create", &targets[2], "--size", "10", "--mode", "0666"]).ok();
    assert_eq!(mode_of(&targets[2]), 0o666);
    for (key, want) in keys.iter().zip([0o600, 0o640, 0o666]) {
        let row = ipcs_row(*key).unwrap_or_else(|| panic!("`ipcs -m` does not list {key:#010x}"));
        assert_eq!(row.perms, want, "ipcs agrees");
    }
}

/// The library refuses objects that others may write or that another user
/// owns (`SegmentOptions::allow_untrusted`); `read` and `write` are an
/// operator's tools and open them anyway (the kernel's permissions still
/// apply).
#[test]
fn read_and_write_open_objects_that_others_may_write() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let targets = [
        sysv_target(clean.sysv_key()),
        format!("posix:/{}", clean.posix_name()),
        format!("file:{}", clean.file(dir.path()).display()),
    ];
    for target in &targets {
        shmkit(&["create", target, "--size", "64", "--mode", "0666"]).ok();
        shmkit(&["write", target, "--text", "shared", "--nul"]).ok();
        assert_eq!(shmkit(&["read", target, "--cstr"]).ok().out(), "shared\n", "{target}");
        assert_eq!(json_mode(&shmkit(&["info", target, "--json"]).ok().json()), 0o666, "{target}");
        shmkit(&["rm", target]).ok();
    }
}
