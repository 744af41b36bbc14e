//! The anonymous-mapping example of seed 004 ("范例2: 父子进程通过匿名映射实现共享内存"),
//! done right.
//!
//! The C program maps `10 * sizeof(people)` bytes with
//! `mmap(MAP_SHARED | MAP_ANONYMOUS)`, forks, and the two processes fill and
//! read `people` records (`char name[4]; int age;`) through the mapping.
//! What it gets wrong:
//!
//! - it synchronizes with `sleep(2)` and `sleep(5)`: on a busy machine the
//!   reader runs before the writer and prints garbage, and on an idle one it
//!   wastes seconds;
//! - neither `mmap` (`MAP_FAILED`) nor `fork` (-1) is checked, and the parent
//!   never `wait`s, so the child's status is lost and it lingers as a zombie;
//! - the child leaves with `exit`, which runs the parent's `atexit` handlers
//!   and flushes stdio buffers inherited from the parent a second time;
//! - `memcpy(name, &temp, 2)` copies a byte past the one `char` it owns.
//!
//! Here the parent maps the memory with
//! `Segment::options().size(n).anonymous()` (nothing is named, so nothing
//! can leak: the kernel frees it with the last process), flushes stdout and
//! forks; the child writes typed, `Pod` records with bounds-checked copies
//! and leaves with `_exit`; the parent `waitpid`s, which orders every store
//! of the child before its own reads (no sleep, no flag), checks the
//! child's status, then prints the records.
//!
//! Run it:
//!
//! ```text
//! cargo run -p shmkit --example fork_anon -- [COUNT]
//! ```
//!
//! `COUNT` (1 to 26, default 5, as in the seed) is how many records the
//! child writes.

use std::error::Error;
use std::io::{self, Write};

use bytemuck::{Pod, Zeroable};
use shmkit::Segment;

/// The seed's `people`: four bytes of name (NUL-padded), then the age.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct People {
    name: [u8; 4],
    age: u32,
}

const RECORD: usize = size_of::<People>();
const USAGE: &str = "usage: fork_anon [COUNT]  (COUNT from 1 to 26)";

/// What the child does: write `count` records, named `a`, `b`, … and aged
/// 20, 21, ….
fn child(seg: &mut Segment, count: usize) -> shmkit::Result<()> {
    for (i, (letter, age)) in (b'a'..=b'z').zip(20..).take(count).enumerate() {
        let person = People { name: [letter, 0, 0, 0], age };
        seg.write(i * RECORD, &person)?;
    }
    println!("child {}: wrote {count} people into the shared mapping", std::process::id());
    Ok(())
}

/// `waitpid` for `pid`, retried when a signal interrupts it.
fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable `c_int`, and `pid` is our own
        // child, so waiting for it cannot reap another part of the program's
        // children.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The name of a record, as text: the bytes before the first NUL, with
/// anything unprintable escaped (the child could have written anything).
fn name_of(person: People) -> String {
    let end = person.name.iter().position(|&b| b == 0).unwrap_or(person.name.len());
    String::from_utf8_lossy(&person.name[..end]).escape_debug().to_string()
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count = match args.next() {
        None => 5,
        Some(arg) => arg.parse::<usize>().ok().filter(|n| (1..=26).contains(n)).ok_or(USAGE)?,
    };
    if args.next().is_some() {
        return Err(USAGE.into());
    }

    let mut seg = Segment::options().size(count * RECORD).anonymous()?;
    println!(
        "parent {}: mapped {} bytes ({} of them usable) shared with children",
        std::process::id(),
        seg.mapped_len(),
        seg.len()
    );
    // Anything still buffered would otherwise be printed by both processes.
    io::stdout().flush()?;

    // SAFETY: the program is single-threaded here (no thread was started),
    // so the child does not inherit locks held by threads that it lacks, and
    // may run ordinary code, allocation included, before `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", io::Error::last_os_error()).into());
    }
    if pid == 0 {
        // A panic must not unwind into the parent's code below: catch it.
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(&mut seg, count))) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("fork_anon child: {e}");
                1
            }
            Err(_) => 2,
        };
        // Rust's stdout is line-buffered and every line ended in `\n`, but
        // flush anyway: `_exit` does not.
        let _ = io::stdout().flush();
        // SAFETY: `_exit` ends the child at once. It skips destructors and
        // `atexit` handlers, which belong to the parent: the child must not
        // run them (nor unmap anything the parent still uses; the kernel
        // drops the child's mappings with it).
        unsafe { libc::_exit(code) };
    }

    let status = wait_for(pid)?;
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        println!("parent: child {pid} exited with status {code}");
        if code != 0 {
            return Err(format!("the child failed (exit status {code})").into());
        }
    } else if libc::WIFSIGNALED(status) {
        return Err(format!("the child was killed by signal {}", libc::WTERMSIG(status)).into());
    } else {
        return Err(format!("the child ended with wait status {status:#x}").into());
    }

    // The child has exited: its stores are all visible, and nobody else can
    // write the mapping any more.
    for i in 0..count {
        let person: People = seg.read(i * RECORD)?;
        println!("parent read: name: {} age {};", name_of(person), person.age);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("fork_anon: {e}"))
}
