//! The atomics and spin hint every primitive uses, in one place, so that a
//! model checker (loom, under `cfg(loom)`) can be swapped in later without
//! touching the algorithms.

pub(crate) use std::hint::spin_loop;
pub(crate) use std::sync::atomic::{AtomicU32, Ordering};
