//! A POSIX reader for seed 001 ("POSIX 共享内存示例"), done right.
//!
//! The seed shows only the writer, which unlinks its object right after
//! writing; a C reader would `shm_open(name, O_RDONLY, 0)`, `mmap` some
//! guessed length, `printf("%s")` the mapping and `shm_unlink`. The
//! mistakes such a reader makes:
//!
//! - mapping a guessed length: if the object is shorter, touching a page
//!   past its end kills the process with `SIGBUS`;
//! - `printf("%s")` trusts the object to hold a NUL, and builds a `char *`
//!   over memory that another process may change while it is printed;
//! - unchecked return values, and a leaked descriptor.
//!
//! Here the object is opened read-only and mapped at exactly its size (an
//! empty object is an error, not a zero-length map), the C string is copied
//! out piece by piece up to the first NUL (never past the end: a missing
//! NUL is reported), control characters are escaped before printing, and
//! the name is removed only with `--remove` (`shm_unlink`; with that flag
//! it is removed even if reading fails).
//!
//! Run it after `posix_writer`:
//!
//! ```text
//! cargo run -p shmkit --example posix_reader -- [NAME] [--remove]
//! ```
//!
//! `NAME` defaults to `/my_shm`, the seed's name.

use std::error::Error;

use shmkit::{Lifetime, Segment, Target};

const USAGE: &str = "usage: posix_reader [NAME] [--remove]";

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
    let mut name = None;
    let mut remove = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--remove" => remove = true,
            a if !a.starts_with('-') && name.is_none() => name = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let target = Target::posix(name.as_deref().unwrap_or("/my_shm"))?;

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
        println!("removed {} (shm_unlink)", seg.name());
    } else {
        println!("{} stays; remove it with --remove", seg.name());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("posix_reader: {e}"))
}
