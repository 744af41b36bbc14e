//! memfd segments: `memfd_create(2)` with seals. A memfd has no name in any
//! directory; it lives as long as a descriptor or a mapping of it does, so a
//! crash cannot leak it. Sealed against shrinking, it cannot be truncated
//! under a reader, so `SIGBUS` is impossible.

use std::os::fd::OwnedFd;

use super::{Kind, Segment, SegmentOptions, fd};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::sys;

/// `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW` from `<linux/fcntl.h>`.
const SEALS: u32 = 0x0001 | 0x0002 | 0x0004;
const SEAL_SHRINK: u32 = 0x0002;

#[doc(alias = "memfd_create")]
pub(super) fn create(options: &SegmentOptions, name: &str) -> Result<Segment> {
    let label = format!("memfd:{name}");
    let size = options.required_size(Op::Create, &label)?;
    let err = |op| move |e| Error::os(op, format!("memfd:{name}"), e);
    let fd = sys::fs::memfd_create(name).map_err(err(Op::Create))?;
    sys::fs::ftruncate(&fd, size as u64).map_err(err(Op::Create))?;
    match sys::fs::reserve(&fd, size as u64) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::ENOMEM) => {
            return Err(Error::os(Op::Create, label, e).with_kind(ErrorKind::Os(libc::ENOMEM)));
        }
        other => other.map_err(err(Op::Create))?,
    }
    if options.seal {
        sys::fs::add_seals(&fd, SEALS).map_err(err(Op::Seal))?;
    }
    let mut opts = options.clone();
    opts.size = Some(size);
    // Sealed against shrinking, it needs no SIGBUS guard.
    let mapped = fd::map(fd, &opts, Kind::Memfd, None, true, &label, !options.seal)?;
    // No name to remove: the memfd goes with its last descriptor or mapping.
    Ok(Segment::new(mapped, label))
}

pub(super) fn from_fd(fd: OwnedFd, options: &SegmentOptions) -> Result<Segment> {
    let label = "fd".to_string();
    // Descriptors that are not memfds have no seals (EINVAL); they are
    // accepted only when the caller allows unsealed objects.
    let (seals, kind) = match sys::fs::seals(&fd) {
        Ok(seals) => (seals, Kind::Memfd),
        Err(_) => (0, Kind::Posix),
    };
    if seals & SEAL_SHRINK == 0 && !options.allow_unsealed {
        return Err(Error::new(Op::Open, label, ErrorKind::NotSealed { seals }));
    }
    let unsealed = seals & SEAL_SHRINK == 0;
    let mapped = fd::map(fd, options, kind, None, false, &label, unsealed)?;
    Ok(Segment::new(mapped, label))
}
