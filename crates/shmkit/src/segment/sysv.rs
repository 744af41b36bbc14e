//! System V shared memory: `shmget(2)`, `shmat(2)`, `shmdt(2)`,
//! `shmctl(2)`. Segments are found by key (or `ftok`), or by shmid; the
//! kernel counts attaches and frees a segment marked with `IPC_RMID` at its
//! last detach.

use super::{Backing, Intent, Mapped, Segment, SegmentOptions, SysvKey, Target};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::limits;
use crate::sys;
use crate::sys::fs::OpenHow;

/// The `/proc/sysvipc/shm` row of a segment, for error messages.
fn row(target: &Target) -> Option<sys::proc::SysvShmRow> {
    let rows = sys::proc::sysv_segments().ok()?;
    rows.into_iter().find(|r| match target {
        Target::Sysv(key) => r.key == key.raw() && *key != SysvKey::PRIVATE,
        Target::SysvId(id) => r.id == *id,
        _ => false,
    })
}

/// Turns an errno from a System V call into an [`Error`] that says what it
/// means for this call.
pub(super) fn error(op: Op, label: &str, target: &Target, err: std::io::Error) -> Error {
    let base = Error::os(op, label, err);
    match base.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let row = row(target);
            base.with_kind(ErrorKind::PermissionDenied {
                owner: row.map(|r| r.uid),
                mode: row.map(|r| r.perms & 0o777),
            })
        }
        // shmctl/shmat on an id that does not exist (EINVAL) or was removed
        // (EIDRM).
        Some(libc::EINVAL) | Some(libc::EIDRM) if matches!(target, Target::SysvId(_)) => {
            base.with_kind(ErrorKind::NotFound)
        }
        Some(libc::EIDRM) => base.with_kind(ErrorKind::NotFound),
        Some(libc::ENOMEM) if op == Op::Map => limits::check_map_count(op, label).err().unwrap_or(base),
        _ => base,
    }
}

/// The shmid of an existing segment.
pub(super) fn resolve(target: &Target, op: Op) -> Result<i32> {
    let label = target.to_string();
    match target {
        Target::SysvId(id) => Ok(*id),
        Target::Sysv(key) if *key == SysvKey::PRIVATE => {
            Err(Error::invalid(op, label, "IPC_PRIVATE names no existing segment; use sysv-id:ID"))
        }
        Target::Sysv(key) => {
            sys::sysv::get(key.raw(), 0, OpenHow::Existing, 0).map_err(|e| error(op, &label, target, e))
        }
        _ => unreachable!("resolve is called for System V targets only"),
    }
}

/// `shmget` for an existing segment, with `EINVAL` explained as a size
/// mismatch.
fn get_existing(key: SysvKey, size: usize, target: &Target, label: &str) -> Result<i32> {
    sys::sysv::get(key.raw(), size, OpenHow::Existing, 0).map_err(|e| {
        let err = error(Op::Open, label, target, e);
        if err.raw_os_error() == Some(libc::EINVAL) {
            let actual = row(target).map(|r| r.size);
            err.with_kind(ErrorKind::SizeMismatch { requested: size as u64, actual })
        } else {
            err
        }
    })
}

/// `shmget` with `IPC_CREAT | IPC_EXCL`, after checking the limits.
fn create(key: SysvKey, size: usize, mode: u32, target: &Target, label: &str) -> Result<i32> {
    limits::check_sysv(label, size as u64)?;
    sys::sysv::get(key.raw(), size, OpenHow::CreateExclusive, mode).map_err(|e| {
        let err = error(Op::Create, label, target, e);
        match err.raw_os_error() {
            Some(libc::EINVAL) => err.with_kind(ErrorKind::SizeMismatch { requested: size as u64, actual: None }),
            // Another process took the last id or pages since our check.
            Some(libc::ENOSPC) => limits::check_sysv(label, size as u64).err().unwrap_or(err),
            _ => err,
        }
    })
}

#[doc(alias = "shmget")]
#[doc(alias = "shmat")]
pub(super) fn open(options: &SegmentOptions, target: &Target, intent: Intent) -> Result<Segment> {
    let mut label = target.to_string();
    let mode = options.mode & 0o777;
    let (id, created) = match (target, intent) {
        (Target::SysvId(id), Intent::Open) => (*id, false),
        (Target::SysvId(_), _) => {
            return Err(Error::invalid(
                Op::Create,
                label,
                "a shmid names an existing segment; create by key (sysv:KEY)",
            ));
        }
        (Target::Sysv(key), Intent::Open) if *key == SysvKey::PRIVATE => {
            return Err(Error::invalid(
                Op::Open,
                label,
                "IPC_PRIVATE cannot be opened, only created; open by sysv-id:ID",
            ));
        }
        (Target::Sysv(key), Intent::Open) => (get_existing(*key, options.size.unwrap_or(0), target, &label)?, false),
        (Target::Sysv(key), Intent::Create) => {
            let size = options.required_size(Op::Create, &label)?;
            (create(*key, size, mode, target, &label)?, true)
        }
        (Target::Sysv(key), Intent::OpenOrCreate) => {
            let size = options.required_size(Op::Create, &label)?;
            loop {
                if *key != SysvKey::PRIVATE {
                    match get_existing(*key, size, target, &label) {
                        Ok(id) => break (id, false),
                        Err(e) if *e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                match create(*key, size, mode, target, &label) {
                    Ok(id) => break (id, true),
                    // Created by someone else since we looked: open it.
                    Err(e) if *e.kind() == ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        _ => unreachable!("sysv::open is called for System V targets only"),
    };
    if matches!(target, Target::Sysv(key) if *key == SysvKey::PRIVATE) {
        label = format!("sysv-id:{id}");
    }
    // Remove a segment we created if anything below fails.
    let cleanup = |err: Error| {
        if created {
            let _ = sys::sysv::remove(id);
        }
        err
    };
    let op = if created { Op::Create } else { Op::Open };
    let st = sys::sysv::stat(id).map_err(|e| cleanup(error(op, &label, target, e)))?;
    if !created {
        options.check_trust(op, &label, st.uid, st.mode & 0o777)?;
    }
    let len = match options.size {
        Some(want) if (want as u64) > st.size => {
            return Err(cleanup(Error::new(
                op,
                &label,
                ErrorKind::TooSmall { requested: want as u64, actual: st.size },
            )));
        }
        Some(want) => want,
        None => usize::try_from(st.size)
            .ok()
            .filter(|&n| n > 0 && n <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid(op, &label, "the segment's size cannot be mapped"))?,
    };
    limits::check_map_count(Op::Map, &label).map_err(cleanup)?;
    let ptr = sys::sysv::attach(id, options.writable).map_err(|e| cleanup(error(Op::Map, &label, target, e)))?;
    let mapped = Mapped {
        ptr,
        len,
        writable: options.writable,
        created,
        backing: Backing::Sysv { id, key: st.key },
        guard: false,
    };
    Segment::new(mapped, label).with_lifetime(options)
}
