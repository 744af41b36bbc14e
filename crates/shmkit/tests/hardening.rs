//! SIGBUS-proofing, permissions and names: what a hostile or careless peer does to a segment.
//!
//! Proven elsewhere, not repeated here:
//! - a sealed memfd cannot be truncated (`ftruncate` gets `EPERM`):
//!   `fork::memfd_is_sealed_and_cannot_be_truncated`;
//! - objects are created with the exact mode (0600 by default) under umask
//!   000 and 077: `segment::modes_are_exact_under_any_umask`;
//! - a symbolic link planted in `/dev/shm` gives "already exists" on create
//!   and is not followed on open: `segment::symlinks_planted_in_dev_shm_are_never_followed`;
//! - a full `/dev/shm` (the real one) fails at creation:
//!   `limits::posix_segment_larger_than_dev_shm_free_space_fails_at_creation`.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use shmkit::limits::Limit;
use shmkit::{Error, ErrorKind, Lifetime, Segment, Target};

use crate::util::{self, Backend, Remove, WATCHDOG, is_root, pattern, run_child, temp_path, unique_name};

/// `nobody` on most systems; any unprivileged uid does.
const NOBODY: u32 = 65534;

/// Child roles of this module; `None` if `role` is not one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    Some(match role {
        "hardening-truncate" => {
            // Optionally let the parent get busy first (not a timing
            // assertion: the test holds whenever the truncation comes).
            if let Some(ms) = args.get(2) {
                std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
            }
            truncate(Path::new(&args[0]), args[1].parse().unwrap())
        }
        "hardening-sigbus-outside" => sigbus_outside(&args[0]),
        "hardening-table-full" => table_full(),
        "hardening-small-tmpfs" => small_tmpfs(Path::new(&args[0])),
        "hardening-open-as-nobody" => open_as_nobody(&args[0].parse().unwrap()),
        "hardening-create-as-nobody" => create_as_nobody(&args[0].parse().unwrap()),
        _ => return None,
    })
}

/// The file behind a POSIX or file target.
fn path_of(target: &Target) -> PathBuf {
    match target {
        Target::Posix(name) => name.path(),
        Target::File(path) => path.clone(),
        _ => unreachable!("only POSIX and file targets have a path"),
    }
}

// ---------------------------------------------------------------------------
// A peer truncates what we map
// ---------------------------------------------------------------------------

/// A ring whose object a peer truncates to nothing while both ends wait:
/// the consumer (asleep on an empty ring) and the producer (asleep on a
/// full one) get `Truncated` instead of dying of `SIGBUS` or waiting for
/// ever on pages that now read as zeros.
#[test]
fn a_ring_truncated_under_its_ends_gives_truncated() {
    use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};
    let name = unique_name("ring-trunc");
    let _guard = Remove(Target::posix(&ring::object_name(&name)).unwrap());
    let mut rx = Receiver::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap();
    let mut tx = Sender::open(&name).unwrap();
    let path = path_of(&Target::posix(&ring::object_name(&name)).unwrap());
    let truncator = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    });
    // Asleep on an empty ring when the object goes.
    let err = rx.recv_timeout(&mut Vec::new(), WATCHDOG).unwrap_err();
    truncator.join().unwrap();
    assert!(matches!(err.kind(), ErrorKind::Truncated { .. }), "consumer: {err}");
    // The producer fills what it believes is the ring, then waits for room
    // that will never come: it must learn why.
    let mut last = Ok(());
    for _ in 0..10_000 {
        last = tx.send_timeout(&[7u8; 64], WATCHDOG);
        if last.is_err() {
            break;
        }
    }
    let err = last.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Truncated { .. }), "producer: {err}");
}

/// The same for a publish/subscribe service: a subscriber waiting for a
/// sample and a publisher waiting for room learn `Truncated`.
#[test]
fn a_service_truncated_under_its_ends_gives_truncated() {
    use shmkit::channel::pubsub::{self, PubSubOptions, Publisher, Subscriber};
    let name = unique_name("ps-trunc");
    let _guard = Remove(Target::posix(&pubsub::object_name(&name)).unwrap());
    let mut publisher = Publisher::open_or_create(&name, PubSubOptions::new().slots(4).max_sample(8)).unwrap();
    let mut sub = Subscriber::open(&name).unwrap();
    let path = path_of(&Target::posix(&pubsub::object_name(&name)).unwrap());
    let truncator = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    });
    let err = sub.receive_timeout(WATCHDOG).map(|_| ()).unwrap_err();
    truncator.join().unwrap();
    assert!(matches!(err.kind(), ErrorKind::Truncated { .. }), "subscriber: {err}");
    let mut last = Ok(());
    for i in 0u64..10_000 {
        last = publisher.publish_timeout(&i.to_ne_bytes(), WATCHDOG).map(|_| ());
        if last.is_err() {
            break;
        }
    }
    let err = last.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Truncated { .. }), "publisher: {err}");
}

/// Truncates the file at `path` to `len` bytes, as a careless or hostile
/// peer would. 10: open failed; 11: truncate failed.
fn truncate(path: &Path, len: u64) -> i32 {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) else { return 10 };
    if file.set_len(len).is_err() {
        return 11;
    }
    0
}

/// Reads the whole segment and writes part of it back, as a busy user would.
fn access(seg: &mut Segment, buf: &mut [u8], round: usize) -> shmkit::Result<()> {
    seg.read_at(0, buf)?;
    let at = (round * 4093) % (seg.len() - 64);
    seg.write_at(at, &buf[..64])
}

/// Accesses `seg` in a loop while a child truncates its object to `new_len`;
/// returns the error that ends the loop and how many accesses succeeded.
/// Fails the test if an access that started after the child exited
/// succeeded.
fn access_until_truncated(seg: &mut Segment, target: &Target, new_len: u64) -> (Error, u64) {
    let mut buf = vec![0; seg.len()];
    let child = util::child("hardening-truncate", &[path_of(target).to_str().unwrap(), &new_len.to_string(), "20"])
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(Some(child));
    let start = Instant::now();
    let mut ok = 0u64;
    let err = loop {
        let truncated_before = child.0.as_mut().unwrap().try_wait().unwrap().is_some();
        match access(seg, &mut buf, ok as usize) {
            Err(e) => break e,
            Ok(()) => ok += 1,
        }
        assert!(!truncated_before, "an access that began after the truncation succeeded");
        assert!(start.elapsed() < WATCHDOG, "watchdog: no error after {ok} accesses");
    };
    let status = util::wait(child.0.take().unwrap());
    assert_eq!(status.code(), Some(0), "the truncating child failed: {status:?}");
    (err, ok)
}

/// Kills and reaps a child if the test fails before waiting for it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_peer_truncating_a_segment_under_us_gives_an_error_not_sigbus() {
    for backend in [Backend::Posix, Backend::File] {
        let (target, _guard) = backend.target();
        let size = 16 * shmkit::limits::page_size() + 100;
        let mut seg = Segment::options().size(size).lifetime(Lifetime::RemoveOnDrop).create(&target).unwrap();
        seg.write_at(0, &pattern(size, 3)).unwrap();

        let (err, ok) = access_until_truncated(&mut seg, &target, 0);
        eprintln!("{backend:?}: {ok} accesses succeeded before the truncation was seen");
        assert_eq!(*err.kind(), ErrorKind::Truncated { size: size as u64 }, "{backend:?}: {err}");
        assert_eq!(err.object(), target.to_string());
        assert!(err.to_string().contains("truncated") && err.to_string().contains(&target.to_string()), "{err}");

        // Every later access says the same, whatever the range or type.
        let mut small = [0u8; 8];
        for result in [
            seg.read_at(0, &mut small),
            seg.read_at(size - 8, &mut small),
            seg.write_at(100, b"lost"),
            seg.read::<u64>(8).map(drop),
            seg.write(16, &7u32),
        ] {
            assert_eq!(*result.unwrap_err().kind(), ErrorKind::Truncated { size: size as u64 }, "{backend:?}");
        }
        assert_eq!(*seg.flush().unwrap_err().kind(), ErrorKind::Truncated { size: size as u64 }, "{backend:?}");
        assert_eq!(*seg.grow(2 * size).unwrap_err().kind(), ErrorKind::Truncated { size: size as u64 }, "{backend:?}");
        // Bounds are still checked first.
        assert!(matches!(seg.read_at(size, &mut small).unwrap_err().kind(), ErrorKind::OutOfBounds { .. }));
        // The object itself is what the peer left: empty.
        assert_eq!(shmkit::segment::stat(&target).unwrap().size, 0, "{backend:?}");
        // The broken mapping unmaps cleanly, and the name can be used again.
        drop(seg);
        let mut again = Segment::options().size(size).lifetime(Lifetime::RemoveOnDrop).create(&target).unwrap();
        again.write_at(size - 4, b"anew").unwrap();
        assert_eq!(again.read::<[u8; 4]>(size - 4).unwrap(), *b"anew");
    }
}

#[test]
fn a_partial_truncation_is_reported_once_an_access_crosses_the_new_end() {
    let page = shmkit::limits::page_size();
    for backend in [Backend::Posix, Backend::File] {
        let (target, _guard) = backend.target();
        let mut seg = Segment::options().size(8 * page).lifetime(Lifetime::RemoveOnDrop).create(&target).unwrap();
        seg.write_at(0, &pattern(8 * page, 5)).unwrap();
        let status = run_child("hardening-truncate", &[path_of(&target).to_str().unwrap(), &(2 * page).to_string()]);
        assert_eq!(status.code(), Some(0));
        // The first two pages still have their backing and their bytes.
        let mut head = vec![0; 2 * page];
        seg.read_at(0, &mut head).unwrap();
        assert_eq!(head, pattern(8 * page, 5)[..2 * page], "{backend:?}");
        // An access past the new end would have been SIGBUS; it is an error.
        let err = seg.read::<u8>(5 * page).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::Truncated { size: 8 * page as u64 }, "{backend:?}: {err}");
        // From then on, the head too: the segment as a whole is broken.
        assert_eq!(*seg.read_at(0, &mut head).unwrap_err().kind(), ErrorKind::Truncated { size: 8 * page as u64 });
    }
}

#[test]
fn an_unsealed_memfd_truncated_under_us_gives_an_error() {
    // Sealed memfds cannot shrink (fork::memfd_is_sealed_and_cannot_be_truncated);
    // one accepted unsealed on purpose is guarded like a file.
    let page = shmkit::limits::page_size();
    let owner = Segment::options().size(4 * page).seal(false).memfd("shmkit-test-unsealed-trunc").unwrap();
    let dup = owner.fd().unwrap().try_clone_to_owned().unwrap();
    let mut seg = Segment::from_fd(dup, Segment::options().allow_unsealed(true)).unwrap();
    seg.write_at(3 * page, b"tail").unwrap();
    let fd = owner.fd().unwrap().as_raw_fd();
    // The "peer" is a forked child: it shares the memfd and shrinks it.
    let pid = util::fork(move || {
        // SAFETY: ftruncate on an inherited descriptor; no memory involved.
        if unsafe { libc::ftruncate(fd, page as libc::off_t) } == 0 { 0 } else { 1 }
    });
    assert_eq!(util::wait_pid(pid), util::Exit::Code(0));
    // A raw access (as rings and futex words make) survives too, and sees
    // zeros where "tail" was...
    // SAFETY: inside the mapping; its page lost its backing, and the SIGBUS
    // handler is what this test checks.
    let raw = unsafe { seg.as_ptr().as_ptr().add(3 * page).read_volatile() };
    assert_eq!(raw, 0);
    // ...and the segment's next access reports it.
    let err = seg.read::<[u8; 4]>(0).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Truncated { size: 4 * page as u64 }, "{err}");
}

/// Fills the SIGBUS handler's table (1024 slots) with unsealed memfd
/// segments, checks a guarded one survives truncation and a freed slot is
/// reused, then truncates the 1025th, which the table had no room for: that
/// process must die of SIGBUS, as documented. 3: cannot open enough
/// descriptors (skip); 70..78: a step failed; 79: survived.
fn table_full() -> i32 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write or read only the struct we pass.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max.min(4096);
            lim.rlim_cur >= 1200 && libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !raised {
        eprintln!("cannot raise RLIMIT_NOFILE to 1200 (hard limit {})", lim.rlim_max);
        return 3;
    }
    let make = || Segment::options().size(4096).seal(false).memfd("shmkit-test-table");
    let shrink = |seg: &Segment| {
        // SAFETY: ftruncate on the segment's own descriptor.
        unsafe { libc::ftruncate(seg.fd().unwrap().as_raw_fd(), 0) == 0 }
    };
    let truncated =
        |seg: &Segment| matches!(seg.read::<u8>(0).map_err(|e| e.kind().clone()), Err(ErrorKind::Truncated { .. }));
    let Ok(mut segs) = (0..1024).map(|_| make()).collect::<shmkit::Result<Vec<_>>>() else { return 70 };
    let Ok(unguarded) = make() else { return 71 };
    if !shrink(&segs[0]) || !truncated(&segs[0]) {
        return 72;
    }
    drop(segs.swap_remove(1));
    let Ok(reused) = make() else { return 73 };
    if !shrink(&reused) || !truncated(&reused) {
        return 74;
    }
    if !shrink(&unguarded) {
        return 75;
    }
    let _ = unguarded.read::<u8>(0);
    79
}

#[test]
fn a_mapping_beyond_the_guard_table_is_unguarded_as_documented() {
    let status = run_child("hardening-table-full", &[]);
    if status.code() == Some(3) {
        eprintln!("skipping: cannot open enough descriptors for 1025 segments");
        return;
    }
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

#[test]
fn threads_reading_a_read_only_mapping_all_see_the_truncation() {
    const THREADS: usize = 4;
    let (target, _guard) = Backend::Posix.target();
    let size = 64 * shmkit::limits::page_size();
    let mut owner = Segment::options().size(size).lifetime(Lifetime::RemoveOnDrop).create(&target).unwrap();
    owner.write_at(0, &pattern(size, 9)).unwrap();
    let seg = Segment::options().read_only().open(&target).unwrap();
    let start = Instant::now();
    let results: Vec<(Error, u64)> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut buf = vec![0; size];
                    let mut ok = 0u64;
                    loop {
                        match seg.read_at(0, &mut buf) {
                            Err(e) => return (e, ok),
                            Ok(()) => ok += 1,
                        }
                        assert!(start.elapsed() < WATCHDOG, "watchdog: no error after {ok} reads");
                    }
                })
            })
            .collect();
        let status = run_child("hardening-truncate", &[path_of(&target).to_str().unwrap(), "0", "20"]);
        assert_eq!(status.code(), Some(0));
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (err, ok) in &results {
        assert_eq!(*err.kind(), ErrorKind::Truncated { size: size as u64 }, "{err}");
        eprintln!("a reader thread: {ok} reads before the truncation was seen");
    }
    // The writer's own mapping of the same object learns it at its next access.
    assert_eq!(*owner.write_at(0, b"x").unwrap_err().kind(), ErrorKind::Truncated { size: size as u64 });
}

/// Installs a `SIGBUS` handler of its own that leaves with exit code 77, as
/// a program with its own handler would have before using shmkit.
extern "C" fn own_handler(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(77) };
}

/// Maps a POSIX segment (which installs shmkit's handler), proves a
/// truncation under it is survived, then touches a truncated plain `mmap`
/// that shmkit knows nothing about, which must end the process as it would
/// have without shmkit. `how`: `std` keeps the handler Rust's runtime
/// installed, `default` resets SIGBUS to SIG_DFL first, `own` installs a
/// handler that exits with 77, `kill` (on SIG_DFL) raises SIGBUS with
/// `raise` instead of faulting. 20..29: a step failed; 29: survived.
fn sigbus_outside(how: &str) -> i32 {
    let set = |handler: libc::sighandler_t| {
        // SAFETY: a zeroed sigaction with a valid handler value; plain call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
        }
    };
    let ok = match how {
        "std" => true,
        "default" | "kill" => set(libc::SIG_DFL),
        "own" => set(own_handler as *const () as libc::sighandler_t),
        _ => false,
    };
    if !ok {
        return 20;
    }
    let target = Target::posix(&unique_name("outside")).unwrap();
    let Ok(mut seg) = Segment::create(&target, 8192) else { return 21 };
    // Our own segment, truncated: survived, with an error.
    if truncate(&path_of(&target), 0) != 0 {
        return 22;
    }
    if !matches!(seg.read::<u8>(4096).map_err(|e| e.kind().clone()), Err(ErrorKind::Truncated { .. })) {
        return 23;
    }
    if seg.write_at(0, b"x").is_ok() {
        return 24;
    }
    drop(seg);
    if how == "kill" {
        // SAFETY: raise has no preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        return 29;
    }
    // A mapping shmkit did not make, over a file that is then truncated.
    let path = temp_path("plain-mmap");
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path) else {
        return 25;
    };
    let _ = std::fs::remove_file(&path);
    if file.set_len(8192).is_err() {
        return 26;
    }
    // SAFETY: a fresh shared mapping of our own file, at a kernel-chosen
    // address.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED || file.set_len(0).is_err() {
        return 27;
    }
    // SAFETY: deliberately past the end of the (now empty) file: the kernel
    // delivers SIGBUS, which shmkit's handler must not swallow.
    let byte = unsafe { ptr.cast::<u8>().add(4096).read_volatile() };
    eprintln!("survived a read past the end of a plain mapping (read {byte})");
    29
}

#[test]
fn a_sigbus_outside_every_segment_still_kills() {
    for (how, want_signal, want_code) in
        [("std", Some(libc::SIGBUS), None), ("default", Some(libc::SIGBUS), None), ("own", None, Some(77))]
    {
        let status = run_child("hardening-sigbus-outside", &[how]);
        assert_eq!((status.signal(), status.code()), (want_signal, want_code), "{how}: {status:?}");
    }
}

#[test]
fn a_sigbus_sent_with_kill_is_not_swallowed() {
    let status = run_child("hardening-sigbus-outside", &["kill"]);
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

// ---------------------------------------------------------------------------
// Small tmpfs
// ---------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// In a private mount namespace, mounts 4 MiB tmpfs over `/dev/shm` and
/// over `dir`, then checks creation against them. 3: no namespace here
/// (skip); 40..59: a check failed.
fn small_tmpfs(dir: &Path) -> i32 {
    use std::ffi::CString;
    // SAFETY: unshare has no memory-safety preconditions; it gives this
    // thread (which runs everything below) its own mount namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        eprintln!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        return 3;
    }
    let c = |s: &str| CString::new(s).unwrap();
    let (root, none, tmpfs, opts) = (c("/"), c("none"), c("tmpfs"), c("size=4m,mode=1777"));
    // SAFETY: valid NUL-terminated strings that outlive the calls.
    let private = unsafe {
        libc::mount(none.as_ptr(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
    };
    if private != 0 {
        eprintln!("mount --make-rprivate /: {}", std::io::Error::last_os_error());
        return 3;
    }
    for mount_point in [Path::new("/dev/shm"), dir] {
        let at = c(mount_point.to_str().unwrap());
        // SAFETY: as above; the data string is tmpfs's option text.
        if unsafe { libc::mount(tmpfs.as_ptr(), at.as_ptr(), tmpfs.as_ptr(), 0, opts.as_ptr().cast()) } != 0 {
            eprintln!("mount tmpfs on {}: {}", mount_point.display(), std::io::Error::last_os_error());
            return 3;
        }
    }
    let entries = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(usize::MAX);
    let space_error = |err: &Error, path: &Path| match err.kind() {
        ErrorKind::LimitExceeded(l) => {
            l.limit == Limit::Space { path: path.display().to_string() }
                && err.to_string().contains(&path.display().to_string())
        }
        _ => false,
    };
    for (i, (dir, target)) in [
        (Path::new("/dev/shm"), Target::posix("shmkit-small-tmpfs").unwrap()),
        (dir, Target::file(dir.join("segment"))),
    ]
    .into_iter()
    .enumerate()
    {
        let code = 40 + 10 * i as i32;
        // Larger than the whole file system: refused at creation, nothing left.
        match Segment::create(&target, 8 * MIB) {
            Err(e) if space_error(&e, dir) => eprintln!("as expected: {e}"),
            other => {
                eprintln!("8 MiB on a 4 MiB tmpfs: {other:?}");
                return code;
            }
        }
        if entries(dir) != 0 {
            return code + 1;
        }
        // One that fits is usable to its last byte (a SIGBUS here would
        // kill this child, which the parent would see).
        let Ok(mut seg) = Segment::create(&target, 3 * MIB) else { return code + 2 };
        if seg.write_at(0, &pattern(3 * MIB, 1)).is_err() || seg.write_at(3 * MIB - 1, &[0xee]).is_err() {
            return code + 3;
        }
        if seg.read::<u8>(3 * MIB - 1).ok() != Some(0xee) {
            return code + 4;
        }
        // A second one fits the free space of an empty tmpfs but not what is
        // left: refused, and only the first exists.
        let second = match &target {
            Target::Posix(_) => Target::posix("shmkit-small-tmpfs-2").unwrap(),
            _ => Target::file(dir.join("segment-2")),
        };
        match Segment::create(&second, 3 * MIB) {
            Err(e) if space_error(&e, dir) => eprintln!("as expected: {e}"),
            other => {
                eprintln!("second 3 MiB on a 4 MiB tmpfs: {other:?}");
                return code + 5;
            }
        }
        if entries(dir) != 1 {
            return code + 6;
        }
        let mut seg = seg;
        seg.remove_on_drop();
        drop(seg);
        if entries(dir) != 0 {
            return code + 7;
        }
    }
    0
}

/// Removes an empty directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_small_tmpfs_refuses_what_does_not_fit_at_creation() {
    if !is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root (a private mount namespace)");
        return;
    }
    let dir = temp_path("small-tmpfs");
    std::fs::create_dir(&dir).unwrap();
    let _guard = RemoveDir(dir.clone());
    let status = run_child("hardening-small-tmpfs", &[dir.to_str().unwrap()]);
    if status.code() == Some(3) {
        eprintln!("skipping: this machine refuses a private mount namespace (see the child's message)");
        return;
    }
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The mounts lived in the child's namespace only.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------
// Permissions and names
// ---------------------------------------------------------------------------

/// Drops to `nobody` (groups, gid, uid). False if refused.
fn become_nobody() -> bool {
    // SAFETY: plain credential calls; glibc applies them to every thread.
    unsafe { libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(NOBODY) == 0 && libc::setuid(NOBODY) == 0 }
}

/// As `nobody`, tries to open `target` (allowing untrusted objects, so only
/// the kernel's permission check can refuse). 60: could not switch; 61: it
/// opened; 62: refused, but not with PermissionDenied.
fn open_as_nobody(target: &Target) -> i32 {
    if !become_nobody() {
        return 60;
    }
    for read_only in [false, true] {
        let mut options = Segment::options();
        options.allow_untrusted(true);
        if read_only {
            options.read_only();
        }
        match options.open(target) {
            Ok(_) => return 61,
            Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied { .. }) => {}
            Err(e) => {
                eprintln!("{e}");
                return 62;
            }
        }
    }
    0
}

/// As `nobody`, creates `target` (4096 bytes, mode 0600, kept). 60: could
/// not switch; 63: create failed.
fn create_as_nobody(target: &Target) -> i32 {
    if !become_nobody() {
        return 60;
    }
    match Segment::options().size(4096).lifetime(Lifetime::Persistent).create(target) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            63
        }
    }
}

fn untrusted(err: &Error) -> Option<(u32, u32)> {
    match err.kind() {
        ErrorKind::Untrusted { owner, mode } => Some((*owner, *mode)),
        _ => None,
    }
}

#[test]
fn another_user_cannot_open_our_objects() {
    if !is_root() {
        eprintln!("skipping: switching a child to nobody needs root");
        return;
    }
    for backend in util::NAMED {
        let (target, _guard) = backend.target();
        let _seg = Segment::create(&target, 4096).unwrap();
        let status = run_child("hardening-open-as-nobody", &[&target.to_string()]);
        assert_eq!(status.code(), Some(0), "{backend:?}: {status:?}");
    }
}

#[test]
fn objects_of_another_user_are_refused_unless_allowed() {
    if !is_root() {
        eprintln!("skipping: creating an object as nobody needs root");
        return;
    }
    for backend in util::NAMED {
        let (target, _guard) = backend.target();
        assert_eq!(run_child("hardening-create-as-nobody", &[&target.to_string()]).code(), Some(0), "{backend:?}");
        let err = Segment::open(&target).unwrap_err();
        assert_eq!(untrusted(&err), Some((NOBODY, 0o600)), "{backend:?}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("owned by uid {NOBODY}")) && text.contains("allow_untrusted"), "{text}");
        // Read-only too: the owner can still change what we read.
        assert!(untrusted(&Segment::options().read_only().open(&target).unwrap_err()).is_some(), "{backend:?}");
        // open_or_create finds it and applies the same rule.
        let err = Segment::options().size(4096).open_or_create(&target).unwrap_err();
        assert!(untrusted(&err).is_some(), "{backend:?}: {err}");
        let seg = Segment::options().allow_untrusted(true).open(&target).unwrap();
        assert_eq!((seg.len(), seg.created()), (4096, false));
    }
}

#[test]
fn objects_others_may_write_are_refused_unless_allowed() {
    for backend in util::NAMED {
        for (mode, refused) in [(0o666, true), (0o620, true), (0o602, true), (0o644, false), (0o640, false)] {
            let (target, _guard) = backend.target();
            let _creator = Segment::options().size(100).mode(mode).create(&target).unwrap();
            let result = Segment::options().read_only().open(&target);
            if refused {
                let err = result.unwrap_err();
                let me = euid();
                assert_eq!(untrusted(&err), Some((me, mode)), "{backend:?} {mode:04o}: {err}");
                let text = err.to_string();
                assert!(text.contains(&format!("mode {mode:04o}")) && text.contains("allow_untrusted"), "{text}");
                let seg = Segment::options().allow_untrusted(true).open(&target).unwrap();
                assert_eq!(seg.len(), 100);
            } else {
                assert_eq!(result.unwrap().len(), 100, "{backend:?} {mode:04o}");
            }
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn symlinks_planted_in_a_file_segments_directory_are_never_followed() {
    // The /dev/shm case: segment::symlinks_planted_in_dev_shm_are_never_followed.
    let victim = temp_path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let _victim_guard = Remove(Target::file(&victim));
    let missing = temp_path("never-created");
    for points_to in [&victim, &missing] {
        let link = temp_path("planted");
        std::os::unix::fs::symlink(points_to, &link).unwrap();
        let _link_guard = Remove(Target::file(&link));
        let target = Target::file(&link);
        let create = Segment::create(&target, 4096).unwrap_err();
        assert_eq!(*create.kind(), ErrorKind::AlreadyExists, "{create}");
        assert!(create.to_string().contains("already exists"), "{create}");
        let err = Segment::options().size(4096).open_or_create(&target).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WrongType(_)), "{err}");
        let open = Segment::options().allow_untrusted(true).open(&target).unwrap_err();
        assert!(matches!(open.kind(), ErrorKind::WrongType(_)), "{open}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!missing.exists(), "a dangling link was followed and its target created");
}

/// Channels follow the same rule: a ring or service that group or others
/// may write is refused by a plain `open`, and opened when the options
/// allow it.
#[test]
fn group_writable_channels_are_opened_only_when_allowed() {
    use shmkit::channel::pubsub::{self, PubSubOptions, Publisher, Subscriber};
    use shmkit::channel::ring::{self, Receiver, RingOptions, Sender};

    let name = unique_name("ring-0660");
    let _guard = Remove(Target::posix(&ring::object_name(&name)).unwrap());
    let _rx = Receiver::open_or_create(&name, RingOptions::new().capacity(4096).mode(0o660)).unwrap();
    let err = Sender::open(&name).unwrap_err();
    assert!(untrusted(&err).is_some(), "plain open: {err}");
    let err = Sender::open_or_create(&name, RingOptions::new().capacity(4096)).unwrap_err();
    assert!(untrusted(&err).is_some(), "open_or_create without allowing: {err}");
    let mut tx = Sender::open_or_create(&name, RingOptions::new().capacity(4096).allow_untrusted(true)).unwrap();
    tx.send(b"hello").unwrap();

    let name = unique_name("ps-0660");
    let _guard = Remove(Target::posix(&pubsub::object_name(&name)).unwrap());
    let _publisher = Publisher::open_or_create(&name, PubSubOptions::new().mode(0o660)).unwrap();
    let err = Subscriber::open(&name).unwrap_err();
    assert!(untrusted(&err).is_some(), "plain open: {err}");
    let err = Publisher::open_or_create(&name, &PubSubOptions::new()).unwrap_err();
    assert!(untrusted(&err).is_some(), "open_or_create without allowing: {err}");
    let err = Publisher::open_or_create(&name, PubSubOptions::new().allow_untrusted(true)).unwrap_err();
    assert!(untrusted(&err).is_none(), "allowed, so only the live publisher's claim refuses: {err}");
}
