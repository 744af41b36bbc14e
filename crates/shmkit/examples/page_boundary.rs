//! The page-boundary experiment of seed 004 ("对mmap返回地址的访问"), done right.
//!
//! The C program makes a file `2 * pagesize - 99` bytes long, maps
//! `3 * pagesize` bytes of it, and stores an `age` on both sides of every
//! page edge. It runs until the process dies with `Bus error` (`SIGBUS`)
//! on the first page that holds no byte of the file; the stores before it,
//! past the file's end but inside its last page, "succeed" and are silently
//! lost, since nothing past the end ever reaches the file. The same holds
//! for `map_normalfile1.c`, which maps 10 `people` over a 5-record file.
//! A C program cannot tell these cases apart without doing shmkit's checks
//! itself.
//!
//! With shmkit:
//!
//! 1. opening a 5-record file with a size of 10 records is refused with a
//!    clean [`ErrorKind::TooSmall`] error: nothing is mapped past the end;
//! 2. opened at its real size, the segment's [`Segment::len`] is the file's
//!    size while [`Segment::mapped_len`] is rounded up to whole pages, and
//!    [`Segment::read_at`] past `len` is an [`ErrorKind::OutOfBounds`]
//!    error, even inside the mapped page;
//! 3. the seed's walk over page edges, on a `2 * pagesize - 99`-byte file:
//!    mapping 3 pages is refused, and at the real size the walk stops with
//!    `OutOfBounds` at the file's end instead of a `Bus error`.
//!
//! The file is created in the temporary directory with a name holding the
//! process id (or at `PATH`, which must not exist), and removed at the end,
//! also on error.
//!
//! Run it:
//!
//! ```text
//! cargo run -p shmkit --example page_boundary -- [PATH]
//! ```

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
/// Where `age` lies in a `People`.
const AGE: usize = 4;
const USAGE: &str = "usage: page_boundary [PATH]";

/// A file this program created; removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(path: PathBuf) -> std::io::Result<TempFile> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        Ok(TempFile { path, file })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn set_len(&self, len: usize) -> std::io::Result<()> {
        self.file.set_len(len as u64)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: Drop cannot report an error, and on the success path
        // the file was already removed explicitly.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens `target` with `size` bytes, expecting `TooSmall`.
fn expect_too_small(target: &Target, size: usize) -> Result<(), Box<dyn Error>> {
    match Segment::options().size(size).open(target) {
        Ok(seg) => Err(format!("mapping {size} bytes of {} succeeded; expected TooSmall", seg.name()).into()),
        Err(e) if matches!(e.kind(), ErrorKind::TooSmall { .. }) => {
            println!("  refused: {:?}", e.kind());
            println!("  ({e})");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("shmkit-page-boundary-{}", std::process::id())));
    if path.to_string_lossy().starts_with('-') || args.next().is_some() {
        return Err(USAGE.into());
    }
    let page = shmkit::limits::page_size();
    println!("pagesize is {page}");

    // 1. The map_normalfile1 situation: a file of 5 records, 10 wanted.
    let file = TempFile::create(path)?;
    let target = Target::file(file.path());
    file.set_len(5 * RECORD)?;
    println!(
        "1. {} holds 5 people ({} bytes); open it with a size of 10 people ({} bytes):",
        target,
        5 * RECORD,
        10 * RECORD
    );
    expect_too_small(&target, 10 * RECORD)?;

    // 2. At its real size: len is the file's size, the mapping whole pages.
    let seg = Segment::open(&target)?;
    println!("2. opened at its real size: len() = {} bytes, mapped_len() = {} bytes", seg.len(), seg.mapped_len());
    let mut buf = [0u8; RECORD];
    match seg.read_at(5 * RECORD, &mut buf) {
        Ok(()) => return Err("read_at past the file's end succeeded; expected OutOfBounds".into()),
        Err(e) if matches!(e.kind(), ErrorKind::OutOfBounds { .. }) => {
            println!("  read_at(people 6) past the end, inside the mapped page: {:?}", e.kind());
            println!("  ({e})");
        }
        Err(e) => return Err(e.into()),
    }
    drop(seg);

    // 3. The seed's walk over page edges, on a file of 2 pages - 99 bytes.
    let file_len = 2 * page - 99;
    file.set_len(file_len)?;
    println!("3. {target} is now {file_len} bytes; open it with a size of 3 pages ({} bytes):", 3 * page);
    expect_too_small(&target, 3 * page)?;
    let mut seg = Segment::open(&target)?;
    println!(
        "  opened at its real size: len() = {} bytes, mapped_len() = {} bytes; walking the page edges:",
        seg.len(),
        seg.mapped_len()
    );
    let per_page = page / RECORD;
    let mut stopped = false;
    'walk: for i in 1..10 {
        let steps = [
            (per_page * i - 2, format!("access page {i} over")),
            (per_page * i - 1, format!("access page {i} edge over, now begin to access page {}", i + 1)),
            (per_page * i, format!("access page {} over", i + 1)),
        ];
        for (index, done) in steps {
            match seg.write(index * RECORD + AGE, &100u32) {
                Ok(()) => println!("  {done}"),
                Err(e) if matches!(e.kind(), ErrorKind::OutOfBounds { .. }) => {
                    println!("  stopped at people {index}: {:?}", e.kind());
                    println!("  ({e}; the C program stored there and lost the value, or got `Bus error`)");
                    stopped = true;
                    break 'walk;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !stopped {
        return Err("the walk never reached the file's end".into());
    }
    drop(seg);

    std::fs::remove_file(file.path())?;
    println!("removed {}", file.path().display());
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("page_boundary: {e}"))
}
