//! Kernel and space limits: requests that cannot fit fail at creation with
//! a typed error that names the limit, and leave nothing behind.

use shmkit::limits::{Limit, LimitExceeded};
use shmkit::segment;
use shmkit::{ErrorKind, Limits, Segment, Target};

use crate::util::{Backend, is_root, run_child, unique_key};

fn free_bytes(path: &str) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1", path]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().nth(1).unwrap().trim().parse().unwrap()
}

fn limit_of(err: &shmkit::Error) -> &LimitExceeded {
    match err.kind() {
        ErrorKind::LimitExceeded(l) => l,
        other => panic!("expected a limit error, got {other:?}: {err}"),
    }
}

#[test]
fn limits_are_read_and_agree_with_proc() {
    let l = Limits::read().unwrap();
    let proc =
        |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap().trim().parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    assert_eq!(l.page_size, unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64);
    assert_eq!(l.shmmax, proc("kernel/shmmax"));
    assert_eq!(l.shmmni, proc("kernel/shmmni"));
    assert_eq!(l.max_map_count, proc("vm/max_map_count"));
    assert!(l.map_count > 0 && l.open_fds > 0);
    assert!(l.dev_shm_size.unwrap() >= l.dev_shm_free.unwrap());
}

#[test]
fn posix_segment_larger_than_dev_shm_free_space_fails_at_creation() {
    let (target, _guard) = Backend::Posix.target();
    let request = free_bytes("/dev/shm") + (64 << 20);
    for result in
        [Segment::create(&target, request as usize), Segment::options().size(request as usize).open_or_create(&target)]
    {
        let err = result.unwrap_err();
        let limit = limit_of(&err);
        assert_eq!(limit.limit, Limit::Space { path: "/dev/shm".into() });
        assert_eq!(limit.requested, request);
        assert!(err.to_string().contains("/dev/shm"), "{err}");
        // Nothing was left behind.
        assert_eq!(*segment::stat(&target).unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn file_segment_larger_than_free_space_fails_at_creation() {
    let (target, _guard) = Backend::File.target();
    let dir = std::env::temp_dir();
    let request = free_bytes(dir.to_str().unwrap()) + (64 << 20);
    let err = Segment::create(&target, request as usize).unwrap_err();
    assert!(matches!(limit_of(&err).limit, Limit::Space { .. }), "{err}");
    assert_eq!(*segment::stat(&target).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn sysv_segment_larger_than_shmmax_fails_at_creation() {
    if is_root() {
        // Lower the limits in a private IPC namespace, so nothing else on
        // the host sees them.
        assert_eq!(run_child("sysv-limits-in-namespace", &[]).code(), Some(0));
        return;
    }
    let shmmax = Limits::read().unwrap().shmmax;
    if shmmax >= isize::MAX as u64 {
        eprintln!("skipping: not root and kernel.shmmax ({shmmax}) is above any size we can ask for");
        return;
    }
    let target = Target::sysv(unique_key());
    let err = Segment::create(&target, shmmax as usize + 1).unwrap_err();
    assert_eq!(limit_of(&err).limit, Limit::Shmmax);
    assert_eq!(*segment::stat(&target).unwrap_err().kind(), ErrorKind::NotFound);
}

/// Child role (root only): in a new IPC namespace, lower `shmmax`, `shmmni`
/// and `shmall` and check each is reported. Exit 0 when all hold.
pub fn in_private_ipc_namespace() -> i32 {
    // SAFETY: unshare has no memory-safety preconditions; it moves this
    // thread into a fresh, empty IPC namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
        eprintln!("unshare(CLONE_NEWIPC): {}", std::io::Error::last_os_error());
        return 70;
    }
    let set = |name: &str, value: u64| std::fs::write(format!("/proc/sys/kernel/{name}"), value.to_string()).unwrap();
    let no_segments = || std::fs::read_to_string("/proc/sysvipc/shm").unwrap().lines().count() == 1;

    set("shmmax", 1 << 20);
    let err = Segment::create(&Target::sysv(0x5eed), 2 << 20).unwrap_err();
    let ok = matches!(err.kind(), ErrorKind::LimitExceeded(l)
        if l.limit == Limit::Shmmax && l.value == 1 << 20 && l.requested == 2 << 20)
        && err.to_string().contains("kernel.shmmax")
        && err.to_string().contains("sysctl -w kernel.shmmax=2097152");
    if !ok {
        eprintln!("shmmax: {err:?}");
        return 71;
    }
    if !no_segments() {
        return 72;
    }

    set("shmmni", 1);
    let first = Segment::create(&Target::sysv(0x5eee), 4096).unwrap();
    let err = Segment::create(&Target::sysv(0x5eef), 4096).unwrap_err();
    if !matches!(err.kind(), ErrorKind::LimitExceeded(l) if l.limit == Limit::Shmmni && l.value == 1) {
        eprintln!("shmmni: {err:?}");
        return 73;
    }
    drop(first);
    set("shmmni", 4096);

    set("shmall", 2);
    let err = Segment::create(&Target::sysv(0x5ef0), 3 * 4096).unwrap_err();
    if !matches!(err.kind(), ErrorKind::LimitExceeded(l) if l.limit == Limit::Shmall && l.value == 2) {
        eprintln!("shmall: {err:?}");
        return 74;
    }
    if !no_segments() {
        return 75;
    }
    0
}
