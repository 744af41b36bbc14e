//! The file-mapping writer of seed 004 (`map_normalfile1.c`), done right.
//!
//! The C program opens the file named on its command line with
//! `O_CREAT | O_RDWR | O_TRUNC` and mode 0777, makes it 5 `people` long
//! (`lseek` + `write` of one byte), maps **10** `people` with `MAP_SHARED`,
//! fills all 10, sleeps 10 s so that `map_normalfile2` can look, and unmaps.
//! What it gets wrong:
//!
//! - the file holds 5 records but 10 are written: records 6 to 10 lie past
//!   the file's end. They happen to share the file's last page, so the
//!   stores do not fault, but they never reach the file: a reader sees them
//!   only while the writer's mapping exists (hence the `sleep(10)`), and
//!   gets zeros afterwards. Had they crossed into the next page, the store
//!   would have killed the program with `SIGBUS`;
//! - `O_TRUNC` destroys whatever the file held, mode 0777 makes a data file
//!   executable and writable by everyone, and no call is checked;
//! - nothing is written back with `msync`: the data reaches the disk
//!   whenever the kernel likes;
//! - `sprintf(name, "%c", …)` writes a NUL too, and `int age` has a
//!   platform-dependent layout.
//!
//! Here the file is opened or created (mode 0600, space reserved) at 10
//! records; a file that exists but is shorter is refused with
//! [`shmkit::ErrorKind::TooSmall`], never silently half-mapped. The
//! records are plain, fixed-layout data (`#[repr(C)]`, `Pod`), written
//! with bounds-checked copies and flushed with `msync` ([`Segment::flush`])
//! before the program exits: the data persists in the file, no sleep
//! needed. A file this program created is removed again if anything fails.
//!
//! Run it, then the reader:
//!
//! ```text
//! cargo run -p shmkit --example map_file_writer -- [PATH]
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
const USAGE: &str = "usage: map_file_writer [PATH]";

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("test_shm"));
    if path.to_string_lossy().starts_with('-') || args.next().is_some() {
        return Err(USAGE.into());
    }
    let target = Target::file(&path);

    let mut seg = Segment::options().size(COUNT * RECORD).open_or_create(&target).inspect_err(|e| {
        if let ErrorKind::TooSmall { requested, actual } = e.kind() {
            eprintln!(
                "refusing to map {requested} bytes of a {actual}-byte file: {} of the {COUNT} records would lie \
                 past its end, where stores are lost (the seed's bug) or crash with SIGBUS; \
                 remove the file or make it {requested} bytes long",
                (*requested - *actual).div_ceil(RECORD as u64),
            );
        }
    })?;
    let created = seg.created();
    if created {
        // Do not leave a half-written file behind if anything below fails.
        seg.remove_on_drop();
    }

    for (i, (letter, age)) in (b'a'..).zip(20..).take(COUNT).enumerate() {
        seg.write(i * RECORD, &People { name: [letter, 0, 0, 0], age })?;
    }
    seg.flush()?; // msync(MS_SYNC): the records are in the file now.
    seg.persist();

    println!(
        "initialize over: {} {} ({} bytes), wrote {COUNT} people, flushed with msync",
        if created { "created" } else { "opened" },
        seg.name(),
        seg.len()
    );
    drop(seg);
    println!("unmap ok; the data stays in the file");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("map_file_writer: {e}"))
}
