//! Fuzz target `reqrep`: a request/response service (object and rings) patched after some requests, then client and server driven.
//! The input is decoded into a case by `drive` (shared with the proptest
//! properties in `crates/shmkit/tests/hostile.rs`); a broken rule panics.

#![no_main]

#[allow(dead_code)]
#[path = "../../crates/shmkit/tests/hostile/drive.rs"]
mod drive;

use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh object name per input: this process's id and a counter.
fn name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("shmkit-fuzz-{}-{}-reqrep", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = drive::Input::new(data);
    let _ = drive::reqrep(&name(), &drive::ReqRepCase::decode(&mut input));
});
