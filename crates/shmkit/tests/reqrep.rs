//! Request/response: many client processes each get their own replies,
//! crowds of clients at once, a killed server or client, timeouts and late
//! replies, and a hostile peer scribbling over the service object.

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use shmkit::channel::reqrep::{self, Client, Server, ServiceOptions};
use shmkit::{ErrorKind, Segment, Target};

use crate::util::{self, WATCHDOG, temp_path, unique_name, wait};

/// Removes a service's object and every ring of its clients when dropped
/// (tests that fail midway, or whose processes were killed).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in leftovers(&self.0) {
            let _ = shmkit::segment::remove(&Target::posix(&name).unwrap());
        }
    }
}

fn service(tag: &str) -> (String, Cleanup) {
    let name = unique_name(tag);
    (name.clone(), Cleanup(name))
}

/// What of the service is in `/dev/shm`: its object and its rings
/// (`shmkit.ring.reqrep.NAME.INDEX.GENERATION.req|rep`).
fn leftovers(service: &str) -> Vec<String> {
    let object = format!("shmkit.reqrep.{service}");
    let rings = format!("shmkit.ring.reqrep.{service}.");
    let is_ring = |rest: &str| {
        let parts: Vec<&str> = rest.split('.').collect();
        let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        parts.len() == 3 && number(parts[0]) && number(parts[1]) && matches!(parts[2], "req" | "rep")
    };
    let mut found: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| *n == object || n.strip_prefix(&rings).is_some_and(is_ring))
        .collect();
    found.sort();
    found
}

/// Waits (under the watchdog) until nothing of the service is left.
fn assert_clean(service: &str) {
    let start = Instant::now();
    loop {
        let left = leftovers(service);
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < WATCHDOG, "watchdog: left in /dev/shm: {left:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn options(max_clients: usize) -> ServiceOptions {
    let mut o = ServiceOptions::new();
    o.max_clients(max_clients);
    o
}

/// The server's answer to a request: the bytes reversed and flipped, so a
/// reply that went to the wrong client (or to the wrong request) shows.
fn transform(request: &[u8], reply: &mut Vec<u8>) {
    reply.clear();
    reply.extend(request.iter().rev().map(|b| b ^ 0xa5));
}

/// Request `seq` of client `id`: both numbers, then a pattern of varying
/// length.
fn make_request(id: u64, seq: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let len = ((seq * 7 + id * 13) % 300) as usize;
    buf.extend((0..len).map(|i| (id as u8).wrapping_mul(31) ^ (seq as u8).wrapping_add(i as u8)));
}

/// Connects, retrying while the service does not exist yet, has no server
/// yet, or is full; `None` after the watchdog.
fn connect_retry(name: &str) -> Option<Client> {
    let start = Instant::now();
    loop {
        match Client::connect(name) {
            Ok(client) => return Some(client),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Disconnected | ErrorKind::WouldBlock) => {}
            Err(e) => {
                eprintln!("connect: {e}");
                return None;
            }
        }
        if start.elapsed() > WATCHDOG {
            eprintln!("watchdog: could not connect to {name}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a test server keeps between requests.
#[derive(Default)]
struct Served {
    /// The most clients served at once so far.
    peak: usize,
    reply: Vec<u8>,
}

/// Answers one request the way every test server does: `stop` ends the
/// serving (returns false), `clients?` gets the most clients served at once
/// so far (not the number now: the first clients may finish before the
/// last one asks), anything else its transform.
fn answer(server: &mut Server, request: &reqrep::Request, buf: &[u8], served: &mut Served) -> bool {
    served.peak = served.peak.max(server.clients());
    let reply = &mut served.reply;
    let result = match buf {
        b"stop" => {
            let _ = server.respond(request, b"stopping");
            return false;
        }
        b"clients?" => server.respond_value(request, &(served.peak as u32)),
        _ => {
            transform(buf, reply);
            server.respond(request, reply)
        }
    };
    // A client that died or left meanwhile is not the server's problem.
    if let Err(e) = result {
        assert!(matches!(e.kind(), ErrorKind::Disconnected), "respond: {e}");
    }
    true
}

/// Child role: serves `name` (for `max_clients`) until a `stop` request.
/// 100: create failed; 101: receive failed (or nothing for a watchdog).
fn serve(name: &str, max_clients: usize) -> i32 {
    let mut server = match Server::create(name, &options(max_clients)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("server: {e}");
            return 100;
        }
    };
    let (mut buf, mut served) = (Vec::new(), Served::default());
    loop {
        let request = match server.receive_timeout(&mut buf, WATCHDOG) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("server: {e}");
                return 101;
            }
        };
        if !answer(&mut server, &request, &buf, &mut served) {
            return 0;
        }
    }
}

/// Child role: serves one request by not answering it: creates `marker`
/// once it has it, then waits to be killed. 110: create or receive failed.
fn serve_and_stall(name: &str, marker: &str) -> i32 {
    let Ok(mut server) = Server::create(name, &options(8)) else { return 110 };
    let mut buf = Vec::new();
    if server.receive_timeout(&mut buf, WATCHDOG).is_err() {
        return 110;
    }
    std::fs::write(marker, b"got it").unwrap();
    std::thread::sleep(WATCHDOG);
    111
}

/// Child role: serves forever while a peer scribbles over the service,
/// starting over (removing the object if it must) whenever the server
/// fails. Never panics on an error; exits after two watchdogs if nobody
/// kills it.
fn serve_through_scribbles(name: &str) -> i32 {
    let target = Target::posix(&reqrep::object_name(name)).unwrap();
    let start = Instant::now();
    let (mut buf, mut reply) = (Vec::new(), Vec::new());
    while start.elapsed() < 2 * WATCHDOG {
        let mut server = match Server::create(name, &options(4)) {
            Ok(s) => s,
            Err(_) => {
                // Claimed by a "live" pid that a scribble wrote, or a layout
                // the scribbles made invalid: start from scratch.
                let _ = shmkit::segment::remove(&target);
                continue;
            }
        };
        loop {
            match server.receive_timeout(&mut buf, Duration::from_millis(100)) {
                Ok(request) => {
                    transform(&buf, &mut reply);
                    let _ = server.respond(&request, &reply);
                }
                Err(e) if *e.kind() == ErrorKind::Timeout => {}
                Err(_) => break,
            }
            if start.elapsed() > 2 * WATCHDOG {
                return 121;
            }
        }
    }
    120
}

/// Child role: client `id` sends `count` requests and checks every reply.
/// With `crowd > 0` it first waits until the server has served that many
/// clients at once. 60: connect failed; 61: a request failed; 62: a wrong
/// reply; 63: the crowd never gathered.
fn run_client(name: &str, id: u64, count: u64, crowd: u32) -> i32 {
    let Some(mut client) = connect_retry(name) else { return 60 };
    let start = Instant::now();
    let mut gathered = crowd == 0;
    while !gathered {
        match client.request_value::<[u8; 8], u32>(b"clients?") {
            Ok(n) => gathered = n >= crowd,
            Err(e) => {
                eprintln!("client {id}: {e}");
                return 61;
            }
        }
        if !gathered && start.elapsed() > WATCHDOG {
            return 63;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut request, mut reply, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 0..count {
        make_request(id, seq, &mut request);
        if let Err(e) = client.request_timeout(&request, &mut reply, WATCHDOG) {
            eprintln!("client {id}, request {seq}: {e}");
            return 61;
        }
        transform(&request, &mut expected);
        if reply != expected {
            eprintln!("client {id}, request {seq}: wrong reply of {} bytes", reply.len());
            return 62;
        }
    }
    0
}

/// Child role: one request, waiting without a timeout; 0 if it ends with
/// `Disconnected`. 70: answered; 71: another error; 72: connect failed.
fn request_once(name: &str) -> i32 {
    let Some(mut client) = connect_retry(name) else { return 72 };
    let mut reply = Vec::new();
    match client.request(b"anyone there?", &mut reply) {
        Ok(_) => 70,
        Err(e) if *e.kind() == ErrorKind::Disconnected => 0,
        Err(e) => {
            eprintln!("request: {e}");
            71
        }
    }
}

/// Child role: connects, gets one request (`hang`) answered, then waits to
/// be killed. 80: not killed; 81: the request failed.
fn connect_and_hang(name: &str) -> i32 {
    let Some(mut client) = connect_retry(name) else { return 81 };
    let mut reply = Vec::new();
    if client.request_timeout(b"hang", &mut reply, WATCHDOG).is_err() {
        return 81;
    }
    std::thread::sleep(WATCHDOG);
    80
}

/// Child roles of this module: `Some(exit code)` if `role` is one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let num = |i: usize| args[i].parse::<u64>().unwrap();
    Some(match role {
        "reqrep-server" => serve(&args[0], num(1) as usize),
        "reqrep-server-stall" => serve_and_stall(&args[0], &args[1]),
        "reqrep-server-scribbled" => serve_through_scribbles(&args[0]),
        "reqrep-client" => run_client(&args[0], num(1), num(2), num(3) as u32),
        "reqrep-request-once" => request_once(&args[0]),
        "reqrep-client-hang" => connect_and_hang(&args[0]),
        _ => return None,
    })
}

/// Sends `stop` to the server of `name`.
fn stop(name: &str) {
    let mut client = connect_retry(name).expect("connect to stop the server");
    let mut reply = Vec::new();
    client.request_timeout(b"stop", &mut reply, WATCHDOG).unwrap();
    assert_eq!(reply, b"stopping");
}

/// Serves in this process until `done(server)` holds, under the watchdog.
fn serve_until(server: &mut Server, served: &mut Served, mut done: impl FnMut(&Server) -> bool) {
    let start = Instant::now();
    let mut buf = Vec::new();
    while !done(server) {
        assert!(start.elapsed() < WATCHDOG, "watchdog: serving never finished");
        match server.receive_timeout(&mut buf, Duration::from_millis(10)) {
            Ok(request) => {
                assert!(answer(server, &request, &buf, served));
            }
            Err(e) => assert_eq!(*e.kind(), ErrorKind::Timeout, "{e}"),
        }
    }
}

fn exited(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_some()
}

/// The `owner` word of every client entry (layout in the module docs).
fn entry_owners(name: &str, max_clients: usize) -> Vec<u32> {
    let seg = Segment::options().read_only().open(&Target::posix(&reqrep::object_name(name)).unwrap()).unwrap();
    (0..max_clients).map(|i| seg.read::<u32>(256 + 64 * i).unwrap()).collect()
}

#[test]
fn four_client_processes_each_get_their_own_ten_thousand_replies() {
    let (name, _guard) = service("reqrep");
    let server = util::child("reqrep-server", &[&name, "8"]).spawn().unwrap();
    let clients: Vec<Child> = (0..4u64)
        .map(|id| util::child("reqrep-client", &[&name, &id.to_string(), "10000", "0"]).spawn().unwrap())
        .collect();
    for client in clients {
        assert_eq!(wait(client).code(), Some(0));
    }
    stop(&name);
    assert_eq!(wait(server).code(), Some(0));
    // The server removed the service, each client its rings.
    assert_clean(&name);
}

#[test]
fn twenty_clients_at_once() {
    let (name, _guard) = service("reqrep");
    let server = util::child("reqrep-server", &[&name, "24"]).spawn().unwrap();
    // Each waits until the server serves all twenty, then sends its requests.
    let clients: Vec<Child> = (0..20u64)
        .map(|id| util::child("reqrep-client", &[&name, &id.to_string(), "500", "20"]).spawn().unwrap())
        .collect();
    for client in clients {
        assert_eq!(wait(client).code(), Some(0));
    }
    stop(&name);
    assert_eq!(wait(server).code(), Some(0));
    assert_clean(&name);
}

#[test]
fn a_killed_server_disconnects_a_waiting_client_and_a_new_server_takes_over() {
    let (name, _guard) = service("reqrep");
    let marker = temp_path("reqrep-marker");
    let marker_arg = marker.to_str().unwrap();
    let mut server = util::child("reqrep-server-stall", &[&name, marker_arg]).spawn().unwrap();
    let client = util::child("reqrep-request-once", &[&name]).spawn().unwrap();
    // The server holds the client's request, unanswered.
    let start = Instant::now();
    while !marker.exists() {
        assert!(!exited(&mut server), "the server ended early");
        assert!(start.elapsed() < WATCHDOG, "watchdog: the request never reached the server");
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::remove_file(&marker);
    server.kill().unwrap();
    assert_eq!(wait(server).signal(), Some(libc::SIGKILL));
    let killed = Instant::now();
    // The client, blocked in `request` without a timeout, is told.
    assert_eq!(wait(client).code(), Some(0), "the client did not get Disconnected");
    eprintln!("server killed: the waiting client got Disconnected after {:?}", killed.elapsed());
    // The dead server's service is still there; a new server takes it over.
    assert!(!leftovers(&name).is_empty());
    let server = util::child("reqrep-server", &[&name, "8"]).spawn().unwrap();
    let mut client = connect_retry(&name).unwrap();
    let mut reply = Vec::new();
    client.request_timeout(b"after the crash", &mut reply, WATCHDOG).unwrap();
    let mut expected = Vec::new();
    transform(b"after the crash", &mut expected);
    assert_eq!(reply, expected);
    drop(client);
    stop(&name);
    assert_eq!(wait(server).code(), Some(0));
    assert_clean(&name);
}

#[test]
fn a_killed_client_is_reaped_and_its_entry_reused_while_others_are_served() {
    let (name, _guard) = service("reqrep");
    let max = 2;
    let mut server = Server::create(&name, &options(max)).unwrap();
    let mut served = Served::default();
    let mut hang = util::child("reqrep-client-hang", &[&name]).spawn().unwrap();
    // A steady client waits until both are served, then keeps going.
    let mut steady = util::child("reqrep-client", &[&name, "1", "3000", "2"]).spawn().unwrap();
    serve_until(&mut server, &mut served, |s| s.clients() == 2 || exited(&mut hang));
    assert!(!exited(&mut hang));
    let hang_pid = hang.id();
    assert!(entry_owners(&name, max).contains(&hang_pid));
    hang.kill().unwrap();
    assert_eq!(wait(hang).signal(), Some(libc::SIGKILL));
    // The server notices the death and frees the entry (nobody else can:
    // the only other entry is the steady client's), while serving.
    serve_until(&mut server, &mut served, |_| !entry_owners(&name, max).contains(&hang_pid));
    // A new client gets the freed entry.
    let mut late = util::child("reqrep-client", &[&name, "2", "1000", "0"]).spawn().unwrap();
    serve_until(&mut server, &mut served, |_| exited(&mut steady) && exited(&mut late));
    assert_eq!(wait(steady).code(), Some(0));
    assert_eq!(wait(late).code(), Some(0));
    drop(server);
    assert_clean(&name);
}

#[test]
fn request_timeout_without_an_answer_and_late_replies_are_dropped() {
    let (name, _guard) = service("reqrep");
    let mut server = Server::create(&name, &options(4)).unwrap();
    let mut client = Client::connect(&name).unwrap();
    let mut reply = Vec::new();
    let err = client.request_timeout(b"first", &mut reply, Duration::from_millis(30)).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    // The server answers late; that answer must not pass for the next one.
    let mut buf = Vec::new();
    let first = server.try_receive(&mut buf).unwrap();
    assert_eq!(buf, b"first");
    assert_eq!(first.client(), client.index());
    server.respond(&first, b"late answer").unwrap();
    std::thread::scope(|s| {
        let serving = s.spawn(|| {
            let mut buf = Vec::new();
            let request = server.receive_timeout(&mut buf, WATCHDOG).unwrap();
            assert_eq!(buf, b"second");
            server.respond(&request, b"second answer").unwrap();
            let (request, value) = server.receive_value::<u64>().unwrap();
            server.respond_value(&request, &(value * 2)).unwrap();
        });
        client.request_timeout(b"second", &mut reply, WATCHDOG).unwrap();
        assert_eq!(reply, b"second answer");
        assert_eq!(client.request_value::<u64, u64>(&21).unwrap(), 42);
        serving.join().unwrap();
    });
    // Nobody answers again: a timeout, and the client stays usable.
    let err = client.request_timeout(b"third", &mut reply, Duration::from_millis(10)).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    let err = client.request(&vec![0; client.max_message() + 1], &mut reply).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::MessageTooLarge { .. }), "{err}");
    drop(client);
    drop(server);
    assert_clean(&name);
}

#[test]
fn one_server_limited_clients_and_closing_disconnects() {
    let (name, _guard) = service("reqrep");
    let err = Client::connect(&name).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::NotFound, "{err}");
    let mut server = Server::create(&name, &options(2)).unwrap();
    let err = Server::create(&name, &options(2)).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Busy { pid: std::process::id() }, "{err}");
    let err = Server::create(&name, &options(3)).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidArgument(_)), "{err}");
    assert!(Server::create(&unique_name("bad"), &options(0)).is_err());
    assert!(Client::connect("no/slash").is_err());

    let mut a = Client::connect(&name).unwrap();
    let b = Client::connect(&name).unwrap();
    assert_ne!(a.index(), b.index());
    let err = Client::connect(&name).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::WouldBlock, "{err}");
    // A client that leaves frees its entry.
    drop(b);
    let b = Client::connect(&name).unwrap();

    // A reply to a client that left is refused, not misdelivered.
    let mut reply = Vec::new();
    let mut buf = Vec::new();
    let err = a.request_timeout(b"from a", &mut reply, Duration::from_millis(1)).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Timeout);
    let request = server.try_receive(&mut buf).unwrap();
    let a_index = a.index();
    drop(a);
    let a2 = Client::connect(&name).unwrap();
    assert_eq!(a2.index(), a_index);
    let err = server.respond(&request, b"for the old a").unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Disconnected, "{err}");

    // Closing the server disconnects clients and removes the service.
    let mut b = b;
    drop(server);
    let err = b.request_timeout(b"anyone?", &mut reply, WATCHDOG).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Disconnected, "{err}");
    let err = Client::connect(&name).unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::NotFound, "{err}");
    drop((a2, b));
    assert_clean(&name);
}

#[test]
fn a_hostile_peer_scribbling_over_the_service_gets_errors_not_crashes() {
    let (name, _guard) = service("reqrep");
    let target = Target::posix(&reqrep::object_name(&name)).unwrap();
    let mut server = util::child("reqrep-server-scribbled", &[&name]).spawn().unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut answered, mut errors) = (0u32, 0u32);
    let mut client: Option<Client> = None;
    let (mut request, mut reply, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    for i in 0..2000u64 {
        assert!(start.elapsed() < 3 * WATCHDOG, "watchdog: scribbling took too long");
        if client.is_none() {
            match Client::connect(&name) {
                Ok(c) => client = Some(c),
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        // Scribble: a random word past the object header (whose checks the
        // registry tests cover), in the server line, wake-up or table.
        if i > 20
            && let Ok(mut raw) = Segment::open(&target)
        {
            let offset = (128 + (rand() % (raw.len() as u64 - 128)) as usize) & !3;
            let value = match rand() % 6 {
                0 => 0,
                1 => u32::MAX,
                2 => 1,
                3 => std::process::id(),
                4 => rand() as u32 & 0xff,
                _ => rand() as u32,
            };
            raw.write(offset, &value).unwrap();
        }
        make_request(7, i, &mut request);
        let c = client.as_mut().unwrap();
        match c.request_timeout(&request, &mut reply, Duration::from_millis(20)) {
            Ok(_) => {
                // Whatever happened to the table, an answer is the right one.
                transform(&request, &mut expected);
                assert_eq!(reply, expected, "request {i}: a wrong reply");
                answered += 1;
            }
            Err(_) => {
                errors += 1;
                client = None;
            }
        }
    }
    drop(client);
    // The server never panicked or gave up: it still runs.
    assert!(!exited(&mut server), "the server ended: {:?}", server.try_wait());
    server.kill().unwrap();
    wait(server);
    eprintln!("hostile service: {answered} answers, {errors} errors, no panic, no hang");
    assert!(answered > 0 && errors > 0);

    // A scribbled header: refused, not trusted.
    let _ = shmkit::segment::remove(&target);
    let server = Server::create(&name, &options(4)).unwrap();
    let mut raw = Segment::open(&target).unwrap();
    raw.write(8, &0xdead_beef_u64).unwrap();
    let err = Client::connect(&name).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Corrupt(_)), "{err}");
    drop(server);
}
