//! Conformance of the named backends (System V, POSIX, file), each test
//! written once and run per backend, plus backend-specific behaviour.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use shmkit::segment::{self, SysvKey};
use shmkit::{ErrorKind, Lifetime, Segment, Target};

use crate::util::{Backend, NAMED, Remove, is_root, pattern, run_child, temp_path, unique_key, unique_name};

fn page() -> usize {
    shmkit::limits::page_size()
}

#[test]
fn another_process_reads_what_we_wrote_and_answers() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let mut seg = Segment::create(&target, 4097).unwrap();
        seg.write_at(100, &pattern(1000, 7)).unwrap();
        let status = run_child("read-and-reply", &[&target.to_string(), "100", "1000", "7"]);
        assert_eq!(status.code(), Some(0), "{backend:?}: child failed");
        let mut reply = vec![0; 1000];
        seg.read_at(1100, &mut reply).unwrap();
        assert_eq!(reply, pattern(1000, 8), "{backend:?}: the child's reply is not visible");
    }
}

#[test]
fn sizes_are_exact_and_mappings_whole_pages() {
    for backend in NAMED {
        for size in [1, 4097, page() * 3] {
            let (target, _guard) = backend.target();
            let seg = Segment::create(&target, size).unwrap();
            assert_eq!(seg.len(), size, "{backend:?}");
            assert_eq!(seg.mapped_len(), size.div_ceil(page()) * page(), "{backend:?}");
            assert_eq!(segment::stat(&target).unwrap().size, size as u64, "{backend:?}");
            // The last byte is usable, the one after is refused.
            let mut seg = seg;
            seg.write_at(size - 1, &[0xab]).unwrap();
            assert_eq!(seg.read::<u8>(size - 1).unwrap(), 0xab);
            let err = seg.read::<u8>(size).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::OutOfBounds { .. }), "{backend:?}: {err}");
        }
    }
}

#[test]
fn one_gibibyte_segments_work() {
    const GIB: usize = 1 << 30;
    for backend in NAMED {
        if backend == Backend::File {
            let free = std::process::Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(std::env::temp_dir())
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()));
            if free.is_none_or(|f| f < 4 * GIB as u64) {
                eprintln!("skipping the 1 GiB file segment: less than 4 GiB free in the temp dir");
                continue;
            }
        }
        let (target, _guard) = backend.target();
        let mut seg = Segment::create(&target, GIB).unwrap();
        seg.write_at(GIB - 8, b"lastbyte").unwrap();
        let other = Segment::open(&target).unwrap();
        assert_eq!(other.len(), GIB);
        assert_eq!(other.read::<[u8; 8]>(GIB - 8).unwrap(), *b"lastbyte", "{backend:?}");
    }
}

#[test]
fn read_only_mappings_really_are_read_only() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let mut seg = Segment::create(&target, 4096).unwrap();
        seg.write_at(0, b"keep").unwrap();
        let status = run_child("write-readonly", &[&target.to_string()]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{backend:?}: child ended with {status:?}");
        // We survive, and the data is untouched.
        assert_eq!(seg.read::<[u8; 4]>(0).unwrap(), *b"keep");
    }
}

#[test]
fn creator_removes_on_drop_openers_do_not() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let mut creator = Segment::create(&target, 64).unwrap();
        if backend == Backend::File {
            // Files persist by default; ask for removal explicitly.
            creator.remove_on_drop();
        }
        drop(Segment::open(&target).unwrap());
        assert!(segment::stat(&target).is_ok(), "{backend:?}: an opener removed the object");
        drop(creator);
        let err = segment::stat(&target).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::NotFound, "{backend:?}: {err}");
    }
}

#[test]
fn persistent_objects_outlive_their_creator() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let mut seg = Segment::options().size(64).lifetime(Lifetime::Persistent).create(&target).unwrap();
        seg.write_at(0, b"still here").unwrap();
        drop(seg);
        let seg = Segment::open(&target).unwrap();
        assert_eq!(seg.read::<[u8; 10]>(0).unwrap(), *b"still here", "{backend:?}");
    }
}

#[test]
fn kernel_refcounted_objects_lose_their_name_at_once() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let mut seg = Segment::options().size(64).lifetime(Lifetime::KernelRefcounted).create(&target).unwrap();
        seg.write_at(0, b"alive").unwrap();
        assert_eq!(seg.read::<[u8; 5]>(0).unwrap(), *b"alive");
        if backend == Backend::Sysv {
            let id = seg.sysv_id().unwrap();
            let info = segment::stat(&Target::SysvId(id)).unwrap();
            assert!(info.sysv.unwrap().marked_for_removal);
            drop(seg);
            let err = segment::stat(&Target::SysvId(id)).unwrap_err();
            assert_eq!(*err.kind(), ErrorKind::NotFound, "the kernel kept the segment: {err}");
        } else {
            assert_eq!(*segment::stat(&target).unwrap_err().kind(), ErrorKind::NotFound, "{backend:?}");
        }
    }
}

#[test]
fn creation_intent_is_respected() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let err = Segment::open(&target).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::NotFound, "{backend:?}: {err}");
        let first = Segment::options().size(128).open_or_create(&target).unwrap();
        assert!(first.created(), "{backend:?}");
        let second = Segment::options().size(128).open_or_create(&target).unwrap();
        assert!(!second.created(), "{backend:?}");
        let err = Segment::create(&target, 128).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::AlreadyExists, "{backend:?}: {err}");
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}

#[test]
fn opening_with_more_than_the_object_has_is_an_error_not_sigbus() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let _seg = Segment::create(&target, 100).unwrap();
        let err = Segment::options().size(5000).open(&target).unwrap_err();
        match (backend, err.kind()) {
            (Backend::Sysv, ErrorKind::SizeMismatch { requested: 5000, actual: Some(100) }) => {}
            (_, ErrorKind::TooSmall { requested: 5000, actual: 100 }) => {}
            _ => panic!("{backend:?}: unexpected {err:?}"),
        }
        // Asking for no more than it has works, and maps only that.
        let seg = Segment::options().size(50).open(&target).unwrap();
        assert_eq!(seg.len(), 50);
    }
}

#[test]
fn bad_sizes_and_offsets_are_errors() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let err = Segment::create(&target, 0).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{backend:?}: {err:?}");
        let err = Segment::options().create(&target).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{backend:?}: {err:?}");
        let mut seg = Segment::create(&target, 10).unwrap();
        for (offset, len) in [(0, 11), (10, 1), (usize::MAX, 2), (11, 0)] {
            let err = seg.read_at(offset, &mut vec![0; len]).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::OutOfBounds { .. }), "{err:?}");
            let err = seg.write_at(offset, &vec![0; len]).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::OutOfBounds { .. }), "{err:?}");
        }
        seg.read_at(10, &mut []).unwrap();
    }
}

#[test]
fn modes_are_exact_under_any_umask() {
    for backend in NAMED {
        for (umask, mode) in [(0o000, 0o600), (0o077, 0o600), (0o077, 0o640), (0o022, 0o666)] {
            let (target, _guard) = backend.target();
            let status = run_child("create-under-umask", &[&target.to_string(), &umask.to_string(), &mode.to_string()]);
            assert_eq!(status.code(), Some(0), "{backend:?}");
            let info = segment::stat(&target).unwrap();
            assert_eq!(info.mode, mode, "{backend:?}: umask {umask:03o} mode {mode:03o} gave {:03o}", info.mode);
        }
    }
}

#[test]
fn default_mode_is_0600() {
    for backend in NAMED {
        let (target, _guard) = backend.target();
        let _seg = Segment::create(&target, 1).unwrap();
        assert_eq!(segment::stat(&target).unwrap().mode, 0o600, "{backend:?}");
    }
}

#[test]
fn sysv_stat_reports_attaches_pids_and_removal() {
    let (target, _guard) = Backend::Sysv.target();
    let a = Segment::create(&target, 4097).unwrap();
    let b = Segment::open(&target).unwrap();
    let info = segment::stat(&target).unwrap();
    let sysv = info.sysv.unwrap();
    let me = std::process::id() as i32;
    assert_eq!((sysv.nattch, sysv.cpid, sysv.lpid), (2, me, me));
    assert_eq!(sysv.key, a.sysv_key().unwrap().raw());
    assert_eq!(sysv.id, a.sysv_id().unwrap());
    assert!(!sysv.marked_for_removal);
    assert!(sysv.atime > 0 && sysv.ctime > 0);
    assert_eq!(info.size, 4097);
    drop(b);
    let sysv = segment::stat(&target).unwrap().sysv.unwrap();
    assert_eq!(sysv.nattch, 1);
    assert!(sysv.dtime > 0);
    // Removal while attached: marked, still reachable by id until detached.
    segment::remove(&target).unwrap();
    let by_id = Target::SysvId(sysv.id);
    assert!(segment::stat(&by_id).unwrap().sysv.unwrap().marked_for_removal);
    drop(a);
    assert_eq!(*segment::stat(&by_id).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn sysv_private_and_by_id() {
    let mut seg = Segment::create(&Target::Sysv(SysvKey::PRIVATE), 64).unwrap();
    let id = seg.sysv_id().unwrap();
    let _guard = Remove(Target::SysvId(id));
    assert_eq!(seg.name(), format!("sysv-id:{id}"));
    seg.write_at(0, b"private").unwrap();
    let other = Segment::open(&Target::SysvId(id)).unwrap();
    assert_eq!(other.read::<[u8; 7]>(0).unwrap(), *b"private");
    let err = Segment::open(&Target::Sysv(SysvKey::PRIVATE)).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)));
    let err = Segment::create(&Target::SysvId(id), 64).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)));
}

#[test]
fn ftok_computes_what_glibc_documents() {
    let path = temp_path("ftok");
    std::fs::write(&path, b"").unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let key = SysvKey::ftok(&path, 65).unwrap();
    let expected = (65u32 << 24) | ((meta.dev() as u32 & 0xff) << 16) | (meta.ino() as u32 & 0xffff);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(key.raw() as u32, expected);
    assert_eq!(*SysvKey::ftok(&path, 65).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn file_data_persists_after_every_process_exits() {
    let path = temp_path("persist");
    let target = Target::file(&path);
    let _guard = Remove(target.clone());
    assert_eq!(run_child("file-writer", &[&target.to_string(), "10000", "3"]).code(), Some(0));
    // The writer is gone; the bytes are in the file itself.
    assert_eq!(std::fs::read(&path).unwrap(), pattern(10000, 3));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let seg = Segment::open(&target).unwrap();
    assert_eq!(seg.len(), 10000);
}

#[test]
fn file_and_posix_segments_grow() {
    for backend in [Backend::Posix, Backend::File] {
        let (target, _guard) = backend.target();
        let mut seg = Segment::create(&target, 100).unwrap();
        seg.write_at(0, b"head").unwrap();
        seg.grow(3 * page() + 1).unwrap();
        assert_eq!(seg.len(), 3 * page() + 1);
        assert_eq!(seg.mapped_len(), 4 * page());
        seg.write_at(3 * page(), b"t").unwrap();
        seg.flush().unwrap();
        seg.flush_async().unwrap();
        assert_eq!(seg.read::<[u8; 4]>(0).unwrap(), *b"head");
        assert_eq!(segment::stat(&target).unwrap().size, 3 * page() as u64 + 1);
        assert!(matches!(seg.grow(10).unwrap_err().kind(), ErrorKind::InvalidArgument(_)));
    }
    let (target, _guard) = Backend::Sysv.target();
    let mut seg = Segment::create(&target, 100).unwrap();
    assert!(matches!(seg.grow(200).unwrap_err().kind(), ErrorKind::InvalidArgument(_)));
}

#[test]
fn symlinks_planted_in_dev_shm_are_never_followed() {
    let victim = temp_path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let name = unique_name("planted");
    let link = std::path::Path::new("/dev/shm").join(&name);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let target = Target::posix(&name).unwrap();
    let create = Segment::create(&target, 4096).unwrap_err();
    let open = Segment::open(&target).unwrap_err();
    std::fs::remove_file(&link).unwrap();
    let contents = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    assert_eq!(*create.kind(), ErrorKind::AlreadyExists, "{create}");
    assert!(matches!(open.kind(), ErrorKind::WrongType(_)), "{open}");
    assert_eq!(contents, b"precious");
}

#[test]
fn posix_names_are_validated() {
    for bad in ["", "/", "a/b", "..", "."] {
        assert!(Target::posix(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Target::posix("x").unwrap(), Target::posix("/x").unwrap());
}

#[test]
fn errors_say_what_to_do() {
    let (target, _guard) = Backend::Posix.target();
    let err = Segment::open(&target).unwrap_err();
    assert_eq!(err.object(), target.to_string());
    assert_eq!(err.op(), shmkit::Op::Open);
    assert!(err.to_string().contains("no such object"), "{err}");
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn permission_errors_name_owner_and_mode() {
    if !is_root() {
        eprintln!("skipping: needs root to chown an object to another user");
        return;
    }
    let (target, _guard) = Backend::Posix.target();
    let _seg = Segment::create(&target, 64).unwrap();
    let Target::Posix(name) = &target else { unreachable!() };
    std::os::unix::fs::chown(name.path(), Some(65534), Some(65534)).unwrap();
    // Switch to `nobody` in a forked child, which then must be refused.
    let pid = crate::util::fork(|| {
        // SAFETY: setgid/setuid have no memory-safety preconditions.
        if unsafe { libc::setgid(65533) } != 0 || unsafe { libc::setuid(65533) } != 0 {
            return 60;
        }
        match Segment::open(&target) {
            Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied { owner: Some(65534), mode: Some(0o600) }) => 0,
            _ => 61,
        }
    });
    assert_eq!(crate::util::wait_pid(pid), crate::util::Exit::Code(0));
}

#[test]
fn sysv_key_is_shown_like_ipcs() {
    assert_eq!(Target::sysv(0x1234).to_string(), "sysv:0x00001234");
    let key = unique_key();
    assert_eq!(format!("{}", SysvKey::new(key)), format!("{:#010x}", key as u32));
}
