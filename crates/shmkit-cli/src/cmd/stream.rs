//! `send` and `recv`: a byte stream from `send`'s standard input to
//! `recv`'s standard output through a shmkit ring, like a named pipe between
//! unrelated processes.
//!
//! Framing: each chunk of input is one message; an empty message marks the
//! end of the stream. So `recv` can tell a clean end (the marker, exit 0)
//! from a sender that died (the ring disconnects without it, exit 1, after
//! everything that arrived was written).

use std::io::{self, Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use shmkit::ErrorKind;
use shmkit::channel::ring::{Receiver, RingOptions, Sender};

use crate::cli::{RecvArgs, SendArgs};

fn options(capacity: usize) -> RingOptions {
    let mut o = RingOptions::new();
    o.capacity(capacity);
    o
}

pub(crate) fn send(args: SendArgs) -> anyhow::Result<()> {
    let mut tx = match Sender::open(&args.name) {
        Err(e) if *e.kind() == ErrorKind::NotFound => Sender::open_or_create(&args.name, &options(args.capacity))?,
        other => other?,
    };
    let chunk = tx.max_message().min(256 << 10);
    let mut buf = vec![0u8; chunk];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read standard input"),
        };
        match tx.send(&buf[..n]) {
            Ok(()) => {}
            // The receiver went away (e.g. `recv | head -c 10`): stop.
            Err(e) if *e.kind() == ErrorKind::Disconnected => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    match tx.send(&[]) {
        Ok(()) => Ok(()),
        Err(e) if *e.kind() == ErrorKind::Disconnected => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn recv(args: RecvArgs) -> anyhow::Result<()> {
    let mut rx = match shmkit::channel::ring::Receiver::open(&args.name) {
        Err(e) if *e.kind() == ErrorKind::NotFound => Receiver::open_or_create(&args.name, &options(args.capacity))?,
        other => other?,
    };
    let mut buf = Vec::new();
    let mut out = io::stdout().lock();
    let mut total: u64 = 0;
    let mut first = true;
    loop {
        let result = match (first, args.timeout) {
            (true, Some(t)) => rx.recv_timeout(&mut buf, Duration::from_secs_f64(t)),
            _ => rx.recv(&mut buf),
        };
        first = false;
        match result {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = out.write_all(&buf[..n]) {
                    // A closed pipe downstream ends the stream; the sender
                    // sees the disconnect and stops too.
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e).context("cannot write standard output");
                }
                total += n as u64;
            }
            Err(e) if *e.kind() == ErrorKind::Timeout => {
                bail!("no sender on {} within {} s", args.name, args.timeout.unwrap_or_default())
            }
            Err(e) if *e.kind() == ErrorKind::Disconnected => {
                let _ = out.flush();
                bail!(
                    "the sender on {} ended without finishing the stream (it died?); {total} bytes received",
                    args.name
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write standard output"),
    }
}
