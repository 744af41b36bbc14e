//! Anonymous and memfd segments: shared with children made by `fork`, or
//! by passing a file descriptor.

use std::os::fd::AsRawFd;

use shmkit::{ErrorKind, Segment};

use crate::util::{Exit, fork, pattern, run_child, wait_pid};

#[test]
fn anonymous_memory_is_shared_across_fork_both_ways() {
    let mut seg = Segment::options().size(10_000).anonymous().unwrap();
    seg.write_at(0, &pattern(5000, 1)).unwrap();
    let pid = fork(|| {
        // The child sees the parent's bytes and answers after them. It owns
        // a copy of `seg` (the same shared pages) and leaves by `_exit`.
        let mut buf = vec![0; 5000];
        seg.read_at(0, &mut buf).unwrap();
        if buf != pattern(5000, 1) {
            return 1;
        }
        seg.write_at(5000, &pattern(5000, 2)).unwrap();
        0
    });
    assert_eq!(wait_pid(pid), Exit::Code(0));
    let mut buf = vec![0; 5000];
    seg.read_at(5000, &mut buf).unwrap();
    assert_eq!(buf, pattern(5000, 2));
}

#[test]
fn anonymous_child_writes_are_seen_by_the_parent() {
    let seg = Segment::options().size(4096 * 3).anonymous().unwrap();
    assert_eq!(seg.kind(), shmkit::Kind::Anonymous);
    let ptr = seg.as_ptr().as_ptr() as usize;
    let pid = fork(move || {
        let data = pattern(4096 * 3, 9);
        // SAFETY: the mapping is inherited at the same address and is
        // 3 pages long; the parent does not touch it until we exit.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut u8, data.len()) };
        0
    });
    assert_eq!(wait_pid(pid), Exit::Code(0));
    let mut buf = vec![0; 4096 * 3];
    seg.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(4096 * 3, 9));
}

#[test]
fn memfd_is_sealed_and_cannot_be_truncated() {
    let mut seg = Segment::options().size(8192).memfd("shmkit-test").unwrap();
    assert_eq!(seg.kind(), shmkit::Kind::Memfd);
    seg.write_at(0, b"sealed").unwrap();
    let fd = seg.fd().unwrap().as_raw_fd();
    // SAFETY: plain calls on a descriptor we own.
    let (shrink, grow, seals) = unsafe {
        let shrink = libc::ftruncate(fd, 10);
        let shrink_err = std::io::Error::last_os_error().raw_os_error();
        let grow = libc::ftruncate(fd, 1 << 20);
        let grow_err = std::io::Error::last_os_error().raw_os_error();
        ((shrink, shrink_err), (grow, grow_err), libc::fcntl(fd, libc::F_GET_SEALS))
    };
    assert_eq!(shrink, (-1, Some(libc::EPERM)));
    assert_eq!(grow, (-1, Some(libc::EPERM)));
    let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want);
    assert!(matches!(seg.grow(16384).unwrap_err().kind(), ErrorKind::InvalidArgument(_)));
    assert_eq!(seg.read::<[u8; 6]>(0).unwrap(), *b"sealed");
}

#[test]
fn memfd_is_passed_to_an_exec_child_as_a_descriptor() {
    let mut seg = Segment::options().size(20_000).memfd("shmkit-test-pass").unwrap();
    seg.write_at(0, &pattern(20_000, 5)).unwrap();
    seg.set_inheritable(true).unwrap();
    let fd = seg.fd().unwrap().as_raw_fd().to_string();
    let status = run_child("memfd-read", &[&fd, "20000", "5"]);
    seg.set_inheritable(false).unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn memfd_is_shared_with_a_fork_child() {
    let seg = Segment::options().size(4096).memfd("shmkit-test-fork").unwrap();
    let ptr = seg.as_ptr().as_ptr() as usize;
    let pid = fork(move || {
        // SAFETY: the inherited mapping is 4096 bytes at the same address.
        unsafe { std::ptr::copy_nonoverlapping(b"from child".as_ptr(), ptr as *mut u8, 10) };
        0
    });
    assert_eq!(wait_pid(pid), Exit::Code(0));
    assert_eq!(seg.read::<[u8; 10]>(0).unwrap(), *b"from child");
}

#[test]
fn unsealed_descriptors_are_refused_unless_allowed() {
    let seg = Segment::options().size(4096).seal(false).memfd("shmkit-test-unsealed").unwrap();
    let dup = seg.fd().unwrap().try_clone_to_owned().unwrap();
    let err = Segment::from_fd(dup, &Segment::options()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NotSealed { .. }), "{err:?}");
    let dup = seg.fd().unwrap().try_clone_to_owned().unwrap();
    let other = Segment::from_fd(dup, Segment::options().allow_unsealed(true)).unwrap();
    assert_eq!(other.len(), 4096);
}
