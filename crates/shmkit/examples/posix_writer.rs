//! The POSIX writer of seed 001 ("POSIX 共享内存示例"), done right.
//!
//! The C program calls `shm_open("/my_shm", O_CREAT | O_RDWR, 0666)`,
//! `ftruncate(fd, 1024)`, `mmap`, `strcpy`s a string, `munmap`s and then
//! `shm_unlink`s the object at once. What it gets wrong:
//!
//! - no return value is checked (`shm_open`, `ftruncate`, and `mmap`, which
//!   fails with `MAP_FAILED`, not `NULL`), and the descriptor is never closed;
//! - `O_CREAT` without `O_EXCL` writes into whatever object has the name,
//!   and mode 0666 lets every user read and overwrite it;
//! - `ftruncate` reserves no memory: if `/dev/shm` is full, the first store
//!   kills the process with `SIGBUS` instead of returning an error;
//! - `strcpy` has no bound;
//! - it unlinks the object right after writing, so no process started later
//!   can read what was written.
//!
//! Here the object is created exclusively with mode 0600 and its space
//! reserved (`fallocate`), the message and its NUL are checked to fit, and
//! the name is removed again if anything fails; only once the message is in
//! place is the object kept ([`Segment::persist`], i.e.
//! [`shmkit::Lifetime::Persistent`]) for the reader, which removes it with
//! `--remove` (`shm_unlink`).
//!
//! Run it, then the reader:
//!
//! ```text
//! cargo run -p shmkit --example posix_writer -- [NAME] [MESSAGE]
//! cargo run -p shmkit --example posix_reader -- [NAME] --remove
//! ```
//!
//! `NAME` defaults to `/my_shm`, the seed's name (the leading slash is
//! optional); the object appears as `/dev/shm/my_shm`.

use std::error::Error;

use shmkit::{ErrorKind, Segment, Target};

/// The seed's object size.
const SIZE: usize = 1024;
const USAGE: &str = "usage: posix_writer [NAME] [MESSAGE]";

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "/my_shm".to_string());
    let message = args.next().unwrap_or_else(|| "POSIX Shared Memory".to_string());
    if name.starts_with('-') || args.next().is_some() {
        return Err(USAGE.into());
    }
    let target = Target::posix(&name)?;

    // The reader expects a C string: the text, then a NUL, inside the object.
    if message.contains('\0') {
        return Err("the message must not contain a NUL byte (the reader stops at the first one)".into());
    }
    let mut text = message.into_bytes();
    text.push(0);
    if text.len() > SIZE {
        return Err(
            format!("the message has {} bytes but the object holds {} (NUL included)", text.len() - 1, SIZE).into()
        );
    }

    // Create-exclusive (O_EXCL): never write into somebody else's object.
    // Until `persist` below, dropping `seg` (on any error) unlinks the name.
    let mut seg = Segment::options().size(SIZE).create(&target).inspect_err(|e| {
        if *e.kind() == ErrorKind::AlreadyExists {
            eprintln!(
                "hint: {target} exists; read and remove it with `posix_reader {name} --remove` \
                 (or `shmkit rm {target}`), or pick another name"
            );
        }
    })?;
    seg.write_at(0, &text)?;
    let info = seg.info()?;
    seg.persist();

    println!("created {}, {} bytes, mode {:04o}", seg.name(), info.size, info.mode);
    println!("Data written to shared memory: {}", String::from_utf8_lossy(&text[..text.len() - 1]));
    println!("the object stays until removed: `posix_reader {name} --remove`");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("posix_writer: {e}"))
}
