//! The only code in shmkit that talks to the operating system.
//!
//! Every function here is a thin wrapper over one system call (or one read of a
//! `/proc` file) and returns [`std::io::Result`]. Callers above this layer add
//! the context (which object, which operation) and turn errno values into
//! [`crate::ErrorKind`]s; nothing here decides what an error means.
//!
//! Contract of the module:
//! - functions are safe unless they take or return raw addresses of mappings
//!   (`mman::map_*`, `mman::unmap`, `sysv::attach`, `sysv::detach`);
//! - file descriptors are always opened with `O_CLOEXEC`;
//! - names and paths are validated by the caller, except for the NUL checks
//!   that the conversion to C strings does anyway.

#![allow(unsafe_code)]

pub(crate) mod fs;
pub(crate) mod futex;
pub(crate) mod mman;
pub(crate) mod proc;
pub(crate) mod psem;
pub(crate) mod pthread;
pub(crate) mod sem;
pub(crate) mod sigbus;
pub(crate) mod sysv;
