//! The file-mapping reader of seed 004 (`map_normalfile2.c`), done right.
//!
//! The C program opens the file named on its command line with
//! `O_CREAT | O_RDWR` and mode 0777, maps 10 `people` with `MAP_SHARED`
//! and prints them. What it gets wrong:
//!
//! - it never checks the file's size: the seed's writer made it 5 records
//!   long, so records 6 to 10 lie past the end of the file. Within the
//!   file's last page they read as whatever the writer's mapping holds at
//!   that moment, or zeros once it is gone (the seed's two different
//!   outputs); a page further, the read kills the reader with `SIGBUS`;
//! - `O_CREAT` makes a reader create an empty file, and `O_RDWR` asks for
//!   write access that a reader does not need; no call is checked;
//! - `printf("%s", name)` trusts the 4-byte name to hold a NUL.
//!
//! Here the file is opened read-only, at 10 records: a shorter file is
//! refused with [`shmkit::ErrorKind::TooSmall`] instead of being mapped
//! past its end. Each record is copied out whole before it is looked at, a
//! name without a NUL is cut at 4 bytes, and unprintable bytes are escaped.
//! With `--remove` the file is deleted afterwards (even if reading fails).
//!
//! Run it after `map_file_writer`:
//!
//! ```text
//! cargo run -p shmkit --example map_file_reader -- [PATH] [--remove]
//! ```
//!
//! `PATH` defaults to `test_shm` in the temporary directory (the seed uses
//! `/tmp/test_shm`).

use std::error::Error;
use std::path::PathBuf;

use bytemuck::{Pod, Zeroable};
use shmkit::{ErrorKind, Segment, Target};

/// The seed's `people`: four bytes of name (NUL-padded), then the age.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct People {
    name: [u8; 4],
    age: u32,
}

const RECORD: usize = size_of::<People>();
/// How many records the file holds.
const COUNT: usize = 10;
const USAGE: &str = "usage: map_file_reader [PATH] [--remove]";

/// The name of a record, as text: the bytes before the first NUL, with
/// anything unprintable escaped (the file could hold anything).
fn name_of(person: People) -> String {
    let end = person.name.iter().position(|&b| b == 0).unwrap_or(person.name.len());
    String::from_utf8_lossy(&person.name[..end]).escape_debug().to_string()
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut path = None;
    let mut remove = false;
    for arg in std::env::args_os().skip(1) {
        if arg == "--remove" {
            remove = true;
        } else if !arg.to_string_lossy().starts_with('-') && path.is_none() {
            path = Some(PathBuf::from(arg));
        } else {
            return Err(USAGE.into());
        }
    }
    let target = Target::file(path.unwrap_or_else(|| std::env::temp_dir().join("test_shm")));

    let result = print_records(&target);
    if remove {
        // Asked to remove: do it even if reading failed (but report the
        // first error).
        match shmkit::segment::remove(&target) {
            Ok(()) => println!("removed {target}"),
            Err(e) if result.is_ok() => return Err(e.into()),
            Err(_) => {}
        }
    }
    result
}

/// Maps the file read-only at `COUNT` records and prints them.
fn print_records(target: &Target) -> Result<(), Box<dyn Error>> {
    let seg = Segment::options().read_only().size(COUNT * RECORD).open(target).inspect_err(|e| {
        if let ErrorKind::TooSmall { requested, actual } = e.kind() {
            eprintln!(
                "refusing to map {requested} bytes of a {actual}-byte file: only {} of the {COUNT} records are in it",
                actual / RECORD as u64
            );
        }
    })?;
    for i in 0..COUNT {
        let person: People = seg.read(i * RECORD)?;
        println!("name: {} age {};", name_of(person), person.age);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("map_file_reader: {e}"))
}
