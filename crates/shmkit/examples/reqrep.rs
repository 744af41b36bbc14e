//! Request/response between unrelated processes: a server that answers
//! every client, each on its own reply path ([`shmkit::channel::reqrep`]).
//!
//! In one terminal, start the server:
//!
//! ```text
//! cargo run --example reqrep -- server [NAME]
//! ```
//!
//! In another (as many as you like, at the same time), send requests:
//!
//! ```text
//! cargo run --example reqrep -- client [NAME] hello world     # prints HELLO WORLD
//! cargo run --example reqrep -- client [NAME] 1 2 3.5         # prints 6.5
//! ```
//!
//! The request is the words joined by spaces. If every word is a number the
//! server answers their sum, otherwise the text in upper case. `NAME`
//! defaults to `reqrep-demo`; a client given a single word sends it to the
//! default service, with more words the first one names the service.
//!
//! The server stops (and removes the service) when Enter is pressed in its
//! terminal. Killed instead (Ctrl-C), it leaves `/dev/shm/shmkit.reqrep.NAME`
//! behind; waiting clients are told it is gone within a second, and the next
//! server of that name takes the service over.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmkit::ErrorKind;
use shmkit::channel::reqrep::{Client, Server, ServiceOptions};

const USAGE: &str = "usage: reqrep server [NAME] | reqrep client [NAME] WORD...";
const DEFAULT_NAME: &str = "reqrep-demo";

/// The answer to `request`: the sum if every word is a number, else the
/// text in upper case.
fn answer(request: &str) -> String {
    let numbers: Option<Vec<f64>> = request.split_whitespace().map(|w| w.parse().ok()).collect();
    match numbers {
        Some(n) if !n.is_empty() => n.iter().sum::<f64>().to_string(),
        _ => request.to_uppercase(),
    }
}

fn serve(name: &str) -> Result<(), shmkit::Error> {
    let mut server = Server::create(name, &ServiceOptions::new())?;
    println!("serving {name} ({}); up to {} clients", server.object_name(), server.max_clients());
    let stop = Arc::new(AtomicBool::new(false));
    if std::io::stdin().is_terminal() {
        println!("press Enter to stop");
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_line(&mut String::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let request = match server.receive_timeout(&mut buf, Duration::from_millis(200)) {
            Ok(request) => request,
            Err(e) if *e.kind() == ErrorKind::Timeout => continue,
            Err(e) => return Err(e),
        };
        // Untrusted bytes: decode leniently, print escaped.
        let text = String::from_utf8_lossy(&buf);
        let reply = answer(&text);
        println!("client {}: {text:?} -> {reply:?}", request.client());
        match server.respond(&request, reply.as_bytes()) {
            Ok(()) => {}
            // That client left or died; the others are still served.
            Err(e) => eprintln!("reqrep: {e}"),
        }
    }
    println!("stopping; the service is removed");
    Ok(())
}

fn request(name: &str, text: &str) -> Result<(), shmkit::Error> {
    let mut client = Client::connect(name)?;
    let mut reply = Vec::new();
    client.request_timeout(text.as_bytes(), &mut reply, Duration::from_secs(5))?;
    println!("{}", String::from_utf8_lossy(&reply).escape_debug());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server"] => serve(DEFAULT_NAME),
        ["server", name] => serve(name),
        ["client", word] => request(DEFAULT_NAME, word),
        ["client", name, ref words @ ..] if !words.is_empty() => request(name, &words.join(" ")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reqrep: {e}");
            if *e.kind() == ErrorKind::NotFound {
                eprintln!("reqrep: is a server running? start one with: cargo run --example reqrep -- server [NAME]");
            }
            ExitCode::FAILURE
        }
    }
}
