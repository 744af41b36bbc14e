//! POSIX shared memory: `shm_open(3)`, `ftruncate(2)`, `mmap(2)`,
//! `shm_unlink(3)`. On Linux these are files in `/dev/shm`; shmkit opens them
//! there directly, as glibc does, adding `O_NOFOLLOW` and `O_CLOEXEC`.

use std::path::Path;

use super::{Intent, Kind, PosixName, Segment, SegmentOptions, fd};
use crate::error::Result;
use crate::sys;

#[doc(alias = "shm_open")]
pub(super) fn open(options: &SegmentOptions, name: &PosixName, intent: Intent) -> Result<Segment> {
    let label = format!("posix:{name}");
    fd::open(options, &name.path(), Kind::Posix, intent, label, Path::new(sys::fs::SHM_DIR))
}
