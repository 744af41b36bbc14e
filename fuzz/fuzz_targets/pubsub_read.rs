//! Fuzz target `pubsub_read`: a pub/sub service patched after some samples, then its subscribers (and publisher) driven.
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
    format!("shmkit-fuzz-{}-{}-pubsub_read", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = drive::Input::new(data);
    let _ = drive::pubsub(&name(), &drive::PubSubCase::decode(&mut input));
});
