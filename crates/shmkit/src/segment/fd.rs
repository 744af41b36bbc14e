//! What the POSIX, file and memfd backends share: they are all a file
//! descriptor that is sized, reserved and mapped.

use std::os::fd::OwnedFd;
use std::path::Path;

use super::{Backing, Intent, Kind, Mapped, Segment, SegmentOptions, page_round};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::limits;
use crate::sys;
use crate::sys::fs::OpenHow;

/// Turns an errno from a call on `path` into an [`Error`] that says what it
/// means there.
pub(super) fn error(op: Op, label: &str, path: &Path, err: std::io::Error) -> Error {
    let base = Error::os(op, label, err);
    match base.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let st = sys::fs::lstat(path).ok();
            base.with_kind(ErrorKind::PermissionDenied { owner: st.map(|s| s.uid), mode: st.map(|s| s.mode) })
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => limits::nofile_exceeded(op, label),
        Some(libc::ENOMEM) => limits::check_map_count(op, label).err().unwrap_or(base),
        _ => base,
    }
}

/// Removes a just-created file if creation fails half-way.
struct UnlinkOnFailure<'a>(Option<&'a Path>);

impl Drop for UnlinkOnFailure<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            // Best effort: we created it a moment ago, so this only fails if
            // someone else removed it already.
            let _ = sys::fs::unlink(path);
        }
    }
}

/// Sets the exact mode, the size, and reserves the space of a new object.
fn init(fd: &OwnedFd, size: usize, mode: u32, op: Op, label: &str, path: &Path, space_dir: &Path) -> Result<()> {
    let err = |e| error(op, label, path, e);
    sys::fs::fchmod(fd, mode).map_err(err)?;
    sys::fs::ftruncate(fd, size as u64).map_err(err)?;
    reserve(fd, size as u64, op, label, path, space_dir)
}

fn reserve(fd: &OwnedFd, size: u64, op: Op, label: &str, path: &Path, space_dir: &Path) -> Result<()> {
    match sys::fs::reserve(fd, size) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            let free = sys::fs::space(space_dir).map(|s| s.free).unwrap_or(0);
            Err(limits::space_exceeded(op, label, space_dir, free, size))
        }
        // Some file systems cannot fallocate; they allocate on write instead.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(error(op, label, path, e)),
    }
}

/// Opens or creates the object at `path` and maps it.
pub(super) fn open(
    options: &SegmentOptions,
    path: &Path,
    kind: Kind,
    intent: Intent,
    label: String,
    space_dir: &Path,
) -> Result<Segment> {
    let mode = options.mode & 0o7777;
    let (fd, created, size) = match intent {
        Intent::Create => {
            let size = options.required_size(Op::Create, &label)?;
            limits::check_space(Op::Create, &label, space_dir, size as u64)?;
            let fd = sys::fs::open(path, OpenHow::CreateExclusive, true, mode)
                .map_err(|e| error(Op::Create, &label, path, e))?;
            (fd, true, Some(size))
        }
        Intent::Open => {
            let fd = sys::fs::open(path, OpenHow::Existing, options.writable, 0)
                .map_err(|e| error(Op::Open, &label, path, e))?;
            (fd, false, None)
        }
        Intent::OpenOrCreate => {
            let size = options.required_size(Op::Create, &label)?;
            let (fd, created) =
                sys::fs::open_or_create(path, true, mode).map_err(|e| error(Op::Open, &label, path, e))?;
            (fd, created, Some(size))
        }
    };
    let mut guard = UnlinkOnFailure(created.then_some(path));
    if let Some(size) = size.filter(|_| created) {
        if intent == Intent::OpenOrCreate {
            // The name had to be tried before we knew we would create it.
            limits::check_space(Op::Create, &label, space_dir, size as u64)?;
        }
        init(&fd, size, mode, Op::Create, &label, path, space_dir)?;
    }
    let mut mapped = map(fd, options, kind, Some(path), created, &label, true)?;
    guard.0 = None;
    if let Backing::Fd { path: p, .. } = &mut mapped.backing {
        *p = Some(path.to_path_buf());
    }
    Segment::new(mapped, label).with_lifetime(options)
}

/// Checks a descriptor's type and size (and, for a named object we did not
/// create, its owner and mode) against the options, then maps it. `guard`:
/// the object can shrink under us, so register the mapping with the
/// `SIGBUS` handler.
pub(super) fn map(
    fd: OwnedFd,
    options: &SegmentOptions,
    kind: Kind,
    path: Option<&Path>,
    created: bool,
    label: &str,
    guard: bool,
) -> Result<Mapped> {
    let op = if created { Op::Create } else { Op::Open };
    let err = |e| match path {
        Some(p) => error(op, label, p, e),
        None => Error::os(op, label, e),
    };
    let mut st = sys::fs::fstat(&fd).map_err(err)?;
    // Another process may have just created the object (O_EXCL) and not yet
    // sized it: give its ftruncate a moment before calling it too small.
    let needed = options.size.unwrap_or(1) as u64;
    let mut tries = 0;
    while !created && st.is_regular && st.size < needed && tries < 50 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        st = sys::fs::fstat(&fd).map_err(err)?;
        tries += 1;
    }
    if !st.is_regular {
        return Err(Error::new(op, label, ErrorKind::WrongType("not a regular file or shared-memory object".into())));
    }
    if !created && path.is_some() {
        // fstat of the descriptor we map, not of the name: what we check is
        // what we get.
        options.check_trust(op, label, st.uid, st.mode)?;
    }
    let len = match options.size {
        Some(0) => return Err(Error::invalid(op, label, "the size must be at least 1 byte")),
        Some(want) if (want as u64) > st.size => {
            return Err(Error::new(op, label, ErrorKind::TooSmall { requested: want as u64, actual: st.size }));
        }
        Some(want) => want,
        None if st.size == 0 => {
            return Err(Error::new(
                op,
                label,
                ErrorKind::WrongType("empty (0 bytes), so there is nothing to map".into()),
            ));
        }
        None => usize::try_from(st.size)
            .ok()
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid(op, label, "the object is larger than this process can map"))?,
    };
    limits::check_map_count(Op::Map, label)?;
    let ptr = sys::mman::map_fd(&fd, len, options.writable).map_err(|e| match path {
        Some(p) => error(Op::Map, label, p, e),
        None => Error::os(Op::Map, label, e),
    })?;
    Ok(Mapped { ptr, len, writable: options.writable, created, backing: Backing::Fd { fd, kind, path: None }, guard })
}

/// Grows an fd-backed segment; see [`Segment::grow`].
pub(super) fn grow(seg: &mut Segment, new_len: usize) -> Result<()> {
    let label = seg.label.clone();
    let Backing::Fd { fd, path, .. } = &seg.backing else {
        return Err(Error::invalid(Op::Resize, label, "only POSIX, file and memfd segments can grow"));
    };
    if !seg.writable {
        return Err(Error::new(Op::Resize, label, ErrorKind::ReadOnly));
    }
    seg.check_truncated(Op::Resize)?;
    if seg.is_pinned() {
        return Err(Error::invalid(
            Op::Resize,
            label,
            "a mutex in it is held (perhaps by a leaked guard); it cannot move",
        ));
    }
    if new_len < seg.len || new_len > isize::MAX as usize {
        return Err(Error::invalid(Op::Resize, label, format!("cannot grow from {} to {new_len} bytes", seg.len)));
    }
    let fallback = Path::new(".");
    let space_dir = path.as_deref().and_then(Path::parent).unwrap_or(fallback);
    let path_for_errors = path.as_deref().unwrap_or(fallback);
    let current = sys::fs::fstat(fd).map_err(|e| error(Op::Resize, &label, path_for_errors, e))?.size;
    if (new_len as u64) > current {
        limits::check_space(Op::Resize, &label, space_dir, new_len as u64 - current)?;
        sys::fs::ftruncate(fd, new_len as u64).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => Error::invalid(Op::Resize, &label, "the memfd is sealed against growing"),
            _ => error(Op::Resize, &label, path_for_errors, e),
        })?;
        reserve(fd, new_len as u64, Op::Resize, &label, path_for_errors, space_dir)?;
    }
    let new_map_len = page_round(new_len);
    if new_map_len != seg.map_len {
        // SAFETY: `ptr..ptr+map_len` is our mapping; `&mut self` means no
        // other Rust code in this process is using it, and the old pointer is
        // replaced below (the docs of `as_ptr` say it becomes invalid).
        seg.ptr = unsafe { sys::mman::remap(seg.ptr, seg.map_len, new_map_len) }
            .map_err(|e| error(Op::Resize, &label, path_for_errors, e))?;
        seg.map_len = new_map_len;
        if let Some(guard) = &seg.sigbus {
            guard.moved(seg.ptr.as_ptr(), new_map_len);
        }
    }
    seg.len = new_len;
    Ok(())
}

/// [`super::stat`] for POSIX objects and files.
pub(super) fn stat_path(path: &Path, kind: Kind, label: &str) -> Result<super::Info> {
    let st = sys::fs::lstat(path).map_err(|e| error(Op::Stat, label, path, e))?;
    if !st.is_regular {
        return Err(Error::new(
            Op::Stat,
            label,
            ErrorKind::WrongType("not a regular file or shared-memory object".into()),
        ));
    }
    Ok(super::Info::from_file(kind, st))
}
