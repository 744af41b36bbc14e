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
use shmkit::channel::ring::{PeerState, Receiver, RingOptions, Sender};

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
        if let Err(e) = tx.send(&buf[..n]) {
            return receiver_gone(&tx, &args.name, e);
        }
    }
    match tx.send(&[]) {
        Ok(()) => Ok(()),
        Err(e) => receiver_gone(&tx, &args.name, e),
    }
}

/// A send failed: a receiver that closed its end (e.g. `recv | head -c 10`)
/// ends the stream cleanly; one that died is an error.
fn receiver_gone(tx: &Sender, name: &str, err: shmkit::Error) -> anyhow::Result<()> {
    if *err.kind() != ErrorKind::Disconnected {
        return Err(err.into());
    }
    match tx.peer_state() {
        PeerState::Died => bail!("the receiver on {name} died; the rest of the stream was not delivered"),
        _ => Ok(()),
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
    loop {
        let result = match args.timeout {
            Some(t) => rx.recv_timeout(&mut buf, Duration::from_secs_f64(t)),
            None => rx.recv(&mut buf),
        };
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
                let _ = out.flush();
                bail!("no data on {} for {} s ({total} bytes received)", args.name, args.timeout.unwrap_or_default())
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
