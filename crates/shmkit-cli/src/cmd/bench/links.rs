//! The mechanisms `shmkit bench` compares, each as a pair of endpoints that
//! live in two processes made by `fork`: shmkit's ring (spinning and
//! blocking) and every classic IPC mechanism (pipe, Unix stream and datagram
//! sockets, POSIX and System V message queues, TCP loopback).
//!
//! Resources are made in the parent before the fork; each side then builds
//! its endpoint from them. Everything made here is removed when the
//! measurement ends.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use shmkit::channel::pubsub::{PubSubOptions, Publisher, Subscriber};
use shmkit::channel::ring::{Receiver, RingOptions, Sender};

/// One side's view of a two-way link.
pub(crate) trait Endpoint {
    /// Sends one message.
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
    /// Receives one message of `len` bytes into `buf`.
    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> io::Result<()>;
}

/// The mechanisms, in the order of the table (`--only` names them in
/// kebab case: `ring`, `ring-blocking`, `pubsub`, `pipe`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mechanism {
    #[value(name = "ring")]
    RingSpin,
    RingBlocking,
    #[value(name = "pubsub")]
    PubSub,
    Pipe,
    UnixStream,
    #[value(name = "unix-dgram")]
    UnixDatagram,
    PosixMq,
    SysvMq,
    Tcp,
}

pub(crate) const ALL: [Mechanism; 9] = [
    Mechanism::RingSpin,
    Mechanism::RingBlocking,
    Mechanism::PubSub,
    Mechanism::Pipe,
    Mechanism::UnixStream,
    Mechanism::UnixDatagram,
    Mechanism::PosixMq,
    Mechanism::SysvMq,
    Mechanism::Tcp,
];

impl Mechanism {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::RingSpin => "shmkit ring (spin)",
            Mechanism::RingBlocking => "shmkit ring (blocking)",
            Mechanism::PubSub => "shmkit pub/sub (zero-copy)",
            Mechanism::Pipe => "pipe",
            Mechanism::UnixStream => "unix stream socket",
            Mechanism::UnixDatagram => "unix datagram socket",
            Mechanism::PosixMq => "POSIX message queue",
            Mechanism::SysvMq => "System V message queue",
            Mechanism::Tcp => "TCP loopback",
        }
    }

    pub(crate) fn is_shmkit(self) -> bool {
        matches!(self, Mechanism::RingSpin | Mechanism::RingBlocking | Mechanism::PubSub)
    }
}

fn read_sysctl(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Why a mechanism cannot carry messages of `size` bytes, if it cannot.
pub(crate) fn unsupported(m: Mechanism, size: usize) -> Option<String> {
    match m {
        Mechanism::PosixMq => {
            let max = read_sysctl("/proc/sys/fs/mqueue/msgsize_max").unwrap_or(8192);
            (size > max).then(|| format!("messages above fs.mqueue.msgsize_max ({max} bytes)"))
        }
        Mechanism::SysvMq => {
            let max = read_sysctl("/proc/sys/kernel/msgmax").unwrap_or(8192);
            (size > max).then(|| format!("messages above kernel.msgmax ({max} bytes)"))
        }
        Mechanism::UnixDatagram => {
            let max = read_sysctl("/proc/sys/net/core/wmem_max").unwrap_or(212_992);
            (size + 4096 > max).then(|| format!("datagrams above net.core.wmem_max ({max} bytes) and its overhead"))
        }
        _ => None,
    }
}

/// What both processes need to build their endpoints.
pub(crate) enum Resources {
    Ring { a: String, b: String, capacity: usize, spin: Duration },
    PubSub { a: String, b: String, options: PubSubOptions },
    Fds { parent: [OwnedFd; 2], child: [OwnedFd; 2] },
    Socket { parent: OwnedFd, child: OwnedFd, datagram: bool },
    Tcp { listener: TcpListener },
    PosixMq { a: String, b: String, size: usize },
    SysvMq { a: i32, b: i32 },
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Resources {
    /// Makes what mechanism `m` needs for messages of `size` bytes.
    pub(crate) fn new(m: Mechanism, size: usize, tag: &str) -> io::Result<Resources> {
        Ok(match m {
            Mechanism::RingSpin | Mechanism::RingBlocking => {
                // Room for at least two messages of the largest size.
                let capacity = ((size + 64) * 4).next_power_of_two().max(1 << 16);
                let spin = if m == Mechanism::RingSpin { Duration::from_micros(20) } else { Duration::ZERO };
                Resources::Ring { a: format!("bench-{tag}-a"), b: format!("bench-{tag}-b"), capacity, spin }
            }
            Mechanism::PubSub => {
                let mut options = PubSubOptions::new();
                options.max_sample(size.max(8)).max_subscribers(4);
                // Few slots, as a ring's capacity is a few messages: the
                // memory stays warm, and the warm-up faults every page in.
                options.slots(16);
                Resources::PubSub { a: format!("bench-{tag}-a"), b: format!("bench-{tag}-b"), options }
            }
            Mechanism::Pipe => {
                let (r1, w1) = pipe()?;
                let (r2, w2) = pipe()?;
                // Parent writes w1, reads r2; child reads r1, writes w2.
                Resources::Fds { parent: [r2, w1], child: [r1, w2] }
            }
            Mechanism::UnixStream => {
                let (a, b) = UnixStream::pair()?;
                Resources::Socket { parent: a.into(), child: b.into(), datagram: false }
            }
            Mechanism::UnixDatagram => {
                let (a, b) = UnixDatagram::pair()?;
                for s in [&a, &b] {
                    let buf: libc::c_int = ((size + 4096) * 4).min(i32::MAX as usize) as libc::c_int;
                    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                        // SAFETY: setsockopt with a pointer to an int and its size.
                        unsafe {
                            libc::setsockopt(
                                s.as_raw_fd(),
                                libc::SOL_SOCKET,
                                opt,
                                (&buf as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                            );
                        }
                    }
                }
                Resources::Socket { parent: a.into(), child: b.into(), datagram: true }
            }
            Mechanism::Tcp => Resources::Tcp { listener: TcpListener::bind("127.0.0.1:0")? },
            Mechanism::PosixMq => {
                let (a, b) = (format!("/shmkit-bench-{tag}-a"), format!("/shmkit-bench-{tag}-b"));
                for name in [&a, &b] {
                    mq_create(name, size)?;
                }
                Resources::PosixMq { a, b, size: size.max(1) }
            }
            Mechanism::SysvMq => {
                // SAFETY: msgget takes integers only.
                let a = cvt(unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) })?;
                // SAFETY: as above.
                let b = cvt(unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) })?;
                Resources::SysvMq { a, b }
            }
        })
    }

    /// The endpoint of one side (`parent` or the child).
    pub(crate) fn endpoint(&self, parent: bool) -> io::Result<Box<dyn Endpoint>> {
        Ok(match self {
            Resources::Ring { a, b, capacity, spin } => {
                let mut opts = RingOptions::new();
                opts.capacity(*capacity);
                let (out, inn) = if parent { (a, b) } else { (b, a) };
                let mut tx = Sender::open_or_create(out, &opts).map_err(io::Error::from)?;
                let mut rx = Receiver::open_or_create(inn, &opts).map_err(io::Error::from)?;
                tx.set_spin(*spin);
                rx.set_spin(*spin);
                Box::new(RingEnd { tx, rx })
            }
            Resources::PubSub { a, b, options } => {
                let (out, inn) = if parent { (a, b) } else { (b, a) };
                let tx = Publisher::open_or_create(out, options).map_err(io::Error::from)?;
                let rx = Subscriber::open_or_create(inn, options).map_err(io::Error::from)?;
                // A subscriber starts at the next sample: wait for the other
                // side's subscriber before the first publish.
                let start = std::time::Instant::now();
                while tx.subscribers() == 0 {
                    if start.elapsed() > Duration::from_secs(20) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the other side never subscribed"));
                    }
                    std::thread::yield_now();
                }
                Box::new(PubSubEnd { tx, rx })
            }
            Resources::Fds { parent: p, child: c } => {
                let [r, w] = if parent { p } else { c };
                Box::new(FdEnd { r: std::fs::File::from(r.try_clone()?), w: std::fs::File::from(w.try_clone()?) })
            }
            Resources::Socket { parent: p, child: c, datagram } => {
                let fd = if parent { p } else { c }.try_clone()?;
                if *datagram {
                    Box::new(DgramEnd(UnixDatagram::from(fd)))
                } else {
                    let s = UnixStream::from(fd);
                    Box::new(FdEnd {
                        r: std::fs::File::from(OwnedFd::from(s.try_clone()?)),
                        w: std::fs::File::from(OwnedFd::from(s)),
                    })
                }
            }
            Resources::Tcp { listener } => {
                let stream = if parent { listener.accept()?.0 } else { TcpStream::connect(listener.local_addr()?)? };
                stream.set_nodelay(true)?;
                Box::new(FdEnd {
                    r: std::fs::File::from(OwnedFd::from(stream.try_clone()?)),
                    w: std::fs::File::from(OwnedFd::from(stream)),
                })
            }
            Resources::PosixMq { a, b, size } => {
                let (out, inn) = if parent { (a, b) } else { (b, a) };
                Box::new(MqEnd { tx: mq_open(out)?, rx: mq_open(inn)?, size: *size })
            }
            Resources::SysvMq { a, b } => {
                let (tx, rx) = if parent { (*a, *b) } else { (*b, *a) };
                Box::new(SysvMqEnd { tx, rx, buf: Vec::new() })
            }
        })
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        // Best effort: these are this run's own objects.
        match self {
            Resources::PosixMq { a, b, .. } => {
                for name in [a, b] {
                    if let Ok(c) = CString::new(name.as_str()) {
                        // SAFETY: a valid C string.
                        unsafe { libc::mq_unlink(c.as_ptr()) };
                    }
                }
            }
            Resources::SysvMq { a, b } => {
                for id in [*a, *b] {
                    // SAFETY: IPC_RMID ignores the buffer.
                    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
                }
            }
            Resources::Ring { a, b, .. } => {
                for name in [a, b] {
                    if let Ok(t) = shmkit::Target::posix(&shmkit::channel::ring::object_name(name)) {
                        let _ = shmkit::segment::remove(&t);
                    }
                }
            }
            Resources::PubSub { a, b, .. } => {
                for name in [a, b] {
                    if let Ok(t) = shmkit::Target::posix(&format!("/{}pubsub.{name}", shmkit::registry::PREFIX)) {
                        let _ = shmkit::segment::remove(&t);
                    }
                }
            }
            _ => {}
        }
    }
}

struct RingEnd {
    tx: Sender,
    rx: Receiver,
}

impl Endpoint for RingEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(self.tx.send(data)?)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) -> io::Result<()> {
        self.rx.recv(buf)?;
        Ok(())
    }
}

/// Publish/subscribe, zero-copy: the sender writes the message into a
/// loaned slot; the receiver reads the sample in place and copies only its
/// first 8 bytes (as iceoryx2's benchmark reads only the first byte).
struct PubSubEnd {
    tx: Publisher,
    rx: Subscriber,
}

impl Endpoint for PubSubEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let mut loan = self.tx.loan()?;
        loan.set_len(data.len())?;
        loan.write_at(0, data)?;
        loan.publish();
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) -> io::Result<()> {
        let sample = self.rx.receive()?;
        let n = sample.len();
        // Keeps the length for the echo; only the head is read.
        buf.resize(n, 0);
        let head = n.min(8);
        sample.read_at(0, &mut buf[..head])?;
        Ok(())
    }
}

struct FdEnd {
    r: std::fs::File,
    w: std::fs::File,
}

impl Endpoint for FdEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(data)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
        buf.resize(len, 0);
        self.r.read_exact(buf)
    }
}

struct DgramEnd(UnixDatagram);

impl Endpoint for DgramEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.send(data).map(drop)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
        buf.resize(len.max(1), 0);
        let n = self.0.recv(buf)?;
        buf.truncate(n);
        Ok(())
    }
}

fn mq_create(name: &str, size: usize) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mq_attr is plain data; zeroed is valid.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = read_sysctl("/proc/sys/fs/mqueue/msg_max").unwrap_or(10).min(10) as _;
    attr.mq_msgsize = size.max(1) as _;
    // SAFETY: valid name and attr; O_CREAT takes mode and attr pointer.
    let fd =
        unsafe { libc::mq_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600 as libc::mode_t, &attr) };
    cvt(fd)?;
    // SAFETY: closing the descriptor we just opened; each side reopens.
    unsafe { libc::mq_close(fd) };
    Ok(())
}

fn mq_open(name: &str) -> io::Result<libc::mqd_t> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid name; no O_CREAT, so no variadic arguments.
    cvt(unsafe { libc::mq_open(c.as_ptr(), libc::O_RDWR) })
}

struct MqEnd {
    tx: libc::mqd_t,
    rx: libc::mqd_t,
    /// The queues' message size: receive buffers must hold it.
    size: usize,
}

impl Endpoint for MqEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        // SAFETY: `data` is valid for its length.
        cvt(unsafe { libc::mq_send(self.tx, data.as_ptr().cast(), data.len(), 0) }).map(drop)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) -> io::Result<()> {
        buf.resize(self.size, 0);
        // SAFETY: `buf` has room for the queue's message size.
        let n = unsafe { libc::mq_receive(self.rx, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(())
    }
}

impl Drop for MqEnd {
    fn drop(&mut self) {
        // SAFETY: descriptors we opened.
        unsafe {
            libc::mq_close(self.tx);
            libc::mq_close(self.rx);
        }
    }
}

struct SysvMqEnd {
    tx: i32,
    rx: i32,
    buf: Vec<u8>,
}

const MTYPE: usize = std::mem::size_of::<libc::c_long>();

impl Endpoint for SysvMqEnd {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&(1 as libc::c_long).to_ne_bytes());
        self.buf.extend_from_slice(data);
        // SAFETY: `buf` holds the mtype followed by `data.len()` bytes.
        cvt(unsafe { libc::msgsnd(self.tx, self.buf.as_ptr().cast(), data.len(), 0) }).map(drop)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
        self.buf.resize(MTYPE + len, 0);
        // SAFETY: `buf` has room for the mtype and `len` bytes.
        let n = unsafe { libc::msgrcv(self.rx, self.buf.as_mut_ptr().cast(), len, 0, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.clear();
        buf.extend_from_slice(&self.buf[MTYPE..MTYPE + n as usize]);
        Ok(())
    }
}
