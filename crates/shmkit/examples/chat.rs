//! The producer/consumer pair of seed 004 (`shm1.c` / `shm2.c`, "共享内存使用示例")
//! and the `written` flag of seed 001, done right.
//!
//! In the seed, `shm2` (the writer) reads lines from stdin and copies each
//! into a System V segment holding `int written_by_you; char some_text[2048]`;
//! `shm1` (the reader) prints each line until one starts with `end`. What it
//! gets wrong:
//!
//! - both sides busy-wait on `written_by_you`, an ordinary `int`: `shm1`
//!   spins at 100 % CPU without even a pause, `shm2` polls with `sleep(1)`,
//!   so every line costs up to a second, and without atomics or barriers the
//!   compiler and CPU may reorder the flag and the text (the reader can print
//!   a half-copied line, or never see the flag change);
//! - `shm1` sets `written_by_you = 0` at start-up, so if it starts second it
//!   throws away a line the writer already sent;
//! - `strncmp(some_text, "end", 3)` also stops at a line such as `endless`;
//! - `strncpy(some_text, buffer, TEXT_SZ)` leaves no NUL when the line fills
//!   the buffer, and `printf("%s")` then reads past the segment; the reader
//!   trusts whatever the other process wrote;
//! - nobody ever removes the segment (`shmdt` only detaches; the comment
//!   "删除共享内存" is wrong), mode 0666 lets every user read and write it, and
//!   `printf("%X", (int) shared_memory)` truncates the pointer.
//!
//! Here both sides open one POSIX segment with `open_or_create` (either may
//! start first; mode 0600) that holds:
//!
//! | offset | what |
//! |---|---|
//! | 0 | [`Semaphore`] `empty`: 1 when the slot may be written (starts at 1) |
//! | 64 | [`Semaphore`] `filled`: 1 when the slot holds a message (starts at 0) |
//! | 128 | [`Mutex`]`<Slot>`: length, flags, 2048 bytes of text |
//!
//! The writer waits on `empty`, fills the slot, posts `filled`; the reader
//! waits on `filled`, copies the slot out, posts `empty`. The waits block
//! (a brief spin, then a futex sleep): no polling, no `sleep`, and a line is
//! delivered as soon as it is typed. The slot sits in a robust [`Mutex`]
//! only because shmkit's safe API reaches bytes in a segment either through
//! `&mut Segment` (which the semaphores' borrow of the segment rules out) or
//! through a primitive; the semaphores already make the two sides take turns,
//! so the lock is never contended.
//!
//! The length read from the segment is untrusted: a length beyond the
//! buffer, or unknown flags, is reported as corruption, never used. The
//! text is printed with control characters escaped.
//!
//! A line longer than the 2048-byte buffer is split (at a UTF-8 character
//! boundary) into several messages, each but the last flagged "more"; the
//! reader prints the pieces as one line. A line is never truncated.
//!
//! The writer sends `end` when it reads the line `end` or reaches the end of
//! its input; the reader stops at `end` and removes the segment
//! (`shm_unlink`): it is the last user, since the writer touches nothing
//! after posting `end`. The reader removes it whenever it exits normally,
//! also after an error (such as a corrupt slot; a writer still running then
//! waits forever). So when both exit normally, nothing is left in
//! `/dev/shm`.
//!
//! If one of them is killed (Ctrl-C included), the other waits forever at
//! its next wait (stop it with Ctrl-C too), and the segment stays in
//! `/dev/shm`, possibly with its semaphores in the middle of a hand-over.
//! Remove it before the next session with `shmkit rm posix:/shmkit-chat`
//! (or `rm /dev/shm/shmkit-chat`), or use another name: a new session on a
//! leftover segment may receive a stale line or wait forever. If the writer
//! dies while copying a line into the slot, the next process to lock the slot
//! learns it from the robust mutex and discards the half-written line.
//!
//! One writer and one reader per name: a second reader would take some of
//! the lines, and the one that misses `end` would wait forever.
//!
//! Run the two sides in two terminals, in either order:
//!
//! ```text
//! cargo run -p shmkit --example chat -- reader [NAME]
//! cargo run -p shmkit --example chat -- writer [NAME]
//! ```
//!
//! `NAME` defaults to `/shmkit-chat` (the leading slash is optional).

use std::error::Error;
use std::io::{self, BufRead, Write};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmkit::sync::{LockError, Mutex, MutexGuard, Semaphore};
use shmkit::{ErrorKind, Lifetime, Segment, Target};

/// The seed's `TEXT_SZ`.
const TEXT_SZ: usize = 2048;
/// `Slot::flags`: more pieces of this line follow.
const MORE: u32 = 1;

/// One message: a line, or a piece of one.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Slot {
    /// Bytes of `text` in use (at most `TEXT_SZ`).
    len: u32,
    /// `MORE`, or 0 for the last (or only) piece of a line.
    flags: u32,
    text: [u8; TEXT_SZ],
}

const EMPTY: usize = 0;
const FILLED: usize = EMPTY + Semaphore::SIZE;
const SLOT: usize = FILLED + Semaphore::SIZE;
const SIZE: usize = SLOT + Mutex::<Slot>::SIZE;

const DEFAULT_NAME: &str = "/shmkit-chat";
const USAGE: &str = "usage: chat writer|reader [NAME]";

/// Opens the segment, creating it if this side is first.
///
/// A process that opens the object in the instant between its creator's
/// `shm_open` and `ftruncate` finds it empty: shmkit's `open_or_create`
/// reports that as `TooSmall { actual: 0 }` instead of waiting. Such a
/// start-up race is retried for a moment.
fn open_segment(target: &Target, lifetime: Lifetime) -> shmkit::Result<Segment> {
    let mut options = Segment::options();
    options.size(SIZE).lifetime(lifetime);
    let mut tries = 0;
    loop {
        match options.open_or_create(target) {
            Err(e) if matches!(e.kind(), ErrorKind::TooSmall { actual: 0, .. }) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// The primitives inside the segment.
struct Chat<'a> {
    empty: Semaphore<'a>,
    filled: Semaphore<'a>,
    slot: Mutex<'a, Slot>,
}

impl<'a> Chat<'a> {
    fn open(seg: &'a Segment) -> shmkit::Result<Chat<'a>> {
        Ok(Chat {
            empty: Semaphore::open_or_create(seg, EMPTY, 1)?,
            filled: Semaphore::open_or_create(seg, FILLED, 0)?,
            slot: Mutex::open_or_create(seg, SLOT, Slot::zeroed())?,
        })
    }

    /// Locks the slot. If a process died holding it (mid-copy), the slot's
    /// content is discarded and the lock marked consistent again.
    fn lock(&self) -> shmkit::Result<MutexGuard<'_, Slot>> {
        match self.slot.lock() {
            Ok(guard) => Ok(guard),
            Err(LockError::OwnerDied(mut guard)) => {
                eprintln!("chat: a process died while copying a message; its half-written message is discarded");
                guard.set(Slot::zeroed());
                guard.mark_consistent()?;
                Ok(guard)
            }
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Sends one line, in pieces of at most `TEXT_SZ` bytes.
    fn send(&self, mut line: &[u8]) -> shmkit::Result<()> {
        loop {
            let end = piece_end(line, TEXT_SZ);
            let (piece, rest) = line.split_at(end);
            let mut slot = Slot::zeroed();
            slot.text[..piece.len()].copy_from_slice(piece);
            slot.len = piece.len() as u32;
            slot.flags = if rest.is_empty() { 0 } else { MORE };

            self.empty.wait()?;
            self.lock()?.set(slot);
            self.filled.post()?;

            if rest.is_empty() {
                return Ok(());
            }
            line = rest;
        }
    }

    /// Receives one message: its text, and whether more pieces of the same
    /// line follow.
    fn recv(&self) -> Result<(Vec<u8>, bool), Box<dyn Error>> {
        self.filled.wait()?;
        let slot = self.lock()?.get();
        self.empty.post()?;
        // Written by another process: check before use.
        let len = slot.len as usize;
        if len > TEXT_SZ || slot.flags & !MORE != 0 {
            return Err(format!(
                "the message slot is corrupt: length {} (at most {TEXT_SZ}), flags {:#x}",
                slot.len, slot.flags
            )
            .into());
        }
        Ok((slot.text[..len].to_vec(), slot.flags & MORE != 0))
    }
}

/// Where to cut `bytes` so the first piece has at most `max` bytes and does
/// not end inside a UTF-8 character (for valid UTF-8).
fn piece_end(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut end = max;
    // A UTF-8 character has at most 3 continuation bytes (0b10xx_xxxx).
    while end > max - 3 && bytes[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    end
}

/// Text from another process, safe to print: control characters escaped.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

fn writer(target: &Target) -> Result<(), Box<dyn Error>> {
    // The writer never removes the name: the reader, the last user, does.
    let seg = open_segment(target, Lifetime::Persistent)?;
    let chat = Chat::open(&seg)?;
    eprintln!("chat writer: connected to {}; enter lines, then `end` or end of input (Ctrl-D)", seg.name());

    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    let mut sent = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            chat.send(b"end")?;
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        chat.send(&line)?;
        if line == b"end" {
            break;
        }
        sent += 1;
    }
    eprintln!("chat writer: sent {sent} lines, then `end`");
    Ok(())
}

fn reader(target: &Target) -> Result<(), Box<dyn Error>> {
    // The reader is the last user: the name goes when it exits, normally or
    // with an error.
    let mut seg = open_segment(target, Lifetime::RemoveOnDrop)?;
    {
        let chat = Chat::open(&seg)?;
        eprintln!("chat reader: waiting for lines on {}", seg.name());
        let mut out = io::stdout().lock();
        let mut continued = false;
        loop {
            let (text, more) = chat.recv()?;
            if !continued && !more && text == b"end" {
                break;
            }
            out.write_all(printable(&text).as_bytes())?;
            if !more {
                out.write_all(b"\n")?;
                out.flush()?;
            }
            continued = more;
        }
    }
    seg.remove()?;
    eprintln!("chat reader: got `end`; removed {}", seg.name());
    Ok(())
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let role = args.next().ok_or(USAGE)?;
    let name = args.next().unwrap_or_else(|| DEFAULT_NAME.to_string());
    if name.starts_with('-') || args.next().is_some() {
        return Err(USAGE.into());
    }
    let target = Target::posix(&name)?;
    match role.as_str() {
        "writer" => writer(&target),
        "reader" => reader(&target),
        _ => Err(USAGE.into()),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    run().inspect_err(|e| eprintln!("chat: {e}"))
}
