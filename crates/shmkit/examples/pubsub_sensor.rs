//! A sensor that publishes readings to any number of subscribers through
//! shared memory, zero-copy: the publisher writes each reading in place in
//! a loaned slot, and every subscriber reads it in place.
//!
//! Run one publisher and two subscribers, in three terminals:
//!
//! ```text
//! terminal 1:  cargo run -p shmkit --example pubsub_sensor -- publish
//! terminal 2:  cargo run -p shmkit --example pubsub_sensor -- subscribe
//! terminal 3:  cargo run -p shmkit --example pubsub_sensor -- subscribe
//! ```
//!
//! Any of them may start first. Usage:
//!
//! ```text
//! pubsub_sensor publish [NAME [COUNT [HZ]]]   publish COUNT readings (default: until Ctrl-C) at HZ (default 10)
//! pubsub_sensor subscribe [NAME]              print readings until the publisher stops (or Ctrl-C)
//! ```
//!
//! `NAME` defaults to `sensor`; the service is the POSIX object
//! `/dev/shm/shmkit.pubsub.NAME`. The service overwrites the oldest reading
//! when a subscriber lags (a sensor does not wait for slow readers), and a
//! subscriber tells how many readings it missed. A subscriber that joins late
//! first gets the last 4 readings (the history). A subscriber whose
//! publisher stops (Ctrl-C, or killed) prints what is left and exits; the
//! last one to leave removes the object, so nothing stays in `/dev/shm`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmkit::channel::pubsub::{Policy, PubSubOptions, TypedPublisher, TypedSubscriber};
use shmkit::{ErrorKind, Pod, Zeroable};

/// One reading, as it lies in shared memory: plain data, no pointers.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Reading {
    /// Unix time of the reading, in nanoseconds.
    timestamp_ns: u64,
    /// The reading's number, from 0.
    sequence: u64,
    /// Degrees Celsius.
    temperature: f32,
    /// Percent.
    humidity: f32,
    /// Hectopascal.
    pressure: f32,
    _pad: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C and `kill` ask the loops to stop, so that the ends close and the
/// object is removed.
fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

fn options() -> PubSubOptions {
    let mut options = PubSubOptions::new();
    options.slots(16).policy(Policy::OverwriteOldest).history(4);
    options
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn publish(name: &str, count: Option<u64>, hz: f64) -> Result<(), shmkit::Error> {
    let mut publisher = TypedPublisher::<Reading>::open_or_create(name, &options())?;
    let publisher = publisher.raw();
    println!("publishing on {} at {hz} Hz", publisher.object_name());
    let period = Duration::from_secs_f64(1.0 / hz);
    let start = Instant::now();
    let mut i = 0u64;
    while !STOP.load(Ordering::Relaxed) && count.is_none_or(|c| i < c) {
        let t = i as f32 / 10.0;
        let reading = Reading {
            timestamp_ns: now_ns(),
            sequence: i,
            temperature: 21.0 + 2.0 * t.sin(),
            humidity: 45.0 + 5.0 * (t / 3.0).cos(),
            pressure: 1013.0 + (t / 7.0).sin(),
            _pad: 0,
        };
        // Zero-copy: the reading is written straight into the slot that
        // every subscriber reads; nothing is copied again.
        let mut loan = publisher.loan()?;
        loan.write(0, &reading)?;
        let seq = loan.publish();
        println!("published #{seq}");
        i += 1;
        if let Some(wait) = (start + period.mul_f64(i as f64)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

fn subscribe(name: &str) -> Result<(), shmkit::Error> {
    let mut subscriber = TypedSubscriber::<Reading>::open_or_create(name, &options())?;
    println!("subscribed to {name}; waiting for readings");
    let mut missed = 0;
    while !STOP.load(Ordering::Relaxed) {
        let subscriber = subscriber.raw();
        let sample = match subscriber.receive_timeout(Duration::from_millis(200)) {
            Ok(sample) => sample,
            Err(e) if *e.kind() == ErrorKind::Timeout => continue,
            Err(e) if *e.kind() == ErrorKind::Disconnected => {
                println!("the publisher stopped");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Read in place: `read` copies the 32 bytes out of the slot and then
        // checks that the publisher did not overwrite them meanwhile.
        match sample.read::<Reading>(0)? {
            Some(r) => {
                let age_us = now_ns().saturating_sub(r.timestamp_ns) / 1000;
                println!(
                    "#{:<6} {:6.2} °C {:5.1} % {:7.1} hPa  ({age_us} µs after it was taken)",
                    r.sequence, r.temperature, r.humidity, r.pressure
                );
            }
            None => println!("#{} was overwritten while it was read", sample.sequence()),
        }
        drop(sample);
        if subscriber.missed() != missed {
            println!("({} readings missed so far)", subscriber.missed());
            missed = subscriber.missed();
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.get(1).map_or("sensor", String::as_str);
    catch_signals();
    let result = match args.first().map(String::as_str) {
        Some("publish") => {
            let count = args.get(2).map(|c| c.parse::<u64>());
            let hz = args.get(3).map_or(Ok(10.0), |h| h.parse::<f64>());
            match (count.transpose(), hz) {
                (Ok(count), Ok(hz)) if hz > 0.0 && hz.is_finite() => publish(name, count, hz),
                _ => return usage(),
            }
        }
        Some("subscribe") => subscribe(name),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub_sensor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: pubsub_sensor publish [NAME [COUNT [HZ]]] | pubsub_sensor subscribe [NAME]");
    ExitCode::from(2)
}
