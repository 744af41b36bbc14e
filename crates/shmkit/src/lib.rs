//! shmkit: inter-process communication through shared memory on Linux.
//!
//! This crate is the library; the `shmkit` command-line tool is built on it.
//! It offers every classic shared-memory mechanism behind one type,
//! [`Segment`]:
//!
//! - System V (`shmget`/`shmat`/`shmdt`/`shmctl`), by key, `ftok` or
//!   `IPC_PRIVATE`;
//! - POSIX (`shm_open`/`ftruncate`/`mmap`/`shm_unlink`);
//! - anonymous `MAP_SHARED` memory shared with `fork` children;
//! - file-backed mappings, written back with `msync`;
//! - sealed memfds, passed as file descriptors.
//!
//! and it handles what the classic tutorials warn about: sizes are checked
//! against the backing object and space is reserved up front, so a mapping
//! never faults with `SIGBUS`; kernel limits ([`Limits`]) are checked before
//! creating, with an error that says which limit to raise; modes are exact
//! under any umask; and who removes an object is explicit ([`Lifetime`]).
//!
//! # Example
//!
//! ```
//! use shmkit::{Segment, Target};
//!
//! let target = Target::posix(&format!("shmkit-crate-doc-{}", std::process::id()))?;
//! let mut seg = Segment::create(&target, 4096)?;
//! seg.write_at(0, b"hello, shared world\0")?;
//! assert_eq!(seg.read::<[u8; 5]>(0)?, *b"hello");
//! // `seg` removes the object when dropped, because it created it.
//! # Ok::<(), shmkit::Error>(())
//! ```
//!
//! # Memory another process can write
//!
//! shmkit never gives out a Rust reference into a mapping: another process
//! may change those bytes at any moment, which a `&[u8]` forbids. Reads and
//! writes are copies; [`Segment::as_ptr`] is there for atomics and protocols.

#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod channel;
pub mod error;
pub mod limits;
pub mod registry;
pub mod segment;
pub mod sync;
mod sys;

pub use bytemuck::{self, Pod, Zeroable};

pub use crate::error::{Error, ErrorKind, Op, Result};
pub use crate::limits::{Limit, LimitExceeded, Limits};
pub use crate::segment::{Info, Kind, Lifetime, Segment, SegmentOptions, SysvInfo, SysvKey, Target};
