//! File-backed segments: an ordinary file mapped `MAP_SHARED`. Stores reach
//! the file (write them back with [`Segment::flush`]) and outlive every
//! process; by default shmkit never removes a file.

use std::path::Path;

use super::{Intent, Kind, Segment, SegmentOptions, fd};
use crate::error::Result;

pub(super) fn open(options: &SegmentOptions, path: &Path, intent: Intent) -> Result<Segment> {
    let label = format!("file:{}", path.display());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fd::open(options, path, Kind::File, intent, label, dir)
}
