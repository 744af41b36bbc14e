//! Anonymous shared mappings: `mmap(MAP_SHARED | MAP_ANONYMOUS)`. Nothing
//! names them; a child made by `fork` inherits the mapping and sees every
//! store of the parent, and the reverse. The memory goes with the last
//! process that maps it.

use super::{Backing, Mapped, Segment, SegmentOptions};
use crate::error::{Error, Op, Result};
use crate::{limits, sys};

pub(super) fn create(options: &SegmentOptions) -> Result<Segment> {
    let label = "anonymous".to_string();
    let len = options.required_size(Op::Create, &label)?;
    limits::check_map_count(Op::Create, &label)?;
    let ptr = sys::mman::map_anonymous(super::page_round(len)).map_err(|e| Error::os(Op::Create, &label, e))?;
    let mapped = Mapped { ptr, len, writable: true, created: true, backing: Backing::Anonymous, guard: false };
    Ok(Segment::new(mapped, label))
}
