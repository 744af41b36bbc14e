//! The System V reader of seed 002 ("进程间通信2-共享内存"), done right.
//!
//! The C program calls `shmget(1234, 1024, 0666)`, `shmat`, `printf("%s")`
//! of the segment, `shmdt`, then `shmctl(IPC_RMID)`. What it gets wrong:
//!
//! - no return value is checked: without a segment, `shmat(-1)` gives
//!   `(void *)-1` and `printf` crashes on it;
//! - `printf("%s")` trusts the segment to hold a NUL: if the writer (or any
//!   other process with access) left none, it reads past the end;
//! - it builds a `char *` over memory that another process may change
//!   while it is being printed;
//! - it always removes the segment, so a second reader finds nothing.
//!
//! Here the segment is attached read-only (`SHM_RDONLY`), the C string is
//! copied out of it piece by piece up to the first NUL (never past the
//! segment's end: a missing NUL is reported), control characters are
//! escaped before printing, and the segment is removed only with
//! `--remove` (`IPC_RMID`; with that flag it is removed even if reading
//! fails).
//!
//! Run it after `sysv_writer`:
//!
//! ```text
//! cargo run -p shmkit --example sysv_reader -- [KEY|PATH] [--remove]
//! ```
//!
//! `KEY` is decimal or `0x` hex (default 1234, the seed's key); any other
//! argument is the path of an existing file, turned into a key with
//! `ftok(PATH, 'A')`.

use std::error::Error;

use shmkit::{Lifetime, Segment, SysvKey, Target};

/// The `ftok` project id of seed 000 (65, `'A'`).
const PROJ_ID: u8 = b'A';
const USAGE: &str = "usage: sysv_reader [KEY|PATH] [--remove]";

/// A key (`1234`, `0x4d2`) or a path for `ftok`.
fn target_from_arg(arg: &str) -> shmkit::Result<Target> {
    if arg.starts_with(|c: char| c.is_ascii_digit()) {
        format!("sysv:{arg}").parse()
    } else {
        Ok(Target::Sysv(SysvKey::ftok(arg, PROJ_ID)?))
    }
}

/// Copies the bytes before the first NUL out of the segment; the flag says
/// whether a NUL was found before the segment's end.
fn read_c_string(seg: &Segment) -> shmkit::Result<(Vec<u8>, bool)> {
    let mut text = Vec::new();
    let mut chunk = [0u8; 256];
    let mut offset = 0;
    while offset < seg.len() {
        let n = chunk.len().min(seg.len() - offset);
        seg.read_at(offset, &mut chunk[..n])?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            text.extend_from_slice(&chunk[..end]);
            return Ok((text, true));
        }
        text.extend_from_slice(&chunk[..n]);
        offset += n;
    }
    Ok((text, false))
}

/// Text from another process, safe to print: control characters escaped.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut key_arg = None;
    let mut remove = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--remove" => remove = true,
            a if !a.starts_with('-') && key_arg.is_none() => key_arg = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let target = target_from_arg(key_arg.as_deref().unwrap_or("1234"))?;

    let mut options = Segment::options();
    options.read_only();
    if remove {
        // Asked to remove: do it even if something below fails.
        options.lifetime(Lifetime::RemoveOnDrop);
    }
    let mut seg = options.open(&target)?;
    let (text, terminated) = read_c_string(&seg)?;
    if !terminated {
        eprintln!("warning: {} holds no NUL byte in its {} bytes; printing all of them", seg.name(), seg.len());
    }
    println!("Data read from shared memory: {}", printable(&text));

    if remove {
        seg.remove()?;
        println!("removed {} (IPC_RMID: the kernel frees it at its last detach)", seg.name());
    } else {
        println!("{} stays; remove it with --remove", seg.name());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("sysv_reader: {e}"))
}
