//! The System V writer of seed 002 ("进程间通信2-共享内存"), done right.
//!
//! The C program calls `shmget(1234, 1024, IPC_CREAT | 0666)`, `shmat`,
//! `strcpy`s a greeting into the segment, `shmdt`s and exits, leaving the
//! segment for the reader (`sysv_reader.rs`), which prints and removes it.
//! What it gets wrong:
//!
//! - no return value is checked: a failed `shmget` gives -1, `shmat(-1)`
//!   gives `(void *)-1`, and `strcpy` through that pointer crashes;
//! - `IPC_CREAT` without `IPC_EXCL` silently reuses whatever segment already
//!   has key 1234: another program's, or one smaller than 1024 bytes;
//! - mode 0666 lets every user of the host read and overwrite the data;
//! - `strcpy` has no bound: a longer message runs past the segment's end;
//! - a failure after `shmget` leaks the segment (see `ipcs -m`).
//!
//! Here the segment is created exclusively with mode 0600, the message and
//! its NUL are checked to fit, and the segment is removed again if anything
//! fails; only once the message is in place is it kept
//! ([`Segment::persist`], i.e. [`shmkit::Lifetime::Persistent`]) for the
//! reader.
//!
//! Run it, then the reader:
//!
//! ```text
//! cargo run -p shmkit --example sysv_writer -- [KEY|PATH] [MESSAGE]
//! cargo run -p shmkit --example sysv_reader -- [KEY|PATH] --remove
//! ```
//!
//! `KEY` is decimal or `0x` hex (default 1234, the seed's key); any other
//! argument is the path of an existing file, turned into a key with
//! `ftok(PATH, 'A')` as seed 000 does with `ftok("/tmp/shmfile", 65)`.

use std::error::Error;

use shmkit::{ErrorKind, Segment, SysvKey, Target};

/// The seed's segment size.
const SIZE: usize = 1024;
/// The `ftok` project id of seed 000 (65, `'A'`).
const PROJ_ID: u8 = b'A';
const USAGE: &str = "usage: sysv_writer [KEY|PATH] [MESSAGE]";

/// A key (`1234`, `0x4d2`) or a path for `ftok`.
fn target_from_arg(arg: &str) -> shmkit::Result<Target> {
    if arg.starts_with(|c: char| c.is_ascii_digit()) {
        format!("sysv:{arg}").parse()
    } else {
        Ok(Target::Sysv(SysvKey::ftok(arg, PROJ_ID)?))
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let key_arg = args.next().unwrap_or_else(|| "1234".to_string());
    let message = args.next().unwrap_or_else(|| "Hello from shared memory!".to_string());
    if key_arg.starts_with('-') || args.next().is_some() {
        return Err(USAGE.into());
    }
    let target = target_from_arg(&key_arg)?;

    // The reader expects a C string: the text, then a NUL, inside the segment.
    if message.contains('\0') {
        return Err("the message must not contain a NUL byte (the reader stops at the first one)".into());
    }
    let mut text = message.into_bytes();
    text.push(0);
    if text.len() > SIZE {
        return Err(
            format!("the message has {} bytes but the segment holds {} (NUL included)", text.len() - 1, SIZE).into()
        );
    }

    // Create-exclusive: never write into somebody else's segment. Until
    // `persist` below, dropping `seg` (on any error) removes the segment.
    let mut seg = Segment::options().size(SIZE).create(&target).inspect_err(|e| {
        if *e.kind() == ErrorKind::AlreadyExists {
            eprintln!(
                "hint: a segment with this key exists; read and remove it with \
                 `sysv_reader {key_arg} --remove` (or `shmkit rm {target}`), or pick another key"
            );
        }
    })?;
    seg.write_at(0, &text)?;
    let info = seg.info()?;
    seg.persist();

    println!(
        "created {} (shmid {}), {} bytes, mode {:04o}",
        seg.name(),
        seg.sysv_id().unwrap_or(-1),
        info.size,
        info.mode
    );
    println!("Data written to shared memory: {}", String::from_utf8_lossy(&text[..text.len() - 1]));
    println!("the segment stays until removed: `sysv_reader {key_arg} --remove`");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("sysv_writer: {e}"))
}
